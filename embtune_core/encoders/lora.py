"""LoRA (low-rank adapters inside the transformer) as a training mode beside full and partial fine-tuning.

LoRA (Hu et al. 2021, https://arxiv.org/abs/2106.09685) freezes every pre-trained weight and adds, to
the chosen linear layers of every transformer block, a trainable low-rank update ``W + (alpha/r) B A``
(``A``: ``r x in``, ``B``: ``out x r``, ``B`` starting at zero so the untrained model is the base model).
It is built on peft through sentence-transformers (``model.add_adapter(LoraConfig(...))``,
https://sbert.net/examples/sentence_transformer/training/peft/README.html); nothing here re-implements it.

What ``embtune train --lora`` writes to ``--out``:

* without ``merge``: an *adapter folder* -- the sentence-transformers files (modules.json, pooling,
  tokenizer, ``config_sentence_transformers.json``) plus peft's ``adapter_config.json`` and
  ``adapter_model.safetensors`` (the LoRA weights only, ~150 KB for MiniLM at r=8).
  ``SentenceTransformer(folder)`` loads it when peft is installed, new enough for transformers' peft
  integration (transformers 5.24 asks for peft >= 0.22), and the base model named in
  ``adapter_config.json`` (``base_model_name_or_path``) can be found; :func:`load_adapter_folder` (used by
  every embtune command through :func:`embtune_core.encoders.models.load_sentence_transformer`) needs peft only.
* with ``merge``: the LoRA update folded into the base weights (peft's ``merge_and_unload``) and saved
  as a plain sentence-transformers folder, which DocsGPT, LangChain's ``HuggingFaceEmbeddings`` and
  ``embtune export --format onnx`` load without peft.

Settings (``[train]`` table or flags): ``lora`` (bool), ``lora_rank`` (r, default 8), ``lora_alpha``
(default 16), ``lora_dropout`` (default 0.1), ``lora_target_modules`` (names of linear layers; default
peft's per-architecture choice, e.g. ``query``/``value`` for BERT), ``lora_merge`` (bool).
"""

from __future__ import annotations

import logging
from typing import Any

from embtune_core.errors import ConfigError

log = logging.getLogger(__name__)

LORA_KEYS = ("lora", "lora_rank", "lora_alpha", "lora_dropout", "lora_target_modules", "lora_merge")


def validate(settings: Any, path: Any = "<config>") -> None:
    """Refuse bad LoRA settings of a :class:`~embtune_core.finetuning.training.TrainSettings` (ConfigError naming
    ``train.<key>``); LoRA excludes partial fine-tuning (the base is frozen whole)."""

    def bad(name: str, problem: str) -> ConfigError:
        return ConfigError(problem, path=path, field=f"train.{name}")

    for name in ("lora", "lora_merge"):
        if not isinstance(getattr(settings, name), bool):
            raise bad(name, "must be true or false")
    if not isinstance(settings.lora_rank, int) or isinstance(settings.lora_rank, bool) or settings.lora_rank < 1:
        raise bad("lora_rank", "must be a positive integer")
    if not isinstance(settings.lora_alpha, (int, float)) or settings.lora_alpha <= 0:
        raise bad("lora_alpha", "must be a positive number")
    if not isinstance(settings.lora_dropout, (int, float)) or not 0 <= settings.lora_dropout < 1:
        raise bad("lora_dropout", "must be a number in [0, 1)")
    targets = settings.lora_target_modules
    if targets is not None and (not isinstance(targets, list) or not targets
                                or not all(isinstance(t, str) and t for t in targets)):
        raise bad("lora_target_modules", "must be a non-empty list of module names, e.g. [\"query\", \"value\"]")
    if not settings.lora:
        for name in ("lora_merge",):
            if getattr(settings, name):
                raise bad(name, "applies to LoRA training only; add lora = true (--lora)")
        return
    if settings.train_last_layers is not None or settings.freeze_layers is not None:
        field = "train_last_layers" if settings.train_last_layers is not None else "freeze_layers"
        raise bad(field, "give either LoRA or partial fine-tuning (LoRA freezes the whole base model)")
    import importlib.util

    if importlib.util.find_spec("peft") is None:
        raise bad("lora", "LoRA needs peft: pip install 'embtune[lora]'")


def lora_config(settings: Any):
    """peft ``LoraConfig`` for feature extraction from the settings (raises ConfigError without peft)."""
    try:
        from peft import LoraConfig, TaskType
    except ImportError:
        raise ConfigError("LoRA needs peft: pip install 'embtune[lora]'", field="train.lora") from None
    return LoraConfig(task_type=TaskType.FEATURE_EXTRACTION, r=settings.lora_rank, lora_alpha=settings.lora_alpha,
                      lora_dropout=settings.lora_dropout, target_modules=settings.lora_target_modules,
                      inference_mode=False)


def count_parameters(model: Any) -> dict[str, int]:
    """``{"trainable_parameters": n, "total_parameters": m}`` of a torch module (numbers of scalars)."""
    return {"trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "total_parameters": sum(p.numel() for p in model.parameters())}


def apply_lora(model: Any, settings: Any) -> dict[str, Any]:
    """Add a fresh LoRA adapter to ``model`` (a SentenceTransformer) and freeze everything else.

    Uses peft's own ``get_peft_model`` on the transformer (``model[0].model``), which is what
    ``model.add_adapter`` does through transformers' peft integration; calling peft directly also works
    where transformers asks for a newer peft than the package index offers (transformers 5.24 wants
    peft >= 0.22 for ``add_adapter``). Returns the summary's ``lora`` record: rank, alpha, dropout,
    target modules wrapped, trainable and total parameter counts. Raises ConfigError when no target
    module matches.
    """
    from peft import get_peft_model

    config = lora_config(settings)
    transformer = model[0]
    try:
        transformer.model = get_peft_model(transformer.model, config)
    except ValueError as exc:  # peft: "Target modules {...} not found in the base model"
        raise ConfigError(f"cannot add LoRA to this model: {str(exc).splitlines()[0]}",
                          field="train.lora_target_modules") from None
    # Modules after the transformer (pooling has no weights; a Dense head would) stay frozen too:
    # the adapter folder holds the LoRA weights only, so nothing else may change.
    for module in list(model)[1:]:
        for parameter in module.parameters():
            parameter.requires_grad_(False)
    peft_config = transformer.model.peft_config["default"]
    targets = sorted(peft_config.target_modules) if peft_config.target_modules else []
    counts = count_parameters(model)
    log.info("LoRA r=%d alpha=%g on %s: %d of %d parameters trainable", settings.lora_rank,
             settings.lora_alpha, ", ".join(targets), counts["trainable_parameters"], counts["total_parameters"])
    return {"rank": settings.lora_rank, "alpha": settings.lora_alpha, "dropout": settings.lora_dropout,
            "target_modules": targets, "merged": bool(settings.lora_merge), **counts}


def merge(model: Any) -> Any:
    """Fold the LoRA weights into the base weights in place (peft ``merge_and_unload``); the model
    then saves as a plain sentence-transformers folder. Returns the model."""
    transformer = model[0]
    transformer.model = transformer.model.merge_and_unload()
    return model


def load_checkpoint_weights(model: Any, folder: str | Any) -> None:
    """Load the LoRA weights of a checkpoint or adapter folder (``adapter_model.safetensors``) into
    ``model``'s peft transformer, in place (peft ``set_peft_model_state_dict``)."""
    from pathlib import Path

    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(model[0].model, load_file(str(Path(folder) / "adapter_model.safetensors")))


def use_peft_checkpoints(trainer: Any, model: Any) -> None:
    """Make the trainer's best-checkpoint reload and resume read a LoRA checkpoint's adapter weights
    into the model being trained (sentence-transformers would rebuild the model from the folder through
    transformers' peft integration, which needs a newer peft than may be installed)."""
    original = trainer._load_from_checkpoint

    def load(checkpoint_path: str, *args: Any, **kwargs: Any) -> None:
        if is_adapter_folder(checkpoint_path):
            load_checkpoint_weights(model, checkpoint_path)
            return
        original(checkpoint_path, *args, **kwargs)  # pragma: no cover - not a LoRA checkpoint

    trainer._load_from_checkpoint = load


def load_adapter_folder(folder: str | Any, **kwargs: Any) -> Any:
    """A SentenceTransformer for a LoRA adapter folder written by ``embtune train --lora``: the base
    model named in ``adapter_config.json`` (``base_model_name_or_path``) with peft's ``PeftModel``
    around its transformer, and the folder's own prompts and token limit.

    ``SentenceTransformer(folder)`` does the same where transformers' peft integration accepts the
    installed peft; this path needs only peft. Raises InputError naming ``adapter_config.json`` when
    the base model cannot be found.
    """
    import json
    from pathlib import Path

    from peft import PeftModel
    from sentence_transformers import SentenceTransformer

    from embtune_core.errors import InputError

    folder = Path(folder)
    config_path = folder / "adapter_config.json"
    base = json.loads(config_path.read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not base:
        raise InputError("names no base model (base_model_name_or_path)", path=config_path)
    from embtune_core.encoders.model_names import resolve

    target = resolve(base).target
    if not Path(target).exists() and ("/" not in base or Path(base).is_absolute()):
        raise InputError(f"its base model {base} is not found (LoRA adapter folders need their base model; "
                         "train with --merge for a self-contained folder)", path=config_path,
                         field="base_model_name_or_path")
    model = SentenceTransformer(target, **kwargs)
    model[0].model = PeftModel.from_pretrained(model[0].model, str(folder))
    model[0].model.eval()
    st_config = folder / "config_sentence_transformers.json"
    if st_config.is_file():
        stored = json.loads(st_config.read_text(encoding="utf-8"))
        model.prompts = stored.get("prompts") or {}
        model.default_prompt_name = stored.get("default_prompt_name")
    bert_config = folder / "sentence_bert_config.json"
    if bert_config.is_file():
        limit = json.loads(bert_config.read_text(encoding="utf-8")).get("max_seq_length")
        if limit:
            model.max_seq_length = int(limit)
    return model


def peft_loads_in_sentence_transformers() -> bool:
    """Whether ``SentenceTransformer(adapter_folder)`` works here: transformers' peft integration
    checks peft's version (``MIN_PEFT_VERSION``) before loading an adapter."""
    try:
        import peft
        from packaging.version import Version
        from transformers.integrations import peft as integration
    except ImportError:
        return False
    minimum = getattr(integration, "MIN_PEFT_VERSION", "0")
    return Version(peft.__version__) >= Version(minimum)


def is_adapter_folder(folder: Any) -> bool:
    """True for a folder holding a peft adapter (``adapter_config.json`` with a ``peft_type``; embtune's
    query adapters use the same file name without that key) rather than full weights."""
    import json
    from pathlib import Path

    path = Path(folder) / "adapter_config.json"
    if not path.is_file() or not (Path(folder) / "modules.json").is_file():
        return False
    try:
        return "peft_type" in json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False


def card_lines(record: dict[str, Any]) -> list[str]:
    """Model-card rows (markdown table rows) for a LoRA run's ``lora`` summary record."""
    form = ("merged into the weights (plain model folder)" if record.get("merged")
            else "adapter folder (adapter_config.json + adapter_model.safetensors; needs peft to load)")
    return [
        (f"| LoRA | r={record['rank']}, alpha={record['alpha']}, dropout={record['dropout']}, "
        f"modules {', '.join(record['target_modules'])}; {form} |"),
        (f"| trained parameters | {record['trainable_parameters']} of {record['total_parameters']} (LoRA only, "
        "base frozen) |"),
    ]


def name_base_portably(folder: Any, base_model: str) -> None:
    """In a LoRA adapter folder just written, name the base model as the user named it (``base_model``)
    when that name resolves on any machine (a packaged copy's name such as
    ``sentence-transformers/all-MiniLM-L6-v2``, or a hub id), instead of the path it was loaded from here
    (the packaged copy inside this virtual environment's site-packages, which another machine or venv
    does not have). A base given as a folder keeps its path (``EMBTUNE_BASE_MODEL``-style remapping is the
    user's, and the error on load says so). Other folders are left alone."""
    import json
    from pathlib import Path

    from embtune_core.encoders.model_names import resolve
    from embtune_core.runtime import atomic

    if not is_adapter_folder(folder):
        return
    path = Path(folder) / "adapter_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    recorded = config.get("base_model_name_or_path")
    resolution = resolve(base_model, assemble=False)
    if not recorded or resolution.source == "local directory" or recorded == base_model:
        return
    if Path(str(recorded)).resolve() == Path(resolution.target).resolve() or not resolution.is_local:
        config["base_model_name_or_path"] = base_model
        atomic.write_json(path, config, indent=2)


def base_fingerprint(folder: Any) -> str | None:
    """For a LoRA adapter folder, the file fingerprint of its base model (whose weights its vectors
    also depend on), so an encoder identity changes when the base changes; None for other folders
    and for a base named by hub id only (its content is not on disk to hash)."""
    import json
    from pathlib import Path

    if not is_adapter_folder(folder):
        return None
    from embtune_core.encoders.fingerprint import directory_fingerprint
    from embtune_core.encoders.model_names import resolve

    base = json.loads((Path(folder) / "adapter_config.json").read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not base:
        return None
    resolution = resolve(str(base), assemble=False)
    return directory_fingerprint(resolution.target) if resolution.is_local else f"hub:{base}"
