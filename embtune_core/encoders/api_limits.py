"""The documented limits of OpenAI's embeddings endpoint, and the token counts that keep requests within them.

OpenAI's ``/v1/embeddings`` (text-embedding-3-small, text-embedding-3-large, text-embedding-ada-002;
https://platform.openai.com/docs/api-reference/embeddings/create):

* an input holds at most 8,192 tokens (:data:`MAX_INPUT_TOKENS`); longer ones are refused with HTTP 400
  ``This model's maximum context length is 8192 tokens, however you requested 9000 tokens ...``;
* a request holds at most 2,048 inputs (:data:`MAX_INPUTS`);
* the inputs of one request hold at most 300,000 tokens together (:data:`MAX_REQUEST_TOKENS`); more is
  refused with HTTP 400 ``Requested 384000 tokens, max 300000 tokens per request``
  (``code: max_tokens_per_request``).

:class:`TokenCounter` counts tokens the way the limits do: with tiktoken's encoding for the model
(``cl100k_base`` for those three) when tiktoken is installed and that encoding's file is already in
tiktoken's cache (``TIKTOKEN_CACHE_DIR``, else ``<tmp>/data-gym-cache``: nothing is downloaded here;
``python -c "import tiktoken; tiktoken.get_encoding('cl100k_base')"`` fetches it once). Otherwise it
counts UTF-8 bytes, an upper bound for every byte-level BPE tokenizer (a token is at least one byte),
and says so once: requests then stay within the limits at the cost of more, smaller requests, and a
text is known to fit only below the limit in bytes (the server's own count, in its refusal, decides the
rest: see :mod:`embtune_plugins.encoders`).

Example::

    counter = TokenCounter.for_model("text-embedding-3-small")
    counter.exact, counter.name            # (True, 'tiktoken cl100k_base') or (False, 'UTF-8 bytes (upper bound)')
    counter.count(["How fast did Uber grow?"])   # [6] (tiktoken)
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Sequence
from typing import Any

log = logging.getLogger(__name__)

MAX_INPUT_TOKENS = 8192
MAX_INPUTS = 2048
MAX_REQUEST_TOKENS = 300_000
# The encoding tiktoken's ``encoding_for_model`` names for OpenAI's embedding models (tiktoken/model.py).
ENCODINGS = {"text-embedding-3-small": "cl100k_base", "text-embedding-3-large": "cl100k_base",
             "text-embedding-ada-002": "cl100k_base"}
_BLOBS = {"cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
          "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"}
_notices: set[str] = set()


def _cached_tiktoken(encoding: str) -> Any:
    """tiktoken's ``encoding`` when tiktoken is installed and its file is in tiktoken's cache; else None
    (never a download: machines without the internet would wait on it)."""
    try:
        import tiktoken
    except ImportError:
        return None
    blob = _BLOBS.get(encoding)
    if blob is None:
        return None
    cache = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR") or os.path.join(
        tempfile.gettempdir(), "data-gym-cache")
    if not os.path.isfile(os.path.join(cache, hashlib.sha1(blob.encode()).hexdigest())):
        return None
    try:
        return tiktoken.get_encoding(encoding)
    except Exception:  # noqa: BLE001 - a damaged cache file: fall back to the byte bound, said below
        return None


class TokenCounter:
    """Tokens of texts for an API model: exact (a tiktoken ``Encoding``) or an upper bound (UTF-8 bytes).

    ``encoding``: a tiktoken ``Encoding`` (or anything with ``encode``/``decode``), None for the byte bound.
    """

    def __init__(self, encoding: Any = None, name: str | None = None):
        self.encoding = encoding
        self.exact = encoding is not None
        self.name = name or (f"tiktoken {getattr(encoding, 'name', 'encoding')}" if self.exact
                             else "UTF-8 bytes (upper bound)")

    @classmethod
    def for_model(cls, model: str, tokenizer: str | None = None) -> TokenCounter:
        """The counter for ``model``: ``tokenizer`` ``"bytes"``, ``"tiktoken:NAME"``, or None/``"auto"``
        (tiktoken's encoding for the model when available offline, else bytes, said once in one line)."""
        if tokenizer == "bytes":
            return cls()
        wanted = tokenizer.split(":", 1)[1] if tokenizer and tokenizer.startswith("tiktoken:") else \
            ENCODINGS.get(model, "cl100k_base")
        encoding = _cached_tiktoken(wanted)
        if encoding is not None:
            return cls(encoding)
        if tokenizer and tokenizer.startswith("tiktoken:"):
            from embtune_core.errors import ConfigError

            raise ConfigError(f"tiktoken's {wanted} is not available offline (install tiktoken and run python -c "
                              f"\"import tiktoken; tiktoken.get_encoding('{wanted}')\" once)", field="tokenizer")
        if model not in _notices:
            _notices.add(model)
            log.info("%s: tokens counted as UTF-8 bytes, an upper bound (tiktoken's %s is not in its cache): "
                     "requests stay within the limits, in more and smaller batches", model, wanted)
        return cls()

    def count(self, texts: Sequence[str]) -> list[int]:
        """Tokens of each text (exact, or the byte upper bound)."""
        if self.exact:
            return [len(ids) for ids in self.encoding.encode_batch(list(texts), disallowed_special=())]
        return [len(text.encode("utf-8")) for text in texts]

    def cut(self, text: str, limit: int) -> str:
        """The longest prefix of ``text`` that holds at most ``limit`` tokens (by this counter)."""
        if self.exact:
            ids = self.encoding.encode(text, disallowed_special=())
            if len(ids) <= limit:
                return text
            return self.encoding.decode_bytes(ids[:limit]).decode("utf-8", errors="ignore")
        data = text.encode("utf-8")
        return text if len(data) <= limit else data[:limit].decode("utf-8", errors="ignore")

    def windows(self, text: str, budget: int) -> list[tuple[str, int]]:
        """``text`` as consecutive pieces of at most ``budget`` tokens each, with their token counts (one
        piece when it fits): token boundaries for tiktoken, UTF-8 character boundaries for the byte bound."""
        if self.exact:
            ids = self.encoding.encode(text, disallowed_special=())
            if len(ids) <= budget:
                return [(text, max(1, len(ids)))]
            data = self.encoding.decode_bytes(ids)
            ends = []  # byte offset where each window's tokens end
            offset = 0
            for start in range(0, len(ids), budget):
                offset += len(self.encoding.decode_bytes(ids[start:start + budget]))
                ends.append((offset, min(budget, len(ids) - start)))
            pieces, begin = [], 0
            for end, n in ends:
                while begin < end < len(data) and (data[end] & 0xC0) == 0x80:  # a token split a character
                    end -= 1
                piece = data[begin:end].decode("utf-8", errors="replace")
                if piece:
                    pieces.append((piece, n))
                begin = end
            return pieces
        data = text.encode("utf-8")
        if len(data) <= budget:
            return [(text, max(1, len(data)))]
        pieces, start = [], 0
        while start < len(data):
            end = min(len(data), start + budget)
            while end < len(data) and end > start and (data[end] & 0xC0) == 0x80:  # not inside a character
                end -= 1
            pieces.append((data[start:end].decode("utf-8"), end - start))
            start = end
        return pieces


def batches(counts: Sequence[int], *, max_inputs: int, max_tokens: int) -> list[tuple[int, int]]:
    """``(start, end)`` ranges over consecutive inputs, each holding at most ``max_inputs`` inputs and at
    most ``max_tokens`` tokens (an input alone above ``max_tokens`` is a batch by itself)."""
    out: list[tuple[int, int]] = []
    start, total = 0, 0
    for i, n in enumerate(counts):
        if i > start and (i - start >= max_inputs or total + n > max_tokens):
            out.append((start, i))
            start, total = i, 0
        total += n
    if start < len(counts):
        out.append((start, len(counts)))
    return out
