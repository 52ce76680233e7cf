"""One scrubber for secrets: every error, log line, identity and URL embtune prints or writes goes through it.

A server's error body may echo the ``Authorization`` header; a base URL may carry credentials
(``http://user:key@host/v1``); an identity string names the URL and lands in reports and in the
embedding cache's ``identity.txt``. :func:`scrub` replaces, in any text:

* the password (and user) of a URL's ``user:password@`` part: ``http://***:***@host/v1``;
* ``Authorization``/``api-key`` header values and ``Bearer`` tokens;
* OpenAI-style keys (``sk-...``) and values of query parameters named like keys (``?api_key=``);
* the value of every environment variable whose name says it is a secret (``*KEY*``, ``*TOKEN*``,
  ``*SECRET*``, ``*PASSWORD*``), at least 8 characters long, wherever it appears;
* any value registered with :func:`register` (a key read from a file or passed in code).

:func:`install_log_filter` scrubs every record reaching the root logger's handlers.

Example::

    scrub("GET http://bob:s3cr3tpass@127.0.0.1:8000/v1 failed: Bearer sk-abc123def456")
    # 'GET http://***:***@127.0.0.1:8000/v1 failed: Bearer ***'
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

MASK = "***"
_MIN_SECRET = 8
_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD)", re.IGNORECASE)
_URL_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/\s@:]*(?::[^/\s@]*)?@")
_HEADER = re.compile(r"((?:authorization|api-key|x-api-key)[\"']?\s*[:=]\s*[\"']?)(?:bearer\s+|basic\s+)?[^\s\"',}]+",
                     re.IGNORECASE)
_BEARER = re.compile(r"(bearer\s+)[^\s\"',}]+", re.IGNORECASE)
_OPENAI_KEY = re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}")
_QUERY_KEY = re.compile(r"([?&](?:api[_-]?key|key|token|access_token)=)[^&\s\"']+", re.IGNORECASE)

_registered: set[str] = set()


def register(value: str | None) -> None:
    """Scrub ``value`` from now on wherever it appears (keys that come from files or code)."""
    if value and len(value) >= _MIN_SECRET:
        _registered.add(value)


def _environment_secrets() -> list[str]:
    return [v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= _MIN_SECRET]


def scrub(text: object) -> str:
    """``text`` with every secret the module docstring lists replaced by ``***``."""
    out = str(text)
    for value in sorted({*_registered, *_environment_secrets()}, key=len, reverse=True):
        out = out.replace(value, MASK)
    out = _URL_CREDENTIALS.sub(lambda m: f"{m.group(1)}{MASK}:{MASK}@", out)
    out = _HEADER.sub(lambda m: f"{m.group(1)}{MASK}", out)
    out = _BEARER.sub(lambda m: f"{m.group(1)}{MASK}", out)
    out = _OPENAI_KEY.sub("sk-" + MASK, out)
    return _QUERY_KEY.sub(lambda m: f"{m.group(1)}{MASK}", out)


def scrub_tree(value: Any) -> Any:
    """Every string inside a JSON-like value (dicts, lists) scrubbed; for files embtune writes."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {scrub_tree(k) if isinstance(k, str) else k: scrub_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub_tree(v) for v in value]
    return value


class ScrubFilter(logging.Filter):
    """Rewrites each record's message (arguments merged) through :func:`scrub`."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return True
        cleaned = scrub(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def install_log_filter() -> None:
    """Scrub every record that reaches the root logger's handlers (records of every library)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, ScrubFilter) for f in handler.filters):
            handler.addFilter(ScrubFilter())
