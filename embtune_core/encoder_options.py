"""Options shared by the commands that embed with a sentence-transformers model (``evaluate``, ``mine``,
``train-adapter``, the pipeline): query/document prompts (:mod:`embtune_core.prompts`) and the
inference backend (torch, or ONNX Runtime on a folder from ``embtune export --format onnx``,
:mod:`embtune_core.onnx_export`). Both are options of the sentence-transformers encoder and part of its
identity, so the embedding cache and query adapters never mix prompts or backends."""

from __future__ import annotations

from typing import Any

from embtune_core.errors import UsageError


def add_arguments(parser, *, prompts: bool = True) -> None:
    from embtune_core.onnx_export import BACKENDS

    if prompts:
        from embtune_core.prompts import add_arguments as add_prompt_arguments

        add_prompt_arguments(parser)
    parser.add_argument("--backend", choices=BACKENDS, default=None,
                        help="run local models in torch (default) or ONNX Runtime: onnx (the export's default "
                             "file), onnx-fp32, onnx-int8; the folder must come from embtune export --format onnx")


def from_args(args: Any, spec: str | None = None) -> dict[str, Any]:
    """Encoder options given on the command line (``query_prompt``, ``document_prompt``, ``backend``);
    refused in one line for an encoder spec that is not a sentence-transformers model."""
    options: dict[str, Any] = {}
    for key in ("query_prompt", "document_prompt", "backend"):
        value = getattr(args, key, None)
        if value is not None:
            options[key] = value
    if options and spec is not None:
        from embtune_core.encoding import parse_encoder_spec

        if parse_encoder_spec(spec)[0] != "sentence-transformers":
            key = next(iter(options))
            raise UsageError("applies to local sentence-transformers encoders only", field="--" + key.replace("_", "-"))
    return options


TABLE_KEYS = ("query_prompt", "document_prompt", "backend")


def pop_from_table(table: dict[str, Any], path: Any = "<config>", name: str = "") -> dict[str, Any]:
    """Take the encoder options (``query_prompt``, ``document_prompt``, ``backend``) out of a pipeline
    config table (``[mine]``, ``[adapter]``, ``[evaluate]``) and return them, checked (ConfigError
    naming ``name.key``)."""
    from embtune_core.errors import ConfigError
    from embtune_core.onnx_export import BACKENDS

    options = {key: table.pop(key) for key in TABLE_KEYS if key in table}
    for key, value in options.items():
        if not isinstance(value, str) or (key == "backend" and value not in BACKENDS):
            wanted = f"one of {', '.join(BACKENDS)}" if key == "backend" else "a string"
            raise ConfigError(f"must be {wanted}", path=path, field=f"{name}.{key}" if name else key)
    return options
