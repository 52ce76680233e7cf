"""Retrieval systems named by specs (``NAME=ENCODER[+adapter:DIR]``, ``bm25``, ``hybrid:ENCODER``),
built and evaluated the same way by ``embtune evaluate`` and the pipeline's evaluate stage.

:func:`parse_system` reads a spec (syntax in ``embtune evaluate --help``), :func:`build_system`
turns it into an :class:`~embtune_core.scoring.evaluation.System` under the
:class:`~embtune_core.settings.EvaluateSettings` (batch size, device, precision, token limit), and
:func:`evaluate` runs :func:`~embtune_core.scoring.evaluation.evaluate_systems` with those settings.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from embtune_core.errors import ConfigError
from embtune_core.settings import EvaluateSettings

log = logging.getLogger(__name__)

_NAME_PREFIX = re.compile(r"^([A-Za-z0-9_.-]+)=(.+)$")
# Parts after the encoder, in any order: a query adapter, an index tuning (NUDGE), a tuned fusion (hybrids).
_PARTS = re.compile(r"\+(adapter|index|lexical|windows|fusion):")


@dataclass
class SystemSpec:
    name: str
    encoder_spec: str
    adapter_dir: str | None
    text: str
    lexical: bool = False  # BM25 alone
    fusion: str | None = None  # hybrid of ENCODER and BM25: "rrf" (untuned) or a Fusion spec (embtune_core.retrieval.fusion)
    index_dir: str | None = None  # index tuning folder (embtune tune-index): the corpus vectors it tuned
    lexical_dir: str | None = None  # sparse-dense folder: BM25 joined to the dense vectors (one vector per chunk)
    windows: str | None = None  # "mean" or "max": long documents read whole as windows (long_documents)


def parse_system(text: str) -> SystemSpec:
    """``NAME=ENCODER[+adapter:DIR][+index:DIR]``, ``bm25`` or ``hybrid:ENCODER[...][+fusion:FUSION]`` as its
    parts (see ``embtune evaluate --help``)."""
    text = text.strip()
    match = _NAME_PREFIX.match(text)
    name, spec = (match.group(1), match.group(2)) if match else (text, text)
    if not match:
        from embtune_core.runtime.secrets_scrub import scrub

        name = scrub(name)  # the label shows in every table: never a URL's credentials
    if spec.strip().lower() in ("bm25", "lexical:bm25"):
        return SystemSpec(name, "", None, spec, lexical=True)
    if spec.startswith("lexical:"):
        raise ConfigError(f"'{text}': unknown lexical system (known: lexical:bm25)", field="--system")
    hybrid = spec.startswith("hybrid:")
    encoder_spec, parts = _split_parts(text, spec[len("hybrid:"):] if hybrid else spec)
    if parts["fusion"] is not None and not hybrid:
        raise ConfigError(f"'{text}': '+fusion:' belongs to a hybrid (hybrid:ENCODER+fusion:...)", field="--system")
    if hybrid and (encoder_spec.strip().lower() in ("bm25", "lexical:bm25") or encoder_spec.startswith("hybrid:")):
        raise ConfigError(f"'{text}': a hybrid fuses BM25 with a dense system (hybrid:model:NAME)", field="--system")
    if not encoder_spec:
        raise ConfigError(f"'{text}': no encoder before '+adapter:' (e.g. model:NAME+adapter:DIR)",
                          field="--system")
    if encoder_spec.startswith("model:"):
        if not encoder_spec[len("model:"):].strip():
            raise ConfigError(f"'{text}': no model after 'model:' (a model name or folder)", field="--system")
        encoder_spec = "st:" + encoder_spec[len("model:"):]
    if encoder_spec.startswith(("adapter:", "index:")):
        raise ConfigError(f"'{text}': name the base encoder first, e.g. model:NAME+adapter:DIR", field="--system")
    if hybrid and parts["lexical"]:
        raise ConfigError(f"'{text}': a sparse-dense system holds BM25 already; it is not fused again",
                          field="--system")
    if parts["windows"] is not None and parts["windows"] not in ("mean", "max", "off"):
        raise ConfigError(f"'{text}': '+windows:' takes mean, max or off, not {parts['windows']!r}", field="--system")
    return SystemSpec(name, encoder_spec, parts["adapter"], spec, index_dir=parts["index"],
                      lexical_dir=parts["lexical"], windows=parts["windows"],
                      fusion=(parts["fusion"] or "rrf") if hybrid else None)


def _split_parts(text: str, spec: str) -> tuple[str, dict[str, str | None]]:
    """``ENCODER+adapter:A+index:I+fusion:F`` as ``(ENCODER, {adapter, index, fusion})``, each part once."""
    pieces = _PARTS.split(spec)
    parts: dict[str, str | None] = dict.fromkeys(("adapter", "index", "lexical", "windows", "fusion"))
    for kind, value in zip(pieces[1::2], pieces[2::2]):
        if parts[kind] is not None:
            raise ConfigError(f"'{text}': '+{kind}:' is given twice", field="--system")
        if not value:
            expected = "a fusion such as rrf,k=20,weight=0.7" if kind == "fusion" else f"the {kind} folder"
            raise ConfigError(f"'{text}': nothing after '+{kind}:' (expected {expected})", field="--system")
        parts[kind] = value
    if parts["fusion"] is not None:
        from embtune_core.retrieval.fusion import Fusion

        try:
            Fusion.parse(parts["fusion"])  # a bad fusion fails here, in one line
        except (ConfigError, TypeError) as exc:
            raise ConfigError(f"'{text}': {getattr(exc, 'problem', exc)}", field="--system") from None
    return pieces[0], parts


def build_system(spec: SystemSpec, settings: EvaluateSettings | None = None, *, adapter=None,
                 encoder_options: dict[str, Any] | None = None):
    """The :class:`~embtune_core.scoring.evaluation.System` a parsed spec names (``adapter``: its folder, loaded);
    ``settings`` gives batch size, and for local models device, precision and token limit;
    ``encoder_options`` the prompts and backend of local models (:mod:`embtune_core.encoders.encoder_options`)."""
    from embtune_core.encoders.encoding import encoder_from_spec, parse_encoder_spec
    from embtune_core.scoring.evaluation import System

    if spec.lexical:
        from embtune_core.retrieval.lexical import BM25Spec

        return System(spec.name, BM25Spec(), None, spec.text)
    settings = settings or EvaluateSettings()
    encoder_name, _ = parse_encoder_spec(spec.encoder_spec)
    options: dict[str, Any] = {}
    if settings.batch_size is not None:
        options["batch_size"] = settings.batch_size
    if encoder_name == "sentence-transformers":
        options.update({k: getattr(settings, k) for k in ("device", "max_seq_length", "precision")
                        if getattr(settings, k) is not None})
        options.update(encoder_options or {})
        if spec.windows is not None:  # the system's own reading of long documents wins over the table's
            options["document_windows"] = None if spec.windows == "off" else spec.windows
    elif encoder_options:
        # An OpenAI-compatible encoder counts its own tokens: it reads long documents as windows too.
        shared = {k: v for k, v in encoder_options.items() if k == "document_windows" and encoder_name == "openai"}
        options.update(shared)
        local = sorted(set(encoder_options) - set(shared))
        if local:
            log.warning("system '%s': %s apply to local sentence-transformers models only; not applied to it",
                        spec.name, ", ".join(local))
    encoder = encoder_from_spec(spec.encoder_spec, **options)
    if spec.adapter_dir:
        if adapter is None:
            from embtune_core.adapters.adapter_io import load_adapter

            adapter = load_adapter(spec.adapter_dir)
        adapter.check_base(encoder)
    tuned = None
    if spec.index_dir:
        from embtune_core.retrieval.index_tuning import check_fit, load_index_tuning

        tuned = load_index_tuning(spec.index_dir)
        check_fit(tuned, str(encoder.identity), getattr(adapter, "fingerprint", None) if adapter is not None else None)
    if spec.lexical_dir:
        from embtune_core.retrieval.sparse_dense import load_sparse_dense

        encoder = load_sparse_dense(spec.lexical_dir, encoder)
    return System(spec.name, encoder, adapter, spec.text, fusion=spec.fusion, index_tuning=tuned)


def known_width(spec: SystemSpec, system) -> int | None:
    """A system's embedding width when it is known without loading a model or calling an API: from its
    adapter, or from the config files of a local sentence-transformers folder; None when unsure."""
    import json
    from pathlib import Path

    from embtune_core.encoders.encoding import parse_encoder_spec
    from embtune_core.encoders.models import resolve

    if spec.lexical:
        return None
    if system.adapter is not None:
        return int(system.adapter.config.dimension)
    name, options = parse_encoder_spec(spec.encoder_spec)
    if name != "sentence-transformers" or getattr(system.encoder, "truncate_dim", None):
        return None
    folder = Path(resolve(str(options["model"]), assemble=False).target)
    width = None
    try:
        for module in json.loads((folder / "modules.json").read_text(encoding="utf-8")):
            kind = str(module.get("type", "")).rsplit(".", 1)[-1]
            config_path = folder / str(module.get("path", "")) / "config.json"
            if kind == "Pooling":  # sentence-transformers 6 writes pooling_mode, older ones a flag per mode
                config = json.loads(config_path.read_text(encoding="utf-8"))
                mode = config.get("pooling_mode")
                modes = ((1 if isinstance(mode, str) else len(mode)) if mode is not None
                         else sum(bool(v) for k, v in config.items() if k.startswith("pooling_mode_")))
                dimension = config.get("embedding_dimension") or config["word_embedding_dimension"]
                width = int(dimension) * max(1, modes)
            elif kind == "Dense":
                width = int(json.loads(config_path.read_text(encoding="utf-8"))["out_features"])
            elif kind not in ("Transformer", "Normalize"):
                return None  # a module whose output width we do not know how to read
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return width




def check_token_limit(specs: list[SystemSpec], max_seq_length: int | None) -> None:
    """Refuse a token limit a local model's position table cannot read, before any model loads."""
    if not max_seq_length:
        return
    from embtune_core.encoders.encoding import parse_encoder_spec
    from embtune_core.encoders.models import resolve
    from embtune_core.encoders.token_limits import check_limit

    for spec in specs:
        if spec.lexical:  # BM25 reads no tokens of a model
            continue
        name, options = parse_encoder_spec(spec.encoder_spec)
        if name == "sentence-transformers":
            resolution = resolve(str(options["model"]), assemble=False)
            if resolution.is_local:
                check_limit(resolution.target, max_seq_length, str(options["model"]))


def evaluate(systems: list, dataset, settings: EvaluateSettings, *, dataset_name: str, seed: int = 0,
             extra_corpus: dict[str, str] | None = None):
    """:func:`~embtune_core.scoring.evaluation.evaluate_systems` under ``settings`` (dims, k, confidence,
    resamples, permutations): the one call behind ``embtune evaluate`` and the pipeline's stage."""
    from embtune_core.scoring.evaluation import MetricSettings, evaluate_systems

    return evaluate_systems(systems, dataset, dims=settings.dims, settings=MetricSettings(hit_rate_at=tuple(settings.k)),
                            dataset_name=dataset_name, confidence=settings.confidence, seed=seed,
                            n_resamples=settings.resamples, n_permutations=settings.permutations,
                            extra_corpus=extra_corpus or None)
