"""Generated questions that cannot stand on their own are dropped, and counted.

A retrieval question is typed by someone who has not seen the chunk. LLM-written questions often
fail that test in two ways, and both teach a model the wrong thing:

* **refers to the context**: "according to the passage, ...", "in this text", "the given
  document", "mentioned above", "the author": the question only makes sense next to its chunk,
  and no user ever types it;
* **copies the chunk**: the question is a sentence of the chunk with a question mark (a run of at
  least ``copy_ratio`` of its words appears verbatim in the chunk), which rewards exact word
  overlap instead of meaning.

This is the cheap, LLM-free part of the consistency filtering that Promptagator (Dai et al. 2022,
arXiv:2209.11755) and InPars (Bonifacio et al. 2022, arXiv:2202.05144) apply to synthetic queries;
their round-trip filter (keep a query only when a retriever finds its chunk) is what the hard
negative miner's guard and the evaluation measure afterwards.

Example::

    kept, dropped = filter_questions(chunk.text, ["What is Lyft's revenue?", "In this passage, who ...?"])
    dropped  # [("In this passage, who ...?", "refers to the context")]
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from difflib import SequenceMatcher

REFERS_TO_CONTEXT = "referring to the context"
COPIES_THE_CHUNK = "copying the chunk"
REASONS = (REFERS_TO_CONTEXT, COPIES_THE_CHUNK)

_CONTEXT_WORDS = r"(?:context|passage|text|excerpt|document|paragraph|section|article|snippet|chunk|extract)"
_REFERS = re.compile(
    r"\b(?:(?:the|this|that|these) (?:passages?|excerpts?|context|snippets?|chunks?)\b"
    r"|(?:this|these) (?:texts?|documents?|paragraphs?|sections?|articles?)\b"
    r"|according to (?:the|this|these) (?:given |provided |above )?" + _CONTEXT_WORDS
    + r"|(?:in|from|of|by|within|based on) (?:the|this) (?:given |provided |above |following )?" + _CONTEXT_WORDS
    + r"|(?:the|this) (?:given|provided|above|following) " + _CONTEXT_WORDS
    + r"|(?:mentioned|described|stated|discussed|listed) (?:above|earlier|here)"
    + r"|the author\b"
    # "What does the text say?", "what the document describes": a text the searcher has not seen
    + r"|(?:the|this) (?:text|document|section|article|paragraph|report) (?:says?|describes?|mentions?|states?"
    + r"|discuss(?:es)?|explains?|suggests?|indicates?|shows?)\b)", re.IGNORECASE)
_WORD = re.compile(r"\w+", re.UNICODE)


def refers_to_context(question: str) -> bool:
    """True when the question points at a text the searcher has not seen."""
    return _REFERS.search(question) is not None


def copies_chunk(question: str, chunk_text: str, *, copy_ratio: float = 0.8, min_words: int = 6) -> bool:
    """True when a run of at least ``copy_ratio`` of the question's words (and ``min_words`` or more)
    appears, in order and contiguous, among the chunk's words (case-insensitive)."""
    words = [w.lower() for w in _WORD.findall(question)]
    if len(words) < min_words:
        return False
    chunk = [w.lower() for w in _WORD.findall(chunk_text)]
    return _longest_common_run(words, chunk) >= max(min_words, copy_ratio * len(words))


def _longest_common_run(a: list[str], b: list[str]) -> int:
    """Length of the longest contiguous word run shared by ``a`` and ``b`` (difflib, no junk heuristic)."""
    return SequenceMatcher(None, a, b, autojunk=False).find_longest_match(0, len(a), 0, len(b)).size


def filter_questions(chunk_text: str, questions: Iterable[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """(kept questions, [(dropped question, reason)]) for one chunk's generated questions."""
    kept: list[str] = []
    dropped: list[tuple[str, str]] = []
    for question in questions:
        if refers_to_context(question):
            dropped.append((question, REFERS_TO_CONTEXT))
        elif copies_chunk(question, chunk_text):
            dropped.append((question, COPIES_THE_CHUNK))
        else:
            kept.append(question)
    return kept, dropped


def count_reasons(dropped: Iterable[tuple[str, str]]) -> dict[str, int]:
    """{reason: count} for every reason, zeros included (so reports always show both)."""
    counts = Counter(reason for _, reason in dropped)
    return {reason: counts.get(reason, 0) for reason in REASONS}
