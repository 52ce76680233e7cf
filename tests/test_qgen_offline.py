"""LLM-free generators: inverse cloze task and independent cropping (seeded, deterministic)."""

from __future__ import annotations

from embtune_core.data.documents import Chunk
from embtune_core.plugins import get_registry

TEXT = ("Lyft reported revenue of 3.2 billion dollars in 2021. Active riders grew to 18.7 million people. "
        "Drivers earned more per hour than the year before. The company expects autonomous vehicles to matter. "
        "Short one.")


def chunks(n: int = 6) -> list[Chunk]:
    return [Chunk(f"c{i}", TEXT.replace("2021", str(2000 + i)), {"source": f"doc{i % 2}.pdf", "page": i})
            for i in range(n)]


def test_ict_sentence_is_query_and_removed_from_positive():
    gen = get_registry().create("question_generators", "ict", seed=3, keep_probability=0.0, questions_per_chunk=2)
    ds = gen.generate(chunks())
    assert len(ds.queries) == 12 and len(ds.corpus) == 6
    for qid, query in ds.queries.items():
        (cid,) = ds.relevant_docs[qid]
        assert query in TEXT.replace("2021", str(2000 + int(cid[1:])))  # a sentence of its chunk
        assert query not in ds.corpus[cid]  # ... removed from the positive
        assert query != "Short one."  # too short to be a query
    assert ds.corpus_metadata["c1"]["source"] == "doc1.pdf" and ds.corpus_metadata["c1"]["ict_removed"] == 2
    ds.validate()


def test_ict_is_seeded_and_keep_probability_keeps_the_sentence():
    a = get_registry().create("question_generators", "ict", seed=1).generate(chunks())
    b = get_registry().create("question_generators", "ict", seed=1).generate(chunks())
    c = get_registry().create("question_generators", "ict", seed=2).generate(chunks())
    assert a.queries == b.queries and a.corpus == b.corpus
    assert a.queries != c.queries
    kept = get_registry().create("question_generators", "ict", seed=1, keep_probability=1.0).generate(chunks())
    assert all(q in kept.corpus[kept.relevant_docs[qid][0]] for qid, q in kept.queries.items())
    # A chunk's queries do not depend on the other chunks.
    alone = get_registry().create("question_generators", "ict", seed=1).generate(chunks()[2:3])
    assert set(alone.queries.items()) <= set(a.queries.items())


def test_ict_skips_chunks_with_one_sentence_but_keeps_them_as_corpus():
    one = Chunk("solo", "Only one sentence here without a partner.", {"source": "s"})
    ds = get_registry().create("question_generators", "ict").generate([one, *chunks(1)])
    assert "solo" in ds.corpus and all(ids != ["solo"] for ids in ds.relevant_docs.values())


def test_crop_pairs_are_spans_of_their_chunk_and_seeded():
    gen = get_registry().create("question_generators", "crop", seed=0, questions_per_chunk=3)
    ds = gen.generate(chunks(4))
    assert len(ds.queries) == 12 and len(ds.corpus) == 12
    words = len(TEXT.split())
    for qid, query in ds.queries.items():
        (pid,) = ds.relevant_docs[qid]
        source_chunk = ds.corpus_metadata[pid]["chunk_id"]
        text = TEXT.replace("2021", str(2000 + int(source_chunk[1:])))
        assert query in text and ds.corpus[pid] in text
        for crop in (query, ds.corpus[pid]):
            assert round(0.1 * words) - 1 <= len(crop.split()) <= round(0.5 * words) + 1
    again = get_registry().create("question_generators", "crop", seed=0, questions_per_chunk=3).generate(chunks(4))
    assert again.queries == ds.queries and again.corpus == ds.corpus
    tiny = get_registry().create("question_generators", "crop").generate([Chunk("t", "too short", {})])
    assert not tiny.queries
