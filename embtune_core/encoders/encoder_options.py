"""Options shared by the commands that embed with a sentence-transformers model (``evaluate``, ``mine``,
``train-adapter``, the pipeline): query/document prompts (:mod:`embtune_core.encoders.prompts`), the
inference backend (torch, or ONNX Runtime on a folder from ``embtune export --format onnx``,
:mod:`embtune_core.encoders.onnx_export`) and how documents longer than the token limit are read
(``document_windows``, :mod:`embtune_core.encoders.long_documents`). All are part of the encoder's identity,
so the embedding cache and query adapters never mix prompts, backends or pooled documents."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal

from embtune_core.cli_fields import add_fields, setting
from embtune_core.encoders.long_documents import MODES
from embtune_core.encoders.onnx_export import BACKENDS
from embtune_core.encoders.prompts import DOCUMENT_PROMPT_HELP, QUERY_PROMPT_HELP
from embtune_core.errors import UsageError


@dataclass
class EncoderFlags:
    """The encoder options a command line sets (:data:`TABLE_KEYS`), declared once: flag, help, choices."""

    query_prompt: str | None = setting(None, QUERY_PROMPT_HELP, metavar="TEXT")
    document_prompt: str | None = setting(None, DOCUMENT_PROMPT_HELP, metavar="TEXT")
    backend: Literal[BACKENDS] | None = setting(  # type: ignore[valid-type]
        None, "run local models in torch (default) or ONNX Runtime: onnx (the export's default file: the one it "
              "recommends), onnx-fp32, onnx-o2, onnx-int8, onnx-int8-mixed; the folder must come from embtune "
              "export --format onnx")
    document_windows: Literal[MODES] | None = setting(  # type: ignore[valid-type]
        None, "documents longer than the token limit: off (cut at the limit, the model's own behaviour; default), "
              "mean (read whole as windows, one token-weighted mean vector), max (each document scored by its "
              "best window, MaxP; evaluate only)")


def add_arguments(parser, *, prompts: bool = True) -> None:
    """One flag per field of :class:`EncoderFlags` (the prompts left out with ``prompts=False``)."""
    add_fields(parser, EncoderFlags, skip=() if prompts else ("query_prompt", "document_prompt"))


def from_args(args: Any, spec: str | None = None, *, multi_vector: bool = False) -> dict[str, Any]:
    """Encoder options given on the command line (:data:`TABLE_KEYS`);
    refused in one line for an encoder spec that is not a sentence-transformers model, and
    ``--document-windows max`` where one vector per document is needed (``multi_vector`` False)."""
    options: dict[str, Any] = {}
    for key in TABLE_KEYS:
        value = getattr(args, key, None)
        if value is not None:
            options[key] = value
    _check_one_vector(options, multi_vector, UsageError, field="--document-windows")
    if options and spec is not None:
        from embtune_core.encoders.encoding import parse_encoder_spec

        family = parse_encoder_spec(spec)[0]
        # An API encoder counts its own tokens, so it reads long documents as windows too; the rest
        # (prompts, backends) belong to local models.
        local_only = [key for key in options if not (family == "openai" and key == "document_windows")]
        if family != "sentence-transformers" and local_only:
            raise UsageError("applies to local sentence-transformers encoders only",
                             field="--" + local_only[0].replace("_", "-"))
    return options


TABLE_KEYS = tuple(f.name for f in fields(EncoderFlags))  # query_prompt, document_prompt, backend, document_windows
CHOICES = {"document_windows": MODES}


def pop_from_table(table: dict[str, Any], path: Any = "<config>", name: str = "") -> dict[str, Any]:
    """Take the encoder options (:data:`TABLE_KEYS`) out of a pipeline
    config table (``[mine]``, ``[adapter]``, ``[evaluate]``) and return them, checked (ConfigError
    naming ``name.key``)."""
    from embtune_core.errors import ConfigError

    choices = {**CHOICES, "backend": BACKENDS}
    options = {key: table.pop(key) for key in TABLE_KEYS if key in table}
    for key, value in options.items():
        if not isinstance(value, str) or (key in choices and value not in choices[key]):
            wanted = f"one of {', '.join(choices[key])}" if key in choices else "a string"
            raise ConfigError(f"must be {wanted}", path=path, field=f"{name}.{key}" if name else key)
    _check_one_vector(options, name == "evaluate", ConfigError, path=path,
                      field=f"{name}.document_windows" if name else "document_windows")
    return options


def _check_one_vector(options: dict[str, Any], multi_vector: bool, error: type, **where: Any) -> None:
    if options.get("document_windows") == "max" and not multi_vector:
        raise error("'max' keeps several vectors per document, which only evaluation searches; use 'mean' here",
                    **where)
