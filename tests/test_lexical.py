"""BM25 and hybrid baselines: our wrapper gives bm25s's own scores and ranking on a BEIR folder the
test builds (bm25s used as its BEIR benchmark uses it), RRF follows Cormack et al., the CLI accepts them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from embtune_core.data.dataset import load_any
from embtune_core.encoders.embedding_cache import EmbeddingCache
from embtune_core.errors import ConfigError
from embtune_core.retrieval.lexical import BM25Index, BM25Spec, rrf
from embtune_core.retrieval.systems import parse_system
from embtune_core.scoring.evaluation import System, evaluate_systems

DOCS = [
    ("Uber revenue", "Uber reported revenue growth of 57 percent in the mobility segment during 2021."),
    ("Drivers", "Drivers are independent contractors; classification litigation could raise costs."),
    ("Insurance", "Insurance reserves for auto liability claims increased in the fourth quarter."),
    ("Freight", "Uber Freight connects shippers with carriers and grew gross bookings."),
    ("Delivery", "Delivery gross bookings grew as restaurants and grocery merchants joined the platform."),
    ("Tax", "The effective tax rate reflects a valuation allowance on deferred tax assets."),
    ("Autonomous", "Autonomous vehicle partnerships may reduce the cost per trip in the long term."),
    ("", "Regulation in the European Union affects ride hailing licences and worker status."),
]
QUERIES = ["How did mobility revenue grow?", "Are drivers contractors or employees?",
           "What happened to insurance reserves?", "What does Uber Freight do?", "Which delivery merchants joined?",
           "Why is the tax rate affected by a valuation allowance?", "autonomous vehicles cost per trip",
           "European regulation of ride hailing"]


def _beir_folder(root):
    root.mkdir()
    (root / "qrels").mkdir()
    with open(root / "corpus.jsonl", "w") as handle:
        handle.writelines(json.dumps({"_id": f"doc{i}", "title": title, "text": text}) + "\n" for i, (title, text) in enumerate(DOCS))
    with open(root / "queries.jsonl", "w") as handle:
        handle.writelines(json.dumps({"_id": f"q{i}", "text": text}) + "\n" for i, text in enumerate(QUERIES))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n"
                                             + "".join(f"q{i}\tdoc{i}\t1\n" for i in range(len(QUERIES))))
    return root


def _reference(folder, k):
    """bm25s as its examples/evaluate_on_beir.py runs BEIR: title + " " + text, English stop words,
    BM25() defaults, retrieve(k)."""
    import bm25s

    corpus = [json.loads(line) for line in (folder / "corpus.jsonl").read_text().splitlines()]
    queries = [json.loads(line) for line in (folder / "queries.jsonl").read_text().splitlines()]
    texts = [(c["title"] + " " + c["text"]).strip() for c in corpus]
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
    query_tokens = bm25s.tokenize([q["text"] for q in queries], stopwords="en", show_progress=False)
    return retriever.retrieve(query_tokens, k=k, show_progress=False)


def test_bm25_matches_bm25s_reference_on_a_beir_folder(tmp_path):
    folder = _beir_folder(tmp_path / "beir")
    dataset = load_any(folder, split="test")
    k = len(DOCS)
    documents, reference_scores = _reference(folder, k)

    evaluation = evaluate_systems([System("bm25", BM25Spec(), spec="bm25")], dataset, progress_bar=False,
                                  n_resamples=50, n_permutations=50)
    ranking = evaluation.systems[0].dims[0].ranking
    assert evaluation.systems[0].dimension == 0 and list(evaluation.systems[0].dims) == [0]
    ids = [f"doc{i}" for i in range(k)]
    for row, qid in enumerate(ranking.query_ids):
        theirs = int(qid[1:])  # the reference's row: queries in file order
        retrieved = ranking.ranked_ids(row)
        # only what shares a term with the query is retrieved (bm25s's retrieve returns every document)
        positive = [ids[d] for d, s in zip(documents[theirs], reference_scores[theirs]) if s > 0]
        assert sorted(retrieved) == sorted(positive)
        ours = dict(zip(retrieved, ranking.scores[row]))
        np.testing.assert_allclose([ours[d] for d in positive],
                                   [s for s in reference_scores[theirs] if s > 0], rtol=1e-6)  # bm25s's own scores
        # where bm25s's scores are distinct, the order is bm25s's
        values = list(reference_scores[theirs])
        distinct = [ids[d] for d, s in zip(documents[theirs], values) if s > 0 and values.count(s) == 1]
        assert [d for d in retrieved if d in distinct] == distinct
    # every query here has a distinctive word: BM25 puts its document first
    assert evaluation.summary["bm25"][0]["accuracy@1"]["mean"] == 1.0


def test_empty_and_out_of_vocabulary_queries_score_zero():
    index = BM25Index(["the cat sat", "a dog ran"])
    assert not index.scores(["", "zebra unicorn"]).any()
    scores, indices = index.search(["", "dog"], depth=2)
    # nothing shares a term with "": nothing is retrieved (Lucene returns no hit), not the corpus in order
    assert indices.tolist() == [[-1, -1], [1, -1]] and scores[1, 0] > 0 and scores[1, 1] == 0


def test_rrf_follows_cormack_et_al():
    a = np.array([[0, 1, 2]])
    b = np.array([[2, 0, 3]])
    scores, indices = rrf([a, b], depth=4)
    expected = {0: 1 / 61 + 1 / 62, 1: 1 / 62, 2: 1 / 63 + 1 / 61, 3: 1 / 63}
    order = sorted(expected, key=lambda d: (-expected[d], d))
    assert indices[0].tolist() == order
    np.testing.assert_allclose(scores[0], [expected[d] for d in order], rtol=1e-6)
    # a masked entry (BM25 score 0) contributes nothing
    _, masked = rrf([a, b], depth=4, valid=[None, np.array([[True, True, False]])])
    assert masked[0].tolist() == [0, 2, 1, -1]


def test_hybrid_and_bm25_systems_in_one_evaluation(tmp_path):
    from test_evaluation import HashingEncoder, small_dataset

    systems = [System("base", HashingEncoder(24), spec="h"), System("bm25", BM25Spec(), spec="bm25"),
               System("hybrid", HashingEncoder(24), spec="hybrid:h", fusion="rrf")]
    evaluation = evaluate_systems(systems, small_dataset(), dims=[24, 12], cache=EmbeddingCache(tmp_path),
                                  progress_bar=False, n_resamples=50, n_permutations=50)
    bm25 = evaluation.systems[1]
    assert sorted(bm25.dims) == [12, 24]  # one ranking, repeated to pair with the dense baseline
    np.testing.assert_array_equal(bm25.dims[24].per_query["ndcg@10"], bm25.dims[12].per_query["ndcg@10"])
    assert evaluation.summary["bm25"][12]["ndcg@10"]["vs_baseline"] is not None
    assert evaluation.systems[2].identity.startswith("RRF(k=60) of BM25 and ")


def test_cli_system_syntax_for_baselines():
    assert parse_system("bm25").lexical and parse_system("lexical:bm25").lexical
    spec = parse_system("hy=hybrid:model:some/model+adapter:runs/a")
    assert (spec.name, spec.encoder_spec, spec.adapter_dir, spec.fusion) == ("hy", "st:some/model", "runs/a", "rrf")
    for bad in ("lexical:tfidf", "hybrid:bm25"):
        with pytest.raises(ConfigError):
            parse_system(bad)


def test_evaluate_command_with_bm25_and_the_whole_index(tmp_path, capsys):
    from embtune_core.cli import main
    from embtune_core.data.dataset import QADataset

    folder = _beir_folder(tmp_path / "beir")
    other = tmp_path / "train.json"
    QADataset({"t0": "unused question"}, {"extra0": "Lyft reported revenue growth in rideshare.",
                                          "doc0": "an id clash: the evaluated corpus keeps its own doc0"},
              {"t0": ["extra0"]}).save(other)
    out = tmp_path / "report"
    assert main(["evaluate", str(folder), "--system", "bm25", "--index", str(other), "--out", str(out),
                 "--resamples", "50", "--permutations", "50"]) == 0
    data = json.loads((out / "report.json").read_text())
    assert data["dataset"]["corpus"] == len(DOCS) + 1 and data["dataset"]["extra_corpus"] == 1
    assert data["dataset"]["corpus_searched"].startswith("the whole index (9 documents")
    assert data["context"]["index datasets"] == str(other) and data["dataset"]["split"] == "test"
    assert data["systems"][0]["name"] == "bm25" and data["systems"][0]["dimension"] == 0
    assert "corpus searched**: the whole index" in (out / "report.md").read_text()


def test_bm25_beside_a_token_limit_is_not_an_encoder(tmp_path, tiny_model_dir):
    """--max-seq-length is checked against each local model; BM25 has none (it used to fail with
    'empty encoder spec')."""
    from embtune_core.cli import main

    folder = _beir_folder(tmp_path / "beir")
    out = tmp_path / "report"
    assert main(["evaluate", str(folder), "--system", "bm25", "--system", f"tiny=model:{tiny_model_dir}",
                 "--max-seq-length", "64", "--out", str(out), "--resamples", "20", "--permutations", "20"]) == 0
    names = [s["name"] for s in json.loads((out / "report.json").read_text())["systems"]]
    assert names == ["bm25", "tiny"]


def test_evaluate_index_reads_a_bare_corpus(tmp_path):
    """--index reads only chunk texts: a BEIR corpus.jsonl (no queries, no qrels) or an {id, text} JSONL adds
    the same documents as a full dataset holding them."""
    from embtune_core.cli import main

    folder = _beir_folder(tmp_path / "beir")
    extra = {"extra0": "Lyft reported revenue growth in rideshare.", "extra1": "Uber leases offices downtown."}
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in extra.items()))
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "corpus.jsonl").write_text((tmp_path / "corpus.jsonl").read_text())
    reports = []
    for index in (tmp_path / "corpus.jsonl", tmp_path / "only"):
        out = tmp_path / f"report{len(reports)}"
        assert main(["evaluate", str(folder), "--system", "bm25", "--index", str(index), "--out", str(out),
                     "--resamples", "20", "--permutations", "20"]) == 0
        reports.append(json.loads((out / "report.json").read_text()))
    for data in reports:
        assert data["dataset"]["extra_corpus"] == 2 and data["dataset"]["corpus"] == len(DOCS) + 2
    assert reports[0]["per_query"] == reports[1]["per_query"]
