"""One writer per run folder and per output: an exclusive lock with its holder named.

Two ``embtune run`` on one run folder would train into the same checkpoints, and two ``train`` with
one ``--out`` would replace each other's model. :func:`hold` takes an exclusive ``flock`` on a lock
file (``<run folder>/.embtune.lock``, or ``.NAME.embtune.lock`` beside an output NAME) and writes the
holder into it. A second writer gets one line naming the holder, e.g.::

    runs/demo: run folder: in use by embtune (pid 4242 on host build-7, since 2026-11-30T12:00:03Z:
    embtune run demo.toml); wait for it to finish or stop it

The kernel releases a ``flock`` when its process dies, however it dies (SIGKILL included), so a
lock left by a dead process is simply taken over: no stale-lock guessing. (``flock`` is advisory and
per host: two machines writing one network folder are not excluded.)

Example::

    with hold(run_dir / ".embtune.lock", subject=run_dir, what="run folder"):
        ...
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from embtune_core.errors import InputError
from embtune_core.runtime.atomic import HOST

try:  # POSIX; elsewhere runs are not locked (and say so once)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


class LockedError(InputError):
    """Another live embtune process holds the run folder or output."""


def lock_path_for_output(path: str | Path) -> Path:
    """The lock file guarding an output file or folder NAME: ``.NAME.embtune.lock`` beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}.embtune.lock")


def _holder(lock_file: Path) -> str:
    try:
        data = json.loads(lock_file.read_text(encoding="utf-8"))
        return (f"pid {data['pid']} on host {data['host']}, since {data['since']}: "
                f"{' '.join(map(str, data.get('command', [])))[:120]}")
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextlib.contextmanager
def hold(lock_file: str | Path, *, subject: str | Path, what: str) -> Iterator[None]:
    """Hold ``lock_file`` exclusively for the block, or raise :class:`LockedError` (one line) at once.

    The lock file is removed on release (a refused command leaves nothing behind). Because another
    process may have opened it just before the removal, a lock counts only when the path still names
    the locked file afterwards; otherwise the file is opened afresh.
    """
    lock_file = Path(lock_file)
    if fcntl is None:  # pragma: no cover
        yield
        return
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockedError(f"in use by embtune ({_holder(lock_file)}); wait for it to finish or stop it",
                              path=subject, field=what) from None
        try:
            same = os.stat(lock_file).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # removed by its last holder after we opened it: try the new file
    else:  # pragma: no cover - a pathological storm of lock holders
        raise LockedError("could not take the lock", path=subject, field=what)
    try:
        record = {"pid": os.getpid(), "host": HOST, "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "command": [Path(sys.argv[0]).name, *sys.argv[1:]]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock_file)  # while still holding it: see the docstring
        os.close(fd)  # releases the flock
