"""Experiment tracking: ``--report-to`` handed to the Hugging Face trainer (``TrainingArguments.report_to``).

``none`` (default) reports nowhere; ``tensorboard`` writes event files under ``<checkpoint folder>/runs``
(read them with ``tensorboard --logdir``); ``wandb`` and ``mlflow`` use those libraries' own
configuration (``WANDB_PROJECT``, ``MLFLOW_TRACKING_URI``...). Several may be given comma-separated.
embtune's own loss log (``loss_log.jsonl``) is written whatever is chosen. A tracker whose library is
not installed is refused in one line before training starts.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from embtune_core.errors import ConfigError

TRACKERS = {"none": None, "tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


def normalise(value: Any) -> list[str]:
    """``"tensorboard,wandb"`` or ``["tensorboard"]`` as a list of names; ``none`` as []."""
    names = value.split(",") if isinstance(value, str) else list(value or [])
    names = [str(n).strip().lower() for n in names if str(n).strip()]
    return [n for n in names if n != "none"]


def validate(value: Any, path: Any = "<config>", field: str = "train.report_to") -> None:
    if not isinstance(value, (str, list)):
        raise ConfigError(f"must be one of {', '.join(TRACKERS)} (or a list)", path=path, field=field)
    for name in normalise(value):
        if name not in TRACKERS:
            raise ConfigError(f"unknown tracker '{name}'; known: {', '.join(TRACKERS)}", path=path, field=field)
        module = TRACKERS[name]
        if module and importlib.util.find_spec(module) is None:
            hint = "pip install 'embtune[tracking]'" if name == "tensorboard" else f"pip install {module}"
            raise ConfigError(f"'{name}' needs the {module} package ({hint})", path=path, field=field)


def trainer_arguments(value: Any, work_dir: str | Path) -> dict[str, Any]:
    """Keyword arguments for ``SentenceTransformerTrainingArguments`` (``report_to``); the trainer's
    output folder ``work_dir`` holds tensorboard's ``runs/`` folder."""
    names = normalise(value)
    if not names:
        return {"report_to": "none"}
    return {"report_to": names}  # tensorboard's folder: place_event_files


def place_event_files(trainer: Any, work_dir: str | Path) -> None:
    """Point tensorboard's writer at ``work_dir/runs`` (the checkpoint folder). Left alone,
    transformers 5 lets SummaryWriter choose ``./runs/<date>_<host>`` in the current directory
    (or ``$TENSORBOARD_LOGGING_DIR``), which scatters event files wherever embtune was started."""
    for callback in trainer.callback_handler.callbacks:
        if type(callback).__name__ == "TensorBoardCallback" and getattr(callback, "tb_writer", None) is None:
            callback.logging_dir = str(Path(work_dir) / "runs")
