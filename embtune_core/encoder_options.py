"""Options shared by the commands that embed with a sentence-transformers model (``evaluate``, ``mine``,
``train-adapter``, the pipeline): query/document prompts (:mod:`embtune_core.prompts`), the
inference backend (torch, or ONNX Runtime on a folder from ``embtune export --format onnx``,
:mod:`embtune_core.onnx_export`) and how documents longer than the token limit are read
(``document_windows``, :mod:`embtune_core.long_documents`). All are part of the encoder's identity,
so the embedding cache and query adapters never mix prompts, backends or pooled documents."""

from __future__ import annotations

from typing import Any

from embtune_core.errors import UsageError
from embtune_core.long_documents import MODES


def add_arguments(parser, *, prompts: bool = True) -> None:
    from embtune_core.onnx_export import BACKENDS

    if prompts:
        from embtune_core.prompts import add_arguments as add_prompt_arguments

        add_prompt_arguments(parser)
    parser.add_argument("--backend", choices=BACKENDS, default=None,
                        help="run local models in torch (default) or ONNX Runtime: onnx (the export's default "
                             "file: the one it recommends), onnx-fp32, onnx-o2, onnx-int8, onnx-int8-mixed; the "
                             "folder must come from embtune export --format onnx")
    parser.add_argument("--document-windows", choices=MODES, default=None,
                        help="documents longer than the token limit: off (cut at the limit, the model's own "
                             "behaviour; default), mean (read whole as windows, one token-weighted mean vector), "
                             "max (each document scored by its best window, MaxP; evaluate only)")


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
        from embtune_core.encoding import parse_encoder_spec

        if parse_encoder_spec(spec)[0] != "sentence-transformers":
            key = next(iter(options))
            raise UsageError("applies to local sentence-transformers encoders only", field="--" + key.replace("_", "-"))
    return options


TABLE_KEYS = ("query_prompt", "document_prompt", "backend", "document_windows")
CHOICES = {"document_windows": MODES}


def pop_from_table(table: dict[str, Any], path: Any = "<config>", name: str = "") -> dict[str, Any]:
    """Take the encoder options (:data:`TABLE_KEYS`) out of a pipeline
    config table (``[mine]``, ``[adapter]``, ``[evaluate]``) and return them, checked (ConfigError
    naming ``name.key``)."""
    from embtune_core.errors import ConfigError
    from embtune_core.onnx_export import BACKENDS

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
