"""The prefix of a text that holds its first N tokens, found at a cost bounded by N.

A model reads at most ``max_seq_length`` tokens of a text (:mod:`embtune_core.encoders.token_limits`), but a
Hugging Face tokenizer asked to truncate still tokenises the *whole* text first and cuts afterwards.
One 20 MB chunk among 21 took 81 CPU-seconds and 3.0 GB in ``embtune evaluate`` (counted once for the
truncation warning, tokenised again to be embedded, both in full) to keep 256 tokens of it. Nothing
should cost more than reading what is kept, so every place that embeds, trains on or counts a text
with a local model first cuts it here to the characters its first ``max_seq_length`` tokens (and a
margin) come from, tokenising a growing prefix instead of the text:

* :func:`prefix_end` tokenises ``text[:size]`` (``size`` from :data:`CHARS_PER_TOKEN`, doubled until it
  holds enough tokens) with the model's fast tokenizer and returns the character offset of a word
  start (a pre-token, ``word_ids``) after at least ``tokens + MARGIN`` tokens. Tokens of complete
  words before the prefix's last two are those of the whole text: normalisers (lower-casing, accents,
  NFC) and pre-tokenisers (white space, punctuation, byte-level and metaspace splitting) act within a
  word, so the cut changes only tokens past the kept ones. ``tests/test_token_prefix.py`` checks the
  first tokens of the cut against the whole text's, with the tokenizer as the reference.
* A text with no word boundary in reach (one 20 MB "word") or a slow (Python) tokenizer, which has no
  ``word_ids``, is left whole: cutting it could change the kept tokens.

Work: at most about twice the characters that the kept tokens come from, however long the text.

Example::

    cut = readable_texts(model, [twenty_megabytes, "short"])   # ["<the first ~1,300 characters>", "short"]
    model.encode(cut)   # the same vectors as model.encode([twenty_megabytes, "short"])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

# Tokens kept beyond the limit before the cut, so that what a prompt or the tokenizer's end handling
# (a trailing space token in byte-level BPE) adds lands past the tokens the model reads.
MARGIN = 16
# First guess of characters per token (English WordPiece averages ~4); more tries when it is too few.
CHARS_PER_TOKEN = 6


def prefix_end(tokenizer: Any, text: str, tokens: int) -> int | None:
    """The character offset at which ``text`` may be cut keeping its first ``tokens`` tokens exactly
    (and :data:`MARGIN` more), or None when the whole text is needed (it is short, has no word boundary
    past that many tokens, or the tokenizer is not a fast one). :func:`prefix_ends` for one text."""
    return prefix_ends(tokenizer, [text], tokens)[0]


def prefix_ends(tokenizer: Any, texts: Sequence[str], tokens: int) -> list[int | None]:
    """:func:`prefix_end` of each of ``texts``, tokenising the candidate prefixes in batches: each text
    costs at most about twice the characters up to its cut, however long it is."""
    ends: list[int | None] = [None] * len(texts)
    size = (tokens + MARGIN) * CHARS_PER_TOKEN
    if not getattr(tokenizer, "is_fast", False):
        return ends
    pending = [i for i, t in enumerate(texts) if isinstance(t, str) and len(t) > size]
    while pending:
        retry = []
        for start in range(0, len(pending), 256):  # bounded memory: 256 prefixes at a time
            block = pending[start:start + 256]
            encoding = tokenizer([texts[i][:size] for i in block], add_special_tokens=False,
                                 return_offsets_mapping=True, truncation=False, verbose=False)
            for row, i in enumerate(block):
                end = _stable_word_start(encoding.word_ids(row), tokens + MARGIN)
                if end is None:
                    retry.append(i)
                else:
                    ends[i] = int(encoding["offset_mapping"][row][end][0])
        size *= 2
        pending = [i for i in retry if len(texts[i]) > size]  # the rest fit whole in the next size: kept whole
    return ends


def _stable_word_start(words: Sequence[int | None], first: int) -> int | None:
    """The first token index >= ``first`` that starts a word other than the prefix's last two (which a
    cut may have split or merged differently), or None."""
    known = [w for w in words if w is not None]
    if not known:
        return None
    last = known[-1]
    for index in range(max(1, first), len(words)):
        word = words[index]
        if word is None or word == words[index - 1]:
            continue
        if word >= last - 1:
            return None
        return index
    return None


def readable_prefix(tokenizer: Any, text: str, tokens: int) -> str:
    """``text`` cut where :func:`prefix_end` says (its first ``tokens`` tokens unchanged), else whole."""
    end = prefix_end(tokenizer, text, tokens)
    return text if end is None else text[:end]


def model_limit(model: Any) -> int | None:
    """Tokens a sentence-transformers model reads of a text (its ``max_seq_length``), None if unknown or
    unbounded (a static model reads texts whole: ``inf``)."""
    try:
        limit = float(getattr(model, "max_seq_length", None) or 0)
    except (TypeError, ValueError):
        return None
    return int(limit) if math.isfinite(limit) and limit >= 1 else None


def fast_tokenizer(model: Any) -> Any:
    """The model's Hugging Face fast tokenizer (the prefix cut needs its offsets), or None: a static
    model's ``tokenizers.Tokenizer``, a word tokenizer or a ``Router`` is left to cut texts itself."""
    tokenizer = getattr(model, "tokenizer", None)
    return tokenizer if callable(tokenizer) and getattr(tokenizer, "is_fast", False) else None


def readable_texts(model: Any, texts: Sequence[str]) -> list[str]:
    """``texts`` cut to what ``model`` reads of them: every text's tokens up to the model's
    ``max_seq_length`` (any prompt prepended included) are unchanged, so the vectors are the same as for
    the whole texts. Texts are returned as they are when the model has no fast tokenizer or no finite limit."""
    limit = model_limit(model)
    tokenizer = fast_tokenizer(model)
    texts = list(texts)
    if not limit or tokenizer is None:
        return texts
    ends = prefix_ends(tokenizer, texts, limit)
    return [t if end is None else t[:end] for t, end in zip(texts, ends)]


def capped_lengths(model: Any, texts: Sequence[str], prompt: str, cap: int) -> list[int]:
    """Tokens of each ``prompt + text`` (special tokens included) when at most ``cap``; ``cap + 1`` for a
    text that holds more than ``cap`` tokens on its own, found by :func:`prefix_end` without tokenising
    the whole of it."""
    tokenizer = model.tokenizer
    lengths: list[int | None] = []
    whole: list[int] = []
    for i, end in enumerate(prefix_ends(tokenizer, texts, cap)):
        if end is not None:
            lengths.append(cap + 1)
        else:
            lengths.append(None)
            whole.append(i)
    for start in range(0, len(whole), 1024):  # bounded memory on big corpora
        block = whole[start:start + 1024]
        encoded = tokenizer([prompt + texts[i] for i in block], add_special_tokens=True, truncation=False,
                            verbose=False, return_attention_mask=False, return_token_type_ids=False)
        for i, ids in zip(block, encoded["input_ids"]):
            lengths[i] = len(ids)
    return [int(n) for n in lengths]  # type: ignore[arg-type]


TEXT_COLUMNS_EXCLUDED = ("label", "score", "dataset_name")


def readable_columns(dataset: Any, model: Any) -> Any:
    """A ``datasets.Dataset`` of training rows with every text column cut by :func:`readable_texts`
    (label and score columns untouched): the trainer's collator tokenises each batch every epoch, and
    would otherwise tokenise every long text whole each time. The same dataset when nothing is cut."""
    columns = {}
    changed = False
    for name in dataset.column_names:
        values = dataset[name]
        if name not in TEXT_COLUMNS_EXCLUDED and values and isinstance(values[0], str):
            cut = readable_texts(model, values)
            changed = changed or any(len(a) != len(b) for a, b in zip(cut, values))
            values = cut
        columns[name] = values
    if not changed:
        return dataset
    from datasets import Dataset

    return Dataset.from_dict(columns)
