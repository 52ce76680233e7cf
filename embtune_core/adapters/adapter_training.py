"""Training query adapters on cached embeddings: the encoder runs once, every epoch reuses its vectors.

Inputs: an encoder (any backend, even a black-box API), a training :class:`QADataset`, optionally a
validation one, and :class:`AdapterTrainingConfig`. Corpus and queries are embedded once through
the :class:`~embtune_core.encoders.embedding_cache.EmbeddingCache`; training then touches only tensors, so
twelve epochs cost about one embedding pass.

What it optimises, per (query, positive chunk) pair, with ``a = adapter(q)`` (unit length when
``normalize_output``) and every document vector frozen:

* a contrastive (InfoNCE) loss ``-log softmax(a . d / temperature)[positive]`` over the **whole
  cached corpus**: every frozen document is a negative, which includes the in-batch positives of
  the other queries (with ``corpus_negatives=False``, only in-batch documents and hard negatives;
  above ``max_corpus_negatives`` documents, a fresh random sample of that size per step). The
  query's other relevant chunks are masked out, never used as negatives;
* plus ``hard_negative_weight`` x the same loss over (positive, mined hard negatives) when the
  dataset has ``negatives`` (hard negatives that are also relevant are dropped);
* plus ``identity_reg`` x the adapter's distance from the identity map
  (:func:`embtune_core.adapters.adapter_base.identity_penalty`), which keeps it close to the base model.

**The index's metric** (``index_metric``). An adapter is trained, selected and served in the metric of
the index it will search: ``"inner_product"`` (embtune's own stores, FAISS ``IndexFlatIP``; cosine for
unit vectors) or ``"l2"`` (squared Euclidean distance: FAISS ``IndexFlatL2``, which LangChain's
``FAISS.from_documents`` builds by default and DocsGPT's ``FaissStore`` searches). For a query ``a``
and a document ``d``, ``-|a - d|^2 / 2 = a . d - |d|^2 / 2 - |a|^2 / 2``, so L2 ranking is the inner
product with ``|d|^2 / 2`` subtracted; the loss and the validation search use that score. On unit
vectors both metrics rank alike (and the training is unchanged, bit for bit). On vectors that are not
unit length (a model without a ``Normalize`` module, ``--host-vectors``) they do not: an adapter
trained by inner product and normalised to unit length, served against DocsGPT's L2 index, moved
hit@1 from 0.542 to 0.208 (issue 27). With ``"l2"`` there, adapted queries keep their scale
(``normalize_output`` defaults to False when the vectors are not unit length; True is refused), so
epoch 0, the identity, is the base model in the index's own metric and the kept adapter never scores
below it on the validation split. ``embtune train-adapter --host-vectors`` trains for ``"l2"``.

With ``matryoshka_dims`` (e.g. the dimensions a report evaluates), the contrastive terms are the
mean over those dimensions of the same loss on the first ``d`` components of the adapted query and
of every document, each renormalised: Matryoshka representation learning (Kusupati et al. 2022,
arXiv:2205.13147) applied to the query side only. The epoch kept must then match or beat the base
at **every** listed dimension on the validation split (epoch 0, the identity, always does); among
those, the best mean selection metric over the dimensions wins. Without it, an adapter trained at
full width loses to the base at truncated widths (-0.009 NDCG@10 at 128 and 64 on the 10-K ICT run).

The InfoNCE temperature suits some data and not other: on the quickstart's Python reference 0.1 beat
0.05 for 3 of 4 adapter seeds, on Lyft -> Uber 0.05 beat 0.1 for every variant
(``bench/adapter_dims_10k.py --temperature``). ``temperature_grid`` trains one adapter per listed
temperature besides ``temperature`` (same seed, data and rules) and keeps the one whose kept epoch
scores best on the validation split (ties go to the earlier candidate, ``temperature`` first): a grid
search on held-out questions, which the training record lists with each candidate's score.

AdamW; batches are reshuffled every epoch (seeded) and never hold one positive chunk twice.
After every epoch the adapter is scored (MRR@10 by default) on a validation split held out **by
source document** (``corpus_metadata[...]["source"]``), else by page, else by chunk, so the
questions of one chunk never straddle train and validation. The best epoch is
kept; epoch 0 is the identity map itself, so the saved adapter never scores below the base model
on the validation split. Training stops after ``patience`` epochs without improvement of the
selection metric (with ``matryoshka_dims``, of its mean over them, whether or not the epoch passes the
every-width gate: the gate decides which epoch is kept, not when to stop).

Example::

    encoder = encoder_from_spec("st:sentence-transformers/all-MiniLM-L6-v2")
    result = train_adapter(encoder, QADataset.load("train_dataset.json"),
                           config=AdapterTrainingConfig(adapter="linear", epochs=12), output_dir="out/adapter")
    print(result.baseline["mrr@10"], "->", result.best["mrr@10"])
"""

from __future__ import annotations

import collections
import contextlib
import copy
import dataclasses
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from embtune_core.adapters.adapter_base import check_identity_at_init, identity_penalty
from embtune_core.adapters.adapter_io import AdapterConfig, SavedAdapter, build_adapter, save_adapter
from embtune_core.data.dataset import QADataset
from embtune_core.encoders.embedding_cache import EmbeddingCache
from embtune_core.encoders.encoder_identity import describe
from embtune_core.errors import ConfigError, DatasetError, InputError
from embtune_core.retrieval.search import exact_search
from embtune_core.runtime.progress import progress
from embtune_core.scoring import metrics

log = logging.getLogger(__name__)

from embtune_core.adapters.adapter_settings import (  # noqa: F401 - declared without torch; public here too
    INDEX_METRICS,
    AdapterTrainingConfig,
    IndexMetric,
    SelectionMetric,
)

UNIT_TOLERANCE = 1e-3  # |norm - 1| under which a vector counts as unit length (as embtune_integrations.faiss_store)
SINGLE_THREAD_LIMIT = 1 << 24  # corpus floats (documents x dimension) up to which training uses one CPU thread


@dataclass
class TrainingResult:
    adapter: SavedAdapter
    baseline: dict[str, float]  # validation metrics of the base model (the identity adapter)
    best: dict[str, float]  # validation metrics of the kept adapter
    best_epoch: int  # 0 means no epoch beat the base model: the adapter is the identity
    history: list[dict[str, Any]]
    timings: dict[str, float]
    output_dir: Path | None = None


# --- splitting ---------------------------------------------------------------------------------------
def split_for_validation(dataset: QADataset, val_fraction: float = 0.2, *,
                         seed: int = 42) -> tuple[QADataset, QADataset]:
    """(train, validation) held out by source document, else by page, else by chunk.

    Uses :func:`embtune_core.data.splitting.split_by_source`, so the questions of one chunk (or one
    document) never straddle the split; validation questions whose text is also a training
    question's are left out. Training keeps only its own chunks; validation queries are
    ranked against the whole corpus, the harder and more realistic task (held-out documents among
    all the others).
    """
    from embtune_core.data.splitting import split_by_source, without_repeated_questions

    for by in ("source", "page", "chunk"):
        try:
            train, val = split_by_source(dataset, val_fraction=val_fraction, seed=seed, by=by)
            break
        except InputError as exc:
            if by == "chunk":
                raise DatasetError(f"cannot hold out a validation split: {exc.problem}") from None
            log.info("validation split by %s impossible (%s); trying a finer grouping", by, exc.problem)
    # A question asked of both sides would be chosen on what was trained on (and training refuses it).
    kept = without_repeated_questions(dataset, list(train.queries), list(val.queries))
    return train, dataset.subset(kept)


# --- embedded data -----------------------------------------------------------------------------------
@dataclass
class _Embedded:
    queries: torch.Tensor  # (n_queries, dim)
    corpus: torch.Tensor  # (n_corpus, dim)
    query_ids: list[str]
    corpus_ids: list[str]
    relevant: list[np.ndarray]  # corpus rows per query row
    negatives: list[np.ndarray]  # hard-negative corpus rows per query row
    l2: bool = False  # corpus rows carry -|d|^2/2 as a last column: scores are L2 rankings (see _for_l2)


def _embed(dataset: QADataset, encoder, cache: EmbeddingCache, device: torch.device, label: str) -> _Embedded:
    query_ids = [q for q in dataset.queries if dataset.relevant_docs.get(q)]
    corpus_ids = list(dataset.corpus)
    row = {cid: i for i, cid in enumerate(corpus_ids)}
    corpus = cache.embed(encoder, [dataset.corpus[c] for c in corpus_ids], kind="document",
                         desc=f"embedding {label} corpus")
    queries = cache.embed(encoder, [dataset.queries[q] for q in query_ids], kind="query",
                          desc=f"embedding {label} queries")
    relevant = [np.array(sorted({row[c] for c in dataset.relevant_docs[q] if c in row}), dtype=np.int64)
                for q in query_ids]
    negatives = []
    for q, rel in zip(query_ids, relevant):
        rows = {row[c] for c in dataset.negatives.get(q, []) if c in row} - set(rel.tolist())
        negatives.append(np.array(sorted(rows), dtype=np.int64))
    return _Embedded(torch.from_numpy(np.array(queries)).to(device), torch.from_numpy(np.array(corpus)).to(device),
                     query_ids, corpus_ids, relevant, negatives)


# --- batching ----------------------------------------------------------------------------------------
def no_duplicate_batches(pairs: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle ``pairs`` (rows of (query row, positive row)) into batches that never repeat a positive.

    A pair whose positive is already in the open batch waits for the next one, as
    sentence-transformers' ``NoDuplicatesBatchSampler`` does; every pair is used once per epoch.
    """
    pending = collections.deque(int(i) for i in rng.permutation(len(pairs)))
    deferred: list[int] = []  # pairs that met their positive in an earlier batch; they go first next time
    batches: list[np.ndarray] = []
    while pending or deferred:
        batch: list[int] = []
        seen: set[int] = set()
        waiting: list[int] = []
        for index in deferred:
            positive = int(pairs[index, 1])
            if len(batch) < batch_size and positive not in seen:
                batch.append(index)
                seen.add(positive)
            else:
                waiting.append(index)
        deferred = waiting
        while pending and len(batch) < batch_size:
            index = pending.popleft()
            positive = int(pairs[index, 1])
            if positive in seen:
                deferred.append(index)
            else:
                batch.append(index)
                seen.add(positive)
        batches.append(np.array(batch, dtype=np.int64))
    return batches


# --- evaluation --------------------------------------------------------------------------------------
@torch.no_grad()
def _adapted(adapter: torch.nn.Module, queries: torch.Tensor, normalize: bool) -> torch.Tensor:
    out = adapter(queries)
    return F.normalize(out, dim=-1) if normalize else out


def _for_l2(data: _Embedded) -> _Embedded:
    """``data`` whose documents score by L2 distance: each corpus row gets ``-|d|^2 / 2`` as a last
    column, and a query ``a`` scores ``[a, 1] . [d, -|d|^2/2] = a . d - |d|^2/2``, which orders documents
    as ``|a - d|^2`` does (smallest first)."""
    corpus = data.corpus
    extra = -0.5 * (corpus * corpus).sum(dim=1, keepdim=True)
    return dataclasses.replace(data, corpus=torch.cat([corpus, extra], dim=1), l2=True)


def _scored(queries: torch.Tensor, l2: bool) -> torch.Tensor:
    """Query rows as the corpus rows expect them: ``[a, 1]`` for an L2 corpus (:func:`_for_l2`)."""
    if not l2:
        return queries
    return torch.cat([queries, torch.ones(queries.shape[0], 1, dtype=queries.dtype, device=queries.device)], dim=1)


def all_unit(*tensors: torch.Tensor) -> bool:
    """Whether every row of every tensor is unit length (within :data:`UNIT_TOLERANCE`)."""
    return all(bool(torch.all((t.norm(dim=1) - 1).abs() <= UNIT_TOLERANCE)) for t in tensors if t.numel())


def retrieval_metrics(query_emb: np.ndarray, corpus_emb: np.ndarray, relevant: list[np.ndarray]) -> dict[str, float]:
    """hit_rate@1/5/10 and mrr@10 of exact inner-product search (``relevant``: corpus rows per query)."""
    _, indices = exact_search(np.asarray(query_emb, np.float32), np.asarray(corpus_emb, np.float32), k=10)
    hits = metrics.hit_matrix(indices, relevant)
    out = {f"hit_rate@{k}": float(metrics.hit_rate(hits, k).mean()) for k in (1, 5, 10)}
    out["mrr@10"] = float(metrics.reciprocal_rank(hits, 10).mean())
    return out


def _evaluate(adapter: torch.nn.Module, data: _Embedded, normalize: bool,
              dims: list[int] | None = None) -> dict[str, float]:
    """Validation metrics at full width; with ``dims``, also ``METRIC@dimD`` at each truncated width."""
    was_training = adapter.training
    adapter.eval()
    queries = _adapted(adapter, data.queries, normalize)
    adapter.train(was_training)
    out = retrieval_metrics(_scored(queries, data.l2).cpu().numpy(), data.corpus.cpu().numpy(), data.relevant)
    for dim in dims or ():
        scores = retrieval_metrics(_truncate(queries, dim).cpu().numpy(), _truncate(data.corpus, dim).cpu().numpy(),
                                   data.relevant)
        out.update({f"{k}@dim{dim}": v for k, v in scores.items()})
    return out


def _truncate(vectors: torch.Tensor, dim: int) -> torch.Tensor:
    """The first ``dim`` components, renormalised (as :func:`embtune_core.scoring.evaluation.truncate` does)."""
    return F.normalize(vectors[:, :dim], dim=-1)


def _progress_score(scores: dict[str, float], metric: str, dims: list[int] | None) -> float:
    """How good an epoch is: the metric, or with ``dims`` its mean over them."""
    if not dims:
        return scores[metric]
    return float(np.mean([scores[f"{metric}@dim{d}"] for d in dims]))


class EpochChoice:
    """Which epoch to keep, and when to stop, from each epoch's validation scores.

    Kept: the epoch with the best :func:`_progress_score` among those that match or beat the base
    (``baseline``, epoch 0) at every listed width. Stopped: after ``patience`` epochs in which neither
    that score (gate or no gate) nor the kept epoch improved. Early epochs often trail the base at one width while the
    mean climbs; counting them as stale stopped the quickstart's adapter at the identity for 2 of 4
    seeds (temperature 0.1, adapter seeds 1-3 and 42).
    """

    def __init__(self, baseline: dict[str, float], metric: str, dims: list[int] | None, patience: int):
        self.baseline, self.metric, self.dims, self.patience = baseline, metric, dims, patience
        self.best_epoch, self.best, self.stale = 0, baseline, 0
        self._best_score = self._best_progress = _progress_score(baseline, metric, dims)

    def eligible(self, scores: dict[str, float]) -> bool:
        return not self.dims or all(scores[f"{self.metric}@dim{d}"] >= self.baseline[f"{self.metric}@dim{d}"] - 1e-9
                                    for d in self.dims)

    def observe(self, epoch: int, scores: dict[str, float]) -> bool:
        """Record an epoch; True when it becomes the one to keep."""
        score = _progress_score(scores, self.metric, self.dims)
        progressed = score > self._best_progress + 1e-9
        kept = self.eligible(scores) and score > self._best_score + 1e-9
        self._best_progress = max(self._best_progress, score)
        self.stale = 0 if progressed or kept else self.stale + 1
        if kept:
            self.best_epoch, self.best, self._best_score = epoch, scores, score
        return kept

    @property
    def should_stop(self) -> bool:
        return self.stale >= self.patience


# --- training ----------------------------------------------------------------------------------------
@contextlib.contextmanager
def _cpu_threads(device: torch.device, corpus_size: int):
    """One CPU thread for small problems: (32 x 384) matrix products run several times slower when
    torch spreads them over threads that compete with other work; large corpora keep every thread."""
    previous = torch.get_num_threads()
    if device.type == "cpu" and corpus_size <= SINGLE_THREAD_LIMIT:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def _adamw(adapter: torch.nn.Module, config: AdapterTrainingConfig) -> torch.optim.Optimizer:
    """AdamW, fused into one kernel per step where torch supports it (CPU since torch 2.4): on these
    small matrices the step is mostly per-operation overhead, and fusing halves it."""
    params = list(adapter.parameters())
    try:
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):  # older torch, or a device or dtype without the fused kernel
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def _contrastive_loss(adapted: torch.Tensor, corpus: torch.Tensor, positives: np.ndarray, batch_queries: np.ndarray,
                      train: _Embedded, config: AdapterTrainingConfig, rng: np.random.Generator) -> torch.Tensor:
    """InfoNCE of each query against its positive over the candidate documents (see module docstring)."""
    n_corpus = corpus.shape[0]
    batch_negatives = [train.negatives[q] for q in batch_queries]
    if config.corpus_negatives and n_corpus <= config.max_corpus_negatives:
        candidates = None  # the whole corpus
    else:
        pool = [positives, *batch_negatives]
        if config.corpus_negatives:
            pool.append(rng.choice(n_corpus, size=config.max_corpus_negatives, replace=False))
        candidates = np.unique(np.concatenate(pool))
    if candidates is None:
        logits = adapted @ corpus.T
        column = {"rows": None}
    else:
        logits = adapted @ corpus[torch.from_numpy(candidates).to(corpus.device)].T
        column = {"rows": candidates}

    def columns(rows: np.ndarray) -> np.ndarray:
        if column["rows"] is None:
            return rows
        cols = np.searchsorted(candidates, rows)
        cols = np.clip(cols, 0, len(candidates) - 1)
        return np.where(candidates[cols] == rows, cols, -1)

    targets = torch.from_numpy(columns(positives)).to(corpus.device)
    # Mask the query's other relevant chunks: they are not negatives.
    mask_r, mask_c = [], []
    for i, (q, pos) in enumerate(zip(batch_queries, positives)):
        for other in columns(train.relevant[q]):
            if other >= 0 and other != columns(np.array([pos]))[0]:
                mask_r.append(i)
                mask_c.append(int(other))
    if mask_r:
        logits = logits.index_put((torch.tensor(mask_r, device=logits.device), torch.tensor(mask_c, device=logits.device)),
                                  torch.tensor(float("-inf"), device=logits.device))
    loss = F.cross_entropy(logits / config.temperature, targets)
    if config.hard_negative_weight > 0 and any(len(n) for n in batch_negatives):
        width = max(len(n) for n in batch_negatives)
        rows = np.full((len(positives), width + 1), -1, dtype=np.int64)
        rows[:, 0] = positives
        for i, negs in enumerate(batch_negatives):
            rows[i, 1:1 + len(negs)] = negs
        valid = torch.from_numpy(rows >= 0).to(corpus.device)
        gathered = corpus[torch.from_numpy(np.maximum(rows, 0)).to(corpus.device)]  # (b, width + 1, dim)
        scores = torch.einsum("bd,bkd->bk", adapted, gathered).masked_fill(~valid, float("-inf"))
        has_negative = valid[:, 1:].any(dim=1)
        hard = F.cross_entropy(scores[has_negative] / config.temperature,
                               torch.zeros(int(has_negative.sum()), dtype=torch.long, device=corpus.device))
        loss = loss + config.hard_negative_weight * hard
    return loss


def _train_loop(adapter: torch.nn.Module, optimizer: torch.optim.Optimizer, train_data: _Embedded,
                val_data: _Embedded, config: AdapterTrainingConfig, rng: np.random.Generator, *,
                keep_last: bool = False):
    """Epochs of shuffled, duplicate-free batches; returns (best metrics, best epoch, best state, history)."""
    device = train_data.queries.device
    pairs = np.array([(q, int(p)) for q, rel in enumerate(train_data.relevant) for p in rel], dtype=np.int64)
    dims = config.matryoshka_dims
    # Each width's documents, truncated and renormalised once: (width, corpus) per loss term.
    widths = [(d, _truncate(train_data.corpus, d)) for d in dims] if dims else [(None, train_data.corpus)]
    baseline = _evaluate(adapter, val_data, config.normalize_output, dims)
    best_state = copy.deepcopy(adapter.state_dict())
    metric = config.selection_metric
    choice = EpochChoice(baseline, metric, dims, config.patience)
    history: list[dict[str, Any]] = [{"epoch": 0, "loss": None, **baseline}]
    bar = progress(range(1, config.epochs + 1), desc=f"training {config.adapter} adapter", unit="epoch")
    for epoch in bar:
        losses = []
        for batch in no_duplicate_batches(pairs, config.batch_size, rng):
            batch_queries, positives = pairs[batch, 0], pairs[batch, 1]
            query_vectors = train_data.queries[torch.from_numpy(batch_queries).to(device)]
            adapted = adapter(query_vectors)
            if config.normalize_output:
                adapted = F.normalize(adapted, dim=-1)
            adapted = _scored(adapted, train_data.l2)
            loss = sum(_contrastive_loss(adapted if d is None else _truncate(adapted, d), corpus, positives,
                                         batch_queries, train_data, config, rng)
                       for d, corpus in widths) / len(widths)
            if config.identity_reg > 0:
                loss = loss + config.identity_reg * identity_penalty(adapter, query_vectors)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        scores = _evaluate(adapter, val_data, config.normalize_output, dims)
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), **scores})
        if choice.observe(epoch, scores):
            best_state = copy.deepcopy(adapter.state_dict())
        # refresh=False: the bar redraws at tqdm's own pace, not once per (sub-second) epoch.
        bar.set_postfix(loss=f"{np.mean(losses):.4f}", **{metric: f"{scores[metric]:.4f}"}, refresh=False)
        if choice.should_stop and not keep_last:
            log.info("early stop after epoch %d: no %s gain on validation for %d epochs", epoch, metric, choice.stale)
            break
    bar.close()
    if keep_last:  # a final fit: the epochs were chosen before, on held-out questions
        return history[-1], len(history) - 1, history
    adapter.load_state_dict(best_state)
    return choice.best, choice.best_epoch, history


def _train_over_temperatures(config: AdapterTrainingConfig, dim: int, device: torch.device, train_data: _Embedded,
                             val_data: _Embedded, *, keep_last: bool):
    """One adapter per temperature (``temperature``, then ``temperature_grid``; one with ``keep_last``),
    each from the same seed; returns (temperature, adapter, (best, best_epoch, history), search) of the
    one whose kept epoch scores best on ``val_data``, ties to the earlier. Says in one line what it chose."""
    asked = [config.temperature, *(config.temperature_grid or ())]
    candidates = list(dict.fromkeys(asked))
    if keep_last:  # a final fit repeats the run that chose its temperature and epochs
        candidates = [config.temperature]
    elif len(candidates) < len(asked):
        log.warning("temperature_grid repeats a temperature (or the temperature %s itself): %s tried once each",
                    config.temperature, ", ".join(map(str, candidates)))
    search: list[dict[str, Any]] = []
    chosen = None
    for temperature in candidates:
        trial = dataclasses.replace(config, temperature=temperature, temperature_grid=None)
        _seed_everything(config.seed)
        adapter = build_adapter(config.adapter, dim, config.adapter_options)
        check_identity_at_init(adapter, dim, name=f"adapter '{config.adapter}'")
        adapter.to(device).train()
        with _cpu_threads(device, train_data.corpus.numel()):
            outcome = _train_loop(adapter, _adamw(adapter, trial), train_data, val_data, trial,
                                  np.random.default_rng(config.seed), keep_last=keep_last)
        score = _progress_score(outcome[0], config.selection_metric, config.matryoshka_dims)
        search.append({"temperature": temperature, "best_epoch": outcome[1], "score": score})
        if chosen is None or score > chosen[0] + 1e-9:
            chosen = (score, temperature, adapter, outcome)
    top, temperature, adapter, outcome = chosen
    if len(candidates) > 1:
        label = (f"mean {config.selection_metric} over dims {','.join(map(str, config.matryoshka_dims))}"
                 if config.matryoshka_dims else config.selection_metric)
        tied = [t["temperature"] for t in search if abs(t["score"] - top) <= 1e-9]
        note = ""
        if all(t["best_epoch"] == 0 for t in search):
            note = "; no candidate beat the base, every one is the identity"
        elif len(tied) > 1:
            note = f"; tied with {', '.join(map(str, tied[1:]))}: the first listed is kept"
        log.info("temperature %s chosen on validation (%s of the kept epoch by temperature: %s)%s", temperature,
                 label, ", ".join(f"{t['temperature']}: {t['score']:.4f}" for t in search), note)
    return temperature, adapter, outcome, search


def _in_index_metric(config: AdapterTrainingConfig, unit: bool) -> AdapterTrainingConfig:
    """``config`` with ``normalize_output`` decided for its index metric (module docstring): refused in
    one line where scaling adapted queries to unit length would rank differently from the base model in
    an L2 index over vectors that are not unit length (the adapter could then lose to the base there)."""
    l2_scale = config.index_metric == "l2" and not unit
    if l2_scale and config.matryoshka_dims:
        raise ConfigError("matryoshka_dims with index_metric = \"l2\" over vectors that are not unit length: a "
                          "truncated L2 index is not what embtune measures at those widths; drop matryoshka_dims",
                          field="adapter.matryoshka_dims")
    if l2_scale and config.normalize_output:
        raise ConfigError("normalize_output = true with index_metric = \"l2\" over vectors that are not unit length: "
                          "unit-length queries against longer documents rank by document length, below the base "
                          "model; leave normalize_output unset", field="adapter.normalize_output")
    normalize = (not l2_scale) if config.normalize_output is None else config.normalize_output
    return dataclasses.replace(config, normalize_output=normalize)


def train_adapter(encoder, train: QADataset, val: QADataset | None = None, *,
                  config: AdapterTrainingConfig | None = None, cache: EmbeddingCache | None = None,
                  output_dir: str | Path | None = None, augment: QADataset | None = None,
                  keep_last: bool = False) -> TrainingResult:
    """Train a query adapter for ``encoder`` on ``train``; keep the epoch best on ``val``.

    Without ``val``, a validation split is held out of ``train`` by source document
    (:func:`split_for_validation`). ``augment`` (e.g. :func:`embtune_core.adapters.pseudo_queries.index_pseudo_queries`
    over the corpus to be searched) joins the training side only, after the split, so the epoch is
    still chosen on real questions; a pseudo-query that is word for word a ``val`` question is left out
    (logged), since training on it would flatter the choice. With ``output_dir``, the adapter is written there atomically.
    ``keep_last`` (a final fit, the epoch count chosen by an earlier run) trains exactly
    ``config.epochs`` epochs and keeps the last one; ``val`` is then only reported, never chosen on.
    """
    config = config or AdapterTrainingConfig()
    config.validate()
    cache = cache or EmbeddingCache()
    from embtune_core.encoders import token_limits

    texts = {"query": list(train.queries.values()), "document": list(train.corpus.values())}
    if val is not None:
        texts = {"query": texts["query"] + list(val.queries.values()),
                 "document": texts["document"] + [t for c, t in val.corpus.items() if c not in train.corpus]}
    truncation = token_limits.check_encoder(encoder, texts)
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    _seed_everything(config.seed)

    t0 = time.perf_counter()
    if val is None:
        # One encoder call for all questions and one for the whole corpus, before splitting: the
        # fewest, fullest batches; both sides of the split then read the cache.
        cache.embed(encoder, list(train.corpus.values()), kind="document", desc="embedding corpus")
        cache.embed(encoder, list(train.queries.values()), kind="query", desc="embedding queries")
        train, val = split_for_validation(train, config.val_fraction, seed=config.seed)
    augment_dropped = 0
    if augment is not None:
        from embtune_core.adapters.pseudo_queries import merge, without_questions

        if not keep_last:
            # ICT pseudo-queries over the held-out documents' chunks can be their questions word for
            # word: trained on, they would flatter the epoch chosen on ``val`` (and the report of it).
            augment, augment_dropped = without_questions(augment, val.queries.values(), what="held-out")
        train = merge(train, augment)
    train_data = _embed(train, encoder, cache, device, "train")
    val_data = _embed(val, encoder, cache, device, "validation")
    for label, data, part in (("training", train_data, train), ("validation", val_data, val)):
        unanswered = len(part.queries) - len(data.query_ids)
        if unanswered:
            log.warning("%d of %d %s queries have no relevant chunk in the corpus and are not used", unanswered,
                        len(part.queries), label)
    embed_seconds = time.perf_counter() - t0
    if not train_data.query_ids:
        raise DatasetError("no training query has a relevant chunk")
    if not val_data.query_ids:
        raise DatasetError("no validation query has a relevant chunk")
    dim = train_data.corpus.shape[1]
    if config.matryoshka_dims and max(config.matryoshka_dims) > dim:
        raise ConfigError(f"dimension {max(config.matryoshka_dims)} is wider than the embeddings ({dim})",
                          field="adapter.matryoshka_dims")
    unit = all_unit(train_data.corpus, val_data.corpus, train_data.queries, val_data.queries)
    config = _in_index_metric(config, unit)
    if config.index_metric == "l2" and not unit:  # on unit vectors L2 ranks as the inner product does
        train_data, val_data = _for_l2(train_data), _for_l2(val_data)

    t1 = time.perf_counter()
    temperature, adapter, (best, best_epoch, history), search = _train_over_temperatures(
        config, dim, device, train_data, val_data, keep_last=keep_last)
    baseline = {k: v for k, v in history[0].items() if k not in ("epoch", "loss")}
    train_seconds = time.perf_counter() - t1
    adapter.cpu().eval()

    options = adapter.config() if hasattr(adapter, "config") else dict(config.adapter_options)
    # What the base encoder states about itself (the encoder contract's optional members): recorded so
    # the adapter is only ever served on query vectors computed as the ones it learnt from.
    base = describe(encoder)
    adapter_config = AdapterConfig(
        adapter_type=config.adapter, dimension=dim, options=options,
        base_encoder_identity=encoder.identity, base_normalize=base.normalize, base_encoder_name=base.name,
        base_weights=base.weights_fingerprint, base_token_limit=base.token_limit,
        base_prompts=base.prompts, base_convention=base.convention,
        normalize_output=config.normalize_output,
        index_metric=config.index_metric,
        training={
            "config": {k: v for k, v in dataclasses.asdict(config).items() if k != "device"},
            "train_queries": len(train_data.query_ids), "train_corpus": len(train_data.corpus_ids),
            "truncation": truncation,
            "augment_queries": len(augment.queries) if augment is not None else 0,
            "augment_dropped_as_val_questions": augment_dropped,
            "val_queries": len(val_data.query_ids), "val_corpus": len(val_data.corpus_ids),
            "baseline": baseline, "best": best, "best_epoch": best_epoch, "history": history,
            "temperature": temperature,  # the one trained with (config holds what was asked)
            **({"temperature_search": search} if len(search) > 1 else {}),
        })
    saved = SavedAdapter(adapter, adapter_config)
    out = None
    if output_dir is not None:
        out = save_adapter(output_dir, adapter, adapter_config)
        saved.path = out
    return TrainingResult(saved, baseline, best, best_epoch, history,
                          {"embed_seconds": embed_seconds, "train_seconds": train_seconds}, out)
