"""How a system's local model ran (torch at a precision, or ONNX Runtime with a file), for the reports.

:func:`backend_of` reads it from an encoder's typed identity; :func:`backend_text` words it for a system's line.
Kept apart from :mod:`embtune_core.reporting.report` so the report's parts (:mod:`embtune_core.reporting.report_verdict`)
can word it without importing the report that imports them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from embtune_core.encoders.encoder_identity import EncoderIdentity


def backend_of(identity: EncoderIdentity | str) -> dict[str, Any] | None:
    """How a sentence-transformers system ran, from its encoder's typed identity (``backend`` and ``file``
    for ONNX Runtime, ``precision`` for half precision in torch); None when it is no sentence-transformers
    model's. A recorded identity (a ``report.json``'s text) is read back first."""
    if isinstance(identity, str):
        identity = EncoderIdentity.parse(identity)
    if identity.family != "sentence-transformers":
        return None
    if identity.get("backend") is not None:
        from embtune_core.encoders.onnx_export import FUSED_FILE, INT8_FILE, MIXED_FILE

        file = identity.get("file") or ""
        name = Path(file).name
        return {"runtime": identity.get("backend"), "file": file,
                "quantization": "int8" if name in (INT8_FILE, MIXED_FILE) else "none (fp32)",
                **({"graph": "fused (O2)"} if name == FUSED_FILE else {}),
                **({"outliers": "calibrated outlier channels in fp32"} if name == MIXED_FILE else {})}
    return {"runtime": "torch", "precision": identity.get("precision") or "fp32"}


def backend_text(system: dict[str, Any]) -> str:
    """``ONNX Runtime, int8 quantised (onnx/model_qint8_avx512_vnni.onnx)``, ``torch fp32`` or "" (no
    local model): the backend part of a system's line in the reports."""
    backend = system.get("backend")
    if not backend:
        return ""
    if backend.get("runtime") == "onnx":
        kind = "int8 quantised" if backend.get("quantization") == "int8" else "fp32"
        if backend.get("outliers"):
            kind += f", {backend['outliers']}"
        if backend.get("graph"):
            kind += f", {backend['graph']} graph"
        return f"ONNX Runtime, {kind} ({backend.get('file')})"
    return f"{backend.get('runtime', 'torch')} {backend.get('precision', 'fp32')}"
