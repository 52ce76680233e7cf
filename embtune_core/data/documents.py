"""Documents (what loaders return) and chunks (what chunkers return)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Document:
    """Text of one file or page, with metadata such as ``source`` (path) and ``page``."""

    text: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def source(self) -> str:
        return str(self.metadata.get("source", ""))


@dataclass
class Chunk:
    """A piece of a document with a stable id; ``metadata`` keeps the document's and adds position."""

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def source(self) -> str:
        return str(self.metadata.get("source", ""))


def stable_id(*parts: object) -> str:
    """A deterministic id from its parts (source, position, text...): same input, same id."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).hexdigest()
    # Formatted like a UUID so that LlamaIndex tooling, which expects node ids of that shape, is happy.
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"
