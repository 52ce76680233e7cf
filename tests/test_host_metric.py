"""Adapters in the metric of the host's index (issue 27, fault 2).

DocsGPT's FaissStore and LangChain's ``FAISS.from_documents`` build an L2 index (``IndexFlatL2``) over the
raw ``encode()`` vectors of ``HuggingFaceEmbeddings`` / DocsGPT's wrapper. The index here is built exactly that
way, for the three bases of conftest's ``host_models`` (normalising, non-normalising, prompted), and searched
through embtune's DocsGPT shim. An adapter must never rank below the base there: trained and selected in L2
(``--host-vectors``), its epoch 0 is the base model in the index's own metric; trained for the inner product
over vectors that are not unit length, it is refused in one line with the way out.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from embtune_core.adapters.adapter_training import AdapterTrainingConfig, train_adapter
from embtune_core.data.dataset import QADataset
from embtune_core.encoders.encoding import encoder_from_spec
from embtune_core.errors import ConfigError, InputError
from embtune_integrations import docsgpt

KINDS = ("normalizing", "non-normalizing", "prompted")
TOPICS = ["volcano", "glacier", "desert", "reef", "forest", "tundra", "canyon", "delta", "prairie", "marsh",
          "lagoon", "savanna"]


def _data():
    corpus, meta = {}, {}
    for t in TOPICS:
        for j in range(3):
            corpus[f"{t}-{j}"] = f"The {t} number {j} has feature {t}{j} that visitors of the {t} remember."
            meta[f"{t}-{j}"] = {"source": t}
    train = QADataset(queries={f"q-{c}": f"Which {c.split('-')[0]} has feature {c.replace('-', '')}?" for c in corpus},
                      corpus=corpus, relevant_docs={f"q-{c}": [c] for c in corpus}, extras={"corpus_metadata": meta})
    val = QADataset(queries={f"v-{c}": f"{c.replace('-', ' ')} visitors" for c in corpus}, corpus=corpus,
                    relevant_docs={f"v-{c}": [c] for c in corpus}, extras={"corpus_metadata": meta})
    return train, val


def _docsgpt_index(path: str, corpus: dict[str, str]):
    """An index as DocsGPT builds it: FAISS.from_documents with HuggingFaceEmbeddings (L2, raw vectors)."""
    from langchain_community.vectorstores import FAISS
    from langchain_core.documents import Document
    from langchain_huggingface import HuggingFaceEmbeddings

    docs = [Document(page_content=text, metadata={"id": cid}) for cid, text in corpus.items()]
    return FAISS.from_documents(docs, HuggingFaceEmbeddings(model_name=path))


def _hit_at_1(store, embeddings, dataset: QADataset) -> np.ndarray:
    """Per question: the store's first hit for ``embeddings``' query vector is relevant (1) or not (0)."""
    hits = []
    for qid, text in dataset.queries.items():
        best = store.similarity_search_by_vector(embeddings.embed_query(text), k=1)[0]
        hits.append(int(best.metadata["id"] in dataset.relevant_docs[qid]))
    return np.asarray(hits)


@pytest.mark.parametrize("kind", KINDS)
def test_adapter_in_l2_never_ranks_below_the_base_in_docsgpts_index(host_models, kind, tmp_path, monkeypatch):
    from langchain_huggingface import HuggingFaceEmbeddings

    path = host_models[kind]
    train, val = _data()
    result = train_adapter(encoder_from_spec(path, normalize=False, prompts=False), train, val,
                           config=AdapterTrainingConfig(index_metric="l2", epochs=4, batch_size=8, lr=5e-3),
                           output_dir=tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["index_metric"] == "l2" and config["normalize_output"] == (kind != "non-normalizing")

    store = _docsgpt_index(path, val.corpus)
    base = _hit_at_1(store, HuggingFaceEmbeddings(model_name=path), val)
    # Epoch 0 of training is the base model in the index's own metric: the same hits, question by question.
    assert result.baseline["hit_rate@1"] == pytest.approx(base.mean())
    monkeypatch.delenv(docsgpt.BASE_MODEL_ENV, raising=False)
    adapted = _hit_at_1(store, docsgpt.embeddings_from_name(f"embtune:{tmp_path / 'adapter'}", base_model=path), val)
    assert result.best["hit_rate@1"] == pytest.approx(adapted.mean())  # selected on what DocsGPT will see
    assert adapted.mean() >= base.mean()


def test_inner_product_adapter_on_raw_vectors_is_refused_with_the_way_out(host_models, tmp_path, monkeypatch):
    """The reported failure: an adapter trained by inner product with unit-length output, on a base whose
    vectors are not unit length, ranked by document length in DocsGPT's L2 index (hit@1 0.542 -> 0.208)."""
    path = host_models["non-normalizing"]
    train, val = _data()
    train_adapter(encoder_from_spec(path, normalize=False, prompts=False), train, val,
                  config=AdapterTrainingConfig(index_metric="inner_product", epochs=1), output_dir=tmp_path / "ip")
    monkeypatch.delenv(docsgpt.BASE_MODEL_ENV, raising=False)
    monkeypatch.delenv(docsgpt.VECTOR_STORE_ENV, raising=False)
    with pytest.raises(InputError) as error:
        docsgpt.embeddings_from_name(f"embtune:{tmp_path / 'ip'}", base_model=path)
    message = str(error.value)
    assert "\n" not in message and "inner product" in message and "L2 distance" in message
    assert "--host-vectors" in message and "FaissStore" in message

    # embtune's own store: built by default in the adapter's metric; an L2 store refuses it.
    from embtune_integrations.faiss_store import build_faiss_store
    from embtune_integrations.langchain import EmbtuneEmbeddings

    adapted = EmbtuneEmbeddings(path, adapter=tmp_path / "ip")
    assert build_faiss_store(list(val.corpus.values()), adapted).distance_strategy.value == "MAX_INNER_PRODUCT"
    with pytest.raises(InputError, match="ranks by L2 distance"):
        build_faiss_store(list(val.corpus.values()), adapted, distance_strategy="euclidean")
    # On unit vectors both metrics rank alike: nothing to refuse.
    unit_path = host_models["normalizing"]
    train_adapter(encoder_from_spec(unit_path, normalize=False, prompts=False), train, val,
                  config=AdapterTrainingConfig(epochs=1), output_dir=tmp_path / "unit")
    docsgpt.embeddings_from_name(f"embtune:{tmp_path / 'unit'}", base_model=unit_path)


def test_l2_training_on_unit_vectors_is_the_inner_product_training_bit_for_bit(host_models, tmp_path):
    path = host_models["normalizing"]
    train, val = _data()
    weights = []
    for metric in ("inner_product", "l2"):
        result = train_adapter(encoder_from_spec(path, normalize=False, prompts=False), train, val,
                               config=AdapterTrainingConfig(index_metric=metric, epochs=2, batch_size=8))
        weights.append({k: v.clone() for k, v in result.adapter.module.state_dict().items()})
    assert all(bool((weights[0][k] == weights[1][k]).all()) for k in weights[0])


def test_unit_length_output_in_l2_over_raw_vectors_is_refused(host_models):
    train, val = _data()
    encoder = encoder_from_spec(host_models["non-normalizing"], normalize=False, prompts=False)
    for options, field in (({"normalize_output": True}, "normalize_output"), ({"matryoshka_dims": [16]},
                                                                                "matryoshka_dims")):
        with pytest.raises(ConfigError) as error:
            train_adapter(encoder, train, val, config=AdapterTrainingConfig(index_metric="l2", epochs=1, **options))
        assert f"adapter.{field}" in str(error.value) and "\n" not in str(error.value)


def test_cli_host_vectors_trains_for_l2_and_check_compares_the_index(host_models, tmp_path, capsys, monkeypatch):
    import faiss

    from embtune_core.cli import main

    path = host_models["non-normalizing"]
    train, val = _data()
    for name, data in (("train", train), ("val", val)):
        data.save(tmp_path / f"{name}.json")
    args = ["train-adapter", "--model", path, "--host-vectors", "--train", str(tmp_path / "train.json"),
            "--val", str(tmp_path / "val.json"), "--epochs", "1"]
    assert main([*args, "--out", str(tmp_path / "l2")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["index_metric"] == "l2" and summary["normalize_output"] is False
    assert main([*args, "--index-metric", "inner_product", "--out", str(tmp_path / "ip")]) == 0
    capsys.readouterr()
    # DocsGPT's index folder: check reads index.faiss (its metric and vectors), never index.pkl.
    store = _docsgpt_index(path, val.corpus)
    (tmp_path / "indexes" / "source").mkdir(parents=True)
    faiss.write_index(store.index, str(tmp_path / "indexes" / "source" / "index.faiss"))
    monkeypatch.setenv(docsgpt.BASE_MODEL_ENV, path)
    assert docsgpt.main(["check", f"embtune:{tmp_path / 'l2'}", "--index", str(tmp_path / "indexes")]) == 0
    capsys.readouterr()
    assert docsgpt.main(["check", f"embtune:{tmp_path / 'ip'}", "--index", str(tmp_path / "indexes")]) == 3
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--host-vectors" in errors[0]
