"""Paths in a config file mean the same wherever the command is run from: read from the config's folder.

A config travels with the files it names (``examples/beir.toml`` beside ``beir/``), so a relative path
in it is relative to the config's folder, never to the working directory. This holds for every table
that names files: ``embtune run``'s tables and the ``--config`` tables of ``train`` (``[train]``),
``train-adapter`` (``[adapter]``), ``mine`` (``[mine]``) and ``build-dataset`` (``[dataset]``).

Two kinds of values:

* **paths** (:data:`PATH_KEYS`: ``train``, ``val``, ``out``, ``inputs``, ``index_corpus``...): a relative
  path is joined to the config's folder (``~`` is expanded);
* **models** (:data:`MODEL_KEYS`: ``model``, ``llm_model``; :data:`ENCODER_KEYS`: ``encoder``): a value that
  names a file or folder relative to the config's folder, or that starts with ``./``, ``../`` or ``~``,
  is that path; any other value is a model name (the hub, a packaged copy, an API model), kept as written.
  An encoder spec (``st:DIR``, ``model:DIR``, a bare ``DIR``) resolves its sentence-transformers model
  the same way; ``openai:...`` and plugin specs are names.

Values given on the command line are not touched: they are read from the working directory, as every
shell user expects.

Example::

    table = resolve_table(section(load_config("conf/train.toml"), "train"), "conf/train.toml")
    table["model"]  # "conf/model" -> "/abs/conf/model" when that folder exists; "org/name" stays a hub name
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

PATH_KEYS = frozenset({"train", "val", "out", "inputs", "val_inputs", "index_corpus", "checkpoint_dir", "work_dir",
                       "prompt_file"})
MODEL_KEYS = frozenset({"model", "llm_model"})
ENCODER_KEYS = frozenset({"encoder"})


def base_of(config_path: str | Path | None) -> Path:
    """The folder relative paths of ``config_path`` are read from (the working directory without one)."""
    if config_path is None or str(config_path).startswith("<"):
        return Path.cwd()
    return Path(config_path).expanduser().absolute().parent


def resolve_path(value: str, base: Path) -> str:
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else base / path)


def resolve_model(value: str, base: Path) -> str:
    """A model value: the path it names relative to ``base`` when it names one (or is written as a path),
    else the name unchanged."""
    text = str(value)
    if not text or "://" in text:
        return text
    path = Path(text).expanduser()
    if path.is_absolute():
        return str(path)
    written_as_path = text.startswith(("./", "../", "~", ".\\", "..\\"))
    if written_as_path or (base / path).exists():
        return str(base / path)
    return text


def resolve_encoder(spec: str, base: Path) -> str:
    """An encoder spec with its local sentence-transformers model resolved (:func:`resolve_model`)."""
    text = str(spec)
    for prefix in ("st:", "model:", "sentence-transformers:"):
        if text.startswith(prefix):
            return prefix + resolve_model(text[len(prefix):], base)
    if ":" in text.split("/", 1)[0] and not Path(text).expanduser().is_absolute():
        return text  # openai:MODEL@URL, or a plugin's PLUGIN:VALUE
    return resolve_model(text, base)


def resolve_table(values: Mapping[str, Any], config_path: str | Path | None) -> dict[str, Any]:
    """``values`` (a config table) with its paths, models and encoders read from the config's folder."""
    base = base_of(config_path)
    out = dict(values)
    for key, value in values.items():
        if key in PATH_KEYS:
            if isinstance(value, str):
                out[key] = resolve_path(value, base)
            elif isinstance(value, list) and all(isinstance(v, str) for v in value):
                out[key] = [resolve_path(v, base) for v in value]
        elif key in MODEL_KEYS and isinstance(value, str):
            out[key] = resolve_model(value, base)
        elif key in ENCODER_KEYS and isinstance(value, str):
            out[key] = resolve_encoder(value, base)
    return out
