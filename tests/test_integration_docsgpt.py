"""DocsGPT shim: DocsGPT's call pattern against a stand-in of its ``application/vectorstore/base.py``.

DocsGPT is not a package, so the stand-in below mirrors its code: ``EmbeddingsSingleton`` caches
one instance per name, ``_create_instance`` maps a few known names and falls through to a
SentenceTransformer wrapper for any other; ingestion calls ``embed_documents(list)``, search
``embed_query(str)``, and the index is sized with ``dimension``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import types

import faiss
import numpy as np
import pytest
import torch

from embtune_core.adapters.adapter_io import AdapterConfig, build_adapter, save_adapter
from embtune_core.errors import InputError
from embtune_integrations import docsgpt
from embtune_integrations.langchain import EmbtuneEmbeddings

STANDIN = textwrap.dedent('''
    """Stand-in for DocsGPT's application/vectorstore/base.py (embeddings part)."""


    class EmbeddingsWrapper:
        def __init__(self, model_name, *args, **kwargs):
            from sentence_transformers import SentenceTransformer

            self.model = SentenceTransformer(model_name, *args, **kwargs)
            get_dimension = getattr(self.model, "get_embedding_dimension", None) or \
                self.model.get_sentence_embedding_dimension
            self.dimension = get_dimension()

        def embed_query(self, query: str):
            return self.model.encode(query).tolist()

        def embed_documents(self, documents: list):
            return self.model.encode(documents).tolist()


    class EmbeddingsSingleton:
        _instances = {}

        @staticmethod
        def get_instance(embeddings_name, *args, **kwargs):
            if embeddings_name not in EmbeddingsSingleton._instances:
                EmbeddingsSingleton._instances[embeddings_name] = EmbeddingsSingleton._create_instance(
                    embeddings_name, *args, **kwargs
                )
            return EmbeddingsSingleton._instances[embeddings_name]

        @staticmethod
        def _create_instance(embeddings_name, *args, **kwargs):
            embeddings_factory = {
                "huggingface_sentence-transformers/all-mpnet-base-v2":
                    lambda: EmbeddingsWrapper("sentence-transformers/all-mpnet-base-v2"),
            }
            if embeddings_name in embeddings_factory:
                return embeddings_factory[embeddings_name](*args, **kwargs)
            return EmbeddingsWrapper(embeddings_name, *args, **kwargs)
''')

TEXTS = [
    "Uber's revenue grew 57% in 2021 to 17.5 billion dollars.",
    "The mitochondria is the powerhouse of the cell.",
    "Paris is the capital and largest city of France.",
    "FAISS performs efficient similarity search over dense vectors.",
]


def ingest(base_module, name, texts):
    """What DocsGPT's worker does: look up the singleton, embed_documents, size the index by dimension."""
    embeddings = base_module.EmbeddingsSingleton.get_instance(name)
    index = faiss.IndexFlatIP(embeddings.dimension)
    index.add(np.asarray(embeddings.embed_documents(list(texts)), dtype=np.float32))
    return index


def search(base_module, name, index, question, k=2):
    """What DocsGPT's web process does: the same singleton, embed_query, search."""
    embeddings = base_module.EmbeddingsSingleton.get_instance(name)
    vector = np.asarray([embeddings.embed_query(question)], dtype=np.float32)
    return index.search(vector, k)


@pytest.fixture(scope="module")
def base(tiny_model_dir):
    return EmbtuneEmbeddings(tiny_model_dir)


@pytest.fixture(scope="module")
def adapter_dir(base, tmp_path_factory):
    torch.manual_seed(1)
    module = build_adapter("linear", base.dimension, {"bias": True})
    with torch.no_grad():
        module.linear.weight.add_(0.5 * torch.randn_like(module.linear.weight))
    directory = tmp_path_factory.mktemp("docsgpt-adapter") / "adapter"
    save_adapter(directory, module, AdapterConfig("linear", base.dimension, {"bias": True},
                                                  base_encoder_identity=base.identity, base_normalize=True))
    return directory


@pytest.fixture
def fake_docsgpt(monkeypatch, tmp_path):
    """The stand-in installed as ``application.vectorstore.base``; the patch is undone afterwards."""
    source = tmp_path / "base.py"
    source.write_text(STANDIN)
    spec = importlib.util.spec_from_file_location("application.vectorstore.base", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name in ("application", "application.vectorstore"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "application.vectorstore.base", module)
    yield module
    docsgpt.unregister()


def test_docsgpt_call_pattern_with_base_model_and_adapter(fake_docsgpt, base, adapter_dir, tiny_model_dir):
    docsgpt.register(base_model=tiny_model_dir)
    name = f"embtune:{adapter_dir}"

    index = ingest(fake_docsgpt, name, TEXTS)
    embeddings = fake_docsgpt.EmbeddingsSingleton.get_instance(name)
    assert isinstance(embeddings, EmbtuneEmbeddings) and embeddings.has_adapter
    assert fake_docsgpt.EmbeddingsSingleton.get_instance(name) is embeddings  # one instance per process
    assert index.d == embeddings.dimension == 32
    # Ingestion stored the base model's document vectors...
    stored = index.reconstruct_n(0, index.ntotal)
    np.testing.assert_allclose(stored, np.array(base.embed_documents(TEXTS)), atol=1e-6)
    # ...and search used the adapted query.
    scores, _ = search(fake_docsgpt, name, index, TEXTS[2], k=4)
    adapted_query = np.array(embeddings.embed_query(TEXTS[2]))
    assert not np.allclose(adapted_query, base.embed_query(TEXTS[2]), atol=1e-3)
    np.testing.assert_allclose(np.sort(scores[0]), np.sort(stored @ adapted_query), atol=1e-5)
    assert embeddings(TEXTS[0]) == embeddings.embed_query(TEXTS[0])  # DocsGPT's wrappers are callable too


def test_fine_tuned_model_directory_needs_no_shim(fake_docsgpt, base, tiny_model_dir):
    # EMBEDDINGS_NAME=<model dir> falls through to DocsGPT's SentenceTransformer wrapper, patched or not.
    docsgpt.register()
    index = ingest(fake_docsgpt, tiny_model_dir, TEXTS)
    embeddings = fake_docsgpt.EmbeddingsSingleton.get_instance(tiny_model_dir)
    assert type(embeddings).__name__ == "EmbeddingsWrapper" and embeddings.dimension == 32 == index.d
    _, ids = search(fake_docsgpt, tiny_model_dir, index, TEXTS[1], k=1)
    assert ids[0][0] == 1
    # the same model folder through the embtune: prefix gives the same vectors
    ours = fake_docsgpt.EmbeddingsSingleton.get_instance(f"embtune:{tiny_model_dir}")
    np.testing.assert_allclose(ours.embed_documents(TEXTS), index.reconstruct_n(0, 4), atol=1e-5)


def test_register_is_idempotent_and_unregister_restores(fake_docsgpt):
    original = fake_docsgpt.EmbeddingsSingleton._create_instance
    docsgpt.register()
    docsgpt.register()
    patched = fake_docsgpt.EmbeddingsSingleton._create_instance
    assert patched is not original and patched._embtune_original is original
    docsgpt.unregister()
    assert fake_docsgpt.EmbeddingsSingleton._create_instance is original


def test_bad_names_give_one_line_errors(adapter_dir, tmp_path, monkeypatch):
    monkeypatch.delenv(docsgpt.BASE_MODEL_ENV, raising=False)
    with pytest.raises(InputError, match=docsgpt.BASE_MODEL_ENV):
        docsgpt.embeddings_from_name(f"embtune:{adapter_dir}")
    with pytest.raises(InputError, match="not a folder"):
        docsgpt.embeddings_from_name(f"embtune:{tmp_path / 'missing'}")
    with pytest.raises(InputError, match="neither"):
        docsgpt.embeddings_from_name(f"embtune:{tmp_path}")


def test_pth_hook_patches_docsgpt_on_import_in_a_fresh_process(tmp_path, adapter_dir, tiny_model_dir):
    """Web and worker are separate interpreters: the .pth line must register the shim in each."""
    app = tmp_path / "app"
    (app / "application" / "vectorstore").mkdir(parents=True)
    (app / "application" / "__init__.py").write_text("")
    (app / "application" / "vectorstore" / "__init__.py").write_text("")
    (app / "application" / "vectorstore" / "base.py").write_text(STANDIN)
    site_dir = tmp_path / "site"
    pth = docsgpt.write_pth(site_dir)
    assert pth.name == docsgpt.PTH_NAME and pth.read_text().startswith("import ")
    script = textwrap.dedent(f"""
        import json, site, sys
        site.addsitedir({str(site_dir)!r})          # processes the .pth as at interpreter start-up
        sys.path.insert(0, {str(app)!r})
        hooked = "embtune_integrations.docsgpt" in sys.modules
        from application.vectorstore.base import EmbeddingsSingleton
        patched = hasattr(EmbeddingsSingleton._create_instance, "_embtune_original")
        print(json.dumps({{"hooked": hooked, "patched": patched, "torch_loaded": "torch" in sys.modules}}))
    """)
    env_off = {k: v for k, v in os.environ.items() if k != docsgpt.ENABLE_ENV}
    for env, enabled in ((env_off, False), ({**env_off, docsgpt.ENABLE_ENV: "1"}, True)):
        run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                             timeout=120, check=False)
        assert run.returncode == 0, run.stderr
        # Patched at import time when enabled; the hook itself loads nothing heavy (models load on first use).
        assert json.loads(run.stdout.strip().splitlines()[-1]) == {
            "hooked": enabled, "patched": enabled, "torch_loaded": False}


def test_base_model_from_the_environment(adapter_dir, tiny_model_dir, monkeypatch):
    monkeypatch.setenv(docsgpt.BASE_MODEL_ENV, tiny_model_dir)
    monkeypatch.setenv(docsgpt.BATCH_SIZE_ENV, "3")
    embeddings = docsgpt.embeddings_from_name(f"embtune:{adapter_dir}")
    assert embeddings.has_adapter and embeddings.batch_size == 3 and embeddings.dimension == 32


# --- issue 16: the host's vectors, and misconfigurations that read as one line each -------------------
@pytest.mark.parametrize("kind", ["normalizing", "non-normalizing", "prompted"])
def test_docsgpt_index_built_without_embtune_stays_valid_with_an_adapter(fake_docsgpt, host_models, kind, tmp_path):
    """DocsGPT ingested with its own wrapper; the adapter name must give the very same document vectors."""
    from embtune_core.encoders.encoding import encoder_from_spec

    path = host_models[kind]
    encoder = encoder_from_spec(path, normalize=False, prompts=False)  # what train-adapter --host-vectors uses
    torch.manual_seed(3)
    module = build_adapter("linear", encoder.dimension, {"bias": True})
    # As --host-vectors writes it (issue 27): ranked by L2, as DocsGPT's FaissStore; raw-scale queries where
    # the vectors are not unit length.
    save_adapter(tmp_path / "adapter", module, AdapterConfig(
        "linear", encoder.dimension, {"bias": True}, base_encoder_identity=encoder.identity, base_normalize=False,
        base_weights=encoder.weights_fingerprint, base_prompts=False, base_convention=encoder.convention,
        index_metric="l2", normalize_output=kind != "non-normalizing"))
    docsgpt.register(base_model=path)
    before = ingest(fake_docsgpt, path, TEXTS)  # DocsGPT's own EmbeddingsWrapper, no embtune involved
    after = ingest(fake_docsgpt, f"embtune:{tmp_path / 'adapter'}", TEXTS)
    np.testing.assert_allclose(after.reconstruct_n(0, 4), before.reconstruct_n(0, 4), atol=1e-6)


def test_missing_base_model_folder_says_so(adapter_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(docsgpt.BASE_MODEL_ENV, str(tmp_path / "not-mounted"))
    with pytest.raises(InputError) as error:
        docsgpt.embeddings_from_name(f"embtune:{adapter_dir}")
    message = str(error.value)
    assert "\n" not in message and message.startswith(docsgpt.BASE_MODEL_ENV)
    assert "not-mounted" in message and "not found" in message and "mount it" in message
    assert "trained on" in message  # the fix, not a wrong diagnosis: no "adapter was trained on encoder"
    assert "adapter was trained on encoder" not in message
    # A relative path would read as a hub name; the adapter was trained on a folder, so it is one too.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(docsgpt.BASE_MODEL_ENV, "models/base")
    with pytest.raises(InputError, match="base model folder 'models/base' .* not found"):
        docsgpt.embeddings_from_name(f"embtune:{adapter_dir}")


def test_plain_adapter_folder_as_embeddings_name_names_the_fix(fake_docsgpt, adapter_dir, capsys):
    docsgpt.register()
    with pytest.raises(InputError) as error:
        fake_docsgpt.EmbeddingsSingleton.get_instance(str(adapter_dir))
    message = str(error.value)
    assert "\n" not in message and f"EMBEDDINGS_NAME=embtune:{adapter_dir}" in message and "PEFT" in message
    assert docsgpt.main(["check", str(adapter_dir)]) == 3
    assert f"embtune:{adapter_dir}" in capsys.readouterr().err


def test_check_compares_an_existing_index(adapter_dir, tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(docsgpt.BASE_MODEL_ENV, tiny_model_dir)
    name = f"embtune:{adapter_dir}"
    indexes = tmp_path / "indexes"
    for source, width in (("source-a", 32), ("source-b", 16)):  # DocsGPT: one folder per source
        (indexes / source).mkdir(parents=True)
        faiss.write_index(faiss.IndexFlatL2(width), str(indexes / source / "index.faiss"))
    assert docsgpt.main(["check", name, "--index", str(indexes / "source-a")]) == 0
    assert "fit" in capsys.readouterr().out
    assert docsgpt.main(["check", name, "--index", str(indexes)]) == 3
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1  # (transformers' "Loading weights" bar shares stderr)
    err = errors[0]
    assert "source-b" in err and "16-dimensional" in err and "32-dimensional" in err
    assert "re-ingest" in err
    assert docsgpt.main(["check", name, "--index", str(tmp_path / "none")]) == 3
    assert "index folder not found" in capsys.readouterr().err


def _hook_run(site_dir, app, env, cwd, script_tail=""):
    script = textwrap.dedent(f"""
        import json, site, sys
        site.addsitedir({str(site_dir)!r})
        sys.path.insert(0, {str(app)!r})
        hooked = "embtune_integrations.docsgpt" in sys.modules
        from application.vectorstore.base import EmbeddingsSingleton
        patched = hasattr(EmbeddingsSingleton._create_instance, "_embtune_original")
        result = {{"hooked": hooked, "patched": patched}}
    """) + textwrap.dedent(script_tail) + "print(json.dumps(result))\n"
    return subprocess.run([sys.executable, "-c", script], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=180, check=False)


@pytest.fixture
def docsgpt_tree(tmp_path):
    app = tmp_path / "docsgpt"
    (app / "application" / "vectorstore").mkdir(parents=True)
    (app / "application" / "__init__.py").write_text("")
    (app / "application" / "vectorstore" / "__init__.py").write_text("")
    (app / "application" / "vectorstore" / "base.py").write_text(STANDIN)
    site_dir = tmp_path / "site"
    docsgpt.write_pth(site_dir)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMBTUNE_") or k == "EMBTUNE_CACHE"}
    return app, site_dir, env


@pytest.mark.parametrize("value, enabled", [("True", True), ("on", True), ("YES", True), ("0", False),
                                            ("False", False), ("maybe", None)])
def test_enable_flag_reads_like_docsgpts_booleans(docsgpt_tree, tmp_path, value, enabled):
    app, site_dir, env = docsgpt_tree
    run = _hook_run(site_dir, app, {**env, docsgpt.ENABLE_ENV: value}, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result == {"hooked": bool(enabled), "patched": bool(enabled)}
    if enabled is None:  # neither true nor false: said in one line, hook off
        lines = [line for line in run.stderr.splitlines() if "EMBTUNE_DOCSGPT" in line]
        assert len(lines) == 1 and "'maybe'" in lines[0] and "stays off" in lines[0]


def test_settings_in_docsgpts_env_file_are_read(docsgpt_tree, adapter_dir, tiny_model_dir, tmp_path):
    """Non-Docker runs keep settings in DocsGPT's .env, which pydantic-settings never exports."""
    app, site_dir, env = docsgpt_tree
    (app / ".env").write_text(f"# DocsGPT settings\nEMBEDDINGS_NAME=embtune:{adapter_dir}\n"
                              f"EMBTUNE_DOCSGPT=true\nEMBTUNE_BASE_MODEL=\"{tiny_model_dir}\"\nEMBTUNE_BATCH_SIZE=5\n")
    tail = f"""
        e = EmbeddingsSingleton.get_instance({f"embtune:{adapter_dir}"!r})
        result.update(adapter=e.has_adapter, batch=e.batch_size, dimension=e.dimension)
    """
    # Started in the project root (DocsGPT's documented commands): everything comes from .env.
    run = _hook_run(site_dir, app, env, cwd=app, script_tail=tail)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.strip().splitlines()[-1]) == {
        "hooked": True, "patched": True, "adapter": True, "batch": 5, "dimension": 32}
    # Started elsewhere with the flag in the environment: the rest still comes from DocsGPT's .env.
    run = _hook_run(site_dir, app, {**env, docsgpt.ENABLE_ENV: "1"}, cwd=tmp_path, script_tail=tail)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.strip().splitlines()[-1])["adapter"] is True


# --- issue 27: the base recorded in the adapter resolves as every entry point resolves names ----------
def test_recorded_packaged_base_resolves_without_the_setting(minilm_path, tmp_path, monkeypatch):
    """An adapter trained on the packaged MiniLM records the hub name; with EMBTUNE_BASE_MODEL unset the
    shim must load the installed copy (embtune_core.encoders.models.resolve), as the CLI and LangChain do."""
    from embtune_core.encoders.encoding import encoder_from_spec

    name = "sentence-transformers/all-MiniLM-L6-v2"
    encoder = encoder_from_spec(name, normalize=False, prompts=False)
    assert " files=" in encoder.identity  # trained on a local copy: the case that was refused
    torch.manual_seed(5)
    module = build_adapter("linear", encoder.dimension, {"bias": True})
    save_adapter(tmp_path / "adapter", module, AdapterConfig(
        "linear", encoder.dimension, {"bias": True}, base_encoder_identity=encoder.identity, base_normalize=False,
        base_encoder_name=name, base_weights=encoder.weights_fingerprint, base_prompts=False,
        base_convention=encoder.convention))
    monkeypatch.delenv(docsgpt.BASE_MODEL_ENV, raising=False)
    monkeypatch.chdir(tmp_path)  # no .env here either
    embeddings = docsgpt.embeddings_from_name(f"embtune:{tmp_path / 'adapter'}")
    assert embeddings.has_adapter and embeddings.dimension == 384
    # A name that is no folder, no packaged copy and reads as a path is still refused in one line.
    with pytest.raises(InputError, match="not found"):
        docsgpt.embeddings_from_name(f"embtune:{tmp_path / 'adapter'}", base_model="./models/missing")
