"""DocsGPT embeddings: a fine-tuned model directory, or a base model plus an embtune query adapter.

DocsGPT (arc53/DocsGPT) builds its embeddings in ``application/vectorstore/base.py`` through
``EmbeddingsSingleton.get_instance(settings.EMBEDDINGS_NAME)``: one instance per name and process,
made by ``EmbeddingsSingleton._create_instance``, whose name map covers a few known models; any
other name falls through to ``SentenceTransformer(name)``. DocsGPT then calls only
``embed_documents(list)`` when ingesting (Celery worker), ``embed_query(str)`` when searching
(web process) and reads ``dimension`` to size indexes.

* **Fine-tuned model** (both sides change): no code needed. ``EMBEDDINGS_NAME=/path/to/model``
  falls through to ``SentenceTransformer(path)``. In Docker, mount the folder into the backend
  *and* the worker container, e.g. ``./out/model:/app/models/my-model``, and set
  ``EMBEDDINGS_NAME=/app/models/my-model``; then re-ingest your sources (document vectors change).
* **Base model + adapter** (queries only; existing indexes stay valid): DocsGPT cannot apply an
  adapter by itself, so :func:`register` teaches its singleton one more kind of name,
  ``embtune:<dir>``, without editing DocsGPT's files. It wraps ``_create_instance`` so that such a
  name builds an :class:`~embtune_integrations.langchain.EmbtuneEmbeddings` (exactly DocsGPT's
  interface: ``embed_documents``, ``embed_query``, ``dimension``, and a ``__call__`` like its own
  wrappers); every other name goes to DocsGPT's own code unchanged. ``<dir>`` is an adapter
  folder (the base model is ``EMBTUNE_BASE_MODEL``, a model name or folder: the very model the
  adapter was trained on, which loading checks) or a model folder (no adapter).

Both DocsGPT processes (the web app and the Celery worker) must call :func:`register`. Without
touching their start commands: run ``python -m embtune_integrations.docsgpt install-hook`` once
in DocsGPT's Python environment (image). It writes ``embtune_docsgpt.pth`` into site-packages;
Python runs that line at every start-up, and when ``EMBTUNE_DOCSGPT`` is true (``1``, ``true``,
``yes``, ``on``, any case, as DocsGPT's own pydantic settings read booleans) it calls
:func:`register`, which patches the DocsGPT module as soon as it is imported (an import hook; the
module is not imported early). ``EMBTUNE_DOCSGPT`` is read from the environment, else from
``.env`` in the folder the process starts in (DocsGPT's non-Docker commands start in the project
root, where its ``.env`` lives); a value that is neither true nor false is reported in one line on
stderr and leaves the hook off. A process with neither pays one ``stat`` of ``.env``. A
``sitecustomize.py`` with ``import embtune_integrations.docsgpt as d; d.register()`` works the same way.

Settings (:func:`setting`: the environment first, then DocsGPT's ``.env`` at the project root, as
DocsGPT's settings read it; pydantic-settings never copies ``.env`` into the environment):
``EMBTUNE_BASE_MODEL`` (base model for an adapter name; else the one the adapter records),
``EMBTUNE_DEVICE`` (``cpu``, ``cuda``...), ``EMBTUNE_BATCH_SIZE`` (default 32),
``EMBTUNE_DOCUMENT_WINDOWS`` (``off``, the default, or ``mean``: documents longer than the model's
token limit read whole as windows, :mod:`embtune_core.encoders.long_documents`; the index must then be
built with the same setting, so set it for the worker and the backend alike).

Vectors: ``embed_documents`` returns exactly what DocsGPT's own ``EmbeddingsWrapper`` returns for
the base model (``SentenceTransformer(name).encode(texts)``: no prompt, no normalisation of its
own), so an index DocsGPT built with that model stays valid; the adapter must have been trained on
query vectors computed the same way (``embtune train-adapter --host-vectors``), which loading
checks. With the hook installed, an adapter folder given without ``embtune:`` is refused in one
line (sentence-transformers would mistake its ``adapter_config.json`` for PEFT's), and
``python -m embtune_integrations.docsgpt check NAME --index DIR`` compares an existing index with
NAME (dimension, and the model where an embtune manifest records it).

Example (docker-compose ``environment:`` of both the backend and the worker)::

    EMBTUNE_DOCSGPT: "1"
    EMBEDDINGS_NAME: "embtune:/app/models/my-adapter"
    EMBTUNE_BASE_MODEL: "/app/models/all-mpnet-base-v2"

and in Python, for a quick check: ``python -m embtune_integrations.docsgpt check embtune:/app/models/my-adapter``.
"""

from __future__ import annotations

import importlib.abc
import json
import logging
import os
import sys
import sysconfig
import threading
from pathlib import Path
from typing import Any

PREFIX = "embtune:"
ENABLE_ENV = "EMBTUNE_DOCSGPT"
BASE_MODEL_ENV = "EMBTUNE_BASE_MODEL"
DEVICE_ENV = "EMBTUNE_DEVICE"
BATCH_SIZE_ENV = "EMBTUNE_BATCH_SIZE"
DOCUMENT_WINDOWS_ENV = "EMBTUNE_DOCUMENT_WINDOWS"
VECTOR_STORE_ENV = "VECTOR_STORE"  # DocsGPT's own setting (default faiss)
# Where DocsGPT keeps EmbeddingsSingleton: the current tree, and the package name of newer trees.
TARGET_MODULES = ("application.vectorstore.base", "docsgpt.vectorstore.base")
PTH_NAME = "embtune_docsgpt.pth"
# One line: .pth files run lines that start with "import". A process whose environment lacks
# EMBTUNE_DOCSGPT and that starts in a folder without .env pays one stat() and imports nothing;
# otherwise embtune_integrations._startup decides (it imports this module only when enabled).
PTH_LINE = ("import os; (os.environ.get('EMBTUNE_DOCSGPT') is not None or os.path.isfile('.env')) and "
            "__import__('embtune_integrations._startup')._startup.run()\n")
ADAPTER_FORMAT = "embtune-adapter"

log = logging.getLogger(__name__)
_options: dict[str, Any] = {}
_lock = threading.Lock()
_env_files: list[Path] = []  # DocsGPT's own .env, learnt when its module is patched


def setting(name: str) -> str | None:
    """An ``EMBTUNE_*`` setting as DocsGPT reads its own: the environment first, then DocsGPT's
    ``.env`` (the project root, next to ``application/``; learnt when DocsGPT's module is patched),
    then ``.env`` in the current folder. Empty values count as unset."""
    from embtune_integrations._dotenv import dotenv_value

    value = os.environ.get(name)
    if value is not None and value.strip():
        return value.strip()
    seen: set[Path] = set()
    for path in (*_env_files, Path.cwd() / ".env"):
        if path in seen:
            continue
        seen.add(path)
        value = dotenv_value(str(path), name)
        if value is not None and value.strip():
            return value.strip()
    return None


def is_embtune_name(name: Any) -> bool:
    return isinstance(name, str) and name.startswith(PREFIX)


def embeddings_from_name(name: str, *, base_model: str | None = None, device: str | None = None,
                         batch_size: int | None = None, document_windows: str | None = None):
    """The embeddings an ``embtune:<dir>`` name stands for (see the module docstring).

    Settings not passed come from :func:`setting` (environment, then DocsGPT's ``.env``). The
    base model of an adapter is ``base_model``, else ``EMBTUNE_BASE_MODEL``, else the one the
    adapter's config records. Raises :class:`~embtune_core.errors.InputError` in one line naming
    the setting, the cause and the fix: a missing folder (a volume not mounted), a folder that is
    neither a model nor an adapter, an adapter without a base model, or an adapter trained on
    another model or on vectors computed another way.
    """
    from embtune_core.errors import InputError
    from embtune_integrations.langchain import EmbtuneEmbeddings

    if not is_embtune_name(name):
        raise InputError(f"'{name}' does not start with '{PREFIX}'", field="EMBEDDINGS_NAME")
    target = Path(name[len(PREFIX):].strip()).expanduser()
    if not target.is_dir():
        raise InputError(f"not a folder (nothing there); mount the adapter or model folder into this container "
                         f"(backend and worker) or fix the path after '{PREFIX}'", path=target, field="EMBEDDINGS_NAME")
    device = device or setting(DEVICE_ENV) or None
    raw_batch = batch_size or setting(BATCH_SIZE_ENV) or 32
    try:
        batch_size = int(raw_batch)
    except ValueError:
        raise InputError(f"must be a whole number, got {raw_batch!r}", field=BATCH_SIZE_ENV) from None
    windows = document_windows or setting(DOCUMENT_WINDOWS_ENV) or "off"
    if windows not in ("off", "mean"):  # one vector per document: DocsGPT's stores hold no more
        raise InputError(f"must be off or mean, got {windows!r}", field=DOCUMENT_WINDOWS_ENV)
    options = {"document_windows": windows} if windows != "off" else {}
    if (target / "recommendation.json").is_file():  # an `embtune run` deploy folder: its best single-index system
        from embtune_integrations.deploy import deployed_embeddings

        return deployed_embeddings(target, single_index=True, batch_size=batch_size)
    if (target / "modules.json").is_file():  # a sentence-transformers model folder
        return EmbtuneEmbeddings(str(target), device=device, batch_size=batch_size, **options)
    if not _is_adapter_folder(target):
        raise InputError("holds neither a sentence-transformers model (modules.json) nor an embtune adapter "
                         "(adapter_config.json)", path=target, field="EMBEDDINGS_NAME")
    base, source = base_model, "register(base_model=...)"
    if not base:
        base, source = setting(BASE_MODEL_ENV), BASE_MODEL_ENV
    if not base:
        base, source = _recorded_base_model(target), "the adapter's adapter_config.json (base_encoder.name)"
    if not base:
        raise InputError(f"adapter folder needs its base model: set {BASE_MODEL_ENV} to the model (name or folder) "
                         "the adapter was trained on", path=target, field=BASE_MODEL_ENV)
    from embtune_core.encoders.models import looks_like_path, resolve

    # The resolution every entry point uses: a folder, a packaged copy (the recorded name of an adapter
    # trained on the packaged MiniLM or mpnet loads that copy here too), else the hub.
    if not resolve(base, assemble=False).is_local and (looks_like_path(base) or _trained_on_a_folder(target)):
        # A relative path that is missing reads as a hub name; the adapter knows it came from a folder.
        raise InputError(f"base model folder '{base}' (from {source}) not found; mount it into this container "
                         f"(backend and worker) or set {BASE_MODEL_ENV} to the model the adapter was trained on",
                         field=BASE_MODEL_ENV)
    embeddings = EmbtuneEmbeddings(base, adapter=str(target), device=device, batch_size=batch_size, **options)
    store = (setting(VECTOR_STORE_ENV) or "faiss").strip().lower()
    if store == "faiss":  # DocsGPT's FaissStore: LangChain's FAISS.from_documents, an L2 (IndexFlatL2) index
        embeddings.check_index("l2", unit_vectors=None, where="DocsGPT's FaissStore (VECTOR_STORE=faiss)")
    else:
        log.info("DocsGPT's VECTOR_STORE=%s: how it ranks is not checked against the adapter (FAISS is)", store)
    return embeddings


def _trained_on_a_folder(folder: Path) -> bool:
    """Whether the adapter's recorded base was a local model folder (its identity names ``files=``)."""
    try:
        config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    base = config.get("base_encoder") if isinstance(config, dict) else None
    identity = base.get("identity") if isinstance(base, dict) else None
    return isinstance(identity, str) and " files=" in identity


def is_plain_adapter_folder(name: Any) -> bool:
    """True when ``name`` (without the ``embtune:`` prefix) is an embtune adapter folder: given to
    DocsGPT as is, sentence-transformers would mistake its ``adapter_config.json`` for PEFT's."""
    if not isinstance(name, str) or is_embtune_name(name):
        return False
    folder = Path(name).expanduser()
    if not folder.is_dir() or (folder / "modules.json").is_file():
        return False
    try:
        config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("format") == ADAPTER_FORMAT


def plain_adapter_error(name: str):
    from embtune_core.errors import InputError

    return InputError(f"'{name}' is an embtune adapter folder, not a model (sentence-transformers would report "
                      f"'Loading a PEFT model requires peft'); set EMBEDDINGS_NAME=embtune:{name} and "
                      f"{BASE_MODEL_ENV} to its base model", field="EMBEDDINGS_NAME")


def _is_adapter_folder(folder: Path) -> bool:
    from embtune_core.adapters import adapter_io

    return (folder / adapter_io.CONFIG_NAME).is_file() or (
        (folder / adapter_io.LLAMAINDEX_CONFIG).is_file() and (folder / adapter_io.LLAMAINDEX_WEIGHTS).is_file())


def _recorded_base_model(folder: Path) -> str | None:
    """A base model name the adapter config records, if a future format records one."""
    try:
        config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    base = config.get("base_encoder") if isinstance(config, dict) else None
    for key in ("model", "name"):
        value = base.get(key) if isinstance(base, dict) else None
        if isinstance(value, str) and value:
            return value
    return None


# --- patching DocsGPT's singleton -------------------------------------------------------------------
def patch_module(module) -> bool:
    """Make ``module.EmbeddingsSingleton`` build ``embtune:`` names; idempotent. False if it has none.

    ``_create_instance`` is wrapped (``get_instance`` where a DocsGPT version has no
    ``_create_instance``), so DocsGPT's own caching, locking and remote-embeddings dispatch stay
    in charge and only the construction of an ``embtune:`` name changes.
    """
    singleton = getattr(module, "EmbeddingsSingleton", None)
    if singleton is None:
        return False
    file = getattr(module, "__file__", None)
    if file:  # .../application/vectorstore/base.py: DocsGPT's settings read <project root>/.env
        env_file = Path(file).resolve().parents[2] / ".env"
        if env_file not in _env_files:
            _env_files.append(env_file)
    attribute = "_create_instance" if "_create_instance" in vars(singleton) else "get_instance"
    current = vars(singleton).get(attribute)
    if current is None:
        return False
    original = current.__func__ if isinstance(current, (staticmethod, classmethod)) else current
    if getattr(original, "_embtune_original", None) is not None:
        return True  # already patched
    if attribute == "get_instance":
        if not isinstance(getattr(singleton, "_instances", None), dict):
            singleton._instances = {}
        instances = singleton._instances

        def get_instance(embeddings_name, *args, **kwargs):
            if is_plain_adapter_folder(embeddings_name):
                raise plain_adapter_error(embeddings_name)
            if not is_embtune_name(embeddings_name):
                return original(embeddings_name, *args, **kwargs)
            if embeddings_name not in instances:
                instances[embeddings_name] = embeddings_from_name(embeddings_name, **_options)
            return instances[embeddings_name]

        replacement = get_instance
    else:
        def _create_instance(embeddings_name, *args, **kwargs):
            if is_embtune_name(embeddings_name):
                return embeddings_from_name(embeddings_name, **_options)
            if is_plain_adapter_folder(embeddings_name):
                raise plain_adapter_error(embeddings_name)
            return original(embeddings_name, *args, **kwargs)

        replacement = _create_instance
    replacement._embtune_original = original  # type: ignore[attr-defined]
    setattr(singleton, attribute, staticmethod(replacement))
    return True


def unpatch_module(module) -> None:
    """Undo :func:`patch_module` (tests, or switching the integration off at run time)."""
    singleton = getattr(module, "EmbeddingsSingleton", None)
    for attribute in ("_create_instance", "get_instance"):
        current = vars(singleton).get(attribute) if singleton is not None else None
        func = current.__func__ if isinstance(current, staticmethod) else current
        original = getattr(func, "_embtune_original", None)
        if original is not None:
            setattr(singleton, attribute, staticmethod(original))


class _PatchingLoader(importlib.abc.Loader):
    """Runs the real loader, then patches the module it produced."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        patch_module(module)

    def __getattr__(self, name):  # get_source, get_filename...: the real loader's
        return getattr(self._loader, name)


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Finds DocsGPT's base module through the other finders and hands back a patching loader."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in TARGET_MODULES:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _PatchingLoader(spec.loader)
                return spec
        return None


def register(*, base_model: str | None = None, device: str | None = None, batch_size: int | None = None) -> None:
    """Install the ``embtune:<dir>`` names into DocsGPT's ``EmbeddingsSingleton`` (see the module docstring).

    Patches the DocsGPT module now if it is already imported, and otherwise when it is imported.
    The keyword arguments override the ``EMBTUNE_*`` environment variables.
    """
    with _lock:
        _options.update({k: v for k, v in (("base_model", base_model), ("device", device),
                                            ("batch_size", batch_size)) if v is not None})
        if not any(isinstance(finder, _PatchOnImport) for finder in sys.meta_path):
            sys.meta_path.insert(0, _PatchOnImport())
        for name in TARGET_MODULES:
            module = sys.modules.get(name)
            if module is not None:
                patch_module(module)


def unregister() -> None:
    """Remove the import hook and undo the patch of already imported DocsGPT modules."""
    with _lock:
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _PatchOnImport)]
        for name in TARGET_MODULES:
            if name in sys.modules:
                unpatch_module(sys.modules[name])
        _options.clear()


# --- start-up hook ----------------------------------------------------------------------------------
def write_pth(site_dir: str | os.PathLike | None = None) -> Path:
    """Write ``embtune_docsgpt.pth`` into ``site_dir`` (default: this interpreter's site-packages).

    Every Python process of that environment then calls :func:`register` at start-up when
    ``EMBTUNE_DOCSGPT`` is true (environment, or ``.env`` in its start folder). Returns the file's path.
    """
    from embtune_core.runtime import atomic

    directory = Path(site_dir) if site_dir is not None else Path(sysconfig.get_paths()["purelib"])
    path = directory / PTH_NAME
    atomic.write_text(path, PTH_LINE)
    return path


def remove_pth(site_dir: str | os.PathLike | None = None) -> bool:
    directory = Path(site_dir) if site_dir is not None else Path(sysconfig.get_paths()["purelib"])
    path = directory / PTH_NAME
    if path.is_file():
        path.unlink()
        return True
    return False


def embeddings_for_check(name: str):
    """The embeddings DocsGPT would build for ``name`` with the hook installed (a plain name: the
    host's own vectors, as its ``EmbeddingsWrapper`` computes them)."""
    from embtune_integrations.langchain import EmbtuneEmbeddings

    if is_plain_adapter_folder(name):
        raise plain_adapter_error(name)
    if is_embtune_name(name):
        return embeddings_from_name(name)
    return EmbtuneEmbeddings(name, device=setting(DEVICE_ENV) or None)


def _describe(embeddings) -> str:
    convention = getattr(embeddings, "document_convention", None)
    if not isinstance(convention, dict):
        return "as the model computes them"
    prompt = convention.get("document_prompt") or ""
    return (("unit length" if convention.get("unit_length") else "not normalised") + ", "
            + (f"prompt {prompt!r}" if prompt else "no prompt") + " (as DocsGPT's own encode() computes them)")


def check_index(folder: str | os.PathLike, embeddings, name: str) -> int:
    """Compare every ``index.faiss`` under ``folder`` with ``embeddings``; returns how many fit.

    The dimension must equal ``embeddings.dimension`` (else DocsGPT's search fails with a bare
    ``AssertionError`` and the UI shows 0 results); where an embtune ``manifest.json`` records the
    model, its document vectors must be those of ``embeddings``; an adapter must have been trained for
    the index's metric (DocsGPT's: L2) where its vectors are not unit length. Only ``index.faiss`` and JSON
    are read, never ``index.pkl``. Raises :class:`~embtune_core.errors.InputError` in one line.
    """
    from embtune_core.encoders.encoding import same_vectors
    from embtune_core.errors import InputError

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise InputError("index folder not found", path=folder, field="--index")
    files = [folder / "index.faiss"] if (folder / "index.faiss").is_file() else sorted(folder.rglob("index.faiss"))
    if not files:
        raise InputError("no index.faiss here (DocsGPT keeps one per source under indexes/<source id>/)",
                         path=folder, field="--index")
    import faiss
    import numpy as np

    for path in files:
        try:
            index = faiss.read_index(str(path))
            dimension = int(index.d)
        except RuntimeError as exc:
            raise InputError(f"unreadable FAISS index: {' '.join(str(exc).split())[:160]}", path=path) from None
        if dimension != embeddings.dimension:
            raise InputError(f"the index holds {dimension}-dimensional vectors but {name} makes "
                             f"{embeddings.dimension}-dimensional ones (DocsGPT would fail with a bare AssertionError "
                             f"and show 0 results); set {BASE_MODEL_ENV} to the model the index was built with, or "
                             "re-ingest the source", path=path)
        metric = "inner_product" if index.metric_type == faiss.METRIC_INNER_PRODUCT else "l2"
        sample = index.reconstruct_n(0, min(int(index.ntotal), 1000)) if index.ntotal else None
        unit = sample is None or bool(np.all(np.abs(np.linalg.norm(sample, axis=1) - 1) <= 1e-3))
        checker = getattr(embeddings, "check_index", None)
        if checker is not None:
            checker(metric, unit_vectors=unit, where=str(path))
        manifest = path.parent / "manifest.json"
        record = {}
        if manifest.is_file():
            try:
                record = json.loads(manifest.read_text(encoding="utf-8")).get("embeddings") or {}
            except (OSError, ValueError, AttributeError):
                record = {}
        stored, current = record.get("document_identity"), getattr(embeddings, "document_identity", None)
        if isinstance(stored, str) and isinstance(current, str) and not same_vectors(
                stored, record.get("document_convention"), current, getattr(embeddings, "document_convention", None)):
            raise InputError(f"the index was built with '{stored}' but {name} makes document vectors with "
                             f"'{current}'; set {BASE_MODEL_ENV} to the model the index was built with, or re-ingest",
                             path=manifest)
    return len(files)


def main(argv: list[str] | None = None) -> int:
    """``python -m embtune_integrations.docsgpt install-hook | remove-hook | check NAME [--index DIR]``."""
    import argparse

    from embtune_core.errors import EmbtuneError

    parser = argparse.ArgumentParser(prog="python -m embtune_integrations.docsgpt",
                                     description="Install embtune's DocsGPT start-up hook, or check a name.")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("install-hook", "remove-hook"):
        p = sub.add_parser(command)
        p.add_argument("--site-dir", help="site-packages folder (default: this interpreter's)")
    check = sub.add_parser("check", help="build the embeddings for an EMBEDDINGS_NAME and embed a probe; with "
                                         "--index, compare them with an existing index")
    check.add_argument("name", help="the EMBEDDINGS_NAME to check (embtune:<dir>, a model folder or name)")
    check.add_argument("--index", metavar="DIR",
                       help="an index folder (one with index.faiss, or DocsGPT's indexes/ with one per source): "
                            "its dimension, and its model where recorded, must fit NAME")
    args = parser.parse_args(argv)
    try:
        if args.command == "install-hook":
            print(f"wrote {write_pth(args.site_dir)}; set {ENABLE_ENV}=1 for the web and worker processes "
                  "(their environment, or DocsGPT's .env in the folder they start in)")
        elif args.command == "remove-hook":
            print("removed" if remove_pth(args.site_dir) else "no hook installed")
        else:
            embeddings = embeddings_for_check(args.name)
            vector = embeddings.embed_query("probe")
            documents = embeddings.embed_documents(["probe"])
            print(f"{args.name}: {embeddings!r}, dimension {embeddings.dimension} ({len(vector)} floats per query, "
                  f"{len(documents[0])} per document); document vectors {_describe(embeddings)}")
            if args.index:
                count = check_index(args.index, embeddings, args.name)
                print(f"{args.index}: {count} index file(s) of dimension {embeddings.dimension} fit {args.name}")
    except EmbtuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
