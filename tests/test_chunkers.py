"""Chunkers: no text lost, nothing repeated beyond the overlap, sizes respected, ids stable."""

from __future__ import annotations

import itertools
import warnings
from bisect import bisect_left

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embtune_core.data.documents import Document
from embtune_core.data.sentences import sentence_spans
from embtune_core.errors import ConfigError
from embtune_core.plugins import get_registry
from embtune_plugins.chunkers import RecursiveChunker, SentenceChunker

WORDS = ["revenue", "Lyft", "drivers", "riders", "grew", "in", "2021", "the", "net", "loss", "was",
         "$1.0", "billion", "U.S.", "autonomous", "vehicles", "insurance", "pneumonoultramicroscopic"]
sentence = st.lists(st.sampled_from(WORDS), min_size=1, max_size=25).map(" ".join).flatmap(
    lambda s: st.sampled_from([".", "!", "?", ";", ""]).map(lambda end: s + end))
separator = st.sampled_from([" ", "  ", "\n", "\n\n", " \n \n", "\t"])
document_text = st.lists(st.tuples(sentence, separator), min_size=0, max_size=30).map(
    lambda parts: "".join(s + sep for s, sep in parts))


@pytest.fixture(scope="module")
def sentence_chunker(minilm_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SentenceChunker(chunk_size=24, chunk_overlap=8, model=minilm_path)


def assert_lossless(doc, chunks, overlap_len, overlap_limit):
    text = doc.text
    for chunk in chunks:
        start, end = chunk.metadata["start_char_idx"], chunk.metadata["end_char_idx"]
        assert chunk.text == text[start:end] and chunk.text == chunk.text.strip() and chunk.text
    spans = [(c.metadata["start_char_idx"], c.metadata["end_char_idx"]) for c in chunks]
    # Nothing lost: outside the chunks there is only whitespace.
    covered = [False] * len(text)
    for start, end in spans:
        covered[start:end] = [True] * (end - start)
    assert all(covered[i] or text[i].isspace() for i in range(len(text)))
    # Nothing duplicated beyond the overlap: only neighbours share text, at most the overlap.
    for (s0, e0), (s1, e1) in itertools.pairwise(spans):
        assert s0 < s1 and e0 < e1
        if s1 < e0:
            assert overlap_len(s1, e0) <= overlap_limit
    for (s0, e0), (s2, _) in zip(spans, spans[2:]):
        assert s2 >= e0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=document_text)
def test_sentence_chunker_is_lossless_and_bounded(sentence_chunker, text):
    doc = Document(text, {"source": "doc.txt"})
    chunks = sentence_chunker.chunk([doc])
    starts = sentence_chunker.token_starts(text)

    def tokens(a, b):
        return bisect_left(starts, b) - bisect_left(starts, a)

    assert_lossless(doc, chunks, tokens, sentence_chunker.chunk_overlap)
    for chunk in chunks:
        assert tokens(chunk.metadata["start_char_idx"], chunk.metadata["end_char_idx"]) <= 24
    assert [c.id for c in sentence_chunker.chunk([doc])] == [c.id for c in chunks]  # stable
    assert len({c.id for c in chunks}) == len(chunks)


@settings(max_examples=80, deadline=None)
@given(text=document_text, size=st.integers(20, 300), overlap_share=st.floats(0, 0.5))
def test_recursive_chunker_is_lossless_and_bounded(text, size, overlap_share):
    overlap = int(size * overlap_share)
    chunker = RecursiveChunker(chunk_size=size, chunk_overlap=overlap)
    doc = Document(text, {"source": "doc.md", "page": 2})
    chunks = chunker.chunk([doc])
    assert_lossless(doc, chunks, lambda a, b: b - a, overlap)
    assert all(len(c.text) <= size for c in chunks)
    assert [c.id for c in RecursiveChunker(chunk_size=size, chunk_overlap=overlap).chunk([doc])] == \
        [c.id for c in chunks]


def test_sentence_chunker_overlaps_whole_sentences_and_keeps_metadata(sentence_chunker):
    text = " ".join(f"Sentence {i} is short." for i in range(20))
    doc = Document(text, {"source": "a.pdf", "page": 7})
    chunks = sentence_chunker.chunk([doc])
    assert len(chunks) > 2
    assert chunks[0].text.startswith("Sentence 0 is short.")
    # The last sentence of one chunk opens the next (6 tokens <= overlap 8).
    assert chunks[1].text.startswith(chunks[0].text.split(". ")[-1].rstrip("."))
    assert chunks[1].metadata["page"] == 7 and chunks[1].metadata["chunk_index"] == 1
    assert chunks[0].source == "a.pdf"


def test_ids_depend_on_source_position_and_text(sentence_chunker):
    a = sentence_chunker.chunk([Document("Same text.", {"source": "a.txt"})])[0].id
    b = sentence_chunker.chunk([Document("Same text.", {"source": "b.txt"})])[0].id
    c = sentence_chunker.chunk([Document("Same text.", {"source": "a.txt", "page": 2})])[0].id
    d = sentence_chunker.chunk([Document("Other text.", {"source": "a.txt"})])[0].id
    assert len({a, b, c, d}) == 4
    assert a == sentence_chunker.chunk([Document("Same text.", {"source": "a.txt"})])[0].id


def test_overlong_sentence_is_cut_at_token_boundaries(sentence_chunker):
    text = " ".join(["autonomous"] * 100)  # one 100-token "sentence", no full stop
    chunks = sentence_chunker.chunk([Document(text, {"source": "t"})])
    assert len(chunks) >= 5 and all(len(sentence_chunker.token_starts(c.text)) <= 24 for c in chunks)


def test_warns_when_chunk_size_exceeds_max_seq_length(minilm_path):
    with pytest.warns(UserWarning, match="exceeds .* max_seq_length 256.*truncated"):
        SentenceChunker(chunk_size=1024, model=minilm_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SentenceChunker(chunk_size=256, model=minilm_path)


def test_default_chunk_size_fits_the_model(minilm_path):
    # MiniLM reads 256 tokens, [CLS] and [SEP] included: 254 of a chunk's own tokens fit (issue 14).
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        chunker = get_registry().create("chunkers", "sentence", model=minilm_path)
    assert chunker.chunk_size == 254 and chunker.chunk_overlap == 20
    from embtune_core.encoders.models import load_sentence_transformer
    from embtune_core.encoders.token_limits import count_over

    text = " ".join(f"Sentence {i} is about revenue and rides." for i in range(200))
    chunks = chunker.chunk([Document(text, {"source": "long.txt"})])
    assert len(chunks) > 5
    assert count_over(load_sentence_transformer(minilm_path), [c.text for c in chunks], "document") == (0, 256)


def test_bad_sizes_are_config_errors():
    with pytest.raises(ConfigError, match="chunk_overlap"):
        RecursiveChunker(chunk_size=100, chunk_overlap=100)
    with pytest.raises(ConfigError, match="chunk_size"):
        RecursiveChunker(chunk_size=0)


def test_sentence_spans_tile_the_text():
    text = "Revenue rose. Did it? Yes!\n\nNew paragraph without end"
    spans = sentence_spans(text)
    assert "".join(text[a:b] for a, b in spans) == text
    assert [text[a:b].strip() for a, b in spans] == ["Revenue rose.", "Did it?", "Yes!",
                                                     "New paragraph without end"]
