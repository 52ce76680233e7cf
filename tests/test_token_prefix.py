"""A long text costs what the model reads of it, never a whole tokenisation (embtune_core.encoders.token_prefix).

The reference for "the same tokens" is the tokenizer itself: the first ``limit`` tokens of the cut
text, truncated as sentence-transformers truncates, equal those of the whole text. The cost is checked
by what the tokenizer is handed (characters), not by timing.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embtune_core.encoders.token_prefix import CHARS_PER_TOKEN, MARGIN, prefix_end, readable_texts

# Words that tokenise in very different ways: WordPiece pieces, punctuation splits, accents that the
# normaliser strips, CJK characters (one word each in BERT), an emoji ([UNK]), a 150-letter word (one
# [UNK] in WordPiece, which cuts words longer than 100 characters), numbers and runs of white space.
WORDS = ["revenue", "riders", "unbelievably", "re-insurance", "U.S.", "$1,234.56", "Café", "naïve", "收入增长",
         "🚗", "—", "...", "a" * 150, "2021", "Q4:", "(drivers)", "\n", "\t", "  ", "Ünïcödé", "don't"]
CEILING = 4 * (128 + MARGIN) * CHARS_PER_TOKEN  # characters the tokenizer may be handed at once (limit 128)


@pytest.fixture(scope="module")
def wordpiece(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def byte_level_bpe():
    """A GPT-2-style byte-level BPE (spaces attach to the next word), trained here on WORDS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator([" ".join(WORDS)] * 50, trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=raw)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(words=st.lists(st.sampled_from(WORDS), min_size=0, max_size=500), limit=st.integers(4, 64),
       joiner=st.sampled_from([" ", "", "\n"]), which=st.sampled_from(["wordpiece", "byte_level_bpe"]))
def test_the_cut_keeps_the_first_tokens_of_the_whole_text(request, words, limit, joiner, which):
    tokenizer = request.getfixturevalue(which)
    text = joiner.join(words)
    end = prefix_end(tokenizer, text, limit)
    cut = text if end is None else text[:end]
    assert text.startswith(cut)
    whole = tokenizer(text, truncation=True, max_length=limit)["input_ids"]
    kept = tokenizer(cut, truncation=True, max_length=limit)["input_ids"]
    assert kept == whole
    # with a prompt in front (as encode_query / encode_document prepend it), too
    assert (tokenizer("query: " + cut, truncation=True, max_length=limit)["input_ids"]
            == tokenizer("query: " + text, truncation=True, max_length=limit)["input_ids"])


def test_a_long_text_is_cut_near_what_is_kept(wordpiece):
    text = "The company's revenue grew 57% in 2021, driven by mobility and delivery. " * 20_000  # 1.4 MB
    end = prefix_end(wordpiece, text, 256)
    assert end is not None and 256 * 2 < end <= 2 * (256 + MARGIN) * CHARS_PER_TOKEN
    assert prefix_end(wordpiece, "short text", 256) is None  # nothing to cut


@pytest.fixture
def handed(monkeypatch):
    """Every text (characters) any fast tokenizer in this process is asked to tokenise."""
    from transformers.tokenization_utils_tokenizers import TokenizersBackend

    seen: list[int] = []
    original = TokenizersBackend._encode_plus

    def spy(self, text, *args, **kwargs):
        for item in (text if isinstance(text, (list, tuple)) else [text]):
            seen.extend(len(part) for part in (item if isinstance(item, (list, tuple)) else [item])
                        if isinstance(part, str))
        return original(self, text, *args, **kwargs)

    monkeypatch.setattr(TokenizersBackend, "_encode_plus", spy)
    return seen


LONG = "Uber's gross bookings rose as riders returned to cities after the pandemic. " * 15_000  # 1.1 MB


def test_evaluate_counts_and_embeds_a_long_text_from_what_it_keeps(tiny_model_dir, handed):
    """The truncation count and the vectors of ``embtune evaluate`` hand the tokenizer at most a few
    times the characters that 128 tokens come from; the old code handed it the whole 1.1 MB (twice)."""
    from embtune_core.encoders import token_limits
    from embtune_core.encoders.encoding import encoder_from_spec

    encoder = encoder_from_spec(f"st:{tiny_model_dir}")
    assert encoder.model is not None  # loaded before counting: loading tokenises nothing long
    record = token_limits.check_encoder(encoder, {"query": ["riders"], "document": [LONG, "short chunk"]})
    vectors = encoder.encode_documents([LONG, "short chunk"])
    assert record["document"] == {"over": 1, "total": 2} and record["limit"] == 128
    assert handed and max(handed) <= CEILING, max(handed)
    handed.clear()
    whole = encoder.model.encode_document([LONG, "short chunk"], convert_to_numpy=True, normalize_embeddings=True)
    assert max(handed) == len(LONG)  # the spy sees a whole text when one is handed over
    np.testing.assert_allclose(vectors, whole, atol=1e-6)  # the same tokens, the same vectors


def test_training_never_tokenises_a_long_chunk_whole(tiny_model_dir, tmp_path, handed):
    """Rows, the truncation count and the validation evaluator all read a bounded prefix of a 1.1 MB
    positive: the collator (every batch, every epoch) and the evaluator never get the whole text."""
    from embtune_core.data.dataset import QADataset
    from embtune_core.finetuning.training import TrainSettings, train

    corpus = {f"c{i}": f"chunk {i} about drivers and insurance in city {i}" for i in range(6)}
    corpus["long"] = LONG
    queries = {f"q{i}": f"city {i} insurance" for i in range(6)} | {"qlong": "gross bookings after the pandemic"}
    relevant = {f"q{i}": [f"c{i}"] for i in range(6)} | {"qlong": ["long"]}
    QADataset(queries, corpus, relevant).save(tmp_path / "train.json")
    val = {f"v{i}": f"insurance for drivers {i}" for i in range(4)} | {"vlong": "riders returned to cities"}
    QADataset(val, corpus, {f"v{i}": [f"c{i}"] for i in range(4)} | {"vlong": ["long"]}).save(tmp_path / "val.json")
    result = train(TrainSettings(train=str(tmp_path / "train.json"), val=str(tmp_path / "val.json"),
                                 out=str(tmp_path / "m"), model=tiny_model_dir, max_steps=2, batch_size=4))
    assert result.truncation["document"]["over"] == 1
    assert handed and max(handed) <= CEILING, max(handed)


def test_a_tokenizer_without_word_boundaries_or_offsets_reads_the_whole_text(wordpiece):
    from types import SimpleNamespace

    assert prefix_end(SimpleNamespace(is_fast=False), LONG, 8) is None  # a slow tokenizer: no word_ids
    no_boundary = "x" * 50_000  # one word: any cut would change its tokens ([UNK] for the whole word)
    assert prefix_end(wordpiece, no_boundary, 8) is None
    assert readable_texts(SimpleNamespace(max_seq_length=8, tokenizer=wordpiece), [no_boundary]) == [no_boundary]
