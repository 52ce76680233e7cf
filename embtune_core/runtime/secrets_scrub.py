"""One scrubber for secrets: every file write, log line, error, report and byte printed goes through it.

A server's error body may echo the ``Authorization`` header, or decode it; a base URL may carry
credentials (``http://user:key@host/v1``); an identity string names the URL and lands in reports and in
the embedding cache's ``identity.txt``. Where bytes leave the process they pass through here, not field
by field:

* files: every text file embtune writes (:mod:`embtune_core.runtime.atomic`: ``write_text``, ``write_json``, text
  ``atomic_open``, and the text files libraries write into an ``atomic_directory``) passes
  :func:`scrub_known`; reports pass :func:`scrub` whole;
* the terminal: the CLI wraps ``sys.stdout`` and ``sys.stderr`` (:func:`scrub_streams`), so every print,
  progress bar, warning and log line passes :func:`scrub`; log records also pass :class:`ScrubFilter`;
* errors: :class:`embtune_core.errors.EmbtuneError` scrubs its message.

:func:`scrub` replaces, in any text:

* every known secret (:func:`scrub_known`): a value :func:`register` was given (API keys read through
  :func:`embtune_core.config.secret`), the value of every environment variable whose name says it is a
  secret (``*KEY*``, ``*TOKEN*``, ``*SECRET*``, ``*PASSWORD*``, ``*CREDENTIAL*``, at least 8 characters),
  and the credentials of every URL seen in a config, on the command line or in the environment
  (:func:`register_credentials`), in each form they travel in: the password, ``user:password``, the
  base64 ``Basic`` value of ``user:password`` and the percent-decoded password;
* the password (and user) of a URL's ``user:password@`` part: ``http://***:***@host/v1``;
* ``Authorization``/``api-key`` header values and ``Bearer`` tokens;
* OpenAI-style keys (``sk-...``), Hugging Face tokens (``hf_...``) and values of query parameters named
  like keys (``?api_key=``).

Data files (datasets, chunks) get only :func:`scrub_known`: a document that quotes ``Bearer xyz`` is the
user's text, not a secret of the run, and is kept as it is.

Example::

    scrub("GET http://bob:s3cr3tpass@127.0.0.1:8000/v1 failed: Bearer sk-abc123def456")
    # 'GET http://***:***@127.0.0.1:8000/v1 failed: Bearer ***'
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from typing import Any

MASK = "***"
_MIN_SECRET = 8
_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.IGNORECASE)
_URL_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/\s@:]*(?::[^/\s@]*)?@")
_HEADER = re.compile(r"((?:authorization|api-key|x-api-key)[\"']?\s*[:=]\s*[\"']?)(?:bearer\s+|basic\s+)?[^\s\"',}]+",
                     re.IGNORECASE)
_BEARER = re.compile(r"(bearer\s+)[^\s\"',}]+", re.IGNORECASE)
_OPENAI_KEY = re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}")
_HF_TOKEN = re.compile(r"\bhf_[A-Za-z0-9]{16,}")
_URL_USERINFO = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://([^/\s@:]*)(?::([^/\s@]*))?@")
_QUERY_KEY = re.compile(r"([?&](?:api[_-]?key|key|token|access_token)=)[^&\s\"']+", re.IGNORECASE)

_registered: set[str] = set()


def register(value: str | None) -> None:
    """Scrub ``value`` from now on wherever it appears (keys that come from files or code)."""
    if value and len(value) >= _MIN_SECRET:
        _registered.add(value)


def credential_forms(user: str, password: str) -> set[str]:
    """Every form a URL's credentials travel in: the password (as written and percent-decoded),
    ``user:password`` and its base64 (the ``Authorization: Basic`` value, with and without padding)."""
    import base64
    from urllib.parse import unquote

    forms = set()
    for name, secret_part in {(user, password), (unquote(user), unquote(password))}:
        if not secret_part:
            continue
        pair = f"{name}:{secret_part}"
        encoded = base64.b64encode(pair.encode()).decode()
        forms |= {secret_part, pair, encoded, encoded.rstrip("="),
                  base64.urlsafe_b64encode(pair.encode()).decode().rstrip("=")}
    return forms


def register_credentials(text: object) -> None:
    """Register the credentials of every URL in ``text`` (a string, or a JSON/TOML-like value), in
    every form :func:`credential_forms` lists: a config's ``base_url``, an encoder spec on the
    command line, an environment variable."""
    if isinstance(text, dict):
        for value in text.values():
            register_credentials(value)
        return
    if isinstance(text, (list, tuple)):
        for value in text:
            register_credentials(value)
        return
    if not isinstance(text, str) or "@" not in text:
        return
    for match in _URL_USERINFO.finditer(text):
        user, password = match.group(1) or "", match.group(2) or ""
        for form in credential_forms(user, password) if password else ():
            register(form)  # forms under 8 characters are left to the URL pattern (masking "pw" everywhere would not do)


_cached: tuple[Any, list[str]] = (None, [])  # (what the secrets were read from, the secrets, longest first)


def _environment_secrets() -> list[str]:
    found = [v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= _MIN_SECRET]
    for value in os.environ.values():  # OPENAI_BASE_URL=http://user:key@host/v1 and the like
        if "@" in value and "://" in value:
            for match in _URL_USERINFO.finditer(value):
                if match.group(2):
                    found += [f for f in credential_forms(match.group(1) or "", match.group(2)) if len(f) >= _MIN_SECRET]
    return found


def known_secrets() -> list[str]:
    """Every known secret value (registered, from the environment), longest first.

    Read again only when the environment or the registered set changed: every line embtune writes or
    prints passes here, and scanning the environment each time cost a run a tenth of its CPU time."""
    global _cached
    environ = getattr(os.environ, "_data", None)  # CPython's raw mapping: copied at C speed
    source = (tuple(environ.items()) if isinstance(environ, dict) else tuple(os.environ.items()), len(_registered))
    if _cached[0] != source:
        _cached = (source, sorted({*_registered, *_environment_secrets()}, key=len, reverse=True))
    return _cached[1]


def scrub_known(text: object) -> str:
    """``text`` with every known secret value (registered, from the environment, URL credentials seen)
    replaced by ``***``; nothing else changes (for data files: a document's own text is kept)."""
    out = str(text)
    for value in known_secrets():
        if value in out:
            out = out.replace(value, MASK)
    return out


def scrub(text: object) -> str:
    """``text`` with every secret the module docstring lists replaced by ``***``."""
    out = scrub_known(text)
    out = _URL_CREDENTIALS.sub(lambda m: f"{m.group(1)}{MASK}:{MASK}@", out)
    out = _HEADER.sub(lambda m: f"{m.group(1)}{MASK}", out)
    out = _BEARER.sub(lambda m: f"{m.group(1)}{MASK}", out)
    out = _OPENAI_KEY.sub("sk-" + MASK, out)
    out = _HF_TOKEN.sub("hf_" + MASK, out)
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


class ScrubbingStream:
    """A text stream that scrubs everything written to it before passing it on (``sys.stdout``/``stderr``).

    A line is scrubbed whole: text is held until a newline or a carriage return (progress bars) so that
    a secret written in two pieces is still found; :meth:`flush` passes on what is held."""

    def __init__(self, stream: Any):
        self._stream = stream
        self._held = ""

    def write(self, text: str) -> int:
        self._held += text
        cut = max(self._held.rfind("\n"), self._held.rfind("\r"))
        if cut >= 0:
            ready, self._held = self._held[:cut + 1], self._held[cut + 1:]
            self._stream.write(scrub(ready))
        return len(text)

    def flush(self) -> None:
        if self._held:
            self._stream.write(scrub(self._held))
            self._held = ""
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding... of the real stream
        return getattr(self._stream, name)


@contextlib.contextmanager
def scrub_streams():
    """While the block runs, ``sys.stdout`` and ``sys.stderr`` scrub everything written to them."""
    import sys

    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = ScrubbingStream(saved[0]), ScrubbingStream(saved[1])
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        sys.stdout, sys.stderr = saved
