"""What embtune exports (a model folder's ``embtune_train.json`` and card, an adapter's config, an ONNX
manifest) records no machine's absolute path: it travels to other machines, containers and the hub,
where ``/home/alice/runs/x/fit.json`` means nothing and tells where Alice keeps her files.

:func:`portable` rewrites every string of a JSON-like value that is an absolute local path (or an encoder
spec or ``imported_from`` holding one, ``st:/abs/dir``) to the path's last component (``fit.json``,
``model``); model names, URLs and relative paths stay as they are.

Example::

    portable({"train": "/home/alice/runs/x/fit.json", "model": "sentence-transformers/all-MiniLM-L6-v2"})
    # {'train': 'fit.json', 'model': 'sentence-transformers/all-MiniLM-L6-v2'}
"""

from __future__ import annotations

import re
from pathlib import Path, PureWindowsPath
from typing import Any

_PREFIXED = re.compile(r"^([A-Za-z][\w.+-]*:)(?=[/\\~]|[A-Za-z]:[\\/])")  # "st:", "llamaindex:" before a path


def is_local_absolute(text: str) -> bool:
    """Whether ``text`` is an absolute path on this machine (its top folder exists) or a Windows one."""
    if re.match(r"^[A-Za-z]:[\\/]", text):
        return True
    if not text.startswith("/") or "\n" in text:
        return False
    parts = Path(text).parts
    return len(parts) >= 2 and Path("/", parts[1]).exists()


def _portable_text(text: str) -> str:
    prefix = ""
    match = _PREFIXED.match(text)
    if match and "://" not in text:
        prefix, text = match.group(1), text[match.end(1):]
    if is_local_absolute(text):
        name = PureWindowsPath(text).name if re.match(r"^[A-Za-z]:", text) else Path(text).name
        return prefix + (name or text)
    return prefix + text


def portable(value: Any) -> Any:
    """``value`` with every absolute local path reduced to its last component (module docstring)."""
    if isinstance(value, str):
        return _portable_text(value)
    if isinstance(value, dict):
        return {k: portable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable(v) for v in value]
    return value
