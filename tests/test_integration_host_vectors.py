"""Document vectors equal the host's own, with and without an adapter (issue 16, fault 1).

The hosts: DocsGPT's ``EmbeddingsWrapper`` calls ``SentenceTransformer(name).encode(texts)`` for
documents and queries, with no normalisation of its own; LangChain's ``HuggingFaceEmbeddings``
(default ``encode_kwargs``) calls ``encode`` the same way. Three models the hosts treat differently
from embtune's evaluation default (normalise, prompts) come from ``host_models`` in conftest.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from langchain_huggingface import HuggingFaceEmbeddings
from sentence_transformers import SentenceTransformer

from embtune_core.adapters.adapter_io import AdapterConfig, build_adapter, load_adapter, save_adapter
from embtune_core.adapters.adapter_training import AdapterTrainingConfig, train_adapter
from embtune_core.data.dataset import QADataset
from embtune_core.encoders.encoding import encoder_from_spec
from embtune_core.errors import InputError
from embtune_integrations.langchain import EmbtuneEmbeddings

KINDS = ("normalizing", "non-normalizing", "prompted")
TEXTS = [
    "Uber's revenue grew 57% in 2021 to 17.5 billion dollars.",
    "The mitochondria is the powerhouse of the cell.",
    "Paris is the capital and largest city of France.",
    "FAISS performs efficient similarity search over dense vectors.",
]
QUESTION = "What is the capital of France?"


def save_adapter_for(encoder, directory, seed: int = 0) -> None:
    """A linear adapter with random weights, its config recording ``encoder`` as training does."""
    torch.manual_seed(seed)
    module = build_adapter("linear", encoder.dimension, {"bias": True})
    with torch.no_grad():
        module.linear.weight.add_(0.5 * torch.randn_like(module.linear.weight))
    config = AdapterConfig("linear", encoder.dimension, {"bias": True}, base_encoder_identity=encoder.identity,
                           base_normalize=encoder.normalize, base_weights=encoder.weights_fingerprint,
                           base_prompts=encoder.prompts, base_convention=encoder.convention,
                           normalize_output=True)
    save_adapter(directory, module, config)


def docsgpt_vectors(path: str, texts):
    """What DocsGPT's EmbeddingsWrapper returns (its code: ``self.model.encode(documents).tolist()``)."""
    return np.asarray(SentenceTransformer(path).encode(texts).tolist(), dtype=np.float32)


@pytest.mark.parametrize("kind", KINDS)
def test_vectors_equal_the_hosts_without_adapter(host_models, kind):
    path = host_models[kind]
    ours = EmbtuneEmbeddings(path)
    langchain = HuggingFaceEmbeddings(model_name=path)
    documents = np.asarray(ours.embed_documents(TEXTS))
    np.testing.assert_allclose(documents, docsgpt_vectors(path, TEXTS), atol=1e-6)
    np.testing.assert_allclose(documents, np.asarray(langchain.embed_documents(TEXTS)), atol=1e-6)
    query = np.asarray(ours.embed_query(QUESTION))
    np.testing.assert_allclose(query, docsgpt_vectors(path, QUESTION), atol=1e-6)
    np.testing.assert_allclose(query, np.asarray(langchain.embed_query(QUESTION)), atol=1e-6)

    # The models really differ from embtune's evaluation convention (unit length, prompts)...
    evaluation = np.asarray(EmbtuneEmbeddings(path, normalize=True, prompts=True).embed_documents(TEXTS))
    norms = np.linalg.norm(documents, axis=1)
    if kind == "non-normalizing":
        assert np.all(np.abs(norms - 1) > 0.05)
    else:
        np.testing.assert_allclose(norms, 1, atol=1e-5)
    assert np.allclose(evaluation, documents, atol=1e-4) == (kind == "normalizing")
    # ...and the convention says so.
    assert ours.document_convention == {"unit_length": kind != "non-normalizing", "query_prompt": "",
                                        "document_prompt": ""}


@pytest.mark.parametrize("kind", KINDS)
def test_documents_equal_the_hosts_with_adapter(host_models, kind, tmp_path):
    path = host_models[kind]
    host_encoder = encoder_from_spec(path, normalize=False, prompts=False)  # what --host-vectors trains on
    save_adapter_for(host_encoder, tmp_path / "adapter")
    adapted = EmbtuneEmbeddings(path, adapter=tmp_path / "adapter")
    assert adapted.has_adapter
    documents = np.asarray(adapted.embed_documents(TEXTS))
    np.testing.assert_allclose(documents, docsgpt_vectors(path, TEXTS), atol=1e-6)
    np.testing.assert_allclose(documents, np.asarray(HuggingFaceEmbeddings(model_name=path).embed_documents(TEXTS)),
                               atol=1e-6)
    # The adapter reads the host's query vector and changes it.
    host_query = docsgpt_vectors(path, [QUESTION])
    expected = load_adapter(tmp_path / "adapter").transform(host_query)[0]
    query = np.asarray(adapted.embed_query(QUESTION))
    np.testing.assert_allclose(query, expected, atol=1e-5)
    assert not np.allclose(query, host_query[0], atol=1e-3)


@pytest.mark.parametrize("kind, says", [("non-normalizing", "not normalised"), ("prompted", "query prompt 'query: '")])
def test_adapter_trained_on_other_vectors_is_refused(host_models, kind, says, tmp_path):
    path = host_models[kind]
    # embtune's evaluation default: unit length and the model's prompts, unlike the host.
    save_adapter_for(encoder_from_spec(path), tmp_path / "adapter")
    with pytest.raises(InputError) as error:
        EmbtuneEmbeddings(path, adapter=tmp_path / "adapter")
    message = str(error.value)
    assert "\n" not in message and says in message and "--host-vectors" in message
    # The same adapter fits embeddings that compute vectors its way (an index built that way).
    EmbtuneEmbeddings(path, adapter=tmp_path / "adapter", normalize=True, prompts=True)


def test_adapter_from_evaluation_vectors_fits_a_model_that_normalises_itself(host_models, tmp_path):
    # MiniLM and mpnet end in Normalize and have no prompts: an adapter trained with embtune's
    # defaults (normalize=True, prompts=True) saw exactly the host's vectors, so it loads.
    path = host_models["normalizing"]
    save_adapter_for(encoder_from_spec(path), tmp_path / "adapter")
    adapted = EmbtuneEmbeddings(path, adapter=tmp_path / "adapter")
    np.testing.assert_allclose(adapted.embed_documents(TEXTS), docsgpt_vectors(path, TEXTS), atol=1e-6)


@pytest.mark.parametrize("kind, loads", [("normalizing", True), ("non-normalizing", False)])
def test_adapters_saved_before_the_convention_was_recorded(host_models, kind, loads, tmp_path):
    """Older configs have only the identity; the convention is derived from its settings."""
    path = host_models[kind]
    save_adapter_for(encoder_from_spec(path), tmp_path / "adapter")
    config_path = tmp_path / "adapter" / "adapter_config.json"
    config = json.loads(config_path.read_text())
    for key in ("prompts", "convention"):
        del config["base_encoder"][key]
    config_path.write_text(json.dumps(config))
    if loads:
        assert EmbtuneEmbeddings(path, adapter=tmp_path / "adapter").has_adapter
    else:
        with pytest.raises(InputError, match="not normalised"):
            EmbtuneEmbeddings(path, adapter=tmp_path / "adapter")


def test_training_on_host_vectors_records_the_convention_and_loads(host_models, tmp_path):
    path = host_models["prompted"]
    corpus = {f"c{i}": text for i, text in enumerate(TEXTS)}
    train = QADataset(queries={f"q{i}": f"Which sentence is about {text.split()[1]}?" for i, text in enumerate(TEXTS)},
                      corpus=corpus, relevant_docs={f"q{i}": [f"c{i}"] for i in range(len(TEXTS))})
    val = QADataset(queries={f"v{i}": text[:30] for i, text in enumerate(TEXTS)}, corpus=corpus,
                    relevant_docs={f"v{i}": [f"c{i}"] for i in range(len(TEXTS))})
    encoder = encoder_from_spec(path, normalize=False, prompts=False)
    train_adapter(encoder, train, val, config=AdapterTrainingConfig(epochs=1, batch_size=2),
                  output_dir=tmp_path / "adapter")
    base = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["base_encoder"]
    assert base["prompts"] is False and base["normalize"] is False
    assert base["convention"] == {"unit_length": True, "query_prompt": "", "document_prompt": ""}
    adapted = EmbtuneEmbeddings(path, adapter=tmp_path / "adapter")
    np.testing.assert_allclose(adapted.embed_documents(TEXTS), docsgpt_vectors(path, TEXTS), atol=1e-6)
    # Trained on the host's vectors, the adapter does not fit embtune's prompted ones.
    with pytest.raises(InputError, match="query prompt 'query: '"):
        EmbtuneEmbeddings(path, adapter=tmp_path / "adapter", prompts=True)


def test_train_adapter_command_with_host_vectors(host_models, tmp_path, capsys):
    from embtune_core.cli import main

    path = host_models["non-normalizing"]
    corpus = {f"c{i}": text for i, text in enumerate(TEXTS)}
    data = {"queries": {f"q{i}": f"Which sentence mentions {text.split()[1]}?" for i, text in enumerate(TEXTS)},
            "corpus": corpus, "relevant_docs": {f"q{i}": [f"c{i}"] for i in range(len(TEXTS))}, "mode": "text"}
    val = {**data, "queries": {f"v{i}": text[:25] for i, text in enumerate(TEXTS)},
           "relevant_docs": {f"v{i}": [f"c{i}"] for i in range(len(TEXTS))}}
    (tmp_path / "train.json").write_text(json.dumps(data))
    (tmp_path / "val.json").write_text(json.dumps(val))
    code = main(["train-adapter", "--model", path, "--host-vectors", "--train", str(tmp_path / "train.json"),
                 "--val", str(tmp_path / "val.json"), "--epochs", "1", "--batch-size", "2",
                 "--out", str(tmp_path / "adapter")])
    assert code == 0, capsys.readouterr().err
    base = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["base_encoder"]
    assert base["normalize"] is False and base["prompts"] is False and base["convention"]["unit_length"] is False
    adapted = EmbtuneEmbeddings(path, adapter=tmp_path / "adapter")
    np.testing.assert_allclose(adapted.embed_documents(TEXTS), docsgpt_vectors(path, TEXTS), atol=1e-6)
    # Only local sentence-transformers models compute vectors the hosts' way.
    assert main(["train-adapter", "--encoder", "openai:text-embedding-3-small@http://127.0.0.1:9/v1",
                 "--host-vectors", "--train", str(tmp_path / "train.json"), "--out", str(tmp_path / "x")]) == 2
    assert "--host-vectors" in capsys.readouterr().err
