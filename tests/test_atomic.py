"""Atomic writes: a process killed at any moment leaves the old file or the new one, never a torn one."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time

import pytest

from embtune_core.runtime import atomic

WRITER = """
import sys
from embtune_core.runtime import atomic
path = sys.argv[1]
i = 0
while True:
    i += 1
    atomic.write_json(path, {"generation": i, "payload": "x" * (200_000 + i % 7)})
"""

DIR_WRITER = """
import sys, pathlib
from embtune_core.runtime import atomic
path = sys.argv[1]
i = 0
while True:
    i += 1
    with atomic.atomic_directory(path) as tmp:
        for name in ("a.json", "b.json", "c.json"):
            (tmp / name).write_text('{"generation": %d}' % i)
"""


@pytest.mark.parametrize("trial", range(6))
def test_killed_writer_never_leaves_a_torn_file(tmp_path, trial):
    target = tmp_path / "out.json"
    atomic.write_json(target, {"generation": 0, "payload": ""})
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)])
    time.sleep(random.Random(trial).uniform(0.3, 1.2))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    data = json.loads(target.read_text())  # raises if torn
    assert data["generation"] >= 0
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "out.json"]
    assert all(name.startswith(".out.json.") for name in leftovers)  # only temp files, never the target


@pytest.mark.parametrize("trial", range(4))
def test_killed_directory_writer_leaves_a_whole_directory(tmp_path, trial):
    target = tmp_path / "model"
    with atomic.atomic_directory(target) as tmp:
        for name in ("a.json", "b.json", "c.json"):
            (tmp / name).write_text('{"generation": 0}')
    proc = subprocess.Popen([sys.executable, "-c", DIR_WRITER, str(target)])
    time.sleep(random.Random(100 + trial).uniform(0.4, 1.2))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # A kill between the two renames leaves the old directory aside; recovery puts it back.
    atomic.recover_directory(target)
    assert target.is_dir()
    generations = {json.loads((target / n).read_text())["generation"] for n in ("a.json", "b.json", "c.json")}
    assert len(generations) == 1


def test_exception_inside_leaves_old_content(tmp_path):
    target = tmp_path / "f.txt"
    atomic.write_text(target, "old")
    with pytest.raises(RuntimeError), atomic.atomic_open(target) as handle:
        handle.write("new, half written")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_outputs_get_normal_permissions_not_private_temp_ones(tmp_path):
    atomic.write_text(tmp_path / "f.txt", "x")
    with atomic.atomic_directory(tmp_path / "d") as d:
        (d / "a").write_text("y")
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == atomic.FILE_MODE
    assert (tmp_path / "d").stat().st_mode & 0o777 == atomic.DIR_MODE
