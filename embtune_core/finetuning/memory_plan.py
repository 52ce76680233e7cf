"""How many texts a training step embeds at once: GradCache's mini-batch, chosen from the memory available.

In-batch-negative losses (MNRL, GIST) want large batches: every other text of the batch is a negative.
Embedded at once, a batch of 64 MiniLM texts at 256 tokens keeps ~8 GB of activations for the backward
pass (measured: 9.7 GB peak RSS for one step, ``bench/gradcache_minibatch.py``), so the old default
(batch 64) could not run on an 8 GB laptop. GradCache (Gao et al. 2021, "Scaling Deep Contrastive
Learning Batch Size under Memory Limited Setup", https://arxiv.org/abs/2101.06983; sentence-transformers'
``CachedMultipleNegativesRankingLoss``) computes the same loss over the same 64 in-batch negatives:
it embeds the batch without gradients, computes the loss and its gradient with respect to the embeddings,
then embeds ``mini_batch_size`` texts at a time again with gradients and back-propagates the cached
embedding gradients. Only one mini-batch of activations is alive at a time. Dropout draws are replayed,
so the gradient is the full batch's (up to float summation order).

:func:`plan` chooses the mini-batch:

* per text, the activations a transformer layer keeps for the backward pass are estimated from its
  configuration (:func:`activation_bytes_per_text`: hidden states, feed-forward activations, attention
  scores and probabilities and dropout masks, at the longest training text's tokens); the estimate is
  within 10% of the measured growth of peak memory per text for MiniLM (122 MB per 256-token text);
* the budget for them is a share of the memory available now (psutil's ``available``, bounded by a
  cgroup v2 limit and by ``ulimit -v`` when the process runs under one): on CPU the smaller of 25% of it and 1 GiB -- on CPU,
  mini-batches beyond ~8 texts of 256 tokens buy no speed (the same CPU seconds per step for mini-batches
  of 8, 16 and 32, ``bench/results/gradcache_minibatch.json``), so more memory would be spent for
  nothing; on a GPU half of its free memory;
* ``mini_batch_size = floor(budget / per text)``, at least 1; when it holds the whole batch no cache is
  used (the plain loss, one embedding pass).

The choice is said in one line and recorded (``memory`` in ``embtune_train.json``). It decides how the
batch is split, not what is learned; a fixed ``--loss-option mini_batch_size=N`` overrides it, and a
resumed run keeps the mini-batch its checkpoints were made with (``memory_plan.json`` beside them), so
that an interrupted run gives the same bits as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("embtune_core.finetuning.training")

GIB = 1 << 30
CPU_BUDGET_CAP = 1 * GIB  # beyond this a CPU step is no faster (module docstring)
CPU_SHARE = 0.25
GPU_SHARE = 0.5
PLAN_FILE = "memory_plan.json"


@dataclass(frozen=True)
class MiniBatchPlan:
    """What :func:`plan` chose and the figures it chose from."""

    batch_size: int
    mini_batch_size: int
    gradient_cache: bool  # False: the whole batch is embedded at once (it fits the budget)
    longest_tokens: int
    bytes_per_text: int | None  # estimated activations kept per text (None: model of unknown shape)
    budget_bytes: int | None
    available_bytes: int | None
    device: str
    source: str  # "auto", "setting" (loss option), "resumed" (the checkpoints' plan)
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def activation_bytes_per_text(config: Any, tokens: int, dtype_bytes: int = 4) -> int | None:
    """Bytes of activations one text of ``tokens`` tokens keeps for the backward pass through a
    BERT-like encoder with ``config`` (layers, hidden size, feed-forward size, heads): per layer and
    token about 10 hidden-size tensors (projections, residuals, layer norms, dropout), 4 feed-forward
    tensors and, per head, 3 attention rows (scores, probabilities, dropped-out probabilities) plus a
    one-byte dropout mask. None when the configuration does not say its shape."""
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layers", None)
    hidden = getattr(config, "hidden_size", None) or getattr(config, "dim", None)
    if not layers or not hidden:
        return None
    intermediate = getattr(config, "intermediate_size", None) or getattr(config, "hidden_dim", None) or 4 * hidden
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_heads", None) or max(1, hidden // 64)
    per_token = dtype_bytes * (10 * hidden + 4 * intermediate + 3 * heads * tokens) + heads * tokens
    return int(layers * tokens * per_token)


def available_memory(device: str) -> int | None:
    """Bytes available now: free memory of the GPU for ``cuda`` devices, else the system's available
    memory (psutil), bounded by the room left under the process's cgroup v2 limit and its address-space
    limit (``ulimit -v``) when it has them."""
    if device.startswith("cuda"):
        import torch

        try:
            free, _ = torch.cuda.mem_get_info(torch.device(device))
            return int(free)
        except (RuntimeError, AssertionError):
            return None
    try:
        import psutil

        available = int(psutil.virtual_memory().available)
    except ImportError:  # psutil comes with accelerate; /proc/meminfo as a fallback
        available = _meminfo_available()
    rooms = [room for room in (available, _cgroup_room(), _address_space_room()) if room is not None]
    return min(rooms) if rooms else None


def _address_space_room() -> int | None:
    """Address space left under this process's soft RLIMIT_AS (``ulimit -v``), or None without one."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft in (resource.RLIM_INFINITY, -1):
            return None
        import psutil

        return max(0, int(soft) - int(psutil.Process().memory_info().vms))
    except (ImportError, OSError, ValueError):
        return None


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_room() -> int | None:
    """memory.max - memory.current of this process's cgroup (v2), or None without a limit."""
    try:
        relative = next((line.split(":", 2)[2] for line in Path("/proc/self/cgroup").read_text().splitlines()
                         if line.startswith("0::")), None)
        if relative is None:
            return None
        folder = Path("/sys/fs/cgroup") / relative.lstrip("/")
        limit = (folder / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(0, int(limit) - int((folder / "memory.current").read_text().strip()))
    except (OSError, ValueError):
        return None


def plan(model: Any, *, batch_size: int, longest_tokens: int, device: str, dtype_bytes: int = 4,
         requested: int | str = "auto", available: int | None = None) -> MiniBatchPlan:
    """The mini-batch for a step of ``batch_size`` texts of at most ``longest_tokens`` tokens (module
    docstring). ``requested`` is the ``mini_batch_size`` loss option: ``"auto"`` or a number;
    ``available`` overrides the measured memory (tests)."""
    config = getattr(_transformer(model), "config", None)
    per_text = activation_bytes_per_text(config, longest_tokens, dtype_bytes) if config is not None else None
    if requested != "auto":
        mini = max(1, min(int(requested), batch_size))
        return MiniBatchPlan(batch_size, mini, mini < batch_size, longest_tokens, per_text, None, None, device,
                             "setting", f"mini_batch_size = {requested} was given")
    if available is None:
        available = available_memory(device)
    if per_text is None or available is None:
        unknown = "the model's shape" if per_text is None else "the memory available"
        return MiniBatchPlan(batch_size, batch_size, False, longest_tokens, per_text, None, available, device, "auto",
                             f"{unknown} is unknown: the batch is embedded at once")
    if device.startswith("cuda"):
        budget = int(GPU_SHARE * available)
        rule = f"{GPU_SHARE:.0%} of {_gb(available)} free on {device}"
    else:
        budget = int(min(CPU_BUDGET_CAP, CPU_SHARE * available))
        rule = (f"the smaller of {CPU_SHARE:.0%} of {_gb(available)} available and {_gb(CPU_BUDGET_CAP)}, "
                "beyond which a CPU step is no faster")
    mini = max(1, min(batch_size, budget // per_text))
    cache = mini < batch_size
    need = f"{_gb(per_text)} of activations per {longest_tokens}-token text"
    if cache:
        reason = (f"batch {batch_size} would keep {_gb(per_text * batch_size)} ({need}); budget {_gb(budget)} "
                  f"({rule})")
    else:
        reason = f"batch {batch_size} fits the budget {_gb(budget)} ({need}; {rule})"
    return MiniBatchPlan(batch_size, int(mini), cache, longest_tokens, per_text, budget, available, device, "auto",
                         reason)


def describe(chosen: MiniBatchPlan) -> str:
    """The one line a run says about it."""
    if chosen.gradient_cache:
        return (f"memory: GradCache (cached MNRL) embeds each batch of {chosen.batch_size} rows {chosen.mini_batch_size} "
                f"at a time, the same loss over the same {chosen.batch_size} in-batch negatives: {chosen.reason}")
    return f"memory: each batch of {chosen.batch_size} rows is embedded at once: {chosen.reason}"


def recorded(folder: Path) -> int | None:
    """The mini-batch size an earlier attempt of this run recorded in its checkpoint folder, or None."""
    try:
        value = json.loads((Path(folder) / PLAN_FILE).read_text(encoding="utf-8")).get("mini_batch_size")
    except (OSError, ValueError, AttributeError):
        return None
    return int(value) if isinstance(value, int) and value >= 1 else None


def _transformer(model: Any) -> Any:
    try:
        first = model[0]
    except (TypeError, IndexError, KeyError):
        return None
    return getattr(first, "auto_model", None) or getattr(first, "model", None)


def _gb(size: float) -> str:
    if size < GIB:
        return f"{size / (1 << 20):.0f} MB"
    return f"{size / GIB:.1f} GB" if size < 10 * GIB else f"{size / GIB:.0f} GB"


def longest_tokens(model: Any, rows: Any) -> int:
    """Tokens of the longest text in the training rows' text columns, at most the model's limit."""
    from embtune_core.encoders.token_prefix import (
        TEXT_COLUMNS_EXCLUDED,
        capped_lengths,
        fast_tokenizer,
        model_limit,
    )

    limit = model_limit(model) or 512
    if fast_tokenizer(model) is None:  # no transformer tokenizer to count with: the plan assumes the limit
        return limit
    longest = 0
    for name in rows.column_names:
        values = rows[name]
        if name in TEXT_COLUMNS_EXCLUDED or not values or not isinstance(values[0], str):
            continue
        longest = max(longest, max(capped_lengths(model, values, "", limit)))
    return max(1, min(longest, limit)) if longest else limit


__all__ = ["MiniBatchPlan", "activation_bytes_per_text", "available_memory", "describe", "longest_tokens", "plan",
           "recorded"]
