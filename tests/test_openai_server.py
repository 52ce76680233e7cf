"""The test server itself behaves like the OpenAI API for the real client (so other tests can trust it)."""

import openai
import pytest
from openai_server import OpenAIServer


def test_chat_and_embeddings_through_the_real_client():
    with OpenAIServer() as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)
        reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Tell me"}])
        assert "1." in reply.choices[0].message.content
        assert reply.usage.total_tokens > 0
        emb = client.embeddings.create(model="e", input=["a b", "c"])
        assert len(emb.data) == 2 and len(emb.data[0].embedding) == 64
        assert server.count("/chat/completions") == 1 and server.count("/embeddings") == 1
        assert server.requests[0][2]["authorization"] == "Bearer sk-test"


def test_scripted_fault_then_normal_reply():
    with OpenAIServer(faults=[{"status": 500}]) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
        with pytest.raises(openai.InternalServerError):
            client.embeddings.create(model="e", input=["x"])
        assert client.embeddings.create(model="e", input=["x"]).data
        assert server.count() == 2
