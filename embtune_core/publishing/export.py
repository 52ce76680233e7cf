"""A fine-tuned model directory as one zip archive, written atomically (``embtune export`` and the
pipeline's export stage)."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from embtune_core.errors import InputError
from embtune_core.runtime import atomic


def export_zip(model_dir: str | Path, out: str | Path) -> Path:
    """Zip ``model_dir`` under one top folder named after ``out``; refuses anything but a model directory."""
    model_dir, out = Path(model_dir), Path(out)
    if not model_dir.is_dir():
        problem = "is a file, expected a model directory" if model_dir.exists() else "no such model directory"
        raise InputError(problem, path=model_dir)
    if not (model_dir / "modules.json").is_file():
        raise InputError("not a sentence-transformers model directory (no modules.json)", path=model_dir)
    top = out.name[:-4] if out.name.lower().endswith(".zip") else out.name
    with atomic.atomic_open(out, "wb") as handle, \
            zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for root, dirs, files in os.walk(model_dir):
            dirs.sort()
            for name in sorted(files):
                path = Path(root) / name
                if path.is_symlink() or name.startswith("."):
                    continue  # temp files and links have no place in a model archive
                archive.write(path, Path(top) / path.relative_to(model_dir))
    return out
