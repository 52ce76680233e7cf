"""OpenAI-compatible embeddings at OpenAI's documented limits (issue 27, fault 6), against a local server that
enforces them as the API does: 8,192 tokens per input, 300,000 per request, 2,048 inputs per request, HTTP 400
with OpenAI's messages otherwise (tests/openai_server.py).

Two ways of counting tokens are tested: exact (a tiktoken encoding; here a toy byte-level BPE the server counts
with too, since cl100k_base's file cannot be downloaded here) and the UTF-8 byte bound embtune falls back to when
tiktoken's encoding is not available offline (the server then counts words, fewer than bytes)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from openai_server import OPENAI_LIMITS, OpenAIServer, toy_encoding, word_tokens

from embtune_core.encoders import api_limits
from embtune_core.encoders.encoding import encoder_from_spec

WORDS = [f"w{i}" for i in range(50)] + ["the", "revenue", "grew"]
ENCODING = toy_encoding(WORDS)


def chunk(i: int, tokens: int) -> str:
    """A text of exactly ``tokens`` tokens of the toy encoding (and as many words)."""
    return " ".join(WORDS[(i + j) % 50] for j in range(tokens))


@pytest.fixture
def exact(monkeypatch):
    """Token counts by the toy encoding, on both sides (what tiktoken's cl100k_base does with OpenAI)."""
    monkeypatch.setattr(api_limits, "_cached_tiktoken", lambda name: ENCODING)
    return lambda text: len(ENCODING.encode(text, disallowed_special=()))


def _requests(server):
    return [body for path, body, _ in server.requests if path.endswith("/embeddings")]


def test_batches_by_tokens_as_well_as_count(exact):
    """130 chunks of 3,000 tokens went as one request of 128 (384,000 tokens) and exit 5; now every request
    stays within 300,000 tokens and 128 inputs, in as few requests as the limits allow."""
    texts = [chunk(i, 3000) for i in range(130)]
    with OpenAIServer(limits=OPENAI_LIMITS, count_tokens=exact) as server:
        encoder = encoder_from_spec(f"openai:text-embedding-3-small@{server.base_url}", api_key="env:NO_SUCH_KEY")
        vectors = encoder.encode_documents(texts)
        sent = _requests(server)
    assert vectors.shape == (130, 64) and not server.refused
    assert [len(b["input"]) for b in sent] == [100, 30]  # 300,000 / 3,000 = 100 per request
    assert all(sum(exact(t) for t in b["input"]) <= 300_000 for b in sent)
    np.testing.assert_allclose(vectors[7], np.asarray(server.embed(texts[7])), atol=1e-6)


def test_an_input_over_8192_tokens_is_cut_in_one_line_or_read_as_windows(exact, caplog):
    texts = ["the revenue grew", chunk(3, 9000)]
    with OpenAIServer(limits=OPENAI_LIMITS, count_tokens=exact) as server:
        spec = f"openai:text-embedding-3-small@{server.base_url}"
        encoder = encoder_from_spec(spec)
        assert encoder.token_limit == 8192 and encoder.count_over_limit(["x", texts[1]], "document") == (1, 8192)
        with caplog.at_level(logging.WARNING):
            cut = encoder_from_spec(spec).encode_documents(texts)  # a fresh encoder: nothing reported before
        lines = [r.getMessage() for r in caplog.records if "exceed 8192 tokens" in r.getMessage()]
        assert len(lines) == 1 and "1 of 2 corpus texts" in lines[0] and "cut" in lines[0]
        assert [exact(t) for t in _requests(server)[-1]["input"]] == [3, 8192]
        np.testing.assert_allclose(cut[1], server.embed(ENCODING.decode(ENCODING.encode(texts[1])[:8192])), atol=1e-6)

        windows = encoder_from_spec(spec, document_windows="mean").encode_documents(texts)
        sent = _requests(server)[-1]["input"]
        assert [exact(t) for t in sent] == [3, 8192, 808] and "".join(sent[1:]) == texts[1]
        pooled = (8192 * np.asarray(server.embed(sent[1])) + 808 * np.asarray(server.embed(sent[2]))) / 9000
        np.testing.assert_allclose(windows[1], pooled / np.linalg.norm(pooled), atol=1e-5)
    assert not server.refused


def test_without_tiktoken_bytes_bound_the_batches_and_the_server_decides_the_cut(caplog):
    """The fallback: UTF-8 bytes never undercount, so no request is refused for its size; an input the server
    counts over 8,192 tokens is cut by the server's own numbers and asked again, in one line."""
    texts = [chunk(i, 3000) for i in range(40)] + [chunk(0, 9000)]
    with OpenAIServer(limits=OPENAI_LIMITS, count_tokens=word_tokens) as server:
        encoder = encoder_from_spec(f"openai:text-embedding-3-small@{server.base_url}")
        assert not encoder.counter.exact and encoder.count_over_limit(texts, "document") == (0, None)
        with caplog.at_level(logging.WARNING):
            vectors = encoder.encode_documents(texts)
    assert vectors.shape == (41, 64)
    assert all(msg.startswith("This model's maximum context length") for msg in server.refused)
    assert len(server.refused) >= 1 and not any("per request" in msg for msg in server.refused)
    assert all(sum(len(t.encode()) for t in b["input"]) <= 300_000 for b in _requests(server))
    final = [b["input"] for b in _requests(server) if len(b["input"]) == 1 and b["input"][0].startswith("w0 ")]
    assert word_tokens(final[-1][0]) <= 8192 and texts[-1].startswith(final[-1][0])
    lines = [r.getMessage() for r in caplog.records if "by the server's count" in r.getMessage()]
    assert lines and all("9000 of 8192 tokens" in line or "of 8192 tokens" in line for line in lines)


def test_refusals_that_cannot_be_fixed_are_one_line_service_errors():
    from embtune_core.errors import ServiceError

    with OpenAIServer(limits={**OPENAI_LIMITS, "max_request_tokens": 10}) as server:
        encoder = encoder_from_spec(f"openai:text-embedding-3-small@{server.base_url}", tokenizer="bytes",
                                    max_request_tokens=None)
        with pytest.raises(ServiceError) as error:
            encoder.encode_documents([" ".join(["the"] * 50)])
    assert "max 10 tokens per request" in str(error.value) and "\n" not in str(error.value)


def test_evaluate_command_over_an_api_at_its_limits(exact, tmp_path, capsys, caplog):
    """The command line: a corpus of long chunks evaluates (it exited 5), over-long chunks said once."""
    from embtune_core.cli import main

    corpus = {f"c{i}": f"{WORDS[i % 50]} {WORDS[i // 50]} {chunk(i, 3000)}" for i in range(130)}
    corpus["c-long"] = chunk(5, 9000)
    data = {"queries": {f"q{i}": WORDS[i % 50] for i in range(20)}, "corpus": corpus,
            "relevant_docs": {f"q{i}": [f"c{i}"] for i in range(20)}, "mode": "text"}
    (tmp_path / "val.json").write_text(json.dumps(data))
    with OpenAIServer(limits=OPENAI_LIMITS, count_tokens=exact) as server:
        spec = f"openai:text-embedding-3-small@{server.base_url}"
        code = main(["evaluate", str(tmp_path / "val.json"), "--system", f"api={spec}", "--out", str(tmp_path / "a")])
        err = capsys.readouterr().err
        assert code == 0, err[-1500:]
        lines = [r.getMessage() for r in caplog.records if "exceed 8192 tokens" in r.getMessage()]
        assert len(lines) == 1 and "text-embedding-3-small" in lines[0] and "--max-seq-length" not in lines[0]
        assert not server.refused
        report = json.loads((tmp_path / "a" / "report.json").read_text())
        assert "8192" in json.dumps(report)  # the cut is recorded in the report, not only said
        code = main(["evaluate", str(tmp_path / "val.json"), "--system", f"api={spec}", "--document-windows", "mean",
                     "--out", str(tmp_path / "b")])
        assert code == 0, capsys.readouterr().err[-1500:]
        report = json.loads((tmp_path / "b" / "report.json").read_text())
        assert "document_windows=mean" in report["systems"][0]["identity"]
        assert not any("not applied" in r.getMessage() for r in caplog.records)
        assert max(exact(t) for b in _requests(server) for t in b["input"]) <= 8192 and not server.refused
