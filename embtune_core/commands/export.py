"""``embtune export``: a fine-tuned model directory as one zip archive, written atomically."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from embtune_core import atomic
from embtune_core.commands import check_output_file
from embtune_core.errors import InputError

NAME = "export"
HELP = "zip a fine-tuned model directory (for DocsGPT, another machine, an artifact store)"
DESCRIPTION = """Write MODEL_DIR (a sentence-transformers model directory, as `embtune train` makes) into one
zip archive. The archive holds a single top folder named after --out (model.zip -> model/), so unzipping
it gives a directory that SentenceTransformer(path) and DocsGPT (EMBEDDINGS_NAME=path) load as it is.
The archive appears complete or not at all.

example:
  embtune export models/ft --out ft.zip"""


def add_arguments(parser) -> None:
    parser.add_argument("model_dir", help="sentence-transformers model directory")
    parser.add_argument("--out", required=True, help="zip archive to write")


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


def run(args) -> int:
    check_output_file(args.out, "--out")
    out = export_zip(args.model_dir, args.out)
    print(f"{args.model_dir} -> {out} ({out.stat().st_size} bytes)")
    return 0
