"""CLI subcommands, one module each, listed once here in the order ``embtune --help`` shows them.

Each module defines ``NAME``, ``HELP`` (one line), ``DESCRIPTION`` (the ``--help`` text),
``add_arguments(parser)`` and ``run(args) -> int``.

Below are the checks commands run on their arguments before any heavy work (loading a model,
reading documents, embedding), so a typo costs a second, not a training run: argparse types for
numbers, :class:`Sources` to name the flag or config key a bad setting came from, and checks of
output paths, plugin names and models. A value typed on the command line is a usage error (exit 2);
one read from a file is an input error (exit 3); an unknown plugin name is a plugin error (exit 4).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from embtune_core.errors import COMMAND_LINE, ConfigError, EmbtuneError, InputError, PluginError, UsageError

COMMAND_MODULES = (
    "embtune_core.commands.quickstart",
    "embtune_core.commands.run",
    "embtune_core.commands.plugins",
    "embtune_core.commands.models",
    "embtune_core.commands.validate",
    "embtune_core.commands.build_dataset",
    "embtune_core.commands.mine",
    "embtune_core.commands.evaluate",
    "embtune_core.commands.train",
    "embtune_core.commands.train_adapter",
    "embtune_core.commands.tune_index",
    "embtune_core.commands.export",
)


# Numbers on the command line (argparse types: a bad value is a one-line usage error, exit 2) live
# beside the settings fields that use them (embtune_core.cli_fields); re-exported for the commands.
from embtune_core.cli_fields import (  # noqa: F401
    fraction,
    non_negative_float,
    non_negative_int,
    open_fraction,
    positive_float,
    positive_float_list,
    positive_int,
    positive_int_list,
)


# --- where a setting came from -------------------------------------------------------------------
def flag(key: str) -> str:
    return "--" + key.replace("_", "-")


class Sources:
    """Where each setting of a command came from -- a flag, or a key of a config file's table -- so
    an error about the setting names what the user actually wrote.

    ``blame(exc)`` re-raises a plugin's or validator's error (which knows only the setting's name)
    as ``<command line>: --flag: problem`` (a usage error, exit 2) or ``config.toml: table.key:
    problem`` (exit 3); plugin errors keep exit 4. Errors that already name a file other than the
    merged settings' ``origin`` pass through unchanged.
    """

    def __init__(self, config_path: str | Path | None = None, table: str = "", *, origin: str | None = None):
        self.config_path = str(config_path) if config_path else None
        self.table = table
        self.origin = origin  # the path given to a validator of the merged settings, if any
        self._where: dict[str, tuple[str, str]] = {}

    def config(self, values: dict[str, Any], prefix: str = "") -> Sources:
        for key in values:
            self._where[key] = (self.config_path or "<config>", f"{self.table}.{prefix}{key}")
        return self

    def command_line(self, args: argparse.Namespace, keys: Any,
                     flags: dict[str, str] | None = None) -> Sources:
        for key in keys:
            if getattr(args, key, None) is not None:
                self._where[key] = (COMMAND_LINE, (flags or {}).get(key) or flag(key))
        return self

    def set(self, key: str, path: str, field: str) -> None:
        self._where[key] = (path, field)

    def where(self, key: str) -> tuple[str, str]:
        """(file, field) of setting ``key``; a default counts as the command line's (its flag)."""
        return self._where.get(key, (COMMAND_LINE, flag(key)))

    def error(self, problem: str, key: str, kind: type[EmbtuneError] = ConfigError) -> EmbtuneError:
        path, field = self.where(key)
        if path == COMMAND_LINE and kind is not PluginError:
            kind = UsageError
        return kind(problem, path=path, field=field)

    def blame(self, exc: EmbtuneError, key: str | None = None) -> EmbtuneError:
        if exc.path not in (None, self.origin):
            return exc  # it names the file at fault already (a dataset, a prompt file...)
        key = key or (exc.field or "").rsplit(".", 1)[-1]
        if key and (key in self._where or exc.path == COMMAND_LINE):
            return self.error(exc.problem, key, type(exc))
        return exc


# --- paths the command will write -------------------------------------------------------------------
def _file_above(path: Path) -> Path | None:
    return next((p for p in path.parents if p.exists() and not p.is_dir()), None)


def check_writable(path: str | Path, field: str) -> None:
    """Refuse an output whose nearest existing folder cannot be written (read-only file system,
    permissions), before any heavy work; the folder named is the one at fault."""
    import errno
    import os

    path = Path(path).absolute()
    existing = next((p for p in [path, *path.parents] if p.exists()), None)
    if existing is None or not existing.is_dir():
        return
    try:
        probe = existing / f".embtune-write-probe-{os.getpid()}"
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as exc:
        problem = {errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
                   errno.ENOSPC: "no space left on device"}.get(exc.errno, exc.strerror or str(exc))
        raise InputError(f"cannot write in {existing}: {problem}", path=path, field=field) from None


def check_output_dir(path: str | Path, field: str, *, replaces: str | None = None) -> None:
    """Refuse an output folder that is a file, lies under one, or cannot be written. With ``replaces``
    (the marker file of what the command writes, e.g. modules.json), also refuse to replace a
    non-empty folder without it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError("is a file, expected a folder", path=path, field=field)
    above = _file_above(path)
    if above is not None:
        raise InputError(f"cannot be created: {above} is a file", path=path, field=field)
    check_writable(path, field)
    if replaces and path.is_dir() and any(path.iterdir()) and not (path / replaces).is_file():
        raise InputError(f"folder exists and holds no {replaces}: refusing to replace it "
                         "(remove it, or choose another folder)", path=path, field=field)


def check_output_file(path: str | Path, field: str) -> None:
    """Refuse an output file that is a folder or lies under a file."""
    path = Path(path)
    if path.is_dir():
        raise InputError("is a folder, expected a file name", path=path, field=field)
    above = _file_above(path)
    if above is not None:
        raise InputError(f"cannot be created: {above} is a file", path=path, field=field)
    check_writable(path.parent, field)


# --- names of plugins and models -------------------------------------------------------------------
def check_plugin(family: str, name: Any, sources: Sources, key: str) -> None:
    """Refuse an unknown implementation name (exit 4), naming the flag or config key it came from."""
    from embtune_core.plugins import get_registry

    try:
        get_registry().get(family, str(name))
    except PluginError as exc:
        raise sources.blame(exc, key) from None


def _in_hub_cache(name: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    def cached(repo: str, filename: str) -> bool:
        try:
            return isinstance(try_to_load_from_cache(repo, filename), str)
        except ValueError:  # an invalid repo id (HFValidationError) is simply not cached
            return False

    repos = (name, f"sentence-transformers/{name}") if "/" not in name else (name,)
    return any(cached(repo, filename) for repo in repos for filename in ("modules.json", "config.json"))


def check_model(name: str, sources: Sources, key: str) -> None:
    """Refuse a model that cannot load, before anything loads it: a missing folder, a folder that is
    not a model, or (with HF_HUB_OFFLINE set) a hub name the local cache does not hold. The error
    names the model as its file and the flag or config key as its field; exit 3."""
    from embtune_core.encoders.models import looks_like_path, resolve

    name, field = str(name), sources.where(key)[1]
    if not name.strip():
        raise sources.error("empty model name", key)
    resolution = resolve(name, assemble=False)
    if resolution.source == "local directory":
        folder = Path(resolution.target)
        if not any((folder / marker).is_file() for marker in ("modules.json", "config.json")):
            raise InputError("not a model folder (no modules.json or config.json)", path=name, field=field)
        return
    if resolution.is_local:  # a packaged copy
        return
    if Path(name).expanduser().exists():
        raise InputError("is a file, expected a model folder or name", path=name, field=field)
    if looks_like_path(name):
        raise InputError("no such model folder", path=name, field=field)
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE and not _in_hub_cache(name):
        raise InputError("no such model folder, and the Hugging Face cache does not hold it "
                         f"({_offline_variable()} is set)", path=name, field=field)
    if not constants.HF_HUB_OFFLINE and not _in_hub_cache(name):
        probe_hub(name, field)


HUB_TIMEOUT_SECONDS = 10.0  # EMBTUNE_HUB_TIMEOUT overrides


def _offline_variable() -> str:
    """Which variable made huggingface_hub offline (it reads TRANSFORMERS_OFFLINE too)."""
    import os

    return "HF_HUB_OFFLINE" if os.environ.get("HF_HUB_OFFLINE") else "TRANSFORMERS_OFFLINE"


def probe_hub(name: str, field: str) -> None:
    """Ask the hub about ``name`` once, within a bounded time, before anything downloads it: a silent
    network (a server that never answers, no DNS) is one line and exit 5 after seconds, not minutes
    of retries; an unknown model is one line and exit 3."""
    import os

    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    from embtune_core.errors import ServiceError

    raw = os.environ.get("EMBTUNE_HUB_TIMEOUT", "").strip()
    try:
        timeout = float(raw) if raw else HUB_TIMEOUT_SECONDS
    except ValueError:
        timeout = -1.0
    if not 0 < timeout < float("inf"):
        raise ConfigError(f"must be a positive number of seconds, got '{raw}'", path="EMBTUNE_HUB_TIMEOUT")
    advice = "set HF_HUB_OFFLINE=1 to use only the local cache, or pass a local model folder"
    try:
        HfApi().model_info(name, timeout=timeout)
    except (RepositoryNotFoundError, GatedRepoError) as exc:
        raise InputError(f"the Hugging Face hub has no model by this name, or it is gated "
                         f"({type(exc).__name__}); {advice}", path=name, field=field) from None
    except HfHubHTTPError as exc:
        raise ServiceError(f"the Hugging Face hub answered {exc.response.status_code if exc.response is not None else ''}"
                           f" for this model; {advice}", path=name, field=field) from None
    except Exception as exc:  # noqa: BLE001 - timeouts, refused connections, DNS: whatever the HTTP client raises
        raise ServiceError(f"cannot reach the Hugging Face hub within {timeout:g} s ({type(exc).__name__}); "
                           f"{advice}", path=name, field=field) from None


def check_encoder(spec: str, sources: Sources, key: str) -> None:
    """Refuse a bad encoder spec (see :mod:`embtune_core.encoders.encoding`) before the encoder is built:
    bad syntax, an unknown ``NAME:`` prefix (exit 4), or a sentence-transformers model that cannot load."""
    from embtune_core.encoders.encoding import SPEC_ALIASES, parse_encoder_spec
    from embtune_core.plugins import get_registry

    try:
        name, options = parse_encoder_spec(spec)
    except EmbtuneError as exc:
        raise sources.blame(exc, key) from None
    prefix, sep, _ = str(spec).strip().partition(":")
    unprefixed = name == "sentence-transformers" and options["model"] == str(spec).strip()
    if unprefixed and sep and re.fullmatch(r"[A-Za-z][\w.-]+", prefix) and not Path(spec).exists():
        known = sorted({*SPEC_ALIASES, *get_registry().names("encoders")})
        raise sources.error(f"unknown encoder '{prefix}' in '{spec}'; known: {', '.join(known)}", key,
                            PluginError)
    if name == "sentence-transformers":
        check_model(str(options["model"]), sources, key)

