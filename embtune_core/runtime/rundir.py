"""Run directories: a manifest plus one folder per stage, cached by the hash of the stage's inputs.

A stage folder is ``stages/<stage>-<key>`` where ``key`` hashes the stage's settings, the keys of
the stages it reads and the content of the input files. A stage is done when its ``_done.json``
exists (written last, atomically); its ``work/`` folder keeps journals and checkpoints, so a run
interrupted in the middle of a stage resumes that stage where it stopped. Changing a setting
changes the key of that stage and of every stage after it, and only those are redone.

What a finished stage left is verified before it is reused: ``_done.json`` must parse, name this
stage and key, and list the sha256 of every file the stage wrote (outside ``work/``); a
``_done.json`` that is empty, torn or another stage's, or a listed file that is missing or whose
bytes changed (a damaged ``dataset.json``, a model folder edited by hand), is named in one line and
the stage runs again. (``_done.json`` files of earlier versions list no files: only their JSON is checked.)
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import platform
import sys
import time
from pathlib import Path
from typing import Any

from embtune_core.runtime import atomic

log = logging.getLogger(__name__)

TRACKED_PACKAGES = ("embtune", "torch", "sentence-transformers", "transformers", "faiss-cpu", "faiss-gpu-cu12",
                    "openai", "langchain-core", "pypdf", "numpy")


def stable_hash(obj: Any) -> str:
    """Hash of a JSON-serialisable object, independent of dict order."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def inputs_hash(paths: list[Path]) -> dict[str, str]:
    """``{name: sha256}`` for every file under ``paths`` (folders walked, sorted), each named relative to
    the input it came from (``FOLDER/sub/file``, or the file's own name): content and names, never the
    absolute location, so a copied or moved project keeps its stage keys."""
    named: dict[str, str] = {}
    for path in paths:
        if path.is_dir():
            for f in sorted(p for p in path.rglob("*") if p.is_file()):
                named[f"{path.resolve().name}/{f.relative_to(path).as_posix()}"] = file_hash(f)
        elif path.exists():
            named[path.name] = file_hash(path)
    return named


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


class StageDir:
    def __init__(self, root: Path, name: str, key: str):
        self.root = root
        self.name, self.key = name, key
        self.path = root / "stages" / f"{name}-{key[:12]}"
        self.work = self.path / "work"

    @property
    def done(self) -> bool:
        """Whether the stage finished and what it left is intact (module docstring); a damaged record is
        named in one line and removed, so the stage runs again."""
        marker = self.path / "_done.json"
        if not marker.is_file():
            return False
        problem = self._problem(marker)
        if problem is None:
            return True
        log.warning("stage %s: %s; the stage runs again", self.path.name, problem)
        marker.unlink(missing_ok=True)
        return False

    def _problem(self, marker: Path) -> str | None:
        try:
            done = json.loads(marker.read_text(encoding="utf-8"))
            if not isinstance(done, dict) or not isinstance(done.get("outputs"), dict):
                raise TypeError("no outputs")
        except (OSError, ValueError, TypeError) as exc:
            empty = marker.stat().st_size == 0 if marker.exists() else False
            return f"{marker} is {'empty (0 bytes)' if empty else 'unreadable'} ({type(exc).__name__})"
        if done.get("stage") != self.name or done.get("key") != self.key:
            return f"{marker} belongs to another stage ({done.get('stage')} {str(done.get('key'))[:12]})"
        for name, digest in (done.get("files") or {}).items():
            path = self.path / name
            if not path.is_file():
                return f"{path} is missing"
            if file_hash(path) != digest:
                return f"{path} changed or is damaged since the stage finished (its sha256 differs)"
        return None

    def _files(self) -> dict[str, str]:
        """sha256 of every file the stage wrote: its folder less ``work/``, ``_done.json`` and hidden files."""
        found = {}
        for path in sorted(p for p in self.path.rglob("*") if p.is_file() and not p.is_symlink()):
            relative = path.relative_to(self.path)
            if relative.parts[0] in ("work", "_done.json") or any(part.startswith(".") for part in relative.parts):
                continue
            found[relative.as_posix()] = file_hash(path)
        return found

    def outputs(self) -> dict[str, Any]:
        """The stage's outputs; paths inside the run folder come back absolute for this location."""
        done = json.loads((self.path / "_done.json").read_text(encoding="utf-8"))
        outputs = done["outputs"]
        for key in done.get("relative_to_run", []):
            outputs[key] = str(self.root / outputs[key])
        return outputs

    def start(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)

    def finish(self, outputs: dict[str, Any], seconds: float) -> None:
        """Mark the stage done. Paths inside the run folder are stored relative to it, so a copied or
        moved run folder reads its own files, never the original location's."""
        stored, relative = dict(outputs), []
        root = self.root.resolve()
        for key, value in outputs.items():
            if isinstance(value, str) and Path(value).is_absolute():
                try:
                    stored[key] = Path(value).resolve().relative_to(root).as_posix()
                    relative.append(key)
                except ValueError:
                    pass
        from embtune_core.runtime.secrets_scrub import scrub_tree

        atomic.write_json(self.path / "_done.json", scrub_tree({"stage": self.name, "key": self.key,
                                                                "seconds": seconds, "outputs": stored,
                                                                "relative_to_run": relative,
                                                                "files": self._files()}))


class RunDir:
    def __init__(self, root: str | Path):
        # Absolute from the start: outputs inside it are then stored relative to it, never to the cwd.
        self.root = Path(root).absolute()
        self.root.mkdir(parents=True, exist_ok=True)

    def stage(self, name: str, key_material: Any) -> StageDir:
        return StageDir(self.root, name, stable_hash({"stage": name, **key_material}))

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        from embtune_core.runtime.secrets_scrub import scrub_tree

        atomic.write_json(self.root / "manifest.json", scrub_tree(manifest))  # the config may hold a URL's credentials

    @staticmethod
    def new_manifest(config: dict[str, Any], inputs: dict[str, str], seed: int) -> dict[str, Any]:
        return {
            "embtune_run": 1,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
            "config": config,
            "seed": seed,
            "inputs": inputs,
            "versions": package_versions(),
            "stages": {},
        }
