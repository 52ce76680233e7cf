"""Token limits: count the texts a model will cut, say so in one line, and record it.

A sentence-transformers model embeds at most ``max_seq_length`` tokens of a text (special tokens
and any prompt included) and silently drops the rest (sentence-transformers #4060): a 770-token
10-K chunk seen by a 256-token MiniLM is two thirds unread. Every command that embeds with a local
model (``evaluate``, ``train``, ``mine``, ``train-adapter``, the pipeline) counts, with the model's
own tokenizer, how many of its texts exceed the limit, logs one warning per kind of text, e.g.::

    6 of 6 corpus texts exceed 256 tokens of sentence-transformers/all-MiniLM-L6-v2; they are cut
    (pass --max-seq-length 512 to keep more of them; --document-windows mean reads them whole)

(``--document-windows``: :mod:`embtune_core.encoders.long_documents`.)

and records :func:`check`'s dict in its report, summary or model card. A limit beyond what the model
can read at all (its position embeddings) is refused in one line (:func:`check_limit`), and
:func:`set_limit` is the one place a limit is changed (said once, in one line).

Encoders that cannot count (API models, LangChain objects) are skipped: their servers apply their
own limits, which embtune cannot see.

Example::

    record = check_encoder(encoder, {"query": queries, "document": corpus})
    record  # {"limit": 256, "query": {"over": 0, "total": 40}, "document": {"over": 6, "total": 6}}
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

log = logging.getLogger(__name__)

KIND_NAMES = {"query": "queries", "document": "corpus texts"}


def prompt_for(model: Any, kind: str, explicit: str | None = None) -> str:
    """The prompt sentence-transformers prepends for ``kind`` (``encode_query``/``encode_document``):
    an explicit one, else the model's ``prompts[kind]``, else its default prompt, else none."""
    if explicit is not None:
        return explicit
    prompts = getattr(model, "prompts", None) or {}
    if kind in prompts:
        return prompts[kind]
    default = getattr(model, "default_prompt_name", None)
    return prompts.get(default, "") if default else ""


def token_lengths(model: Any, texts: Sequence[str], prompt: str = "", kind: str | None = None,
                  cap: int | None = None) -> list[int] | None:
    """Tokens of each ``prompt + text`` as the model's first module counts them (a transformer's tokenizer
    with its special tokens; any module :func:`embtune_core.encoders.model_modules.token_counts` knows); None when
    its tokenizer cannot count. With ``cap``, a text that holds more than ``cap`` tokens on its own counts
    ``cap + 1``, found from a prefix (:func:`embtune_core.encoders.token_prefix.capped_lengths`) where the model's
    tokenizer is a Hugging Face one: a long text is never tokenised whole just to be counted."""
    from embtune_core.encoders.model_modules import token_counts, tokenizer_of
    from embtune_core.encoders.token_prefix import capped_lengths, fast_tokenizer

    tokenizer = fast_tokenizer(model)
    if cap is not None and tokenizer is not None and tokenizer_of(model, kind) is tokenizer:
        return capped_lengths(model, list(texts), prompt, int(cap))
    lengths: list[int] = []
    for start in range(0, len(texts), 1024):  # bounded memory on big corpora
        counts = token_counts(model, [prompt + t for t in texts[start:start + 1024]], kind)
        if counts is None:
            return None
        lengths.extend(counts)
    return lengths


def count_over(model: Any, texts: Sequence[str], kind: str, prompt: str | None = None) -> tuple[int, int | None]:
    """(how many ``texts`` exceed the model's limit, the limit); (0, None) when it reads texts whole
    (a static model without truncation: nothing is cut) or its tokenizer cannot count. A text far longer
    than the limit is known to exceed it from a prefix: it is never tokenised whole just to be counted."""
    from embtune_core.encoders.model_modules import token_limit

    limit = token_limit(model, kind)
    if not limit or not texts:
        return 0, limit
    lengths = token_lengths(model, list(texts), prompt_for(model, kind, prompt), kind, cap=int(limit))
    if lengths is None:
        log.info("%s cannot count tokens (first module %s); texts over its %d-token limit are not reported",
                 getattr(model, "embtune_model_name", "the model"), type(model[0]).__name__, limit)
        return 0, None
    return sum(n > limit for n in lengths), int(limit)


def warning_line(over: int, total: int, kind: str, limit: int, model_name: str,
                 max_positions: int | None = None, *, windows_hint: bool = True) -> str:
    if max_positions is not None and limit >= max_positions:
        hint = f"the model reads at most {max_positions}: use shorter chunks or a model with a longer limit"
    else:
        longer = max(512, 2 * int(limit))
        longer = min(longer, max_positions) if max_positions else longer
        hint = f"pass --max-seq-length {longer} to keep more of them"
    if kind == "document" and windows_hint:  # where documents are embedded (evaluate, mine, train-adapter), windows read them whole
        hint += "; --document-windows mean reads them whole"
    return f"{over} of {total} {KIND_NAMES.get(kind, kind)} exceed {limit} tokens of {model_name}; they are cut ({hint})"


_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert", "mpnet", "longformer")  # 2 positions reserved


def _readable(positions: Any, model_type: Any) -> int | None:
    """Tokens a transformer with ``positions`` position embeddings reads (RoBERTa-style models reserve 2)."""
    try:
        positions = int(positions)
    except (TypeError, ValueError):
        return None
    return positions - 2 if model_type in _OFFSET_POSITIONS else positions


def max_positions(model: Any) -> int | None:
    """The most tokens a loaded ``SentenceTransformer`` can read at all: its transformer's position
    embeddings (less the 2 that RoBERTa-style models reserve); None when unknown."""
    try:
        first = model[0]
        config = (getattr(first, "auto_model", None) or first.model).config
    except (AttributeError, TypeError, IndexError, KeyError):
        return None
    return _readable(getattr(config, "max_position_embeddings", None), getattr(config, "model_type", ""))


def folder_max_positions(folder: str) -> int | None:
    """:func:`max_positions` read from a model folder's ``config.json``, without loading the model."""
    import json
    from pathlib import Path

    try:
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    return _readable(config.get("max_position_embeddings"), config.get("model_type", ""))


def check_limit(model: Any, limit: int, model_name: str, field: str = "--max-seq-length") -> None:
    """Refuse a token limit the model (loaded, or a folder) cannot read (one line, exit 3) instead of a
    tensor-size crash."""
    from embtune_core.errors import InputError

    most = folder_max_positions(model) if isinstance(model, str) else max_positions(model)
    if most is not None and int(limit) > most:
        raise InputError(f"{limit} tokens is more than {model_name} can read ({most}, its position embeddings)",
                         path=model_name, field=field)


_limit_notices: set[tuple[str, Any, int]] = set()


def set_limit(model: Any, limit: int, model_name: str) -> None:
    """Set a loaded model's token limit: refused beyond its position embeddings (:func:`check_limit`),
    and said once per model and limit when it differs from the model's own."""
    from embtune_core.encoders.model_modules import set_token_limit, token_limit

    check_limit(model, limit, model_name)
    own = getattr(model, "embtune_own_max_seq_length", None) or token_limit(model)
    model.embtune_own_max_seq_length = own
    set_token_limit(model, limit, model_name)  # refused in one line for a module without a limit to set
    if own != limit and (model_name, own, limit) not in _limit_notices:
        _limit_notices.add((model_name, own, limit))
        log.warning("%s: token limit set to %d (the model's own is %s)", model_name, limit,
                    own if own is not None else "none: it read texts whole")


def check(counter: Any, texts_by_kind: Mapping[str, Sequence[str]], *, model_name: str = "the model",
          warn: bool = True, positions: int | None = None, windows_hint: bool = True) -> dict[str, Any] | None:
    """Count over-long texts of each kind with ``counter(texts, kind) -> (over, limit)`` and log one
    warning per kind that has any; returns ``{"limit": L, kind: {"over": n, "total": m}, ...}``, or None
    when no kind has a limit (nothing is cut). A kind read whole (a Router's static query route) counts
    0 over; ``L`` is then the limit of the kinds that have one."""
    record: dict[str, Any] = {"limit": None}
    for kind, texts in texts_by_kind.items():
        texts = list(texts)
        over, limit = counter(texts, kind)
        record[kind] = {"over": int(over) if limit is not None else 0, "total": len(texts)}
        if limit is None:
            continue
        record["limit"] = max(limit, record["limit"] or 0)
        if over and warn:
            log.warning(warning_line(over, len(texts), kind, limit, model_name, positions, windows_hint=windows_hint))
    return record if record["limit"] is not None else None


def check_encoder(encoder: Any, texts_by_kind: Mapping[str, Sequence[str]], *, warn: bool = True
                  ) -> dict[str, Any] | None:
    """:func:`check` for an encoder that can count (``count_over_limit``); None for one that cannot."""
    counter = getattr(encoder, "count_over_limit", None)
    if counter is None:
        return None
    model = getattr(encoder, "model", None) if hasattr(encoder, "token_limit") else None
    if model is not None:
        positions = max_positions(model)
    else:  # an API model: its limit is the service's, nothing to raise (max_positions == limit says so)
        positions = getattr(encoder, "token_limit", None)
    name = getattr(encoder, "name", None) or getattr(encoder, "model_name", None) or "the model"
    return check(counter, texts_by_kind, model_name=str(name), warn=warn, positions=positions)


def check_model(model: Any, texts_by_kind: Mapping[str, Sequence[str]], *, model_name: str = "the model",
                warn: bool = True) -> dict[str, Any] | None:
    """:func:`check` for a loaded ``SentenceTransformer`` (training, where no encoder wraps it and
    documents cannot be read as windows)."""
    return check(lambda texts, kind: count_over(model, texts, kind), texts_by_kind, model_name=model_name, warn=warn,
                 positions=max_positions(model), windows_hint=False)


def describe(record: Mapping[str, Any] | None) -> str | None:
    """One line for a report: ``limit 256 tokens; cut: 6 of 6 corpus texts, 0 of 40 queries``."""
    if not record or not record.get("limit"):
        return None
    cuts = [f"{v['over']} of {v['total']} {KIND_NAMES.get(k, k)}" for k, v in record.items() if k != "limit"]
    return f"limit {record['limit']} tokens; cut: " + ", ".join(cuts)


def model_max_seq_length(model: str) -> int | None:
    """A sentence-transformers model's ``max_seq_length`` read from its folder, without loading weights:
    ``sentence_bert_config.json`` (sentence-transformers < 6), else the tokenizer's ``model_max_length``
    bounded by ``max_position_embeddings``, as sentence-transformers 6 saves and reads it; for a static
    model its ``tokenizer.json`` truncation (None: it reads texts whole); for a Router, its document route's."""
    import json
    from pathlib import Path

    from embtune_core.encoders.model_modules import input_folder
    from embtune_core.encoders.models import resolve

    # The module that reads documents: the folder itself, or an asymmetric (Router) model's document route.
    folder, module = input_folder(Path(resolve(model, assemble=False).target), "document")

    def read(name: str) -> dict:
        path = folder / name
        try:
            data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    if module == "StaticEmbedding":  # no max_seq_length: its tokenizer's truncation, if any, is the limit
        truncation = read("tokenizer.json").get("truncation")
        return int(truncation["max_length"]) if isinstance(truncation, dict) and truncation.get("max_length") \
            else None
    value = read("sentence_bert_config.json").get("max_seq_length")
    if value:
        return int(value)
    tokenizer_limit = read("tokenizer_config.json").get("model_max_length")
    if isinstance(tokenizer_limit, (int, float)) and 0 < tokenizer_limit < 1e6:  # 1e30 means "unset"
        positions = read("config.json").get("max_position_embeddings")
        return int(min(tokenizer_limit, positions)) if isinstance(positions, int) else int(tokenizer_limit)
    return None
