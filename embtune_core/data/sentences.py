"""Sentences and words of a text, as the sentence chunker and the LLM-free question generators count them."""

from __future__ import annotations

import re

# A sentence ends at . ! ? (optionally followed by closing quotes/brackets) before whitespace, at
# the full-width ends of Chinese and Japanese (。！？, written without a following space), or at a
# blank line. Abbreviations ("U.S. GAAP") may split early; overlap packing makes that harmless.
_SENTENCE_END = re.compile(
    r"(?:[.!?][\"')\]\u201d\u2019]*\s+|[\u3002\uff01\uff1f\uff61][\"')\]\u201d\u2019\u300d\u300f\uff09]*\s*|\n\s*\n\s*)")


# Chinese and Japanese are written without spaces: each ideograph or kana counts as one word.
_WORD = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[^\s\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")


def word_count(text: str) -> int:
    """Words in ``text``: white-space separated runs, each CJK ideograph or kana counting as one."""
    return len(_WORD.findall(text))


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Sentence spans ``(start, end)`` that tile ``text`` exactly (trailing whitespace included)."""
    spans, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        if match.end() > start:
            spans.append((start, match.end()))
            start = match.end()
    if start < len(text):
        spans.append((start, len(text)))
    return spans
