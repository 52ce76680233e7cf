"""How well "will tuning help?" (embtune_core.workflow.probe) predicts what a run then finds, on the data we have.

For each dataset: the probe on its training split (before any training, as `embtune run` prints it),
then one `embtune run` (base model, a linear query adapter with index pseudo-queries, document-side
tuning, BM25, hybrids and sparse-dense vectors; no fine-tune, to keep each run to minutes) and its
validation report. Compared: the probe's expectation (a BM25-carrying system wins, or a dense one)
against the recommended system, and the probe adapter's gain on held-out training documents against
the run's adapter gain on the validation split (the probe computed here with its short adapter, as
`embtune run` does when it trains no adapter of its own).

Datasets (../shared/data, skipped when absent): the Lyft 10-K questions with the Uber 10-K as
validation (LlamaIndex's split), the Lyft questions alone and the Uber questions alone split by page
(30% validation), and the quickstart's Python reference with ICT questions (half the topics).

    python bench/probe_accuracy.py     # writes bench/results/probe_accuracy.json (~25 min on 2 cores)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "llamaindex-10k-qa"
sys.path.insert(0, str(ROOT))

RUN = """
[run]
name = "probe"
seed = 42
[data]
{data}
[split]
val_fraction = 0.3
split_by = "{split_by}"
[train]
enabled = false
[adapter]
type = "linear"
index_pseudo_queries = {{ ict = 1, crop = 1 }}
[index_tuning]
pseudo_queries = {{ ict = 1, crop = 1 }}
systems = ["base", "adapter"]
[evaluate]
dims = [384]
"""


def datasets(tmp: Path) -> list[tuple[str, str, str]]:
    """(name, [data] lines, split_by) of each dataset available here."""
    out = []
    if DATA.is_dir():
        lyft, uber = (DATA / "train_dataset.json").as_posix(), (DATA / "val_dataset.json").as_posix()
        out.append(("lyft->uber", f'train = "{lyft}"\nval = "{uber}"', "source"))
        out.append(("lyft alone", f'train = "{lyft}"', "chunk"))
        out.append(("uber alone", f'train = "{uber}"', "chunk"))
    from embtune_core.workflow.quickstart import write_corpus

    corpus = tmp / "pydoc"
    write_corpus(corpus)
    out.append(("python reference (ICT)", f'inputs = ["{corpus.as_posix()}"]', "source"))
    return out


def gap_agreement(results: list[dict]) -> dict:
    """How close the probe's BM25-minus-base gap (held-out training documents) is to the validation's."""
    import numpy as np

    pairs = np.array([[r["probe"]["bm25_minus_base"], r["bm25_minus_base_validation"]] for r in results])
    return {"bm25_gap_probe_vs_validation": pairs.round(4).tolist(),
            "bm25_gap_sign_agrees": f"{int((np.sign(pairs[:, 0]) == np.sign(pairs[:, 1])).sum())} of {len(pairs)}",
            "bm25_gap_mean_abs_error": round(float(np.abs(pairs[:, 0] - pairs[:, 1]).mean()), 4)}


def main() -> int:
    results = []
    with tempfile.TemporaryDirectory(prefix="embtune-probe-") as tmp:
        for name, data, split_by in datasets(Path(tmp)):
            folder = Path(tmp) / name.replace(" ", "-").replace(">", "").replace("(", "").replace(")", "")
            folder.mkdir()
            config = folder / "run.toml"
            config.write_text(RUN.format(data=data, split_by=split_by))
            if "inputs" in data:
                config.write_text(config.read_text() + '[chunk]\nchunker = "sentence"\nchunk_size = 128\n'
                                  'chunk_overlap = 16\n[generate]\ngenerator = "ict"\n')
            proc = subprocess.run([sys.executable, "-m", "embtune_core.cli", "run", str(config), "--run-dir",
                                   str(folder / "run")], env=dict(os.environ, EMBTUNE_NO_PROGRESS="1"), check=False)
            if proc.returncode:
                return proc.returncode
            report = json.loads((folder / "run" / "report.json").read_text())
            # The probe as `embtune run` makes it, with its short adapter (a run that trains an adapter skips it).
            from embtune_core.data.dataset import QADataset
            from embtune_core.encoders.models import DEFAULT_MODEL
            from embtune_core.workflow.probe import tuning_probe

            train = QADataset.load(next((folder / "run").glob("stages/split-*/train.json")))
            probe = tuning_probe(train, DEFAULT_MODEL, seed=42, dev_fraction=0.15, adapter=True)
            table = {s["name"]: s["results"][max(s["results"], key=int)]["ndcg@10"]["mean"] for s in report["systems"]}
            winner = report["recommendation"]["recommended"]["system"]
            results.append({
                "dataset": name, "probe": probe["figures"], "expectation": probe["expectation"],
                "predicted_bm25_family": "BM25" in probe["expectation"],
                "recommended": winner, "winner_carries_bm25": winner == "bm25" or winner.startswith(("hybrid", "sparse")),
                "validation_ndcg@10": table,
                "adapter_gain_validation": round(table.get("adapter", table["base"]) - table["base"], 4),
                "bm25_minus_base_validation": round(table["bm25"] - table["base"], 4)})
            print(json.dumps(results[-1]["probe"]), results[-1]["expectation"], "->", winner)
    agree = sum(r["predicted_bm25_family"] == r["winner_carries_bm25"] for r in results)
    import numpy as np

    gains = np.array([[r["probe"].get("adapter_probe_gain", 0.0), r["adapter_gain_validation"]] for r in results])
    summary = {"command": "python bench/probe_accuracy.py", "datasets": results, **gap_agreement(results),
               "family_predicted_right": f"{agree} of {len(results)}",
               "adapter_gain_sign_agrees": f"{int(((gains[:, 0] > 0.005) == (gains[:, 1] > 0.005)).sum())} of {len(results)}",
               "adapter_gain_correlation": round(float(np.corrcoef(gains.T)[0, 1]), 3) if len(results) > 2 else None}
    out = ROOT / "bench" / "results" / "probe_accuracy.json"
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"family predicted right: {agree} of {len(results)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
