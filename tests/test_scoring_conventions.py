"""Kind 1 of issue 26 through the commands: a BEIR folder is read and scored as BEIR/pytrec_eval do
(graded qrels, a judgement of a document missing from the corpus kept, a query's own-id document left
out), a LlamaIndex JSON as sentence-transformers does, and each report says which convention applied."""

from __future__ import annotations

import json

import pytest

from embtune_core.cli import main
from embtune_core.data.dataset import QADataset, load_any, load_split
from embtune_core.errors import DatasetError

pytrec_eval = pytest.importorskip("pytrec_eval", reason="pytrec-eval-terrier (the dev extra) is not installed")

DOCS = {"d1": "mobility revenue grew in the fourth quarter", "d2": "mobility revenue grew strongly in 2021",
        "d3": "drivers are contractors", "d4": "freight connects shippers", "a1": "argument about tax policy",
        "a2": "counter argument about tax policy"}
QUERIES = {"q1": "how did mobility revenue grow", "q2": "are drivers contractors", "q3": "what does freight do",
           "a1": "argument about tax policy"}  # a query whose id is a corpus id (ArguAna, Quora)
QRELS = [("q1", "d1", 1), ("q1", "d2", 2), ("q2", "d3", 1), ("q2", "gone", 1),  # "gone": not in corpus.jsonl
         ("q3", "d4", 0), ("a1", "a2", 1), ("q2", "d1", 1), ("q2", "d1", 0)]  # a later row replaces an earlier


def beir_folder(root):
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": k, "title": "", "text": v}) + "\n"
                                               for k, v in DOCS.items()))
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in QUERIES.items()))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n"
                                             + "".join(f"{q}\t{c}\t{g}\n" for q, c, g in QRELS))
    (root / "qrels" / "train.tsv").write_text((root / "qrels" / "test.tsv").read_text())
    return root


def test_a_dangling_judgement_is_kept_by_validate_evaluate_and_training_data(tmp_path, capsys):
    folder = beir_folder(tmp_path / "beir")
    assert main(["validate", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "scoring: pytrec_eval" in out and "1 relevant judgements (1 queries) name documents missing" in out
    dataset = load_any(folder)
    assert dataset.extras["qrels"]["q2"] == {"d3": 1, "gone": 1, "d1": 0}  # BEIR's dict: the later row wins
    assert dataset.relevant_docs == {"q1": ["d1", "d2"], "q2": ["d3"], "a1": ["a2"]}
    assert "q3" in dataset.queries  # judged only 0: BEIR evaluates it (and scores it 0)
    train = load_split(folder, split="train", field="train")  # what `embtune train` reads: no refusal
    assert train.pairs()


def test_bm25_figures_on_a_beir_folder_equal_pytrec_eval_s(tmp_path):
    folder = beir_folder(tmp_path / "beir")
    out = tmp_path / "report"
    assert main(["evaluate", str(folder), "--system", "bm25", "--out", str(out), "--resamples", "20",
                 "--permutations", "20"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["scoring"] == "pytrec_eval"
    assert report["notes"][0].startswith("scoring: pytrec_eval / trec_eval conventions")
    assert any("ignore_identical_ids" in n for n in report["notes"])
    # pytrec_eval on BM25's own scores (what it retrieves), own-id documents popped as BEIR does
    from embtune_core.retrieval.lexical import BM25Index

    ids = list(DOCS)
    qids = report["query_ids"]
    scores = BM25Index(list(DOCS.values())).scores([QUERIES[q] for q in qids])
    run = {q: {c: float(s) for c, s in zip(ids, row) if s > 0 and c != q} for q, row in zip(qids, scores)}
    qrels = {}
    for q, c, g in QRELS:
        qrels.setdefault(q, {})[c] = g
    theirs = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "map_cut.100", "recall.10", "P.1"}).evaluate(run)
    ours = report["per_query"]["bm25"]["0"]
    for i, q in enumerate(qids):
        assert ours["ndcg@10"][i] == pytest.approx(theirs[q]["ndcg_cut_10"], abs=1e-6)
        assert ours["map@100"][i] == pytest.approx(theirs[q]["map_cut_100"], abs=1e-6)
        assert ours["recall@10"][i] == pytest.approx(theirs[q]["recall_10"], abs=1e-6)
        assert ours["precision@1"][i] == pytest.approx(theirs[q]["P_1"], abs=1e-6)
    assert sorted(qids) == sorted(theirs)  # every judged query, q3 (judged only 0) included
    assert "pytrec_eval" in (out / "report.md").read_text()


def test_llamaindex_json_keeps_sentence_transformers_conventions_and_says_so(tmp_path):
    path = tmp_path / "val.json"
    QADataset({"q1": "mobility revenue", "q2": "drivers"}, {"d1": DOCS["d1"], "d3": DOCS["d3"], "d9": "zzz"},
              {"q1": ["d1"], "q2": ["d3"]}).save(path)
    out = tmp_path / "report"
    assert main(["evaluate", str(path), "--system", "bm25", "--out", str(out), "--resamples", "20",
                 "--permutations", "20"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["scoring"] == "sentence-transformers"
    assert report["notes"][0].startswith("scoring: sentence-transformers' InformationRetrievalEvaluator")
    assert report["settings"]["tie_break"] == "equal scores rank by corpus position, earlier first"


def test_a_fractional_grade_is_refused_naming_the_line(tmp_path):
    folder = beir_folder(tmp_path / "beir")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t0.5\n")
    with pytest.raises(DatasetError, match=r"line 3: grade '0.5' is not a whole number"):
        load_any(folder)
    (folder / "qrels" / "test.tsv").write_text("q1\td1\t2.0\n")  # no header, a whole grade written as 2.0
    assert load_any(folder).extras["qrels"] == {"q1": {"d1": 2}}
