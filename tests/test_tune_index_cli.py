"""`embtune tune-index`: from a dataset, and from an existing store (embtune's, or LangChain's/DocsGPT's
index.faiss + index.pkl) with no re-embedding; the tuned index evaluates with `+index:` and loads in LangChain."""

from __future__ import annotations

import numpy as np
import pytest

from embtune_core.cli import main


@pytest.fixture()
def dataset_file(tmp_path):
    from test_evaluation import small_dataset

    path = tmp_path / "ds.json"
    small_dataset().save(path)
    return path


def test_tune_index_from_a_dataset_then_evaluate(tmp_path, dataset_file, tiny_model_dir, capsys):
    out = tmp_path / "tuned"
    assert main(["tune-index", "--train", str(dataset_file), "--encoder", f"st:{tiny_model_dir}", "--out", str(out),
                 "--gammas", "0.1,0.3", "--pseudo-queries", "ict=1,crop=1", "--seed", "3"]) == 0
    assert (out / "index_tuning.json").is_file() and (out / "deltas.safetensors").is_file()
    printed = capsys.readouterr().out
    assert "index tuning ->" in printed
    assert main(["evaluate", str(dataset_file), "--system", f"base=model:{tiny_model_dir}",
                 "--system", f"tuned=model:{tiny_model_dir}+index:{out}", "--out", str(tmp_path / "report")]) == 0
    # another encoder is refused in one line naming the folder
    other = f"tuned=model:sentence-transformers/all-MiniLM-L6-v2+index:{out}"
    assert main(["evaluate", str(dataset_file), "--system", other, "--out", str(tmp_path / "r2")]) == 3
    assert "tuned over vectors of" in capsys.readouterr().err


def test_tune_index_refuses_bad_settings_in_one_line(tmp_path, dataset_file, capsys):
    assert main(["tune-index", "--train", str(dataset_file), "--out", str(tmp_path / "x"), "--dev-fraction", "1.5"]) == 2
    assert "--dev-fraction" in capsys.readouterr().err
    assert main(["tune-index", "--train", str(dataset_file), "--out", str(tmp_path / "x"), "--tuner", "nosuch"]) == 4


def test_tune_an_existing_store_without_re_embedding(tmp_path, dataset_file, tiny_model_dir, capsys):
    pytest.importorskip("langchain_community")
    import faiss
    from langchain_community.vectorstores import FAISS

    from embtune_core.data.dataset import QADataset
    from embtune_integrations.faiss_store import build_faiss_store, load_faiss_store, save_faiss_store
    from embtune_integrations.langchain import EmbtuneEmbeddings

    dataset = QADataset.load(dataset_file)
    embeddings = EmbtuneEmbeddings(tiny_model_dir)
    store = build_faiss_store(list(dataset.corpus.values()), embeddings, ids=list(dataset.corpus), use_gpu=False)
    save_faiss_store(store, tmp_path / "ours")
    before = faiss.read_index(str(tmp_path / "ours" / "index.faiss")).reconstruct_n(0, len(dataset.corpus))
    assert main(["tune-index", "--store", str(tmp_path / "ours"), "--encoder", tiny_model_dir, "--train",
                 str(dataset_file), "--gammas", "0.3", "--out", str(tmp_path / "t1")]) == 0
    tuned = load_faiss_store(tmp_path / "t1" / "store", embeddings)
    after = tuned.index.reconstruct_n(0, len(dataset.corpus))
    moved = np.abs(after - before).max(axis=1) > 1e-6
    np.testing.assert_allclose(np.linalg.norm(after, axis=1), np.linalg.norm(before, axis=1), rtol=1e-5)
    assert moved.any() or "0 of" in capsys.readouterr().out

    # LangChain's pickle format (what DocsGPT writes): only with the opt-in; index.pkl is copied as is
    FAISS.from_texts(list(dataset.corpus.values()), embeddings, ids=list(dataset.corpus)).save_local(str(tmp_path / "lc"))
    assert main(["tune-index", "--store", str(tmp_path / "lc"), "--encoder", tiny_model_dir,
                 "--out", str(tmp_path / "t2")]) == 3
    assert "allow_dangerous_deserialization" in capsys.readouterr().err
    assert main(["tune-index", "--store", str(tmp_path / "lc"), "--encoder", tiny_model_dir, "--gammas", "0.3",
                 "--allow-dangerous-deserialization", "--out", str(tmp_path / "t2")]) == 0
    assert (tmp_path / "t2" / "store" / "index.pkl").read_bytes() == (tmp_path / "lc" / "index.pkl").read_bytes()
    loaded = FAISS.load_local(str(tmp_path / "t2" / "store"), embeddings, allow_dangerous_deserialization=True)
    assert loaded.index.ntotal == len(dataset.corpus)


class _MoveAllBut:
    """A stand-in TunedIndex that moves every document's vector except the last (keeps its norm)."""

    def apply(self, ids, texts, vectors):
        new = vectors.copy()
        new[:-1] = np.roll(vectors[:-1], 1, axis=1)
        new[:-1] *= (np.linalg.norm(vectors[:-1], axis=1) / np.linalg.norm(new[:-1], axis=1))[:, None]
        return new, len(ids) - 1


def test_a_tuned_store_passes_the_load_time_identity_check(tmp_path, dataset_file, tiny_model_dir):
    """The identity check on load re-embeds a stored document: it must pick one the tuning did not move, in
    embtune's format and beside a LangChain pickle store (the sidecar), and still refuse other embeddings."""
    pytest.importorskip("langchain_community")
    from langchain_community.vectorstores import FAISS

    from embtune_core.data.dataset import QADataset
    from embtune_core.errors import InputError
    from embtune_integrations.faiss_store import build_faiss_store, load_faiss_store, save_faiss_store
    from embtune_integrations.langchain import EmbtuneEmbeddings
    from embtune_integrations.tuned_index import store_corpus, tune_faiss_store, write_tuned_index_file

    dataset = QADataset.load(dataset_file)
    embeddings = EmbtuneEmbeddings(tiny_model_dir)
    store = build_faiss_store(list(dataset.corpus.values()), embeddings, ids=list(dataset.corpus), use_gpu=False)
    assert tune_faiss_store(store, _MoveAllBut()) == len(dataset.corpus) - 1
    save_faiss_store(store, tmp_path / "ours")
    assert load_faiss_store(tmp_path / "ours", embeddings).index.ntotal == len(dataset.corpus)

    lc = tmp_path / "lc"
    FAISS.from_texts(list(dataset.corpus.values()), embeddings, ids=list(dataset.corpus)).save_local(str(lc))
    ids, texts, _ = store_corpus(FAISS.load_local(str(lc), embeddings, allow_dangerous_deserialization=True))
    write_tuned_index_file(lc, _MoveAllBut(), tmp_path / "lc-tuned", ids=ids, texts=texts)
    assert load_faiss_store(tmp_path / "lc-tuned", embeddings, allow_dangerous_deserialization=True)
    # without the sidecar the first (moved) document fails the check: the sidecar is what makes it pass
    (tmp_path / "lc-tuned" / "index.embtune-tuned.json").unlink()
    with pytest.raises(InputError):
        load_faiss_store(tmp_path / "lc-tuned", embeddings, allow_dangerous_deserialization=True)
