"""How a system's local model ran (torch at a precision, or ONNX Runtime with a file), for the reports.

:func:`backend_of` reads it from an encoder identity; :func:`backend_text` words it for a system's line.
Kept apart from :mod:`embtune_core.report` so the report's parts (:mod:`embtune_core.report_verdict`)
can word it without importing the report that imports them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def backend_of(identity: str) -> dict[str, Any] | None:
    """How a sentence-transformers system ran, from its encoder identity (``plugins/encoders.py`` writes
    ``backend=onnx file=onnx/model_qint8_avx512_vnni.onnx`` for ONNX Runtime, ``precision=bf16`` for
    half precision in torch); None when the identity is no sentence-transformers model's."""
    import re

    if "sentence-transformers " not in identity:
        return None
    onnx = re.findall(r"\bbackend=(\S+) file=(\S+)", identity)
    if onnx:
        from embtune_core.onnx_export import FUSED_FILE, INT8_FILE

        runtime, file = onnx[-1]
        name = Path(file).name
        return {"runtime": runtime, "file": file, "quantization": "int8" if name == INT8_FILE else "none (fp32)",
                **({"graph": "fused (O2)"} if name == FUSED_FILE else {})}
    precision = re.findall(r"\bprecision=(\S+)", identity)
    return {"runtime": "torch", "precision": precision[-1] if precision else "fp32"}


def backend_text(system: dict[str, Any]) -> str:
    """``ONNX Runtime, int8 quantised (onnx/model_qint8_avx512_vnni.onnx)``, ``torch fp32`` or "" (no
    local model): the backend part of a system's line in the reports."""
    backend = system.get("backend")
    if not backend:
        return ""
    if backend.get("runtime") == "onnx":
        kind = "int8 quantised" if backend.get("quantization") == "int8" else "fp32"
        if backend.get("graph"):
            kind += f", {backend['graph']} graph"
        return f"ONNX Runtime, {kind} ({backend.get('file')})"
    return f"{backend.get('runtime', 'torch')} {backend.get('precision', 'fp32')}"
