"""embtune: fine-tune embedding models and query adapters for RAG, and plug them into your stack."""

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("embtune")

__all__ = ["__version__", "hookimpl"]
