"""``embtune validate``: check a dataset file or folder and print its sizes."""

from __future__ import annotations

from embtune_core.data.dataset import load_any
from embtune_core.errors import DatasetError

NAME = "validate"
HELP = "check a QA dataset (LlamaIndex JSON, BEIR folder, pairs/triplets JSONL or CSV)"
DESCRIPTION = """Load a dataset, check it (dangling relevant ids, empty texts, duplicate ids, malformed
JSON) and print its sizes, then one line for each thing that changes how it is scored: corpus
entries that repeat another's exact text (evaluate counts copies as one document) and queries with
no relevant document in the corpus (left out of every metric). Exits 3 with one line naming the
file and the problem when it is invalid."""


def add_arguments(parser) -> None:
    parser.add_argument("path", help="dataset JSON, BEIR folder, or pairs/triplets .jsonl/.csv")
    parser.add_argument("--split", default="test", help="BEIR qrels split (default: test)")


def run(args) -> int:
    ds = load_any(args.path, split=args.split)
    relevant = sum(len(v) for v in ds.relevant_docs.values())
    print(f"{args.path}: ok: {len(ds.queries)} queries, {len(ds.corpus)} corpus entries, "
          f"{relevant} relevant pairs, {sum(len(v) for v in ds.negatives.values())} negatives")
    for note in dataset_notes(ds):
        print(f"{args.path}: note: {note}")
    return 0


def dataset_notes(ds) -> list[str]:
    """What evaluation will make of the dataset's duplicates and unanswerable queries, one line each."""
    from embtune_core.scoring.evaluation import RetrievalTask

    try:
        return RetrievalTask.from_dataset(ds).notes()
    except DatasetError:  # no query has a relevant document in the corpus
        return [f"none of the {len(ds.queries)} queries has a relevant document in the corpus"]
