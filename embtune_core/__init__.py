"""embtune: fine-tune embedding models and query adapters for RAG, and plug them into your stack.

The core is grouped by concept: ``data`` (documents, chunks, QA datasets, question generation), ``encoders``
(encoders, their identity, model loading, LoRA, ONNX, token limits), ``finetuning`` (training a model with a
loss strategy, the saved model), ``adapters`` (query adapters), ``retrieval`` (search, BM25, hybrids, index
tuning), ``scoring`` (metrics, statistics, the evaluation run), ``reporting`` (reports), ``runtime`` (atomic
writes, locks, interrupts, progress, run folders, secret scrubbing), ``publishing`` (export, hub, deploy),
``workflow`` (``embtune run``, quickstart, probe, the recommendation) and ``commands`` (the CLI). The plugin
host, settings and errors sit here at the top. The module paths from before the grouping
(``embtune_core.training``, ...) still import: see :mod:`embtune_core.old_paths`.
"""

import pluggy

from embtune_core import old_paths

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("embtune")

__all__ = ["__version__", "hookimpl"]

old_paths.install()


def __getattr__(name: str):
    # embtune_core.<old module> read as an attribute (see embtune_core.old_paths)
    return old_paths.attribute(name)
