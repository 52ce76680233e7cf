"""Documents longer than a model's token limit, read whole as windows instead of cut.

A sentence-transformers model reads at most ``max_seq_length`` tokens of a text and drops the rest
(:mod:`embtune_core.encoders.token_limits`). The 10-K chunks of LlamaIndex's QA set have a median of 769
MiniLM tokens: at the model's 256, two thirds of most chunks are never seen, and a question about
them cannot be matched. ``document_windows`` splits every document that does not fit into
consecutive windows that do (on token boundaries, backed off to the start of a word), embeds each
window, and

* ``"mean"``: pools them into one vector per document, weighted by each window's tokens (the
  OpenAI cookbook's "Embedding texts that are longer than the model's maximum context length"). A
  query's dot product with that mean is the weighted mean of its window scores, i.e. SumP of Dai &
  Callan 2019 up to the final rescaling. One vector per document, so it works wherever an embeddings
  object does (LangChain, DocsGPT, FAISS, query adapters, mining);
* ``"max"``: keeps one vector per window and scores a document by its best window (MaxP, Dai &
  Callan 2019, "Deeper Text Understanding for IR with Contextual Neural Language Modeling",
  SIGIR). Needs a multi-vector index: ``embtune evaluate`` searches one, and
  :func:`embtune_integrations.multi_vector.window_retriever` builds the same ranking in LangChain
  (its ``MultiVectorRetriever`` over an embtune FAISS store of the windows); anything that wants one
  vector per document refuses it in one line;
* ``"off"`` (the default): the model's own behaviour, documents cut at the limit (and said so).

Queries are never split. Documents that fit are one window holding the unchanged text, so their
vectors are exactly the plain encoder's (and share its embedding cache entries).

In training, :func:`best_window_positives` (``embtune train --document-windows best``) turns a long
positive into the window the base model ranks first for its question.

Measured on Lyft -> Uber (``python bench/index_aware_10k.py``; packaged MiniLM, 790 Uber questions,
hit@5): the base model 0.728 cut at 256 tokens, 0.808 with ``mean`` and 0.844 with ``max`` over
256-token windows; fine-tuned with the defaults 0.772 / 0.872 / 0.925 (bench/RESULTS.md).

Example::

    encoder = encoder_from_spec("st:sentence-transformers/all-MiniLM-L6-v2", document_windows="mean")
    vectors = encoder.encode_documents([long_text])          # (1, 384), the whole text read
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from embtune_core.errors import UsageError

log = logging.getLogger(__name__)

MODES = ("off", "mean", "max")
WORD_BACKOFF = 16  # tokens a window end may move back to land on the start of a word


def check_mode(value: Any, field: str = "document_windows") -> str:
    """``value`` if it is one of :data:`MODES`, else a one-line UsageError naming ``field``."""
    if value not in MODES:
        raise UsageError(f"must be one of {', '.join(MODES)}, got {value!r}", field=field)
    return str(value)


@dataclass
class Windows:
    """The windows of a list of documents, flattened.

    ``texts[i]`` is a window, ``owner[i]`` the position of its document in the input list and
    ``tokens[i]`` its length in tokens (the pooling weight). Every document has at least one window.
    """

    texts: list[str]
    owner: np.ndarray  # (n_windows,) int64
    tokens: np.ndarray  # (n_windows,) float64
    n_documents: int

    @property
    def split(self) -> int:
        """How many documents were split into more than one window."""
        return int(np.sum(np.bincount(self.owner, minlength=self.n_documents) > 1))


def window_budget(model: Any, prompt: str = "") -> int:
    """Tokens of text one window may hold: the model's token limit
    (:func:`embtune_core.encoders.model_modules.token_limit`) less its special tokens and the prompt prepended to
    documents. A model that reads texts whole (a static model without truncation) is refused in one
    line: there is nothing to split."""
    from embtune_core.encoders.model_modules import first_module_name, token_limit, tokenizer_of

    limit = token_limit(model, "document")
    if limit is None:
        raise UsageError(f"the model reads every document whole ({first_module_name(model)} without a token "
                         "limit): there is nothing to split; leave document_windows off", field="document_windows")
    tokenizer = tokenizer_of(model, "document")
    if not callable(tokenizer) and not hasattr(tokenizer, "encode_batch"):
        raise UsageError(f"needs a tokenizer that gives character offsets to split documents into windows; "
                         f"{first_module_name(model)}'s {type(tokenizer).__name__} gives none", field="document_windows")
    if callable(tokenizer):
        special = tokenizer.num_special_tokens_to_add(pair=False)
        prompt_tokens = len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) if prompt else 0
    else:  # a static model's tokenizers.Tokenizer: encoded without special tokens
        special = 0
        prompt_tokens = len(tokenizer.encode(prompt, add_special_tokens=False).ids) if prompt else 0
    budget = limit - special - prompt_tokens
    if budget < 8:
        raise UsageError(f"a token limit of {limit} leaves {budget} tokens per window after the "
                         "special tokens and the document prompt", field="document_windows")
    return budget


def split(model: Any, texts: Sequence[str], *, prompt: str = "") -> Windows:
    """Split each of ``texts`` into consecutive windows of at most :func:`window_budget` tokens of
    the model's own tokenizer (a fast tokenizer: the cut uses its character offsets). A text that fits
    is one window holding it unchanged. Raises UsageError for a tokenizer without offsets."""
    from embtune_core.encoders.model_modules import tokenizer_of

    budget = window_budget(model, prompt)
    tokenizer = tokenizer_of(model, "document")
    out_texts: list[str] = []
    owner: list[int] = []
    tokens: list[int] = []
    texts = list(texts)
    for index, text in enumerate(texts):
        if index % 1024 == 0:  # tokenized in blocks: bounded memory, one call per block
            block = _offsets(tokenizer, texts[index:index + 1024])
        offsets = block[index % 1024]
        if len(offsets) <= budget:
            out_texts.append(text)
            owner.append(index)
            tokens.append(max(1, len(offsets)))
            continue
        start = 0
        while start < len(offsets):
            end = min(len(offsets), start + budget)
            if end < len(offsets):
                end = _word_start(offsets, start, end)
            out_texts.append(text[offsets[start][0]:offsets[end - 1][1]])
            owner.append(index)
            tokens.append(end - start)
            start = end
    return Windows(out_texts, np.asarray(owner, dtype=np.int64), np.asarray(tokens, dtype=np.float64), len(texts))


def _offsets(tokenizer: Any, texts: list[str]) -> list[list[tuple[int, int]]]:
    if not callable(tokenizer) and hasattr(tokenizer, "encode_batch"):  # tokenizers.Tokenizer (static models)
        import copy

        whole = copy.copy(tokenizer)
        whole.no_truncation()  # the offsets of every token, not only of those the model reads
        return [list(e.offsets) for e in whole.encode_batch(texts, add_special_tokens=False)]
    try:
        return tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True, verbose=False)["offset_mapping"]
    except NotImplementedError as exc:  # slow (Python) tokenizers have no offsets
        raise UsageError("needs a fast tokenizer (character offsets) to split documents into windows",
                         field="document_windows") from exc


def _word_start(offsets: Sequence[tuple[int, int]], start: int, end: int) -> int:
    """``end`` moved back (at most :data:`WORD_BACKOFF` tokens) until token ``end`` starts a word
    (a gap before it), so no window ends inside a word; ``end`` itself when none is found."""
    for candidate in range(end, max(start + 1, end - WORD_BACKOFF), -1):
        if offsets[candidate][0] > offsets[candidate - 1][1]:
            return candidate
    return end


def mean_pool(vectors: np.ndarray, windows: Windows, *, unit: bool) -> np.ndarray:
    """One vector per document: the mean of its windows' ``vectors`` (n_windows, d) weighted by
    their tokens, rescaled to unit length when ``unit``. Returns (n_documents, d) float32."""
    vectors = np.asarray(vectors, dtype=np.float64)
    pooled = np.zeros((windows.n_documents, vectors.shape[1]), dtype=np.float64)
    np.add.at(pooled, windows.owner, vectors * windows.tokens[:, None])
    pooled /= np.bincount(windows.owner, weights=windows.tokens, minlength=windows.n_documents)[:, None]
    if unit:
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        pooled /= np.where(norms > 0, norms, 1.0)
    return pooled.astype(np.float32)


def max_pool_scores(scores: np.ndarray, indices: np.ndarray, owner: np.ndarray, depth: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Document rankings from window rankings (MaxP): each document scores its best window.

    ``scores``/``indices`` (n_queries, k) are a window search, best first; ``owner`` maps a window to
    its document. Returns (n_queries, depth) scores and document positions, best first, padded
    with -inf / -1 when fewer than ``depth`` documents were reached. Exact when the ``k`` windows
    searched reach ``depth`` distinct documents (:func:`windows_to_search` chooses such a ``k``).
    """
    n = scores.shape[0]
    out_scores = np.full((n, depth), -np.inf, dtype=np.float32)
    out_indices = np.full((n, depth), -1, dtype=np.int64)
    for row in range(n):
        seen: set[int] = set()
        filled = 0
        for score, window in zip(scores[row], indices[row]):
            if window < 0:
                break
            document = int(owner[window])
            if document in seen:
                continue  # a later window of a document already ranked: lower, by search order
            seen.add(document)
            out_scores[row, filled], out_indices[row, filled] = score, document
            filled += 1
            if filled == depth:
                break
    return out_scores, out_indices


def windows_to_search(owner: np.ndarray, depth: int) -> int:
    """How many windows to search so the best ``depth`` documents by MaxP are exact: enough to reach
    ``depth`` documents even if the top windows all belong to the documents with the most windows."""
    per_document = np.sort(np.bincount(owner))[::-1]
    return int(min(len(owner), per_document[:depth].sum() + depth))


class WindowedEncoder:
    """A sentence-transformers encoder whose documents are read whole as windows (module docstring).

    ``base`` is the plain encoder (it embeds queries and windows; its embedding cache entries are
    shared); ``mode`` is ``"mean"`` or ``"max"``. :meth:`encode_documents` returns one vector per
    document (``"mean"`` only); evaluation reads :meth:`windows` for ``"max"``.
    Raises UsageError for an encoder that is not a local sentence-transformers model.
    """

    def __init__(self, base: Any, mode: str):
        self.mode = check_mode(mode)
        if self.mode == "off" or not hasattr(base, "count_over_limit") or not hasattr(base, "token_limit"):
            raise UsageError("applies to local sentence-transformers models and OpenAI-compatible embeddings "
                             "(encoders that count their tokens)", field="document_windows")
        self.base = base

    def __getattr__(self, name: str) -> Any:
        # Everything not about documents (name, convention, weights fingerprint, prompts...) is the base's.
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)

    @property
    def encoder_identity(self):
        """The base encoder's identity with ``document_windows``: documents read as windows are other vectors."""
        from embtune_core.encoders.encoder_identity import identity_of

        return identity_of(self.base).with_settings(("document_windows", self.mode))

    @property
    def identity(self) -> str:
        return f"{self.base.identity} document_windows={self.mode}"

    def description(self):
        """The base encoder's description (:func:`embtune_core.encoders.encoder_identity.describe`) under this identity."""
        from dataclasses import replace

        from embtune_core.encoders.encoder_identity import describe

        return replace(describe(self.base), identity=self.encoder_identity)

    @property
    def dimension(self) -> int:
        return self.base.dimension

    @property
    def token_limit(self) -> int | None:
        return self.base.token_limit

    @property
    def model(self) -> Any:
        return self.base.model

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.base.encode_queries(texts)

    def document_prompt(self) -> str:
        """The prompt the base encoder prepends to documents (it takes window tokens too)."""
        from embtune_core.encoders.token_limits import prompt_for

        explicit = getattr(self.base, "document_prompt", None)
        kind = "document" if getattr(self.base, "prompts", True) or explicit is not None else "plain"
        return prompt_for(self.base.model, kind, explicit)

    def windows(self, texts: Sequence[str]) -> Windows:
        split_windows = getattr(self.base, "split_windows", None)  # an API encoder counts its own tokens
        if split_windows is not None:
            return split_windows(list(texts))
        return split(self.base.model, list(texts), prompt=self.document_prompt())

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dimension) float32: token-weighted means of window vectors (``"mean"``)."""
        if self.mode == "max":
            raise UsageError("'max' keeps several vectors per document; this use needs one per document: "
                             "use 'mean' here", field="document_windows")
        windows = self.windows(texts)
        return pool(self.base.encode_documents(windows.texts), windows)

    def count_over_limit(self, texts: list[str], kind: str) -> tuple[int, int | None]:
        """Queries as the base encoder counts them; documents are never cut (0 over the limit)."""
        over, limit = self.base.count_over_limit(texts, kind)
        return (0 if kind == "document" else over), limit

    def describe(self, windows: Windows) -> str:
        """One line for a report: how many documents were read as how many windows, pooled how."""
        how = "token-weighted mean of windows" if self.mode == "mean" else "best window per document (MaxP)"
        if not windows.split:
            return (f"none of {windows.n_documents} corpus texts is longer than {self.base.token_limit} tokens: "
                    f"document_windows={self.mode} changes nothing")
        return (f"{windows.split} of {windows.n_documents} corpus texts longer than {self.base.token_limit} tokens "
                f"read whole as {len(windows.texts)} windows in all ({how})")

    def __repr__(self) -> str:
        return f"WindowedEncoder({self.identity!r})"


def pool(vectors: np.ndarray, windows: Windows) -> np.ndarray:
    """:func:`mean_pool`, keeping unit length when the window vectors have it."""
    vectors = np.asarray(vectors, dtype=np.float32)
    unit = bool(len(vectors)) and bool(np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3))
    return mean_pool(vectors, windows, unit=unit)


def plain_identity(identity: str) -> str:
    """An encoder identity without its ``document_windows`` setting: what its *query* vectors depend
    on (queries are never split), e.g. for a query adapter's base check."""
    import re

    return re.sub(r" document_windows=\w+", "", identity)


def wrap(encoder: Any, mode: str | None) -> Any:
    """``encoder`` itself for ``None``/``"off"``, else a :class:`WindowedEncoder` over it."""
    if mode is None or check_mode(mode) == "off":
        return encoder
    return WindowedEncoder(encoder, mode)


# --- training: a long positive becomes its best window ---------------------------------------------------
TRAINING_MODES = ("off", "best")


def best_window_positives(dataset: Any, model: Any, *, batch_size: int = 32) -> tuple[Any, dict[str, Any], dict[str, str]]:
    """Training pairs whose positive is longer than the model reads, turned into (question, window).

    Trained on a cut positive, a model learns to match questions to text it never saw in the
    chunk; here each such positive is split into windows (:func:`split`) and the question trains on
    the window that ``model`` (the base model, before training) scores highest -- the passage-level
    weak supervision of MaxP training (Dai & Callan 2019) with the base model as the judge. A tie
    goes to the earlier window. Positives that fit are left as they are.

    ``dataset`` is a :class:`~embtune_core.data.dataset.QADataset`; returns the new dataset (window ids
    ``CHUNK#wK``), a record for the run summary and ``{window text: chunk id}`` for the batch
    sampler, so that two windows of one chunk never share a batch as each other's negatives.
    """
    from dataclasses import replace

    from embtune_core.encoders.token_limits import prompt_for

    prompt = prompt_for(model, "document")
    budget = window_budget(model, prompt)
    used = sorted({c for docs in dataset.relevant_docs.values() for c in docs if c in dataset.corpus})
    # One split of every positive decides which are long (more than one window) with the same budget,
    # prompt included, as the windows themselves; only the long ones' windows are embedded.
    everything = split(model, [dataset.corpus[c] for c in used], prompt=prompt)
    counts = np.bincount(everything.owner, minlength=len(used))
    long_ids = [c for c, n in zip(used, counts) if n > 1]
    record: dict[str, Any] = {"mode": "best", "window_tokens": budget, "positives": len(used),
                              "long_positives": len(long_ids), "pairs_moved": 0, "windows": 0}
    if not long_ids:
        return dataset, record, {}
    keep = counts[everything.owner] > 1
    texts = [t for t, k in zip(everything.texts, keep) if k]
    position = {c: i for i, c in enumerate(long_ids)}
    owner = np.repeat(np.arange(len(long_ids)), counts[counts > 1])  # kept windows, in document order
    bounds = np.searchsorted(owner, np.arange(len(long_ids) + 1))  # windows of document i: bounds[i]:bounds[i+1]
    window_vectors = model.encode_document(texts, batch_size=batch_size, normalize_embeddings=True,
                                           convert_to_numpy=True, show_progress_bar=False)
    asking = sorted(q for q, docs in dataset.relevant_docs.items() if q in dataset.queries
                    and any(c in position for c in docs))
    from embtune_core.encoders.token_prefix import readable_texts

    query_vectors = model.encode_query(readable_texts(model, [dataset.queries[q] for q in asking]), batch_size=batch_size,
                                       normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    corpus = dict(dataset.corpus)
    relevant = {q: list(docs) for q, docs in dataset.relevant_docs.items()}
    groups: dict[str, str] = {}
    for row, q in enumerate(asking):
        for j, c in enumerate(relevant[q]):
            if c not in position:
                continue
            start, stop = bounds[position[c]], bounds[position[c] + 1]
            k = int(np.argmax(window_vectors[start:stop] @ query_vectors[row]))  # first of equals: the earlier window
            window_id = f"{c}#w{k}"
            corpus[window_id] = texts[start + k]
            groups[texts[start + k]] = c
            relevant[q][j] = window_id
            record["pairs_moved"] += 1
    record["windows"] = len(texts)
    record["windows_used"] = len(groups)
    log.info("document_windows=best: %d of %d positive chunks are longer than %d tokens; %d questions train on the "
             "chunk window the base model ranks first (%d distinct windows of %d)", len(long_ids), len(used), budget,
             record["pairs_moved"], len(groups), len(texts))
    return replace(dataset, corpus=corpus, relevant_docs=relevant), record, groups
