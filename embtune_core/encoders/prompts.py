"""Query and document prompts (E5/BGE-style instructions such as ``"query: "`` / ``"passage: "``).

sentence-transformers keeps a model's prompts in ``config_sentence_transformers.json`` (``"prompts":
{"query": ..., "document": ...}``); ``encode_query`` prepends ``prompts["query"]`` and
``encode_document`` ``prompts["document"]`` (https://sbert.net/examples/sentence_transformer/applications/
computing-embeddings/README.html#prompt-templates). embtune uses the same places:

* ``embtune train --query-prompt/--document-prompt`` (``[train]`` keys ``query_prompt``/``document_prompt``)
  sets them on the model before training -- the trainer prepends them to the query / document columns
  (``SentenceTransformerTrainingArguments(prompts=...)``), the validation evaluator applies them through
  ``encode_query``/``encode_document`` -- and ``model.save`` stores them, so every downstream loader
  (sentence-transformers, LangChain's ``HuggingFaceEmbeddings`` with ``encode_query``, embtune) reads them.
* ``evaluate``, ``mine``, ``train-adapter`` and the pipeline pass them to the sentence-transformers
  encoder (``query_prompt``/``document_prompt`` options), which puts them in its identity, so cached
  vectors and query adapters never mix prompts (see :mod:`embtune_plugins.encoders`).
"""

from __future__ import annotations

from typing import Any

from embtune_core.errors import ConfigError

QUERY_COLUMNS = ("anchor", "query", "sentence1")
DOCUMENT_COLUMNS = ("positive", "negative", "text", "document", "sentence2")


def validate(settings: Any, path: Any = "<config>", *, table: str = "train") -> None:
    """Refuse a prompt that is not a string (ConfigError naming ``table.key``)."""
    for name in ("query_prompt", "document_prompt"):
        value = getattr(settings, name, None)
        if value is not None and not isinstance(value, str):
            raise ConfigError("must be a string (the text prepended, e.g. \"query: \")", path=path,
                              field=f"{table}.{name}")


def set_model_prompts(model: Any, query_prompt: str | None, document_prompt: str | None) -> dict[str, str]:
    """Put the given prompts into ``model.prompts`` under ``"query"`` / ``"document"`` (keeping the
    model's other prompts); ``model.save`` writes them to config_sentence_transformers.json.
    Returns the model's prompts afterwards."""
    table = dict(getattr(model, "prompts", None) or {})
    if query_prompt is not None:
        table["query"] = query_prompt
    if document_prompt is not None:
        table["document"] = document_prompt
        for alias in ("passage", "corpus"):  # encode_document prefers "document" but drop stale aliases
            table.pop(alias, None)
    model.prompts = table
    return table


def column_prompts(rows: Any, query_prompt: str | None, document_prompt: str | None) -> dict[str, str] | None:
    """The trainer's ``prompts`` argument: each text column of the training ``datasets.Dataset``
    mapped to the prompt of its side (query columns: anchor...; document columns: positive,
    negative, text...). None when no prompt is given (the trainer then adds nothing)."""
    if query_prompt is None and document_prompt is None:
        return None
    out: dict[str, str] = {}
    for column in getattr(rows, "column_names", []):
        if column in QUERY_COLUMNS and query_prompt:
            out[column] = query_prompt
        elif column in DOCUMENT_COLUMNS and document_prompt:
            out[column] = document_prompt
    return out or None


def column_routes(rows: Any) -> dict[str, str]:
    """The trainer's ``router_mapping`` for a model whose first module is a ``Router`` (an asymmetric
    model): query columns (anchor...) to its ``"query"`` route, document columns (positive, negative,
    text...) to ``"document"``, as ``encode_query``/``encode_document`` route them at search time."""
    out: dict[str, str] = {}
    for column in getattr(rows, "column_names", []):
        if column in QUERY_COLUMNS:
            out[column] = "query"
        elif column in DOCUMENT_COLUMNS:
            out[column] = "document"
    return out


QUERY_PROMPT_HELP = "text prepended to every query, e.g. 'query: ' (default: the model's own prompts)"
DOCUMENT_PROMPT_HELP = "text prepended to every document, e.g. 'passage: ' (default: the model's own)"


def add_arguments(parser) -> None:
    """``--query-prompt`` / ``--document-prompt`` for commands that embed with a model."""
    parser.add_argument("--query-prompt", metavar="TEXT", help=QUERY_PROMPT_HELP)
    parser.add_argument("--document-prompt", metavar="TEXT", help=DOCUMENT_PROMPT_HELP)
