"""Run a third-party step whose leftovers land in the current directory inside a private scratch folder.

Some library code writes temporary files to the *current* directory rather than to a temporary folder:
ONNX Runtime's symbolic shape inference (``onnxruntime/tools/symbolic_shape_infer.py``,
``SymbolicShapeInference.infer_shapes``) saves ``sym_shape_infer_temp.onnx`` plus a ``<uuid>.data``
external-data file into the cwd whenever inference is incomplete, and never removes them; the
transformer optimizer and the quantiser reach it. embtune must not leave files in the user's folder
(nothing but what was asked for is written), so such steps run under :func:`scratch_cwd`: the process's
working directory is a fresh temporary folder for the duration and the folder is removed afterwards.

Contract: the caller passes only absolute paths into the wrapped step (a relative path would resolve
inside the scratch folder); the previous working directory is restored even when the step raises.
``os.chdir`` is process-wide: embtune calls this from its own single-threaded export path only.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def scratch_cwd(prefix: str = "embtune-scratch-") -> Iterator[Path]:
    """Yield a new temporary folder that is the working directory until the block ends; then restore
    the previous working directory and delete the folder with whatever the step left in it."""
    previous = os.getcwd()
    with tempfile.TemporaryDirectory(prefix=prefix) as folder:
        os.chdir(folder)
        try:
            yield Path(folder)
        finally:
            os.chdir(previous)


__all__ = ["scratch_cwd"]
