"""TOML configuration, with one-line errors and secrets taken only from the environment."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from embtune_core.data import textfiles
from embtune_core.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib


def load_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    text = textfiles.read_text(path, error=ConfigError)
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", path=path) from None
    from embtune_core.runtime.secrets_scrub import register_credentials

    register_credentials(config)  # a base_url's password, in every form it travels in, is scrubbed from now on
    return config


def section(config: dict[str, Any], name: str, path: str | Path = "<config>") -> dict[str, Any]:
    value = config.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError("must be a table", path=path, field=name)
    return value


def secret(value: Any, *, default_env: str | None = None, path: str | Path = "<config>",
           field: str = "api_key") -> str | None:
    """Resolve an API key. Config may only *reference* the environment, never hold the key.

    Accepted: ``api_key_env = "NAME"`` (pass its value here as ``{"env": "NAME"}``), the string
    ``"env:NAME"``, or nothing (then ``default_env`` is read). A literal key in a config file is
    refused, because config files end up in run manifests and version control.
    """
    env_name = None
    if value is None:
        env_name = default_env
    elif isinstance(value, dict) and set(value) == {"env"}:
        env_name = str(value["env"])
    elif isinstance(value, str) and value.startswith("env:"):
        env_name = value[4:]
    else:
        raise ConfigError("API keys may not be written in config; use \"env:VARIABLE_NAME\"", path=path,
                          field=field)
    value = os.environ.get(env_name) if env_name else None
    from embtune_core.runtime.secrets_scrub import register

    register(value)  # never printed nor written, whatever its variable is called
    return value
