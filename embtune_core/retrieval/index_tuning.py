"""Document-side tuning of a stored index without re-embedding: NUDGE-N (Zeighami et al., ICLR 2025).

An index holds known documents. Instead of changing the model (re-embed everything) or the queries
(a query adapter), NUDGE changes the stored document vectors themselves: each document that has
training queries moves towards them, inside a bound that keeps it safe for queries never seen
(Zeighami, Wellmer & Parameswaran, "NUDGE: Lightweight Non-Parametric Fine-Tuning of Embeddings
for Retrieval", ICLR 2025, arXiv:2409.02343; reference code github.com/szeighami/nudge).

NUDGE-N, the variant built here, solves for every document ``d`` with unit vector ``e_d``::

    maximise   g_d . e'_d        where g_d = sum of the training query vectors relevant to d
    subject to ||e'_d|| = 1  and  ||e'_d - e_d||^2 <= gamma

in closed form: ``e'_d`` is ``g_d / ||g_d||`` when that is within the bound, otherwise the unit
vector at angle ``arccos(1 - gamma/2)`` from ``e_d`` towards ``g_d`` in their common plane. The
constraints are the paper's safety: every vector stays unit length (so cosine, inner-product and
L2 indexes all rank it the same way, and no document becomes a "hub" by growing), and it moves at
most ``sqrt(gamma)``; a document without training queries is left exactly as it was. ``gamma``
is chosen on held-out queries (the paper's grid 0, 0.02, ..., 0.48, here scored by NDCG@10 over
the whole index: a nudged document that steals other documents' queries lowers the score).
``gamma = 0`` (nothing moves) is always a candidate, so on the held-out queries the tuned index
never scores below the untuned one.

NUDGE-M, the paper's other variant, changes vector lengths; embtune's metrics and the hosts'
indexes (DocsGPT's L2 FaissStore, LangChain's cosine relevance) rely on unit vectors, so it is
not offered.

Training queries may be real questions (their relevant documents), LLM-free pseudo-queries made
from the indexed chunk texts (:mod:`embtune_core.adapters.pseudo_queries`), or both. They may pass through a
query adapter first: the documents then move towards the queries as the adapter serves them
(NUDGE composes with query adapters).

The result is a :class:`TunedIndex`: for each tuned document its id, a hash of its text and the
change of its vector (``delta``, so ``tuned = base + delta``). It is saved as ``index_tuning.json``
(method, gamma, the encoder and adapter it was fit for, counts, held-out scores) and
``deltas.safetensors`` (float32, ``(n_tuned, dim)``; no pickle). :meth:`TunedIndex.apply` adds the
deltas to base vectors of the same documents; a document whose text changed is left untuned, and
counted.

Example::

    tuned = tune_index(doc_ids, doc_texts, doc_vectors, train_q, train_answers, dev_q, dev_answers,
                       encoder_identity=encoder.identity)
    vectors, applied = tuned.apply(doc_ids, doc_texts, doc_vectors)   # (n, dim) float32
    tuned.save("out/index-tuning")
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embtune_core.errors import ConfigError, InputError
from embtune_core.runtime import atomic

log = logging.getLogger(__name__)

FORMAT = "embtune-index-tuning"
FORMAT_VERSION = 1
CONFIG_FILE = "index_tuning.json"
WEIGHTS_FILE = "deltas.safetensors"
# The reference code's grid for NUDGE-N (github.com/szeighami/nudge, nudge.py: 0.02 * x for x in range(25)).
DEFAULT_GAMMAS = tuple(round(0.02 * x, 2) for x in range(25))
MOVED = 1e-6  # a delta component above this (unit vectors) is a move, not float noise


@dataclass
class NudgeConfig:
    """Options of the ``nudge-n`` index tuner.

    ``gammas``: candidate bounds on the squared distance a vector may move (0 keeps the index as it is);
    ``dev_fraction``: share of the training queries held out to choose ``gamma`` when no held-out
    queries are given; ``metric``: ``ndcg@10`` or ``hit_rate@1`` (the reference code's accuracy@1)
    on those queries; ``seed``: the hold-out draw.
    """

    gammas: list[float] = field(default_factory=lambda: list(DEFAULT_GAMMAS))
    dev_fraction: float = 0.2
    metric: str = "ndcg@10"
    seed: int = 0

    def validate(self, path: Any = "<config>") -> None:
        if not self.gammas or any(not 0.0 <= g <= 2.0 for g in self.gammas):
            raise ConfigError("must be a non-empty list of numbers in [0, 2] (squared distance on the unit sphere)",
                              path=path, field="index_tuning.gammas")
        if not 0.0 < self.dev_fraction < 1.0:
            raise ConfigError(f"must be in (0, 1), not {self.dev_fraction}", path=path,
                              field="index_tuning.dev_fraction")
        if self.metric not in ("ndcg@10", "hit_rate@1"):
            raise ConfigError(f"must be ndcg@10 or hit_rate@1, not {self.metric!r}", path=path,
                              field="index_tuning.metric")


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), float32."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def query_sums(n_docs: int, queries: np.ndarray, answers: Sequence[Sequence[int]]) -> np.ndarray:
    """``g``: for each document the sum of the (unit) query vectors it is relevant to, ``(n_docs, dim)``."""
    queries = unit_rows(queries)
    sums = np.zeros((n_docs, queries.shape[1]), dtype=np.float64)
    rows = np.fromiter((q for q, docs in enumerate(answers) for _ in docs), dtype=np.int64)
    cols = np.fromiter((d for docs in answers for d in docs), dtype=np.int64)
    if len(rows):
        np.add.at(sums, cols, queries[rows])
    return sums


def nudge_n(documents: np.ndarray, sums: np.ndarray, gamma: float) -> np.ndarray:
    """NUDGE-N's closed-form solution (module docstring): unit ``documents`` moved towards ``sums``.

    ``documents`` ``(n, dim)`` (normalised here), ``sums`` ``(n, dim)`` from :func:`query_sums`,
    ``gamma`` >= 0. Returns ``(n, dim)`` float32 unit rows; rows with a zero sum are unchanged.
    """
    e = unit_rows(documents).astype(np.float64)
    if gamma <= 0:
        return e.astype(np.float32)
    norms = np.linalg.norm(sums, axis=1)
    has = norms > 0
    g = np.where(has[:, None], sums / np.where(has, norms, 1.0)[:, None], 0.0)
    cos = (e * g).sum(axis=1)
    allowed = 1.0 - gamma / 2.0  # ||e' - e||^2 <= gamma  <=>  e' . e >= 1 - gamma / 2 on the unit sphere
    out = e.copy()
    reach = has & (cos >= allowed)  # the best direction itself is within the bound
    out[reach] = g[reach]
    perpendicular = g - cos[:, None] * e
    length = np.linalg.norm(perpendicular, axis=1)
    bound = has & ~reach & (length > 1e-12)
    if allowed <= -1.0:  # gamma >= 4 reaches anywhere on the sphere (never in the grid, kept exact)
        out[bound] = g[bound]
    else:
        sine = np.sqrt(max(0.0, 1.0 - allowed * allowed))
        out[bound] = allowed * e[bound] + sine * perpendicular[bound] / length[bound, None]
    return out.astype(np.float32)


def score_queries(queries: np.ndarray, documents: np.ndarray, answers: Sequence[Sequence[int]],
                  metric: str) -> float:
    """Mean ``metric`` (``ndcg@10`` or ``hit_rate@1``, binary relevance) of ``queries`` searched over
    ``documents`` (cosine; ties by document position, :func:`embtune_core.scoring.metrics.rank_scores`)."""
    if not len(queries):
        return 0.0
    from embtune_core.scoring import metrics as M

    depth = 10 if metric == "ndcg@10" else 1
    order = M.rank_scores(unit_rows(queries) @ unit_rows(documents).T, depth)
    hits = M.hit_matrix(order, [np.asarray(a, dtype=np.int64) for a in answers])
    if metric == "ndcg@10":
        return float(M.ndcg(hits, [len(a) for a in answers], 10).mean())
    return float(M.hit_rate(hits, 1).mean())


@dataclass
class TunedIndex:
    """Tuned document vectors as deltas over the base vectors (module docstring)."""

    doc_ids: list[str]
    text_keys: list[str]
    deltas: np.ndarray  # (n_tuned, dim) float32
    config: dict[str, Any]
    path: Path | None = None
    applied: int | None = None  # documents the last apply() moved (for the report)

    @property
    def dimension(self) -> int:
        return int(self.deltas.shape[1]) if self.deltas.ndim == 2 else 0

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256(json.dumps(self.config, sort_keys=True).encode())
        digest.update(np.ascontiguousarray(self.deltas).tobytes())
        return digest.hexdigest()[:16]

    def apply(self, doc_ids: Sequence[str] | None, texts: Sequence[str], vectors: np.ndarray) -> tuple[np.ndarray, int]:
        """``vectors`` (the base encoder's, for ``doc_ids``/``texts``) with the deltas applied to every
        document this index tuned whose text is unchanged; returns ``(vectors, n_applied)``. Without
        ``doc_ids`` a text is matched by its hash alone.

        A tuned row gets the tuned direction at its base vector's length, so an index over raw vectors
        (DocsGPT's L2 store) keeps every document's norm; every other row is returned unchanged.
        """
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dimension:
            raise InputError(f"index tuning is {self.dimension}-dimensional, the vectors are "
                             f"{vectors.shape[1] if vectors.ndim == 2 else vectors.shape}", path=self.path,
                             field="deltas")
        row = {doc_id: i for i, doc_id in enumerate(self.doc_ids)}
        by_text = {key: i for i, key in enumerate(self.text_keys)}
        out = vectors.copy()
        applied = changed = 0
        for position, (doc_id, text) in enumerate(zip(doc_ids if doc_ids is not None else [None] * len(texts), texts)):
            # By id when the caller knows the ids (an index, a dataset); by text when it does not (a host
            # embedding the chunks it ingests): the same text gets the same tuned vector.
            i = row.get(doc_id) if doc_id is not None else by_text.get(text_key(text))
            if i is None:
                continue
            if text_key(text) != self.text_keys[i]:
                changed += 1
                continue
            length = float(np.linalg.norm(vectors[position]))
            direction = unit_rows(unit_rows(vectors[position:position + 1]) + self.deltas[i])[0]
            out[position] = direction * (length if length > 0 else 1.0)
            applied += 1
        if changed:
            log.warning("index tuning %s: %d document(s) changed text since tuning; left untuned", self.path or "",
                        changed)
        self.applied = applied
        return out, applied

    def save(self, directory: str | Path) -> Path:
        """``index_tuning.json`` + ``deltas.safetensors`` in ``directory``, written together atomically."""
        from safetensors.numpy import save

        directory = Path(directory)
        with atomic.atomic_directory(directory) as tmp:
            (tmp / WEIGHTS_FILE).write_bytes(save({"deltas": np.ascontiguousarray(self.deltas, dtype=np.float32)}))
            document = {"format": FORMAT, "format_version": FORMAT_VERSION, **self.config,
                        "documents": [{"id": d, "text_blake2b": k} for d, k in zip(self.doc_ids, self.text_keys)]}
            (tmp / CONFIG_FILE).write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n",
                                           encoding="utf-8")
        self.path = directory
        return directory


def text_key(text: str) -> str:
    """The hash that ties a delta to the text it was tuned for (BLAKE2b-128 of the UTF-8 text)."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def is_index_tuning(directory: str | Path) -> bool:
    return (Path(directory) / CONFIG_FILE).is_file()


def load_index_tuning(directory: str | Path) -> TunedIndex:
    """Read a folder :meth:`TunedIndex.save` wrote; a missing, foreign or damaged file is one InputError
    naming it."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    if not config_path.is_file():
        raise InputError(f"no {CONFIG_FILE} here: not an index tuning folder (embtune tune-index writes one)",
                         path=directory)
    try:
        document = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"unreadable JSON ({exc})", path=config_path) from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise InputError(f"not an embtune index tuning (format is not {FORMAT!r})", path=config_path, field="format")
    if document.get("format_version") != FORMAT_VERSION:
        raise InputError(f"format_version {document.get('format_version')!r} is not {FORMAT_VERSION}; "
                         "this embtune cannot read it", path=config_path, field="format_version")
    documents = document.pop("documents", None)
    if not isinstance(documents, list) or not all(isinstance(d, dict) and isinstance(d.get("id"), str)
                                                  and isinstance(d.get("text_blake2b"), str) for d in documents):
        raise InputError("must be a list of {id, text_blake2b}", path=config_path, field="documents")
    try:
        deltas = load_file(str(weights_path))["deltas"]
    except FileNotFoundError:
        raise InputError(f"missing {WEIGHTS_FILE} beside {CONFIG_FILE}", path=weights_path) from None
    except (SafetensorError, KeyError, OSError, ValueError) as exc:
        raise InputError(f"unreadable deltas ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})",
                         path=weights_path) from None
    if deltas.ndim != 2 or deltas.shape[0] != len(documents):
        raise InputError(f"deltas have shape {tuple(deltas.shape)}, expected ({len(documents)}, dim)",
                         path=weights_path, field="deltas")
    if not np.isfinite(deltas).all():
        raise InputError("deltas hold NaN or infinite values (a damaged file)", path=weights_path, field="deltas")
    document.pop("format")
    document.pop("format_version")
    return TunedIndex([d["id"] for d in documents], [d["text_blake2b"] for d in documents],
                      np.asarray(deltas, dtype=np.float32), document, directory)


@dataclass
class GammaChoice:
    gamma: float
    scores: dict[str, float]  # str(gamma) -> held-out score
    metric: str
    dev_queries: int


def choose_gamma(documents: np.ndarray, sums: np.ndarray, dev_queries: np.ndarray,
                 dev_answers: Sequence[Sequence[int]], config: NudgeConfig) -> GammaChoice:
    """The ``gamma`` of ``config.gammas`` whose tuned vectors score best on the held-out queries;
    ties go to the smaller gamma (the smaller change). Without held-out queries gamma is 0."""
    scores: dict[str, float] = {}
    best, best_score = 0.0, -1.0
    for gamma in sorted({float(g) for g in config.gammas} | {0.0}):
        score = score_queries(dev_queries, nudge_n(documents, sums, gamma), dev_answers, config.metric)
        scores[repr(gamma)] = round(score, 6)
        if score > best_score + 1e-12:
            best, best_score = gamma, score
    return GammaChoice(best, scores, config.metric, len(dev_queries))


def hold_out(n_queries: int, fraction: float, seed: int) -> np.ndarray:
    """A boolean mask of queries held out to choose gamma: ``round(fraction * n)`` of them, drawn with
    ``seed`` (at least one when there are two or more queries)."""
    rng = np.random.default_rng(seed)
    n_dev = min(n_queries - 1, max(1, round(fraction * n_queries))) if n_queries >= 2 else 0
    mask = np.zeros(n_queries, dtype=bool)
    mask[rng.choice(n_queries, size=n_dev, replace=False)] = True
    return mask


def tune_index(doc_ids: Sequence[str], doc_texts: Sequence[str], doc_vectors: np.ndarray,
               queries: np.ndarray, answers: Sequence[Sequence[int]], dev_queries: np.ndarray | None = None,
               dev_answers: Sequence[Sequence[int]] | None = None, *, config: NudgeConfig | None = None,
               encoder_identity: str = "", adapter_fingerprint: str | None = None,
               record: dict[str, Any] | None = None) -> TunedIndex:
    """Fit NUDGE-N: choose gamma on the held-out queries (or a ``config.dev_fraction`` hold-out of
    ``queries`` when none are given), then tune with every training query at that gamma.

    ``doc_vectors`` ``(n_docs, dim)``: the base encoder's vectors of the index; ``queries``
    ``(n_queries, dim)`` with ``answers[i]`` the document positions relevant to query ``i``;
    ``encoder_identity`` / ``adapter_fingerprint``: what produced the vectors (recorded, and checked
    by :func:`check_fit`). Only documents whose vector changed are stored.
    """
    config = config or NudgeConfig()
    config.validate()
    doc_vectors = unit_rows(doc_vectors)
    queries = np.asarray(queries, dtype=np.float32)
    if len(doc_ids) != doc_vectors.shape[0] or len(doc_texts) != len(doc_ids):
        raise ValueError(f"{len(doc_ids)} ids, {len(doc_texts)} texts, {doc_vectors.shape[0]} vectors")
    if queries.shape[0] != len(answers):
        raise ValueError(f"{queries.shape[0]} query vectors, {len(answers)} answer lists")
    held_out_given = dev_queries is not None
    if held_out_given:
        fit_q, fit_a = queries, list(answers)
        dev_q, dev_a = np.asarray(dev_queries, dtype=np.float32), list(dev_answers or [])
    else:
        mask = hold_out(len(answers), config.dev_fraction, config.seed)
        fit_q, fit_a = queries[~mask], [a for a, m in zip(answers, mask) if not m]
        dev_q, dev_a = queries[mask], [a for a, m in zip(answers, mask) if m]
    choice = choose_gamma(doc_vectors, query_sums(len(doc_ids), fit_q, fit_a), dev_q, dev_a, config)
    # The deployed vectors use every training query at the chosen gamma (the held-out ones chose it; the
    # paper refits likewise). Given held-out queries are never trained on: they may be the user's dev set.
    final_q, final_a = (queries, list(answers))
    tuned = nudge_n(doc_vectors, query_sums(len(doc_ids), final_q, final_a), choice.gamma)
    deltas = tuned - doc_vectors if choice.gamma > 0 else np.zeros_like(doc_vectors)
    # A vector counts as moved beyond float noise (normalising twice differs in the last bits).
    moved = np.flatnonzero(np.abs(deltas).max(axis=1) > MOVED) if len(deltas) else np.empty(0, np.int64)
    with_queries = int((np.linalg.norm(query_sums(len(doc_ids), final_q, final_a), axis=1) > 0).sum())
    base_score = choice.scores[repr(0.0)]
    chosen_score = choice.scores[repr(choice.gamma)]
    log.info("index tuning (NUDGE-N): gamma %.2f chosen on %d held-out queries (%s %.4f, untuned %.4f); "
             "%d of %d documents moved", choice.gamma, choice.dev_queries, choice.metric, chosen_score, base_score,
             len(moved), len(doc_ids))
    summary = {
        "method": "nudge-n", "gamma": choice.gamma, "options": asdict(config),
        "selection": {"metric": choice.metric, "held_out_queries": choice.dev_queries,
                      "held_out_given": held_out_given, "scores": choice.scores,
                      "untuned": base_score, "chosen": chosen_score},
        "encoder_identity": encoder_identity, "adapter_fingerprint": adapter_fingerprint,
        "dimension": int(doc_vectors.shape[1]), "index_documents": len(doc_ids),
        "documents_with_queries": with_queries, "documents_moved": len(moved),
        "training_queries": int(queries.shape[0]),
        "mean_move": float(np.linalg.norm(deltas[moved], axis=1).mean()) if len(moved) else 0.0,
        **(record or {}),
    }
    return TunedIndex([doc_ids[i] for i in moved], [text_key(doc_texts[i]) for i in moved],
                      deltas[moved].astype(np.float32), summary)


def check_fit(tuned: TunedIndex, encoder_identity: str, adapter_fingerprint: str | None) -> None:
    """Refuse, in one line, deltas fit for another encoder or another query adapter: they only mean
    something over the vectors (and queries) they were fit on."""
    recorded = tuned.config.get("encoder_identity") or ""
    if recorded and recorded != encoder_identity:
        from embtune_core.encoders.long_documents import plain_identity

        if plain_identity(recorded) != plain_identity(encoder_identity) or recorded.count("windows") != \
                encoder_identity.count("windows"):
            raise InputError(f"index tuned over vectors of '{recorded}', not of '{encoder_identity}'; tune it again "
                             "for this encoder (embtune tune-index)", path=tuned.path, field="encoder_identity")
    recorded_adapter = tuned.config.get("adapter_fingerprint")
    if recorded_adapter != adapter_fingerprint:
        raise InputError(f"index tuned for queries through adapter {recorded_adapter or 'none'}, served with "
                         f"{adapter_fingerprint or 'none'}; tune it with the adapter that serves the queries",
                         path=tuned.path, field="adapter_fingerprint")
