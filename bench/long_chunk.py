"""One 20 MB chunk among 21: what ``embtune evaluate`` costs before and after the bounded prefix cut
(embtune_core.encoders.token_prefix), and against the floor of reading only what is kept.

The dataset: 20 Uber chunks with their questions (../shared/data/llamaindex-10k-qa/val_dataset.json)
plus one chunk of ~20 MB (every Lyft and Uber chunk, repeated) that no question asks for. Three child
processes run ``embtune evaluate DATA --system model:<packaged MiniLM>`` with an empty embedding cache
each:

* ``before``: the code of commit ``--before`` (default 3d06cac, the parent of this work), from
  ``git archive`` into a temporary folder: the long chunk is tokenised whole to be counted, and again
  to be embedded;
* ``after``: this tree;
* ``kept only``: this tree on the same dataset with the long chunk replaced by the prefix the model
  reads of it (its first 256 tokens and a margin): the floor, what reading only what is kept costs.

Each child's CPU seconds (user + system) and peak RSS come from ``os.wait4``; the metrics of the three
runs must be identical (the same tokens are read, so the same vectors). Target: ``after`` costs no
more than ``kept only`` plus a few CPU-seconds (reading 20 MB to hash and cut it), far below ``before``.

Run (a few minutes; under the heavy-job lock on a shared machine)::

    flock /tmp/heavy.lock python bench/long_chunk.py      # writes bench/results/long_chunk.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "llamaindex-10k-qa"
sys.path.insert(0, str(ROOT))

GB = 1 << 30


def dataset(data: Path, size: int) -> dict:
    uber = json.loads((data / "val_dataset.json").read_text(encoding="utf-8"))
    lyft = json.loads((data / "train_dataset.json").read_text(encoding="utf-8"))
    keep = list(uber["corpus"])[:20]
    queries = {q: t for q, t in uber["queries"].items() if uber["relevant_docs"][q][0] in keep}
    everything = " ".join(list(lyft["corpus"].values()) + list(uber["corpus"].values()))
    long = (everything + " ") * (size // len(everything) + 1)
    corpus = {c: uber["corpus"][c] for c in keep}
    corpus["long-chunk"] = long[:size]
    return {"queries": queries, "corpus": corpus, "relevant_docs": {q: uber["relevant_docs"][q] for q in queries}}


def run(python_path: str | None, dataset_file: Path, work: Path, name: str) -> dict:
    from embtune_core.encoders.models import resolve

    env = {**os.environ, "EMBTUNE_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "EMBTUNE_CACHE": str(work / f"cache-{name}")}
    if python_path:
        env["PYTHONPATH"] = python_path
    model = resolve("sentence-transformers/all-MiniLM-L6-v2").target
    command = [sys.executable, "-m", "embtune_core.cli", "evaluate", str(dataset_file), "--system", f"model:{model}"]
    check = [sys.executable, "-c", "import embtune_core, embtune_plugins.encoders as e; print(e.__file__)"]
    source = subprocess.run(check, capture_output=True, text=True, env=env, cwd=work, check=True).stdout.strip()
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=work)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"{name}: embtune evaluate failed\n{output[-3000:]}")
    ndcg = re.findall(r"\| \d+ \| ([0-9]\.[0-9]{4}) \[", output)  # the headline row: NDCG@10 [CI]
    return {"cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1), "peak_rss_gb": round(usage.ru_maxrss * 1024 / GB, 3),
            "wall_seconds": round(time.perf_counter() - started, 1), "code": source,
            "notes": [line for line in output.splitlines() if "exceed" in line or "cut:" in line][:4],
            "ndcg@10": ndcg[:1]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--size", type=int, default=20_000_000, help="characters of the long chunk")
    parser.add_argument("--before", default="3d06cac", help="commit whose code is 'before'")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "long_chunk.json"))
    opts = parser.parse_args()
    data = Path(opts.data)
    if not (data / "val_dataset.json").is_file():
        print(f"bench/long_chunk.py: no data at {data}; skipping", file=sys.stderr)
        return 0
    from embtune_core.encoders.models import load_sentence_transformer
    from embtune_core.encoders.token_prefix import readable_texts

    with tempfile.TemporaryDirectory(prefix="bench-long-chunk-") as tmp:
        work = Path(tmp)
        qa = dataset(data, opts.size)
        (work / "long.json").write_text(json.dumps(qa), encoding="utf-8")
        model = load_sentence_transformer("sentence-transformers/all-MiniLM-L6-v2")
        kept = dict(qa, corpus={**qa["corpus"], "long-chunk": readable_texts(model, [qa["corpus"]["long-chunk"]])[0]})
        (work / "kept.json").write_text(json.dumps(kept), encoding="utf-8")
        del model
        # The code of the commit before this work, importable under its own names.
        tree = work / "before-tree"
        tree.mkdir()
        archive = subprocess.run(["git", "archive", opts.before], capture_output=True, cwd=ROOT, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
        names = work / "before-names"
        names.mkdir()
        for name, folder in (("embtune_core", "embtune_core"), ("embtune_plugins", "plugins"),
                             ("embtune_integrations", "integrations")):
            (names / name).symlink_to(tree / folder)
        runs = {"before": run(str(names), work / "long.json", work, "before"),
                "after": run(None, work / "long.json", work, "after"),
                "kept only": run(None, work / "kept.json", work, "kept")}
        for name, figures in runs.items():
            print(name, json.dumps(figures), flush=True)
    result = {
        "benchmark": f"embtune evaluate, 20 Uber chunks + one {opts.size / 1e6:.0f} MB chunk, packaged MiniLM at 256 "
                     "tokens: before the bounded cut, after it, and reading only what is kept",
        "command": "flock /tmp/heavy.lock python bench/long_chunk.py " + shlex.join(sys.argv[1:]),
        "before_commit": opts.before,
        "figures": {name: {k: r[k] for k in ("cpu_seconds", "peak_rss_gb", "wall_seconds")}
                    for name, r in runs.items()},
        "same_metrics": len({tuple(r["ndcg@10"]) for r in runs.values()}) == 1,
        "runs": runs, "long_chunk_characters": opts.size, "queries": len(qa["queries"]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
    }
    from embtune_core.runtime import atomic

    atomic.write_json(opts.out, result)
    print(json.dumps({k: result[k] for k in ("figures", "same_metrics")}, indent=2))
    print(f"written to {opts.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
