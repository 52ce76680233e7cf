"""Artefacts embtune writes for another machine load after being moved, zipped and unzipped, pushed, or read
by another interpreter in another folder (issue 27, "portable artefacts").

Each artefact is made here, its original folder is then removed (nothing may point back to it), and it is
loaded from its new place: a fine-tuned model folder and its zip, a query adapter with its base model, a
LoRA adapter folder on a packaged base (another venv has the package elsewhere), an embtune vector store,
an ONNX export, and what an upload to the hub carries.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest
from test_integration_langchain import TEXTS

from embtune_core.cli import main
from embtune_integrations.langchain import EmbtuneEmbeddings

QUESTION = "Where is the Great Barrier Reef?"


def _move(source, target):
    shutil.copytree(source, target)
    shutil.rmtree(source)
    return target


@pytest.fixture(scope="module")
def qa_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("portable-data")
    corpus = {f"c{i}": t for i, t in enumerate(TEXTS)}
    data = {"queries": {f"q{i}": f"Tell me: {t[:30]}" for i, t in enumerate(TEXTS)}, "corpus": corpus,
            "relevant_docs": {f"q{i}": [f"c{i}"] for i in range(len(TEXTS))}, "mode": "text",
            "corpus_metadata": {f"c{i}": {"source": f"s{i}"} for i in range(len(TEXTS))}}
    (folder / "qa.json").write_text(json.dumps(data))
    return folder / "qa.json"


@pytest.fixture(scope="module")
def trained(tiny_model_dir, qa_file, tmp_path_factory):
    """A fine-tuned model folder and a query adapter trained on it, with their vectors before moving."""
    root = tmp_path_factory.mktemp("portable")
    model, adapter = root / "model", root / "adapter"
    assert main(["train", "--train", str(qa_file), "--model", tiny_model_dir, "--max-steps", "2",
                 "--out", str(model)]) == 0
    assert main(["train-adapter", "--model", str(model), "--host-vectors", "--train", str(qa_file),
                 "--epochs", "2", "--out", str(adapter)]) == 0
    plain = EmbtuneEmbeddings(str(model))
    adapted = EmbtuneEmbeddings(str(model), adapter=str(adapter))
    return {"root": root, "model": model, "adapter": adapter, "documents": np.asarray(plain.embed_documents(TEXTS)),
            "query": np.asarray(adapted.embed_query(QUESTION)), "identity": adapted.identity,
            "document_identity": plain.identity}


def test_model_zip_unzipped_elsewhere_loads_in_a_fresh_interpreter(trained, tmp_path):
    archive = tmp_path / "model.zip"
    assert main(["export", str(trained["model"]), "--out", str(archive)]) == 0
    with zipfile.ZipFile(archive) as handle:
        handle.extractall(tmp_path / "elsewhere")
    folder = tmp_path / "elsewhere" / "model"
    script = textwrap.dedent(f"""
        import json, numpy as np
        from sentence_transformers import SentenceTransformer
        from embtune_integrations.langchain import EmbtuneEmbeddings
        e = EmbtuneEmbeddings({str(folder)!r})
        st = SentenceTransformer({str(folder)!r}).encode({TEXTS!r})
        print(json.dumps({{"ours": e.embed_documents({TEXTS!r}), "st": st.tolist(), "identity": e.identity}}))
    """)
    run = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=180,
                         check=False, env={**os.environ, "EMBTUNE_CACHE": str(tmp_path / "other-cache")})
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(out["ours"], trained["documents"], atol=1e-5)
    np.testing.assert_allclose(out["st"], trained["documents"], atol=1e-5)
    # Named by content, not by path: stores and adapters recorded against the original still match.
    assert out["identity"] == trained["document_identity"]


def test_adapter_and_base_moved_together_load_and_serve(trained, tmp_path, monkeypatch):
    from embtune_core.errors import InputError
    from embtune_integrations import docsgpt
    from embtune_integrations.faiss_store import build_faiss_store, load_faiss_store, save_faiss_store

    store_dir = tmp_path / "store"
    save_faiss_store(build_faiss_store(TEXTS, EmbtuneEmbeddings(str(trained["model"]))), store_dir)
    moved = tmp_path / "moved"
    model = _move(trained["model"], moved / "base")
    adapter = _move(trained["adapter"], moved / "adapter")
    store = _move(store_dir, moved / "store")
    try:
        adapted = EmbtuneEmbeddings(str(model), adapter=str(adapter))
        assert adapted.identity == trained["identity"]
        np.testing.assert_allclose(adapted.embed_query(QUESTION), trained["query"], atol=1e-6)
        loaded = load_faiss_store(store, adapted)  # identity and the stored vectors are checked: both fit
        assert loaded.similarity_search(TEXTS[2], k=1)[0].page_content in TEXTS
        # DocsGPT: the recorded base path is gone, said in one line; the setting points at the moved copy.
        monkeypatch.delenv(docsgpt.BASE_MODEL_ENV, raising=False)
        monkeypatch.chdir(tmp_path)
        with pytest.raises(InputError, match="not found; mount it"):
            docsgpt.embeddings_from_name(f"embtune:{adapter}")
        monkeypatch.setenv(docsgpt.BASE_MODEL_ENV, str(model))
        shim = docsgpt.embeddings_from_name(f"embtune:{adapter}")
        np.testing.assert_allclose(shim.embed_query(QUESTION), trained["query"], atol=1e-6)
    finally:  # the module's other tests read the original places
        _move(model, trained["model"])
        _move(adapter, trained["adapter"])


def test_lora_folder_names_a_packaged_base_by_name(tiny_model_dir, qa_file, tmp_path, monkeypatch):
    """A LoRA adapter folder on a packaged model recorded the packaged copy's path inside this venv's
    site-packages; another venv has it elsewhere. It records the name, which resolves wherever installed."""
    pytest.importorskip("peft")
    from embtune_core.encoders import model_names

    packaged = tmp_path / "venv-a" / "site-packages" / "tiny"
    shutil.copytree(tiny_model_dir, packaged)
    table = {**model_names._PACKAGED, "acme/tiny-packaged": ("package acme-tiny", lambda: packaged)}
    monkeypatch.setattr(model_names, "_PACKAGED", table)
    out = tmp_path / "lora"
    assert main(["train", "--train", str(qa_file), "--model", "acme/tiny-packaged", "--max-steps", "1", "--lora",
                 "--out", str(out)]) == 0
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "acme/tiny-packaged"
    before = EmbtuneEmbeddings(str(out)).embed_documents(TEXTS[:2])
    # "Another venv": the package installed somewhere else, the LoRA folder moved too.
    elsewhere = _move(packaged, tmp_path / "venv-b" / "site-packages" / "tiny")
    monkeypatch.setattr(model_names, "_PACKAGED", {**table, "acme/tiny-packaged": ("package acme-tiny", lambda: elsewhere)})
    moved = _move(out, tmp_path / "moved-lora")
    np.testing.assert_allclose(EmbtuneEmbeddings(str(moved)).embed_documents(TEXTS[:2]), before, atol=1e-6)


def test_onnx_export_moved_loads_with_the_onnx_backend(trained, tmp_path):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "onnx"
    assert main(["export", str(trained["model"]), "--format", "onnx", "--out", str(out)]) == 0
    moved = _move(out, tmp_path / "elsewhere" / "onnx")
    vectors = EmbtuneEmbeddings(str(moved), backend="onnx-fp32").embed_documents(TEXTS)
    cosine = (np.asarray(vectors) * trained["documents"]).sum(1)
    assert cosine.min() > 0.9999


def test_what_a_hub_upload_carries_loads_as_the_folder(trained, tmp_path, monkeypatch):
    """The files an upload commits (huggingface_hub's own upload against a local fake hub) rebuild a folder
    that loads to the same vectors: nothing in them points at the machine that pushed them."""
    import base64

    from test_onnx_hub import FakeHub

    from embtune_core.publishing.hub import push_folder

    server = ThreadingHub.start(monkeypatch)
    try:
        push_folder(trained["model"], "me/portable", endpoint=server.url)
    finally:
        server.shutdown()
    commit = next(entry for entry in FakeHub.log if "/commit/" in entry[0])
    lines = [json.loads(line) for line in commit[2].decode().splitlines() if line.strip()]
    downloaded = tmp_path / "downloaded"
    for line in lines:
        if line.get("key") == "file":
            path = downloaded / line["value"]["path"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(base64.b64decode(line["value"]["content"]))
    away = _move(trained["model"], tmp_path / "away")  # the pusher's folder is not there to lean on
    try:
        np.testing.assert_allclose(EmbtuneEmbeddings(str(downloaded)).embed_documents(TEXTS), trained["documents"],
                                   atol=1e-5)
    finally:
        _move(away, trained["model"])


class ThreadingHub:
    """test_onnx_hub's fake hub, started here (its fixture is function-scoped and needs monkeypatch)."""

    @staticmethod
    def start(monkeypatch):
        import threading
        from http.server import ThreadingHTTPServer

        from test_onnx_hub import FakeHub

        FakeHub.log = []
        server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
        server.url = f"http://127.0.0.1:{server.server_address[1]}"
        threading.Thread(target=server.serve_forever, daemon=True).start()
        monkeypatch.setenv("HF_TOKEN", "hf_fake_token_for_tests")
        from huggingface_hub import constants

        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        return server
