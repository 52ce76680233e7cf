"""`embtune run` publishes its report at a stable path: <run>/report.html (.md, .json) beside the hashed
stage folders, with BM25 and hybrid rows, the whole index searched, context and training curves."""

from __future__ import annotations

import json
import re

import pytest
from corpora import TOPICS, topic_corpus

from embtune_core.cli import main


@pytest.mark.slow
def test_run_publishes_the_latest_report_beside_the_stage_folders(tmp_path, tiny_model_dir, capsys):
    corpus = topic_corpus(tmp_path / "corpus")
    config = tmp_path / "run.toml"
    config.write_text(f"""
[run]
name = "r"
seed = 3
[data]
inputs = ["{corpus.as_posix()}"]
[chunk]
chunker = "recursive"
chunk_size = 200
chunk_overlap = 0
[generate]
generator = "ict"
[split]
val_fraction = 0.3
[train]
model = "{tiny_model_dir}"
loss = "mnrl"
epochs = 1
batch_size = 4
lr = 1e-3
index_pseudo_queries = true
final_fit = true
[adapter]
type = "linear"
epochs = 2
final_fit = true
[evaluate]
k = [1, 5]
baselines = ["bm25", "hybrid"]
corpus = "both"
""")
    run_dir = tmp_path / "run"
    assert main(["run", str(config), "--run-dir", str(run_dir)]) == 0
    printed = capsys.readouterr().out
    assert f"report: {run_dir / 'report.html'}" in printed
    assert f"report searching the whole index: {run_dir / 'report-index.html'}" in printed
    for name in ("report.html", "report.md", "report.json", "report-index.html", "report-index.md",
                 "report-index.json"):
        assert (run_dir / name).is_file(), name
    stage = next(run_dir.glob("stages/evaluate-*"))
    assert (run_dir / "report.json").read_bytes() == (stage / "report.json").read_bytes()
    assert (run_dir / "report-index.json").read_bytes() == (stage / "index" / "report.json").read_bytes()

    data = json.loads((run_dir / "report.json").read_text())
    index = json.loads((run_dir / "report-index.json").read_text())
    # base first, BM25, the untuned hybrid asked for in [evaluate] baselines, then every candidate the run made:
    # the trained systems, their sparse-dense vectors (BM25 joined) and their BM25 hybrids (fusion chosen on dev)
    assert [s["name"] for s in data["systems"]] == [
        "base", "bm25", "hybrid", "fine-tuned", "adapter", "sparse-dense-base", "sparse-dense-fine-tuned",
        "sparse-dense-adapter", "hybrid-base", "hybrid-fine-tuned", "hybrid-adapter"]
    recommendation = data["recommendation"]
    assert recommendation["recommended"]["system"] in {s["name"] for s in data["systems"]}
    assert recommendation["dev"]["dev_queries"] == len(dev_queries_of(run_dir))
    assert markdown_opens_with_recommendation(run_dir)
    train = json.loads(next(run_dir.glob("stages/split-*/train.json")).read_text())
    val = json.loads(next(run_dir.glob("stages/split-*/val.json")).read_text())
    assert data["dataset"]["corpus"] == len(val["corpus"]) and data["dataset"]["extra_corpus"] == 0
    assert index["dataset"]["corpus"] == len(val["corpus"]) + len(train["corpus"])
    assert index["dataset"]["corpus_searched"].startswith("the whole index")
    assert data["query_ids"] == index["query_ids"]  # the same questions, a bigger haystack
    assert data["context"]["query generator"].startswith("ict")
    assert data["context"]["chunker"] == "recursive, chunk_size = 200, chunk_overlap = 0"
    # The fine-tune chose its checkpoint on held-out training documents, never on the validation split,
    # and the report says that it (not the adapter) saw pseudo-queries from the validation chunks' texts.
    fit = json.loads(next(run_dir.glob("stages/train-*/work/fit.json")).read_text())
    dev = json.loads(next(run_dir.glob("stages/train-*/work/dev.json")).read_text())
    assert not set(val["queries"]) & (set(fit["queries"]) | set(dev["queries"]))
    assert set(fit["queries"]) | set(dev["queries"]) <= set(train["queries"])
    assert not set(fit["queries"].values()) & set(dev["queries"].values())  # no question text on both sides
    tuned = next(s for s in data["systems"] if s["name"] == "fine-tuned")
    assert any("checkpoint chosen on" in d for d in tuned["details"])
    assert any("validation chunks included" in d for d in tuned["details"])
    assert data["context"]["like for like"].startswith("NO: fine-tuned trained on pseudo-queries")
    # ...but never on a validation question: ICT pseudo-queries over the validation chunks (same seed, same
    # chunk ids) repeat some word for word; they are left out, as the adapter stage leaves them out.
    from embtune_core.finetuning.index_training import DEFAULT_MIX, pseudo_pairs

    pseudo, _ = pseudo_pairs({**train["corpus"], **val["corpus"]}, DEFAULT_MIX, seed=3)
    assert set(pseudo.queries.values()) & set(val["queries"].values())  # this data has such repeats
    left_out = set(val["queries"].values()) | set(dev["queries"].values())  # dev: it chooses the checkpoint
    index_info = json.loads(next(run_dir.glob("stages/train-*/_done.json")).read_text())["outputs"]["index_aware"]
    assert index_info["dropped_as_validation_questions"] == sum(t in left_out for t in pseudo.queries.values())
    # final_fit: the zip holds the model retrained on every document; the report says which is which.
    done = json.loads(next(run_dir.glob("stages/train-*/_done.json")).read_text())
    assert done["outputs"]["final_fit"]["queries"] == len(train["queries"]) + len(val["queries"])
    assert "final_model" in done["relative_to_run"]  # a moved run folder still finds it
    adapter = json.loads(next(run_dir.glob("stages/adapter-*/_done.json")).read_text())["outputs"]
    if adapter["best_epoch"] > 0:
        assert adapter["final_fit"]["epochs"] == adapter["best_epoch"]
        assert (run_dir / adapter["final_adapter"] / "adapter_config.json").is_file()
        assert data["context"]["adapter to deploy"].startswith("final fit")
    else:
        assert "adapter final fit skipped" in printed
    assert data["context"]["exported artefact"].startswith("final fit")
    export = json.loads(next(run_dir.glob("stages/export-*/_done.json")).read_text())["outputs"]
    assert export["artefact"] == "final fit on every document"
    names = [curve["name"] for curve in data["training"]]
    assert names == ["fine-tuned (full fine-tuning)", "adapter (query adapter)"]
    assert data["training"][0]["loss"] and data["training"][1]["metric"]
    markdown = (run_dir / "report.md").read_text()
    assert markdown.index("## Verdict") < markdown.index("## Context") < markdown.index("## Headline metrics")
    page = (run_dir / "report.html").read_text()
    assert len(re.findall("data:image/png;base64,", page)) == 4  # two charts, two training curves
    assert "<script" not in page and "http://" not in page and "https://" not in page


def dev_queries_of(run_dir):
    return json.loads(next(run_dir.glob("stages/train-*/work/dev.json")).read_text())["queries"]


def markdown_opens_with_recommendation(run_dir) -> bool:
    lines = (run_dir / "report.md").read_text().splitlines()
    verdict = lines.index("## Verdict")
    return lines[verdict + 2].startswith("- Recommended: `")


def test_a_generator_that_makes_no_question_fails_at_its_stage_naming_the_config(tmp_path, tiny_model_dir, capsys):
    corpus = tmp_path / "one-sentence"
    corpus.mkdir()
    for i, topic in enumerate(TOPICS[:4]):
        (corpus / f"{i}.txt").write_text(f"The {topic} stands alone here.")
    config = tmp_path / "run.toml"
    config.write_text(f'[data]\ninputs = ["{corpus.as_posix()}"]\n[chunk]\nchunker = "recursive"\nchunk_size = 40\n'
                      f'chunk_overlap = 0\n[generate]\ngenerator = "ict"\n[train]\nmodel = "{tiny_model_dir}"\n')
    assert main(["run", str(config), "--run-dir", str(tmp_path / "run")]) == 3
    err = capsys.readouterr().err
    assert f"{config}: generate.generator: the ict generator produced no queries from 4 chunks" in err
    assert not list((tmp_path / "run").glob("stages/split-*"))  # stopped at its own stage
