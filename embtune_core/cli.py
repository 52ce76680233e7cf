"""The ``embtune`` command line: subcommands from :mod:`embtune_core.commands`, one-line errors."""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import re
import sys

from embtune_core import __version__
from embtune_core.commands import COMMAND_MODULES
from embtune_core.errors import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    EXIT_UNEXPECTED,
    EXIT_USAGE,
    EmbtuneError,
    UsageError,
)
from embtune_core.runtime import interrupts, progress

EPILOG = """exit codes: 0 ok, 1 unexpected error, 2 bad command line, 3 bad input file or config (or an
output that cannot be written: disk full, read-only), 4 plugin conflict or unknown plugin, 5 external
service failed after retries, 130 interrupted by Ctrl-C and 143 by SIGTERM (re-run the same command
to resume)"""


_DISK_ERRNOS = {errno.ENOSPC: "no space left on device", errno.EROFS: "read-only file system",
                errno.EDQUOT: "disk quota exceeded", errno.EACCES: "permission denied"}


def disk_problem(exc: BaseException) -> tuple[str, str] | None:
    """(path, problem) when ``exc`` is a failed write to disk (ENOSPC, EROFS, quota, permission), as
    raised by Python, by torch's zip writer or by safetensors; None otherwise."""
    if isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS:
        return str(exc.filename or "the output"), _DISK_ERRNOS[exc.errno]
    from embtune_core.runtime.resources import OUT_OF_MEMORY, problem_of

    problem = problem_of(exc)
    if problem is not None and problem != OUT_OF_MEMORY:
        return "the output", f"{problem} (a write failed)"
    return None


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line like every other error (argparse prints the usage too)."""

    def error(self, message: str):
        match = re.match(r"argument (\S+): (.*)", message, re.DOTALL)
        option, problem = match.groups() if match else (None, message)
        error = UsageError(f"{problem} (see '{self.prog} --help')", field=option)
        self.exit(EXIT_USAGE, f"embtune: error: {error}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="embtune",
        description="Fine-tune embedding models and query adapters for RAG on your own documents.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"embtune {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        module = importlib.import_module(module_name)
        sub = subparsers.add_parser(module.NAME, help=module.HELP, description=module.DESCRIPTION,
                                    epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run)
    return parser


# Third-party loggers that talk at INFO about their own internals: FAISS's loader reports each SIMD
# build it tries and fails to import ("ModuleNotFoundError(... swigfaiss_avx512)") before it loads
# one that works, on every run; httpx logs every request ("HTTP Request: POST .../v1/embeddings
# "HTTP/1.1 200 OK"", one line per batch of an API encoder or LLM call, and per hub request), and
# the openai client's httpx2/httpcore2 fork does the same under its own names. sentence-transformers
# says at INFO what embtune already says once ("No device provided, using cpu", "Loading
# SentenceTransformer model from ...", "Saving model to ....tmp"). Shown again with -v.
NOISY_LOGGERS = ("faiss.loader", "faiss", "httpx", "httpcore", "httpx2", "httpcore2", "sentence_transformers")


def quiet_third_party_loggers(verbose: bool = False) -> None:
    """Raise the listed third-party loggers to WARNING (left alone with ``verbose``); ours keep INFO."""
    if not verbose:
        for name in NOISY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    from embtune_core.runtime.secrets_scrub import register_credentials, scrub_streams

    register_credentials(list(sys.argv[1:] if argv is None else argv))  # an encoder spec's URL credentials
    # Every byte printed -- our lines, log records, warnings, progress bars, tracebacks -- is scrubbed.
    with progress.library_bars_silenced(), scrub_streams():
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    from embtune_core.runtime.secrets_scrub import install_log_filter, scrub

    install_log_filter()
    interrupts.install()
    quiet_third_party_loggers(args.verbose)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except EmbtuneError as exc:
        print(f"embtune: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        interrupts.ignore_further()  # a second Ctrl-C while we report must not kill the process mid-line
        terminated = isinstance(exc, interrupts.Terminated) or interrupts.requested() == "SIGTERM"
        signal_name = "SIGTERM" if terminated else "Ctrl-C"
        print(f"embtune: interrupted ({signal_name}); what finished is kept; re-run the same command to resume",
              file=sys.stderr)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    except Exception as exc:
        from embtune_core.runtime.resources import OUT_OF_MEMORY, problem_of

        if problem_of(exc) == OUT_OF_MEMORY:
            print("embtune: error: out of memory (use smaller batches: --batch-size, or a machine with more memory)",
                  file=sys.stderr)
            return EXIT_BAD_INPUT
        disk = disk_problem(exc)
        if disk is not None:
            print(f"embtune: error: {scrub(disk[0])}: cannot write: {disk[1]} (free space or choose another "
                  "output folder; finished work is kept)", file=sys.stderr)
            return EXIT_BAD_INPUT
        if args.verbose:
            raise
        print(f"embtune: unexpected error: {type(exc).__name__}: {scrub(' '.join(str(exc).split()))} "
              "(re-run with -v for the traceback)", file=sys.stderr)
        return EXIT_UNEXPECTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
