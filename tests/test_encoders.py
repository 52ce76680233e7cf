"""Encoders: spec parsing, sentence-transformers, the OpenAI-compatible API over real HTTP, LangChain."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
from openai_server import OpenAIServer, hashed_bag_of_words

from embtune_core.encoders.encoding import EncoderProtocol, encoder_from_spec, parse_encoder_spec
from embtune_core.errors import EXIT_SERVICE, InputError, ServiceError
from embtune_core.plugins import get_registry


def test_builtin_encoders_are_registered():
    assert {"sentence-transformers", "openai", "langchain"} <= set(get_registry().names("encoders"))


@pytest.mark.parametrize("spec, expected", [
    ("st:sentence-transformers/all-MiniLM-L6-v2", ("sentence-transformers", {"model": "sentence-transformers/all-MiniLM-L6-v2"})),
    ("sentence-transformers:/models/mine", ("sentence-transformers", {"model": "/models/mine"})),
    ("sentence-transformers/all-MiniLM-L6-v2", ("sentence-transformers", {"model": "sentence-transformers/all-MiniLM-L6-v2"})),
    ("/tmp/some model", ("sentence-transformers", {"model": "/tmp/some model"})),
    ("openai:text-embedding-3-small", ("openai", {"model": "text-embedding-3-small"})),
    ("openai:nomic@http://127.0.0.1:8000/v1",
     ("openai", {"model": "nomic", "base_url": "http://127.0.0.1:8000/v1"})),
])
def test_spec_parsing(spec, expected):
    assert parse_encoder_spec(spec) == expected


@pytest.mark.parametrize("spec", ["", "st:", "openai:m@"])
def test_bad_specs_are_one_line_input_errors(spec):
    with pytest.raises(InputError):
        parse_encoder_spec(spec)


def test_sentence_transformers_encoder(tiny_model_dir, tmp_path):
    encoder = encoder_from_spec(f"st:{tiny_model_dir}")
    assert isinstance(encoder, EncoderProtocol)
    docs = encoder.encode_documents(["the cat sat", "a dog barked", "the cat sat"])
    queries = encoder.encode_queries(["where did the cat sit?"])
    assert docs.dtype == np.float32 and docs.shape == (3, encoder.dimension) == (3, 32)
    assert queries.shape == (1, 32)
    np.testing.assert_allclose(np.linalg.norm(docs, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(docs[0], docs[2])
    # The identity follows the model's content, not its folder: a copy matches, a retrained model does not.
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    assert encoder_from_spec(f"st:{copy}").identity == encoder.identity
    weights = next(p for p in copy.rglob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert encoder_from_spec(f"st:{copy}").identity != encoder.identity
    # Settings that change vectors change the identity.
    assert encoder_from_spec(f"st:{tiny_model_dir}", normalize=False).identity != encoder.identity
    assert encoder_from_spec(f"st:{tiny_model_dir}", query_prompt="query: ").identity != encoder.identity


def test_max_seq_length_lets_long_texts_count_in_full(tiny_model_dir):
    """The tiny model cuts at 128 tokens; a limit of 8 makes texts equal that differ after the 8th."""
    long_a = "the cat sat on the mat " * 3 + "alpha beta gamma"
    long_b = "the cat sat on the mat " * 3 + "delta epsilon zeta"
    full = encoder_from_spec(f"st:{tiny_model_dir}")
    short = encoder_from_spec(f"st:{tiny_model_dir}", max_seq_length=8)
    assert short.identity != full.identity and "max_seq_length=8" in short.identity
    a, b = short.encode_documents([long_a, long_b])
    np.testing.assert_allclose(a, b, rtol=1e-5)
    a, b = full.encode_documents([long_a, long_b])
    assert not np.allclose(a, b)


def test_precision_casts_the_model_states_it_and_keeps_float32_vectors(tiny_model_dir, caplog):
    from embtune_core.errors import ConfigError

    full = encoder_from_spec(f"st:{tiny_model_dir}")
    half = encoder_from_spec(f"st:{tiny_model_dir}", precision="bf16")
    assert half.identity == full.identity + " precision=bf16"  # never shares cached vectors with fp32
    with caplog.at_level(logging.INFO, logger="embtune_plugins.encoders"):
        vectors = half.encode_documents(["the cat sat on the mat", "a dog"])
    assert vectors.dtype == np.float32 and vectors.shape == (2, 32)
    np.testing.assert_allclose(vectors, full.encode_documents(["the cat sat on the mat", "a dog"]), atol=0.05)
    assert any(r.getMessage().endswith(": device cpu, precision bf16") for r in caplog.records)
    with pytest.raises(ConfigError, match="precision must be one of fp32, bf16, fp16"):
        encoder_from_spec(f"st:{tiny_model_dir}", precision="int8")


def _bow(texts):
    return np.array([hashed_bag_of_words(t) for t in texts], dtype=np.float32)


def test_openai_encoder_batches_over_real_http(monkeypatch):
    monkeypatch.setenv("EMBTUNE_TEST_KEY", "sk-secret-value")
    texts = [f"document number {i} about topic {i % 3}" for i in range(5)]
    with OpenAIServer() as server:
        encoder = encoder_from_spec(f"openai:test-embed@{server.base_url}", batch_size=2,
                                    api_key="env:EMBTUNE_TEST_KEY")
        vectors = encoder.encode_documents(texts)
        assert server.count("/embeddings") == 3  # 2 + 2 + 1
        assert server.requests[0][2]["authorization"] == "Bearer sk-secret-value"
        assert server.requests[0][1]["model"] == "test-embed"
        assert "sk-secret" not in encoder.identity and server.base_url in encoder.identity
    np.testing.assert_allclose(vectors, _bow(texts), atol=1e-6)
    assert encoder.dimension == 64


def test_openai_encoder_retries_429_5xx_timeouts_and_drops(caplog, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-never-logged")
    faults = [{"status": 429, "headers": {"Retry-After": "0"}}, {"status": 503}, {"drop": True},
              {"delay": 2.0}, {"body": "not json"}]
    with OpenAIServer(faults=faults) as server, caplog.at_level(logging.DEBUG):
        encoder = encoder_from_spec(f"openai:e@{server.base_url}", timeout=0.5, backoff=0.01, max_retries=6)
        vectors = encoder.encode_queries(["hello world"])
        assert server.count("/embeddings") == 6
    np.testing.assert_allclose(vectors, _bow(["hello world"]), atol=1e-6)
    assert "sk-never-logged" not in caplog.text
    assert "retry" in caplog.text


def test_openai_encoder_honours_retry_after(monkeypatch):
    waits = []
    monkeypatch.setattr("embtune_plugins.encoders.time.sleep", waits.append)
    with OpenAIServer(faults=[{"status": 429, "headers": {"Retry-After": "7"}}]) as server:
        encoder = encoder_from_spec(f"openai:e@{server.base_url}", api_key="env:NO_SUCH_VARIABLE")
        encoder.encode_documents(["x"])
    assert waits == [7.0]


def test_openai_encoder_gives_up_with_a_one_line_error():
    with OpenAIServer(faults=[{"status": 500}] * 3) as server:
        encoder = encoder_from_spec(f"openai:e@{server.base_url}", max_retries=2, backoff=0.01)
        with pytest.raises(ServiceError) as info:
            encoder.encode_documents(["x"])
    assert info.value.exit_code == EXIT_SERVICE and "\n" not in str(info.value) and "3 attempts" in str(info.value)


def test_openai_encoder_does_not_retry_a_refusal():
    with OpenAIServer(faults=[{"status": 401}]) as server:
        encoder = encoder_from_spec(f"openai:e@{server.base_url}", backoff=0.01)
        with pytest.raises(ServiceError, match="refused"):
            encoder.encode_documents(["x"])
        assert server.count("/embeddings") == 1


def test_openai_encoder_refuses_a_literal_key_in_config():
    with pytest.raises(InputError):
        get_registry().create("encoders", "openai", model="m", api_key="sk-literal")


def test_langchain_encoder_wraps_any_embeddings_object():
    from langchain_core.embeddings import DeterministicFakeEmbedding

    fake = DeterministicFakeEmbedding(size=16)
    encoder = get_registry().create("encoders", "langchain", embeddings=fake)
    assert "DeterministicFakeEmbedding" in encoder.identity and "size=16" in encoder.identity
    docs = encoder.encode_documents(["a", "b"])
    query = encoder.encode_queries(["a"])
    assert docs.shape == (2, 16) and docs.dtype == np.float32 and encoder.dimension == 16
    expected = np.asarray(fake.embed_query("a"), dtype=np.float32)
    np.testing.assert_allclose(query[0], expected / np.linalg.norm(expected), rtol=1e-5)
    named = get_registry().create("encoders", "langchain", embeddings=fake, identity="my-model v2")
    assert "my-model v2" in named.identity
    with pytest.raises(InputError):
        get_registry().create("encoders", "langchain", embeddings="not an embeddings object")


# --- typed options and identity: the text is only the cache key, and it is the one written before ------------
def test_identity_text_is_the_one_caches_were_keyed_by(tiny_model_dir, monkeypatch):
    """The typed identity turns into exactly the text the encoders wrote before it existed (the
    embedding cache's key and what adapters and stores record), so existing caches stay valid."""
    from embtune_core.encoders.embedding_cache import identity_dir_name
    from embtune_core.encoders.fingerprint import directory_fingerprint

    files = f"files={directory_fingerprint(tiny_model_dir)}"
    registry = get_registry()

    def st(**options):
        return registry.create("encoders", "sentence-transformers", model=tiny_model_dir, **options).identity

    assert st() == f"sentence-transformers {files} normalize=True"
    assert st(normalize=False, prompts=False) == f"sentence-transformers {files} normalize=False prompts=none"
    assert st(query_prompt="query: ", document_prompt='say "hi" \'x\'') == (
        f"sentence-transformers {files} normalize=True query_prompt='query: ' document_prompt='say \"hi\" \\'x\\''")
    assert st(truncate_dim=16, max_seq_length=8, precision="bf16") == (
        f"sentence-transformers {files} normalize=True truncate_dim=16 max_seq_length=8 precision=bf16")
    monkeypatch.setenv("WT_KEY", "sk-test")
    openai = registry.create("encoders", "openai", model="text-embedding-3-small", api_key="env:WT_KEY",
                             base_url="http://user:pw@127.0.0.1:1/v1", dimensions=256, query_prefix="q: ")
    assert openai.identity == ("openai model=text-embedding-3-small base_url=http://***:***@127.0.0.1:1/v1 "
                               "normalize=True dimensions=256 query_prefix='q: '")

    class Fake:
        model = "fake-model"

        def embed_documents(self, texts):
            return [[1.0, 0.0]] * len(texts)

        def embed_query(self, text):
            return [1.0, 0.0]

    langchain = registry.create("encoders", "langchain", embeddings=Fake())
    assert langchain.identity == f"langchain class={Fake.__module__}.{Fake.__qualname__} model=fake-model normalize=True"
    assert registry.create("encoders", "langchain", embeddings=Fake(), identity="my-model v2").identity == (
        "langchain my-model v2 normalize=True")
    # The cache folder of an identity is the one earlier versions made (computed on the code before the
    # typed identity, main 3d055a2): a cache written then is found now.
    assert identity_dir_name("sentence-transformers files=ee27534448d3bc79d797aa3b normalize=True") == (
        "9f82c3177de1573f2c8ea4a9a6a2434f")
    assert identity_dir_name("sentence-transformers files=ee27534448d3bc79d797aa3b normalize=False prompts=none") == (
        "8e9d066151c09f1a7bc41abfedd15c24")


def test_options_and_identity_are_typed_and_read_back_from_their_text(tiny_model_dir):
    from embtune_core.encoders.encoder_identity import EncoderIdentity, EncoderOptions, describe, identity_of
    from embtune_core.encoders.long_documents import wrap

    encoder = get_registry().create("encoders", "sentence-transformers", model=tiny_model_dir, prompts=False,
                                    query_prompt="q: 'x'", max_seq_length=8)
    assert encoder.options == EncoderOptions(prompts=False, query_prompt="q: 'x'", max_seq_length=8)
    typed = encoder.encoder_identity
    assert (typed.family, typed.content.startswith("files="), typed.get("max_seq_length")) == (
        "sentence-transformers", True, "8")
    assert str(typed) == encoder.identity and EncoderIdentity.parse(encoder.identity) == typed
    windowed = wrap(encoder, "mean")
    assert identity_of(windowed) == typed.with_settings(("document_windows", "mean"))
    assert str(identity_of(windowed)) == windowed.identity
    assert identity_of(windowed).without(("document_windows",)) == typed
    description = describe(windowed)  # what an adapter records of its base: the base's, windows named
    assert (description.name, description.options, description.prompts, description.token_limit) == (
        tiny_model_dir, encoder.options, False, 8)
    assert description.weights_fingerprint == encoder.weights_fingerprint
    assert description.identity == identity_of(windowed)

    class DuckTyped:  # the protocol alone: described by its identity
        identity = "hashing dim=8 salt=1"
        dimension = 8

    assert describe(DuckTyped()).identity == EncoderIdentity("hashing", settings=(("dim", "8"), ("salt", "1")))
    assert describe(DuckTyped()).weights_fingerprint is None


def test_backend_of_reads_the_typed_identity():
    from embtune_core.encoders.encoder_identity import EncoderIdentity, EncoderOptions
    from embtune_core.reporting.report_backend import backend_of

    onnx = EncoderIdentity("sentence-transformers", "files=ab",
                           EncoderOptions(backend="onnx-int8").identity_settings("onnx/model_qint8_avx512_vnni.onnx"))
    assert backend_of(onnx) == backend_of(str(onnx)) == {
        "runtime": "onnx", "file": "onnx/model_qint8_avx512_vnni.onnx", "quantization": "int8"}
    half = EncoderIdentity("sentence-transformers", "files=ab", EncoderOptions(precision="fp16").identity_settings())
    assert backend_of(half) == {"runtime": "torch", "precision": "fp16"}
    assert backend_of(EncoderIdentity("openai", settings=(("model", "m"),))) is None
