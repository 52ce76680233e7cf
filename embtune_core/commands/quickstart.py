"""``embtune quickstart``: the offline end-to-end demo on the embedded default."""

from __future__ import annotations

import time
from pathlib import Path

NAME = "quickstart"
HELP = "offline demo: fine-tune MiniLM and an adapter on the Python reference, print before/after"
DESCRIPTION = """Run the whole pipeline offline on the embedded default: the Python language reference
that every CPython ships (pydoc_data.topics, 79 topics) as the documents, the packaged
all-MiniLM-L6-v2 as the model, and the LLM-free inverse-cloze generator for questions. It trains a
two-layer query adapter (with pseudo-queries from every chunk of the index) and a full fine-tune
(MNRL + Matryoshka), prints the before/after table and writes an HTML report. Re-running resumes and reuses finished stages."""


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="embtune-quickstart",
                        help="folder for the corpus, config and run (default: ./embtune-quickstart)")


def run(args) -> int:
    from embtune_core.commands import check_output_dir
    from embtune_core.workflow.pipeline import run_config
    from embtune_core.workflow.quickstart import prepare

    check_output_dir(args.out, "--out")
    started = time.time()
    out = Path(args.out)
    config = prepare(out)
    result = run_config(config, run_dir=out / "run")
    from embtune_core.commands.run import print_result

    print_result(result)
    print(f"config: {config}\nfinished in {time.time() - started:.0f} s")
    return 0
