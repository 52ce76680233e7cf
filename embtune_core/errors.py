"""Errors that reach the user as one line and a documented exit code.

Every error raised for bad input names the file (when there is one), the field (when there is
one) and the problem, so the CLI can print ``embtune: error: <file>: <field>: <problem>`` and exit
with the code of the error's class instead of a traceback.
"""

from __future__ import annotations

from pathlib import Path

# Exit codes, documented in README.md ("Exit codes").
EXIT_UNEXPECTED = 1
EXIT_USAGE = 2  # bad command line (argparse uses 2 as well)
EXIT_BAD_INPUT = 3  # a file, config field or dataset is invalid
EXIT_PLUGIN = 4  # plugin conflict or unknown implementation
EXIT_SERVICE = 5  # an external service (LLM, embeddings API) failed after retries
EXIT_INTERRUPTED = 130  # SIGINT; the run can be resumed
EXIT_TERMINATED = 143  # SIGTERM (docker stop, Kubernetes); the run can be resumed

COMMAND_LINE = "<command line>"  # the "file" an error names when the bad value was typed as an option


class EmbtuneError(Exception):
    """Base class: a problem the user can fix, shown as a single line."""

    exit_code = EXIT_UNEXPECTED

    def __init__(self, problem: str, *, path: str | Path | None = None, field: str | None = None):
        from embtune_core.runtime.secrets_scrub import scrub

        self.problem = scrub(one_line(" ".join(str(problem).split())))  # one line, no secret, whatever the cause said
        self.path = str(path) if path is not None else None
        self.field = field
        super().__init__(self.__str__())

    def __str__(self) -> str:
        from embtune_core.runtime.secrets_scrub import scrub

        parts = [scrub(one_line(p)) for p in (self.path, self.field) if p]
        return ": ".join([*parts, self.problem])


def one_line(text: str) -> str:
    """``text`` with line breaks and other control characters escaped (``\\n``), so an id or a file
    name that holds one cannot split a one-line error in two."""
    return "".join(ch if ch.isprintable() or ch == " " else repr(ch)[1:-1] for ch in str(text))


class UsageError(EmbtuneError):
    """An option typed on the command line has a bad value (argparse's own errors exit 2 as well)."""

    exit_code = EXIT_USAGE

    def __init__(self, problem: str, *, path: str | Path | None = COMMAND_LINE, field: str | None = None):
        super().__init__(problem, path=path, field=field)


class InputError(EmbtuneError):
    """A file, config value or dataset is invalid."""

    exit_code = EXIT_BAD_INPUT


class ConfigError(InputError):
    """A configuration file or option is invalid."""


class DatasetError(InputError):
    """A dataset file is malformed or inconsistent."""


class PluginError(EmbtuneError):
    """Two plugins claim one name, or a requested implementation does not exist."""

    exit_code = EXIT_PLUGIN


class ServiceError(EmbtuneError):
    """An external service kept failing after every retry."""

    exit_code = EXIT_SERVICE
