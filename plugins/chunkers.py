"""Built-in chunkers: a sentence-aware token window (``sentence``) and a recursive character splitter
(``recursive``).

Both work on character spans of the document, so every chunk's text is exactly
``document.text[start_char_idx:end_char_idx]``: nothing is lost (only whitespace between chunks is
dropped) and nothing is repeated except the overlap. The document is cut into small units, then
units are packed greedily into windows of at most ``chunk_size``; the next window starts with
the trailing units of the previous one that fit in ``chunk_overlap`` (LlamaIndex's
SentenceSplitter does the same).

* ``sentence``: units are sentences (and paragraph breaks), measured in tokens of the chosen
  model's tokenizer; a sentence longer than ``chunk_size`` is cut at the last white space that fits
  (at token boundaries only inside one over-long word). Default size: what the model reads of a
  text (``max_seq_length`` less special tokens); overlap 20 as LlamaIndex. It warns when ``chunk_size`` exceeds the model's
  ``max_seq_length``, because the model silently truncates the excess in training and retrieval.
* ``recursive``: units come from splitting on ``"\\n\\n"``, then ``"\\n"``, ``". "``, ``" "`` and
  finally single characters, as LangChain's RecursiveCharacterTextSplitter does; measured in
  characters.

Chunk ids are :func:`~embtune_core.data.documents.stable_id` of (source name, page and start offset, text):
re-running on the same documents gives the same ids, from whichever folder they are read (the
``source_name`` that :func:`~embtune_core.data.loading.load_documents` sets is relative to the inputs).

Example::

    chunker = get_registry().create("chunkers", "sentence", chunk_size=256, chunk_overlap=20,
                                    model="sentence-transformers/all-MiniLM-L6-v2")
    chunks = chunker.chunk(documents)
    chunks[0].metadata["start_char_idx"], chunks[0].id
"""

from __future__ import annotations

import logging
import unicodedata
import warnings
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tokenizers import Tokenizer as _RawTokenizer

from embtune_core import hookimpl
from embtune_core.data.documents import Chunk, Document, stable_id
from embtune_core.data.sentences import sentence_spans
from embtune_core.encoders.token_limits import model_max_seq_length
from embtune_core.errors import ConfigError

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Unit:
    start: int
    end: int
    length: int


def pack(units: Sequence[Unit], chunk_size: int, chunk_overlap: int) -> list[tuple[int, int]]:
    """Greedy windows over consecutive units: each at most ``chunk_size`` long (a lone unit may not be
    shorter); each window after the first starts with the previous window's trailing units whose
    total length is at most ``chunk_overlap``. Returns ``(first, last_exclusive)`` unit indices.

    Overlap units are taken only from what the previous window added, so no unit is in more than
    two windows."""
    windows: list[tuple[int, int]] = []
    first, new_from = 0, 0
    while first < len(units):
        last, total = first, 0
        while last < len(units) and (last == first or total + units[last].length <= chunk_size):
            total += units[last].length
            last += 1
        windows.append((first, last))
        if last >= len(units):
            break
        # Overlap: walk back from the end while the tail fits, but always move forward.
        back, tail = last, 0
        while back - 1 > first and back - 1 >= new_from and tail + units[back - 1].length <= chunk_overlap:
            back -= 1
            tail += units[back].length
        # The overlap plus the next unit must still fit, else drop overlap to guarantee progress.
        while back < last and tail + units[last].length > chunk_size:
            tail -= units[back].length
            back += 1
        first, new_from = back, last
    return windows


def _invisible(ch: str) -> bool:
    return ch.isspace() or unicodedata.category(ch) == "Cf"  # white space, zero-width characters


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and _invisible(text[start]):
        start += 1
    while end > start and _invisible(text[end - 1]):
        end -= 1
    return start, end


def chunks_from_spans(document: Document, spans: list[tuple[int, int]], chunker: str) -> list[Chunk]:
    """Chunks for trimmed, non-empty spans, with stable ids and offsets in metadata."""
    out: list[Chunk] = []
    page = document.metadata.get("page", "")
    covered = 0
    for start, end in spans:
        start, end = _trim(document.text, start, end)
        if start >= end or end <= covered:
            continue  # only whitespace, or nothing the previous chunk did not already hold
        covered = end
        text = document.text[start:end]
        metadata = {**document.metadata, "chunk_index": len(out), "start_char_idx": start,
                    "end_char_idx": end, "chunker": chunker}
        # source_name (relative to the inputs) keeps ids, and so the questions, the same from any folder.
        source = document.metadata.get("source_name") or document.source
        out.append(Chunk(stable_id(source, f"{page}:{start}", text), text, metadata))
    return out


def _check_sizes(chunk_size: int, chunk_overlap: int) -> None:
    if not isinstance(chunk_size, int) or chunk_size <= 0:
        raise ConfigError(f"must be a positive integer, not {chunk_size!r}", field="chunk_size")
    if not isinstance(chunk_overlap, int) or not 0 <= chunk_overlap < chunk_size:
        raise ConfigError(f"must be an integer from 0 to chunk_size - 1 ({chunk_size - 1}), not {chunk_overlap!r}",
                          field="chunk_overlap")


def load_tokenizer(folder: str) -> Any:
    """The model's fast tokenizer: straight from ``tokenizer.json`` when there is one (the
    ``tokenizers`` library imports in a fraction of the time ``transformers`` takes), else through
    ``AutoTokenizer``. Truncation and padding are off: whole documents are tokenized."""
    from embtune_core.encoders.model_modules import input_folder

    # The module that reads documents: the folder itself, or an asymmetric (Router) model's document route.
    files, module = input_folder(folder, "document")
    path = files / "tokenizer.json"
    if path.is_file():
        tokenizer = _RawTokenizer.from_file(str(path))
        tokenizer.no_truncation()
        tokenizer.no_padding()
        return tokenizer
    if module and module not in ("Transformer", "CLIPModel"):
        raise ConfigError(f"the sentence chunker counts tokens with the model's fast tokenizer, and {folder} "
                          f"({module}) has none (no tokenizer.json); use --chunker recursive, or --model with a "
                          "transformer or static model", field="model")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(files))


class SentenceChunker:
    """Sentence-aware windows of at most ``chunk_size`` tokens of ``model``'s tokenizer, with overlap.

    Args:
        chunk_size: tokens per chunk; default: what the model reads of a text (its ``max_seq_length``
            less its special tokens, 254 for the packaged MiniLM), so no chunk is cut at embedding
            time; 1024 (LlamaIndex's SentenceSplitter) when the model's limit is unknown, said once.
        chunk_overlap: tokens shared by consecutive chunks (default 20), whole sentences only.
        model: the embedding model whose tokenizer counts tokens (a name or a local folder).
        tokenizer: a ``tokenizers.Tokenizer`` or a Hugging Face *fast* tokenizer to use instead of
            ``model``'s.
    """

    name = "sentence"

    def __init__(self, chunk_size: int | None = None, chunk_overlap: int = 20, model: str | None = None,
                 tokenizer: Any = None, warn_on_truncation: bool = True):
        from embtune_core.encoders.models import DEFAULT_MODEL, resolve

        self.model = model or DEFAULT_MODEL
        if tokenizer is None:
            tokenizer = load_tokenizer(resolve(self.model).target)
        if not isinstance(tokenizer, _RawTokenizer) and not getattr(tokenizer, "is_fast", False):
            raise ConfigError("the sentence chunker needs a fast tokenizer (with character offsets)",
                              field="tokenizer")
        self.tokenizer = tokenizer
        self.max_seq_length = model_max_seq_length(self.model)
        if chunk_size is None:
            chunk_size = self.default_chunk_size()
        _check_sizes(chunk_size, chunk_overlap)
        self.chunk_size, self.chunk_overlap = chunk_size, chunk_overlap
        if warn_on_truncation and self.max_seq_length and chunk_size > self.max_seq_length:
            warnings.warn(f"chunk_size {chunk_size} exceeds {self.model}'s max_seq_length "
                          f"{self.max_seq_length}: tokens past {self.max_seq_length} are silently truncated "
                          f"in training and retrieval; use --chunk-size {self.max_seq_length} or less",
                          UserWarning, stacklevel=2)

    def default_chunk_size(self) -> int:
        """The model's ``max_seq_length`` less the special tokens its tokenizer adds ([CLS], [SEP])."""
        if not self.max_seq_length:
            log.warning("%s records no max_seq_length; chunking at 1024 tokens (pass --chunk-size to choose)",
                        self.model)
            return 1024
        if isinstance(self.tokenizer, _RawTokenizer):
            special = len(self.tokenizer.encode("", add_special_tokens=True).ids)
        else:
            special = len(self.tokenizer("", add_special_tokens=True)["input_ids"])
        return max(1, self.max_seq_length - special)

    def token_starts(self, text: str) -> list[int]:
        """Start offset of each token of ``text`` (special tokens excluded), ascending."""
        if isinstance(self.tokenizer, _RawTokenizer):
            offsets = self.tokenizer.encode(text, add_special_tokens=False).offsets
        else:
            offsets = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True,
                                     return_attention_mask=False, return_token_type_ids=False,
                                     verbose=False)["offset_mapping"]
        return [start for start, end in offsets if end > start]

    def units(self, text: str) -> list[Unit]:
        starts = self.token_starts(text)

        def count(a: int, b: int) -> int:  # tokens starting inside [a, b)
            return bisect_left(starts, b) - bisect_left(starts, a)

        units = []
        for start, end in sentence_spans(text):
            n = count(start, end)
            if n <= self.chunk_size:
                units.append(Unit(start, end, n))
                continue
            # An over-long "sentence" (a table, a list without full stops): cut at the last white
            # space that fits, so a word is never split (sub-word tokens of Korean or German would be);
            # at a token boundary only when a single "word" is longer than chunk_size.
            first = bisect_left(starts, start)
            cut = start
            while cut < end:
                nxt_index = first + self.chunk_size
                nxt = starts[nxt_index] if nxt_index < len(starts) and starts[nxt_index] < end else end
                if nxt < end:
                    space = max(text.rfind(" ", cut, nxt), text.rfind("\n", cut, nxt), text.rfind("\t", cut, nxt))
                    if space > cut:
                        nxt = space + 1
                        nxt_index = bisect_left(starts, nxt)
                units.append(Unit(cut, nxt, count(cut, nxt)))
                cut, first = nxt, nxt_index
        return units

    def chunk(self, documents: Sequence[Document]) -> list[Chunk]:
        out: list[Chunk] = []
        for document in documents:
            units = self.units(document.text)
            windows = pack(units, self.chunk_size, self.chunk_overlap)
            spans = [(units[a].start, units[b - 1].end) for a, b in windows]
            out.extend(chunks_from_spans(document, spans, self.name))
        return out


DEFAULT_SEPARATORS = ("\n\n", "\n", ". ", " ", "")


class RecursiveChunker:
    """Chunks of at most ``chunk_size`` characters, split on the coarsest separator that works.

    Args:
        chunk_size: characters per chunk (default 1000).
        chunk_overlap: characters shared by consecutive chunks (default 200), whole pieces only.
        separators: tried in order; ``""`` cuts anywhere.
    """

    name = "recursive"

    def __init__(self, chunk_size: int = 1000, chunk_overlap: int = 200,
                 separators: Sequence[str] = DEFAULT_SEPARATORS,
                 length_function: Callable[[str], int] = len):
        _check_sizes(chunk_size, chunk_overlap)
        self.chunk_size, self.chunk_overlap = chunk_size, chunk_overlap
        self.separators = tuple(separators) or ("",)
        self.length_function = length_function

    def _split(self, text: str, start: int, end: int, separators: tuple[str, ...]) -> list[Unit]:
        if self.length_function(text[start:end]) <= self.chunk_size:
            return [Unit(start, end, self.length_function(text[start:end]))]
        for i, sep in enumerate(separators):
            if sep == "":
                # Characters: cut into pieces of chunk_size characters.
                return [Unit(a, min(a + self.chunk_size, end), self.length_function(text[a:min(a + self.chunk_size, end)]))
                        for a in range(start, end, self.chunk_size)]
            if text.find(sep, start, end) < 0:
                continue
            units, piece = [], start
            while piece < end:
                hit = text.find(sep, piece, end)
                stop = end if hit < 0 else hit + len(sep)  # the separator stays with the piece before it
                units.extend(self._split(text, piece, stop, separators[i + 1:]))
                piece = stop
            return units
        return [Unit(start, end, self.length_function(text[start:end]))]

    def chunk(self, documents: Sequence[Document]) -> list[Chunk]:
        out: list[Chunk] = []
        for document in documents:
            if not document.text:
                continue
            units = self._split(document.text, 0, len(document.text), self.separators)
            windows = pack(units, self.chunk_size, self.chunk_overlap)
            spans = [(units[a].start, units[b - 1].end) for a, b in windows]
            out.extend(chunks_from_spans(document, spans, self.name))
        return out


@hookimpl
def register_chunkers(register):
    register("sentence", SentenceChunker,
             description="sentence-aware windows of N model tokens with overlap (default: the model's limit/20)")
    register("recursive", RecursiveChunker,
             description="recursive character splitter: paragraphs, lines, sentences, words (default 1000/200)")
