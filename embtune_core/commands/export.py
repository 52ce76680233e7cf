"""``embtune export``: a fine-tuned model directory as one zip archive, written atomically."""

from __future__ import annotations

from embtune_core.commands import check_output_file
from embtune_core.export import export_zip

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


def run(args) -> int:
    check_output_file(args.out, "--out")
    out = export_zip(args.model_dir, args.out)
    print(f"{args.model_dir} -> {out} ({out.stat().st_size} bytes)")
    return 0
