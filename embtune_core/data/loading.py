"""Load documents from files and folders, choosing each file's loader by extension.

Inputs: paths to files and/or folders (folders are walked recursively, in sorted order, hidden
files skipped, files of unsupported types ignored with a log line). Output: the documents and the
files skipped as bad, with their reasons.

A file named explicitly with an unsupported extension is an error listing the supported ones.
A bad file (encrypted or truncated PDF, empty, binary, not UTF-8...) raises its one-line
:class:`~embtune_core.errors.InputError`; with ``skip_bad=True`` it is recorded and the rest load.

Example::

    documents, skipped = load_documents(["docs/", "notes.md"], skip_bad=True)
    for path, reason in skipped:
        print(f"skipped {path}: {reason}")
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from embtune_core.data.documents import Document
from embtune_core.errors import InputError
from embtune_core.plugins import Registry, get_registry
from embtune_core.runtime.progress import progress

log = logging.getLogger(__name__)


def supported_extensions(registry: Registry | None = None) -> list[str]:
    return (registry or get_registry()).names("loaders")


def _unsupported(path: Path, extensions: list[str]) -> InputError:
    kind = f"'{path.suffix}'" if path.suffix else "without an extension"
    return InputError(f"unsupported file type {kind}; supported: {', '.join(extensions)}", path=path)


def collect_files(paths: str | Path | Iterable[str | Path], registry: Registry | None = None) -> list[Path]:
    """The files to load: explicit files as given, folders walked for supported extensions."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    extensions = supported_extensions(registry)
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = []
            for candidate in sorted(path.rglob("*")):
                relative = candidate.relative_to(path)
                if any(part.startswith(".") for part in relative.parts) or not candidate.is_file():
                    continue
                if candidate.suffix.lower() in extensions:
                    found.append(candidate)
                else:
                    log.info("ignoring %s: unsupported file type", candidate)
            if not found:
                raise InputError(f"no supported documents in folder (supported: {', '.join(extensions)})",
                                 path=path)
            files.extend(found)
        elif path.is_file() or path.is_symlink():
            if path.suffix.lower() not in extensions:
                raise _unsupported(path, extensions)
            files.append(path)
        else:
            raise InputError("no such file or folder", path=path)
    seen: set[Path] = set()
    unique = []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


def source_names(paths: str | Path | Iterable[str | Path], files: list[Path]) -> dict[Path, str]:
    """Each file's name relative to the inputs as given: ``FOLDER/sub/file.pdf`` for a file found in a
    folder input, ``file.pdf`` for a file given itself. Chunk ids, splits and stage keys use these,
    never absolute paths, so the same documents give the same run from any location."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    folders = [Path(p) for p in paths if Path(p).is_dir()]
    names: dict[Path, str] = {}
    for file in files:
        folder = next((f for f in folders if f in file.parents), None)
        names[file] = f"{folder.resolve().name}/{file.relative_to(folder).as_posix()}" if folder else file.name
    return names


def load_documents(paths_or_folder: str | Path | Iterable[str | Path], *, skip_bad: bool = False,
                   registry: Registry | None = None, **loader_options) -> tuple[list[Document],
                                                                                list[tuple[str, str]]]:
    """Load every file; returns ``(documents, skipped)`` with ``skipped`` as ``[(path, reason)]``."""
    registry = registry or get_registry()
    files = collect_files(paths_or_folder, registry)
    names = source_names(paths_or_folder, files)
    documents: list[Document] = []
    skipped: list[tuple[str, str]] = []
    for path in progress(files, desc="loading", unit="file"):
        loader = registry.get("loaders", path.suffix.lower()).factory
        try:
            for document in loader(path, **loader_options):
                source = document.source
                # "file.jsonl:12" for a line of a JSON Lines file: keep the suffix on the name.
                suffix = source[len(str(path)):] if source.startswith(str(path)) else ""
                document.metadata.setdefault("source_name", names[path] + suffix)
                documents.append(document)
        except InputError as exc:
            if not skip_bad:
                raise
            skipped.append((str(path), exc.problem))
            log.warning("skipping %s: %s", path, exc.problem)
    if not documents:
        reasons = "; ".join(f"{p}: {r}" for p, r in skipped[:3])
        raise InputError(f"no documents could be loaded ({reasons})" if skipped else "no documents",
                         path=", ".join(str(p) for p in files[:3]) + (" ..." if len(files) > 3 else ""))
    return documents, skipped
