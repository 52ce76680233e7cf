"""``embtune validate``: check a dataset file or folder and print its sizes."""

from __future__ import annotations

from embtune_core.dataset import load_any

NAME = "validate"
HELP = "check a QA dataset (LlamaIndex JSON, BEIR folder, pairs/triplets JSONL or CSV)"
DESCRIPTION = """Load a dataset, check it (dangling relevant ids, empty texts, duplicate ids, malformed
JSON) and print its sizes. Exits 3 with one line naming the file and the problem when it is invalid."""


def add_arguments(parser) -> None:
    parser.add_argument("path", help="dataset JSON, BEIR folder, or pairs/triplets .jsonl/.csv")
    parser.add_argument("--split", default="test", help="BEIR qrels split (default: test)")


def run(args) -> int:
    ds = load_any(args.path, split=args.split)
    relevant = sum(len(v) for v in ds.relevant_docs.values())
    print(f"{args.path}: ok: {len(ds.queries)} queries, {len(ds.corpus)} corpus entries, "
          f"{relevant} relevant pairs, {sum(len(v) for v in ds.negatives.values())} negatives")
    return 0
