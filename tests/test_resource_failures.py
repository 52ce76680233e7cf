"""Kind 6 of issue 26: a full disk or exhausted memory is one line, exit 3 (README, errors.py), with advice.

Real resources run out here: small tmpfs mounts (the test needs root in a mount namespace that allows
it; elsewhere it skips) and ``ulimit -v`` for memory.
"""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager

import pytest

from embtune_core.data.dataset import QADataset


def _data(n: int = 16) -> QADataset:
    corpus = {f"c{i}": f"Chunk {i} tells about topic{i} and subject{i} in detail, " * 4 for i in range(n)}
    return QADataset({f"q{i}": f"what about topic{i}?" for i in range(n)}, corpus, {f"q{i}": [f"c{i}"] for i in range(n)})


@contextmanager
def _mount(folder, size: str):
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True,
                      check=False).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root in a mount namespace that allows it)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _embtune(*argv: str, env: dict | None = None, prefix: str = "") -> subprocess.CompletedProcess:
    full_env = {**os.environ, "EMBTUNE_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                **(env or {})}
    command = [sys.executable, "-m", "embtune_core.cli", *argv]
    if prefix:
        command = ["bash", "-c", f'{prefix} && exec "$@"', "bash", *command]
    return subprocess.run(command, capture_output=True, text=True, env=full_env, timeout=600, check=False)


def _one_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 3, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("embtune: error: ") and "Traceback" not in result.stderr
    return last


def test_full_disk_during_a_checkpoint_save(tmp_path, tiny_model_dir):
    data = tmp_path / "train.json"
    _data().save(data)
    with _mount(tmp_path / "ck", "512k") as ck:
        # before: exit 1 "RuntimeError: [enforce fail at inline_container.cc:672] . unexpected pos ..."
        line = _one_line(_embtune("train", "--train", str(data), "--model", tiny_model_dir, "--max-steps", "2",
                                  "--save-steps", "1", "--batch-size", "4", "--checkpoint-dir", str(ck),
                                  "--out", str(tmp_path / "m")))
        assert line.startswith(f"embtune: error: {ck}: cannot write a training checkpoint: no space left on device")
        assert "free space on that disk" in line and "finished work is kept" in line


def test_full_disk_while_caching_embeddings(tmp_path, tiny_model_dir):
    data = tmp_path / "val.json"
    _data(200).save(data)
    with _mount(tmp_path / "cache", "16k") as cache:
        # before: exit 1 "OSError: 16 requested and 7 written" (numpy, no errno, no file named)
        line = _one_line(_embtune("evaluate", str(data), "--system", f"model:{tiny_model_dir}",
                                  env={"EMBTUNE_CACHE": str(cache)}))
        assert f"embtune: error: {cache}/" in line and "no space left on device while caching embeddings" in line
        assert "EMBTUNE_CACHE" in line


def test_out_of_memory_in_training_names_the_settings_that_reduce_it(tmp_path, minilm_path):
    data = tmp_path / "train.json"
    long = QADataset({f"q{i}": f"what about topic{i}?" for i in range(64)},
                     {f"c{i}": f"Chunk {i} on topic{i}: " + " ".join(f"word{i}x{j}" for j in range(400))
                      for i in range(64)}, {f"q{i}": [f"c{i}"] for i in range(64)})
    long.save(data)  # every chunk fills the 256 tokens
    # A limit on the address space the process may use: enough for torch and the model, not for a batch
    # of 64 texts of 256 tokens through MiniLM with its gradients, embedded at once (mini_batch_size=64:
    # by default GradCache would split it to fit, embtune_core.finetuning.memory_plan).
    result = _embtune("train", "--train", str(data), "--model", minilm_path, "--max-steps", "1",
                      "--batch-size", "64", "--max-seq-length", "256", "--loss-option", "mini_batch_size=64",
                      "--out", str(tmp_path / "m"), prefix="ulimit -v 3600000")
    if result.returncode != 3 and "import" in result.stderr[-500:].lower():
        pytest.skip("this machine needs more address space to import torch than the test allows")
    line = _one_line(result)
    # before: exit 1 "RuntimeError: [enforce fail at alloc_cpu.cpp...] DefaultCPUAllocator: can't allocate memory"
    assert "out of memory while a training checkpoint" not in line
    assert "out of memory while" in line and "lower --batch-size (now 64)" in line and "--max-seq-length (now 256)" in line
    assert "--loss-option mini_batch_size=2 (GradCache: the same batch in less memory; now 64)" in line
