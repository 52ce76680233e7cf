"""What a sentence-transformers model starts with, and which embtune features that first module supports.

sentence-transformers 6 loads models whose first module is one of:

* ``Transformer`` (and ``CLIPModel``, a subclass): a Hugging Face model with its tokenizer (BERT, MPNet,
  ...). Every embtune feature works with it.
* ``StaticEmbedding``: a table of token vectors averaged per text (model2vec models, static-retrieval
  models). Its tokenizer is a ``tokenizers.Tokenizer`` (``encode_batch``, not callable), it has no
  token limit (every text is read whole, ``max_seq_length`` is infinite) and no layers.
* ``Router``: other modules per task or modality (an asymmetric model: one encoder for queries, another
  for documents).
* older input modules: ``WordEmbeddings`` (with a ``WordTokenizer``), ``BoW``.

What each feature needs, and what happens otherwise:

=====================================================  ==========================  ============================
feature                                                needs                       otherwise
=====================================================  ==========================  ============================
encode, evaluate, mine, train-adapter, the shims       any module                  --
token-limit warnings and records                       a finite token limit        nothing is cut: "no limit"
``--max-seq-length``, ``export_max_seq_length``        a settable limit            refused in one line
``--document-windows``                                 a finite limit              refused in one line
``train`` (full fine-tuning)                           any trainable first module  ``Router``: refused
``--train-last-layers``/``--freeze-layers``, ``--lora``,
``export --format onnx``, ``--backend onnx``           a ``Transformer``           refused in one line
=====================================================  ==========================  ============================

Refusals are :class:`~embtune_core.errors.InputError` (exit 3) naming the model and the option, e.g.
``static-model: --lora: needs a Transformer first module; this model starts with StaticEmbedding (a
table of token vectors, no layers to adapt)``.
"""

from __future__ import annotations

import math
from typing import Any

from embtune_core.errors import InputError

# What each non-transformer first module is, for people reading a refusal.
DESCRIPTIONS = {
    "StaticEmbedding": "a table of token vectors averaged per text, no layers",
    "Router": "separate modules per task or modality",
    "WordEmbeddings": "word vectors, no transformer layers",
    "BoW": "a bag of words, no transformer layers",
}


def first_module(model: Any) -> Any:
    """The first module of a loaded ``SentenceTransformer`` (its input module)."""
    return model[0]


def first_module_name(model: Any) -> str:
    """The class name of the model's first module (``Transformer``, ``StaticEmbedding``, ``Router``...)."""
    return type(first_module(model)).__name__


def is_transformer(model: Any) -> bool:
    """True when the first module is a Hugging Face ``Transformer`` (or a subclass such as ``CLIPModel``)."""
    from sentence_transformers.base.modules import Transformer

    return isinstance(first_module(model), Transformer)


def is_router(model: Any) -> bool:
    """True when the first module routes texts by task or modality (``Router``: an asymmetric model)."""
    return len(input_modules(model)) > 1 or hasattr(first_module(model), "sub_modules")


def require_transformer(model: Any, feature: str, model_name: str) -> None:
    """Refuse ``feature`` (the option that asked for it, e.g. ``--lora``) for a model whose first module is
    not a ``Transformer``: one-line :class:`InputError` (exit 3) naming the model and the module."""
    if is_transformer(model):
        return
    name = first_module_name(model)
    what = DESCRIPTIONS.get(name, "not a Hugging Face transformer")
    raise InputError(f"needs a Transformer first module; this model starts with {name} ({what})",
                     path=model_name, field=feature)


def input_modules(model: Any, kind: str | None = None) -> list[Any]:
    """The module(s) that read the text: the first module, or for a ``Router`` the first module of the
    route ``kind`` takes (``"query"``/``"document"``, as ``encode_query``/``encode_document`` route; any
    other kind, plain ``encode()``, the default route). ``kind=None`` for a Router: every route's."""
    first = first_module(model)
    routes = getattr(first, "sub_modules", None)
    if routes is None or not hasattr(routes, "keys") or not len(routes):  # not a Router (its routes: a ModuleDict)
        return [first]
    if kind is None:
        return [modules[0] for modules in routes.values() if modules]
    key = kind if kind in routes else (getattr(first, "default_route", None) or next(iter(routes)))
    return [routes[key][0]] if key in routes and len(routes[key]) else []


def _rust_tokenizer(module: Any) -> Any:
    """The module's ``tokenizers.Tokenizer`` (static models), else None."""
    tokenizer = getattr(module, "tokenizer", None)
    return tokenizer if tokenizer is not None and not callable(tokenizer) and hasattr(tokenizer, "encode_batch") \
        else None


def _module_limit(module: Any) -> int | None:
    limits = []
    value = getattr(module, "max_seq_length", None)
    try:
        value = float(value)
    except (TypeError, ValueError):
        value = math.inf
    if math.isfinite(value) and value > 0:
        limits.append(int(value))
    rust = _rust_tokenizer(module)
    truncation = getattr(rust, "truncation", None) if rust is not None else None
    if isinstance(truncation, dict) and truncation.get("max_length"):
        limits.append(int(truncation["max_length"]))
    return min(limits) if limits else None


def token_limit(model: Any, kind: str | None = None) -> int | None:
    """Tokens the model reads of each text of ``kind``, or None when it reads them whole or does not say.

    The input module's ``max_seq_length`` when finite; for a ``tokenizers.Tokenizer`` (static models,
    whose ``max_seq_length`` is infinite) the truncation its ``tokenizer.json`` sets, which cuts texts as
    surely (a static model built on MiniLM's tokenizer file keeps its 128). A ``Router`` reads each kind
    with its route's module (``kind=None``: the longest limit of its routes, None when one reads texts
    whole)."""
    limits = [_module_limit(module) for module in input_modules(model, kind)]
    if not limits or None in limits:
        return None
    return max(limits)


def set_token_limit(model: Any, limit: int, model_name: str, option: str = "--max-seq-length") -> None:
    """Make the model read at most ``limit`` tokens of each text: ``max_seq_length`` for a transformer
    (or any module with a settable one), the tokenizer's truncation for a static model, every route of
    a ``Router``. A module with neither is refused in one line (:class:`InputError`)."""
    for module in input_modules(model):
        rust = _rust_tokenizer(module)
        try:
            own = float(getattr(module, "max_seq_length", math.inf) or math.inf)
        except (TypeError, ValueError):
            own = math.inf
        if rust is not None and not math.isfinite(own):
            rust.enable_truncation(int(limit))
            continue
        try:
            module.max_seq_length = int(limit)
        except AttributeError:
            raise InputError(f"{type(module).__name__} has no token limit to set; leave {option} out",
                             path=model_name, field=option) from None


def tokenizer_of(model: Any, kind: str | None = None) -> Any:
    """The tokenizer of the module that reads texts of ``kind`` (see :func:`input_modules`)."""
    modules = input_modules(model, kind or "document")
    return getattr(modules[0], "tokenizer", None) if modules else None


def token_counts(model: Any, texts: list[str], kind: str | None = None) -> list[int] | None:
    """Tokens of each text as the module reading ``kind`` counts them before cutting (a Hugging Face
    tokenizer with its special tokens; a static model's ``tokenizers.Tokenizer`` without, as
    ``StaticEmbedding`` encodes; a ``WordTokenizer``'s words), or None when its tokenizer cannot count."""
    tokenizer = tokenizer_of(model, kind)
    if tokenizer is None:
        return None
    if callable(tokenizer):
        encoded = tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False,
                            return_attention_mask=False, return_token_type_ids=False)
        return [len(ids) for ids in encoded["input_ids"]]
    if hasattr(tokenizer, "encode_batch"):  # a copy: truncation is switched off for counting only
        import copy

        counter = copy.copy(tokenizer)
        counter.no_truncation()
        return [len(encoding.ids) for encoding in counter.encode_batch(texts, add_special_tokens=False)]
    if hasattr(tokenizer, "tokenize"):
        return [len(tokenizer.tokenize(text)) for text in texts]
    return None


def input_folder(folder: str | Any, kind: str = "document") -> tuple[Any, str]:
    """(the folder holding the files of the module that reads ``kind`` texts, that module's class name)
    of a saved sentence-transformers model, read from ``modules.json`` (and a ``Router``'s
    ``router_config.json``) without loading anything: the model folder itself for most models, a
    route's subfolder (``document_0_Transformer``) for a Router. The folder itself when it has no
    ``modules.json`` (a plain Hugging Face folder)."""
    import json
    from pathlib import Path

    folder = Path(folder)
    try:
        modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
        first = modules[0]
        name = str(first.get("type", "")).rsplit(".", 1)[-1]
        path = folder / str(first.get("path", ""))
        if name == "Router":
            config = json.loads((path / "router_config.json").read_text(encoding="utf-8"))
            routes = config.get("structure") or {}
            route = kind if kind in routes else (config.get("parameters") or {}).get("default_route") or next(iter(routes))
            sub = routes[route][0]
            return path / sub, str((config.get("types") or {}).get(sub, "")).rsplit(".", 1)[-1]
        return path, name
    except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError, StopIteration):
        return folder, ""

