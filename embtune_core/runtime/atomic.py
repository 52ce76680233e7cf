"""Atomic file and directory writes: a reader sees the old content or the new, never a torn one.

Every output embtune writes goes through here. The temporary file lives in the destination's
directory so ``os.replace`` is a rename on one filesystem, which POSIX makes atomic.

Recovery touches only what embtune made and can prove it made (a user's ``.model.old-backup``
beside ``--out model`` is never moved or deleted):

* temporaries are named ``.NAME.embtune-HOST-PID-RANDOM.tmp``; one left by a writer that died (its
  pid no longer runs on this host) is removed by the next write of the same NAME;
* replacing a directory takes two renames (old aside, new in), announced first by a journal
  ``.NAME.embtune-swap.json`` naming the two folders. A kill between them is undone by
  :func:`recover_directory`, which acts only on the folders a journal names.

Outputs follow the process umask (0644/0755 under the usual 022), also the files that libraries
write inside a staging folder, so a container running as another user can read a model.

Every text written here passes the secrets scrubber (:func:`embtune_core.runtime.secrets_scrub.scrub_known`),
as do the text files libraries write inside a staging folder: this is where bytes reach a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HOST = socket.gethostname()


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp/mkdtemp create private (0600/0700) entries; outputs get the usual permissions instead.
_UMASK = _current_umask()
FILE_MODE = 0o666 & ~_UMASK
DIR_MODE = 0o777 & ~_UMASK


def _fsync_dir(directory: Path) -> None:
    # Make the rename itself durable; not every platform lets us open a directory.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _temp_prefix(name: str) -> str:
    return f".{name}.embtune-{HOST}-{os.getpid()}-"


def _writer_is_dead(entry: Path, name: str) -> bool:
    """True when ``entry`` is a temporary of NAME whose writer ran on this host and has exited."""
    stem = entry.name[len(f".{name}.embtune-"):]
    if not entry.name.endswith(".tmp") or not stem.startswith(f"{HOST}-"):
        return False
    pid_text = stem[len(HOST) + 1:].split("-", 1)[0]
    if not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by someone else
        return False
    return False


def remove_leftovers(path: str | Path) -> list[Path]:
    """Delete temporaries of ``path`` left by embtune writers that died; returns what was removed."""
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    for entry in path.parent.glob(f".{glob_escape(path.name)}.embtune-*.tmp"):
        if _writer_is_dead(entry, path.name):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()
            removed.append(entry)
    return removed


SCRUB_BLOCK = 1 << 20  # characters a file's text is scrubbed by at once (whole lines)


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


class _ScrubbingWriter:
    """A text handle whose lines pass :func:`embtune_core.runtime.secrets_scrub.scrub_known` on their way to disk
    (whole lines only, so a secret written in two pieces is still found). Text is held and scrubbed in
    blocks of about :data:`SCRUB_BLOCK` characters: ``json.dump`` writes many small pieces, and scrubbing
    each line on its own cost a report of 10,000 lines seconds for nothing."""

    def __init__(self, handle: Any):
        self._handle = handle
        self._held: list[str] = []  # pieces not yet scrubbed
        self._size = 0

    def write(self, text: str) -> int:
        self._held.append(text)
        self._size += len(text)
        if self._size >= SCRUB_BLOCK and "\n" in text:
            from embtune_core.runtime.secrets_scrub import scrub_known

            block = "".join(self._held)
            cut = block.rfind("\n") + 1
            self._handle.write(scrub_known(block[:cut]))
            self._held = [block[cut:]] if cut < len(block) else []
            self._size = len(block) - cut
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        from embtune_core.runtime.secrets_scrub import scrub_known

        if self._held:
            self._handle.write(scrub_known("".join(self._held)))
            self._held, self._size = [], 0
        self._handle.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[Any]:
    """Open a temporary sibling of ``path`` for writing; rename it over ``path`` on success. Text written
    passes the secrets scrubber (:func:`embtune_core.runtime.secrets_scrub.scrub_known`): no known secret reaches
    a file embtune writes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    binary = "b" in mode
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path.name), suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, FILE_MODE)
        with os.fdopen(fd, mode, encoding=None if binary else encoding) as handle:
            writer = handle if binary else _ScrubbingWriter(handle)
            yield writer
            writer.flush()  # the scrubbing writer's held text too
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as exc:
        from embtune_core.runtime.resources import OUT_OF_MEMORY, ResourceError, disk_advice, problem_of

        problem = problem_of(exc, path) if isinstance(exc, (OSError, RuntimeError)) else None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)  # first: the space it held counts in the advice's figure
        if problem is not None and problem != OUT_OF_MEMORY:
            raise ResourceError(f"cannot write: {problem} ({disk_advice(path)})", path=path) from None
        raise
    remove_leftovers(path)


def write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w") as handle:  # scrubbed on the way (atomic_open)
        handle.write(text)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def write_json(path: str | Path, obj: Any, *, indent: int | None = 2) -> None:
    text = json.dumps(obj, indent=indent, ensure_ascii=False)  # one string: scrubbed in blocks, not piece by piece
    with atomic_open(path, "w") as handle:
        handle.write(text + "\n")


def _journal(path: Path) -> Path:
    return path.with_name(f".{path.name}.embtune-swap.json")


def recover_directory(path: str | Path) -> None:
    """Undo a directory swap that a kill interrupted between its two renames, and clear what it left.

    Only the folder a swap journal names is touched: put back when ``path`` is missing, deleted
    when ``path`` is there (the swap finished). Temporaries of dead writers are removed too.
    """
    path = Path(path)
    journal = _journal(path)
    if journal.is_file():
        try:
            old = path.with_name(json.loads(journal.read_text(encoding="utf-8"))["old"])
        except (OSError, ValueError, KeyError, TypeError):
            old = None
        if old is not None and old.parent == path.parent and old.name.startswith(f".{path.name}.old-embtune-"):
            if not os.path.lexists(path) and os.path.lexists(old):
                os.replace(old, path)
            elif os.path.lexists(old):
                _remove(old)
        with contextlib.suppress(FileNotFoundError):
            journal.unlink()
    remove_leftovers(path)


def _remove(entry: Path) -> None:
    """Remove a replaced output: a link itself (never what it points to), or a folder tree."""
    if entry.is_symlink() or not entry.is_dir():
        with contextlib.suppress(FileNotFoundError):
            entry.unlink()
    else:
        shutil.rmtree(entry, ignore_errors=True)


def _follow_umask(folder: Path) -> None:
    """Files and folders a library wrote inside ``folder`` get the umask's permissions (some write 0600)."""
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(Path(root) / name, DIR_MODE)
        for name in files:
            entry = Path(root) / name
            if not entry.is_symlink():
                os.chmod(entry, FILE_MODE)


_TEXT_SUFFIXES = (".json", ".jsonl", ".md", ".txt", ".csv", ".yaml", ".yml", ".toml", ".html", ".cfg")


def _scrub_text_files(folder: Path) -> None:
    """Text files a library wrote inside a staging folder (a model's configs, its card) pass the secrets
    scrubber too, like everything embtune writes itself."""
    from embtune_core.runtime.secrets_scrub import scrub_known

    for entry in folder.rglob("*"):
        if entry.suffix.lower() not in _TEXT_SUFFIXES or entry.is_symlink() or not entry.is_file():
            continue
        if entry.stat().st_size > 64 << 20:
            continue  # no config or card is this large
        try:
            text = entry.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        cleaned = scrub_known(text)
        if cleaned != text:
            entry.write_text(cleaned, encoding="utf-8")


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory; on success it replaces ``path`` (an old one is removed).

    Used for model and adapter directories, whose files must appear together or not at all.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_directory(path)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path.name), suffix=".tmp", dir=path.parent))
    try:
        os.chmod(tmp, DIR_MODE)
        yield tmp
        _scrub_text_files(tmp)
        _follow_umask(tmp)
        old = None
        if os.path.lexists(path):
            old = path.with_name(f".{path.name}.old-embtune-{HOST}-{os.getpid()}-{secrets.token_hex(4)}")
            write_json(_journal(path), {"old": old.name, "new": path.name, "pid": os.getpid(), "host": HOST})
            os.replace(path, old)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        if old is not None:
            _remove(old)
            with contextlib.suppress(FileNotFoundError):
                _journal(path).unlink()
    except BaseException as exc:
        from embtune_core.runtime.resources import OUT_OF_MEMORY, ResourceError, disk_advice, problem_of

        problem = problem_of(exc, path) if isinstance(exc, (OSError, RuntimeError)) else None
        shutil.rmtree(tmp, ignore_errors=True)
        if problem is not None and problem != OUT_OF_MEMORY:
            raise ResourceError(f"cannot write: {problem} ({disk_advice(path)})", path=path) from None
        raise
