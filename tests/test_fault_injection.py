"""Issue 13: trustworthy runs under faults. Real processes, real signals, real files, tiny models; each
test injects one kind of fault and asserts the right outcome (nothing lost, same bits, one line)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from corpora import topic_corpus
from openai_server import OpenAIServer
from test_pipeline import PLANTED_KEY, _config, _finish, _start, interruptible_cli

from embtune_core.data.dataset import QADataset
from embtune_core.runtime import atomic


def _embtune(*argv: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "EMBTUNE_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "embtune_core.cli", *argv], capture_output=True, text=True,
                          env=full_env, timeout=timeout, check=False)


def _weights(model_dir: Path) -> dict[str, bytes]:
    from safetensors.torch import load_file

    return {k: v.numpy().tobytes() for k, v in load_file(str(model_dir / "model.safetensors")).items()}


def _signal_when(proc: subprocess.Popen, ready, sig: int, timeout: float = 300) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"run ended before it could be interrupted:\n{proc.stdout.read()}")
        if ready():
            proc.send_signal(sig)
            out, _ = proc.communicate(timeout=120)
            return out
        time.sleep(0.02)
    proc.kill()
    pytest.fail("the interruption point was never reached")


# --- 1 + 6: a run interrupted at a stage boundary or right after its baseline resumes to the same bits ---
@pytest.mark.slow
def test_interrupted_pipeline_trains_the_same_weights(tmp_path, tiny_model_dir):
    corpus = topic_corpus(tmp_path / "corpus")
    with OpenAIServer() as server:
        config = _config(tmp_path / "run.toml", corpus, server.base_url, tiny_model_dir)
        reference = tmp_path / "reference"
        _finish(config, reference)

        resumed = tmp_path / "resumed"
        # SIGKILL at a stage boundary (the split is done, nothing of training yet).
        _signal_when(_start(config, resumed), lambda: bool(list(resumed.glob("stages/split-*/_done.json"))),
                     signal.SIGKILL)
        # SIGTERM right after the baseline evaluation, before the first checkpoint: the window where
        # the baseline ran on one path only and used to shift the random stream.
        out = _signal_when(_start(config, resumed),
                           lambda: bool(list(resumed.glob("stages/train-*/work/checkpoints/metrics_before.json"))),
                           signal.SIGTERM)
        assert "interrupted (SIGTERM)" in out and "re-run the same command to resume" in out
        _finish(config, resumed)

    ref_model = next(reference.glob("stages/train-*/model"))
    new_model = next(resumed.glob("stages/train-*/model"))
    assert _weights(new_model) == _weights(ref_model)  # bit for bit
    ref_report = json.loads(next(reference.glob("stages/evaluate-*/report.json")).read_text())
    new_report = json.loads(next(resumed.glob("stages/evaluate-*/report.json")).read_text())
    assert new_report["per_query"] == ref_report["per_query"]


def test_sigterm_exit_code_and_same_command_resumes(tiny_model_dir, tmp_path):
    data = tmp_path / "train.json"
    _train_set().save(data)
    argv = ("train", "--train", str(data), "--model", tiny_model_dir, "--max-steps", "400", "--save-steps", "20",
            "--batch-size", "4", "--out", str(tmp_path / "m"))
    env = {**os.environ, "EMBTUNE_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "embtune_core.cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    out = _signal_when(proc, lambda: (tmp_path / "m.checkpoints" / "checkpoint-20" / "embtune_complete.json").exists(),
                       signal.SIGTERM)
    assert proc.returncode == 143, out
    assert "embtune: interrupted (SIGTERM); what finished is kept; re-run the same command to resume" in out
    again = _embtune(*argv)
    assert again.returncode == 0, again.stderr
    assert "resuming the interrupted run" in again.stderr
    # The same command once more: the run is finished, and the log says so instead of "resuming";
    # the model it exports again is the same, bit for bit.
    exported = _weights(tmp_path / "m")
    finished = _embtune(*argv)
    assert finished.returncode == 0, finished.stderr
    assert _weights(tmp_path / "m") == exported
    assert "holds a finished run" in finished.stderr and "resuming the interrupted run" not in finished.stderr
    # Other settings with the same checkpoint folder are still refused, naming the flag to use.
    other = _embtune(*argv[:-2], "--lr", "0.01", "--out", str(tmp_path / "m"))
    assert other.returncode == 3 and "other settings or data; pass --resume" in other.stderr


def _train_set(n: int = 16) -> QADataset:
    corpus = {f"c{i}": f"Chunk {i} tells about topic{i} and subject{i} in detail." for i in range(n)}
    queries = {f"q{i}": f"what about topic{i}?" for i in range(n)}
    return QADataset(queries, corpus, {f"q{i}": [f"c{i}"] for i in range(n)})


# --- 2 + 7: recovery touches only what embtune made; leftovers cleaned; outputs follow the umask ---------
def test_recovery_never_touches_a_users_folder(tmp_path):
    target = tmp_path / "model"
    mine = tmp_path / ".model.old-backup"
    mine.mkdir()
    (mine / "precious.txt").write_text("user data")
    atomic.recover_directory(target)  # NAME absent: the user's folder must not be moved into place
    assert not target.exists() and (mine / "precious.txt").read_text() == "user data"
    with atomic.atomic_directory(target) as staging:
        (staging / "a.json").write_text("{}")
    with atomic.atomic_directory(target) as staging:  # a replacement: old aside, new in, old removed
        (staging / "b.json").write_text("{}")
    assert (mine / "precious.txt").read_text() == "user data"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model.old-backup", "model"]


def test_killed_writers_leftovers_are_cleaned_and_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    dead_pid = int(dead.stdout)
    stale_dir = tmp_path / f".model.embtune-{atomic.HOST}-{dead_pid}-x1.tmp"
    stale_dir.mkdir()
    (stale_dir / "model.safetensors").write_bytes(b"\0" * 1024)
    stale_file = tmp_path / f".model.zip.embtune-{atomic.HOST}-{dead_pid}-x2.tmp"
    stale_file.write_bytes(b"partial zip")
    live = tmp_path / f".model.embtune-{atomic.HOST}-1-x3.tmp"  # pid 1 is alive (init)
    live.mkdir()
    looks_alike = tmp_path / ".model.mine.tmp"  # not embtune's name: never touched
    looks_alike.mkdir()
    with atomic.atomic_directory(tmp_path / "model") as staging:
        (staging / "w.safetensors").write_bytes(b"1")
        os.chmod(staging / "w.safetensors", 0o600)  # as some libraries write weights
    atomic.write_bytes(tmp_path / "model.zip", b"zip")
    assert not stale_dir.exists() and not stale_file.exists()
    assert live.exists() and looks_alike.exists()
    assert (tmp_path / "model" / "w.safetensors").stat().st_mode & 0o777 == atomic.FILE_MODE


# --- 3: stage keys follow content ----------------------------------------------------------------
@pytest.mark.slow
def test_replacing_a_model_folder_reruns_its_stages(tmp_path, tiny_model_dir):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    _train_set(8).save(tmp_path / "train.json")
    val = _train_set(8)  # other questions over other chunks (validation never overlaps training)
    val = QADataset({f"v{q}": "tell me " + t for q, t in val.queries.items()},
                    {f"v{c}": "Also: " + t for c, t in val.corpus.items()},
                    {f"v{q}": [f"v{c}" for c in ids] for q, ids in val.relevant_docs.items()})
    val.save(tmp_path / "val.json")
    config = tmp_path / "run.toml"
    config.write_text(f'[data]\ntrain = "train.json"\nval = "val.json"\n[train]\nenabled = false\nmodel = "{model}"\n'
                      '[evaluate]\nk = [1]\n[export]\nzip = false\n')
    first = _embtune("run", str(config), "--run-dir", str(tmp_path / "run"))
    assert first.returncode == 0, first.stderr
    again = _embtune("run", str(config), "--run-dir", str(tmp_path / "run"))
    assert "[evaluate] up to date" in again.stdout
    # Another model in the same folder (its weights perturbed): every stage reading it runs again.
    import torch
    from sentence_transformers import SentenceTransformer

    other = SentenceTransformer(str(model))
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05)
    shutil.rmtree(model)
    other.save(str(model))
    third = _embtune("run", str(config), "--run-dir", str(tmp_path / "run"))
    assert third.returncode == 0, third.stderr
    assert "[evaluate] running" in third.stdout


# --- 4: one writer per run folder and output ---------------------------------------------------------
def test_second_writer_is_refused_naming_the_holder_and_dead_holders_are_taken_over(tmp_path, tiny_model_dir):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from embtune_core.runtime.locking import hold\n"
        f"with hold({str(run_dir / '.embtune.lock')!r}, subject='x', what='run folder'):\n"
        "    print('held', flush=True); time.sleep(120)")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    config = tmp_path / "run.toml"
    _train_set(8).save(tmp_path / "train.json")
    config.write_text(f'[data]\ntrain = "train.json"\n[train]\nenabled = false\nmodel = "{tiny_model_dir}"\n')
    refused = _embtune("run", str(config), "--run-dir", str(run_dir))
    assert refused.returncode == 3
    assert refused.stderr.count("\n") == 1
    assert f"{run_dir}: run folder: in use by embtune (pid {holder.pid} on host {socket.gethostname()}" \
           in refused.stderr
    holder.send_signal(signal.SIGKILL)  # dies holding it: the kernel frees the lock
    holder.wait()
    from embtune_core.runtime.locking import hold

    with hold(run_dir / ".embtune.lock", subject=run_dir, what="run folder"):
        pass


# --- 5: a torn checkpoint is verified, set aside, and the previous one used --------------------------
@pytest.mark.parametrize("tear", ["trainer_state.json", "model.safetensors", "embtune_complete.json"])
def test_torn_checkpoint_falls_back_to_the_previous_one(tiny_model_dir, tmp_path, tear):
    data = tmp_path / "train.json"
    _train_set().save(data)
    argv = ("train", "--train", str(data), "--model", tiny_model_dir, "--max-steps", "8", "--save-steps", "2",
            "--batch-size", "4", "--out", str(tmp_path / "m"))
    assert _embtune(*argv[:6], "4", *argv[7:]).returncode == 0  # 4 of 8 steps: checkpoints 2 and 4
    shutil.rmtree(tmp_path / "m")
    newest = tmp_path / "m.checkpoints" / "checkpoint-4"
    torn = newest / tear
    if tear == "embtune_complete.json":  # killed after the trainer's files, before the marker
        torn.unlink()
    else:
        torn.write_bytes(torn.read_bytes()[: torn.stat().st_size // 2])
    result = _embtune(*argv, "--resume")
    assert result.returncode == 0, result.stderr
    expected = "no embtune_complete.json" if tear == "embtune_complete.json" else tear
    assert f"{newest} is incomplete ({expected}" in result.stderr
    assert (tmp_path / "m" / "model.safetensors").is_file()
    assert list((tmp_path / "m.checkpoints").glob(".incomplete-checkpoint-4-*"))  # set aside, not deleted


# --- 8: run folders move; splits do not depend on where documents lie -----------------------------------
@pytest.mark.slow
def test_moved_run_folder_reads_its_own_files(tmp_path, tiny_model_dir):
    _train_set(8).save(tmp_path / "train.json")
    config = tmp_path / "run.toml"
    config.write_text(f'[data]\ntrain = "train.json"\n[train]\nenabled = false\nmodel = "{tiny_model_dir}"\n'
                      '[split]\nval_fraction = 0.25\nsplit_by = "chunk"\n[evaluate]\nk = [1]\n')
    original = tmp_path / "original"
    assert _embtune("run", str(config), "--run-dir", str(original)).returncode == 0
    moved = tmp_path / "moved"
    shutil.move(original, moved)
    for done in moved.rglob("_done.json"):
        assert str(original) not in done.read_text()
    again = _embtune("run", str(config), "--run-dir", str(moved))
    assert again.returncode == 0, again.stderr
    assert "[evaluate] up to date" in again.stdout and str(moved) in again.stdout


def test_split_and_ids_do_not_depend_on_the_documents_location(tmp_path, minilm_path):
    (tmp_path / "a").mkdir()
    corpus = topic_corpus(tmp_path / "a" / "docs")
    shutil.copytree(corpus, tmp_path / "b" / "elsewhere" / "docs")
    outputs = []
    for root in (tmp_path / "a", tmp_path / "b" / "elsewhere"):
        out = root / "out"
        result = _embtune("build-dataset", str(root / "docs"), "-o", str(out), "--generator", "ict",
                          "--chunk-size", "40", "--model", minilm_path, "--seed", "3")
        assert result.returncode == 0, result.stderr
        outputs.append({name: (sorted(QADataset.load(out / name).queries.items()),
                               sorted(QADataset.load(out / name).corpus)) for name in ("train.json", "val.json")})
    assert outputs[0] == outputs[1]


# --- 9: network and disk faults are bounded and one line --------------------------------------------
def test_silent_hub_is_one_line_within_the_timeout(tmp_path):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts, never answers
    data = tmp_path / "d.json"
    _train_set(2).save(data)
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{silent.getsockname()[1]}", EMBTUNE_HUB_TIMEOUT="2",
               EMBTUNE_NO_PROGRESS="1")
    started = time.time()
    result = subprocess.run([sys.executable, "-m", "embtune_core.cli", "evaluate", str(data), "--system",
                             "model:some-org/some-model"], capture_output=True, text=True, env=env, timeout=120,
                            check=False)
    silent.close()
    assert time.time() - started < 60
    assert result.returncode == 5
    assert result.stderr.count("\n") == 1
    assert "cannot reach the Hugging Face hub within 2 s" in result.stderr and "HF_HUB_OFFLINE=1" in result.stderr


@pytest.fixture
def small_mount(tmp_path):
    mount = tmp_path / "mnt"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True,
                      check=False).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root in a mount namespace that allows it)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_and_read_only_outputs_are_one_line(small_mount, tmp_path, tiny_model_dir):
    data = tmp_path / "train.json"
    _train_set(8).save(data)
    full = _embtune("train", "--train", str(data), "--model", tiny_model_dir, "--max-steps", "1",
                    "--out", str(small_mount / "m"), "--checkpoint-dir", str(tmp_path / "ck"))
    assert full.returncode == 3, full.stderr
    assert full.stderr.strip().splitlines()[-1].startswith("embtune: error: ")
    assert "no space left on device" in full.stderr and "Traceback" not in full.stderr
    assert not list(small_mount.glob(".m.embtune-*"))  # no half-written model left behind
    subprocess.run(["mount", "-o", "remount,ro", str(small_mount)], check=True)
    read_only = _embtune("train", "--train", str(data), "--model", tiny_model_dir, "--out", str(small_mount / "m2"))
    assert read_only.returncode == 3
    assert read_only.stderr.strip() == (f"embtune: error: {small_mount / 'm2'}: --out: cannot write in "
                                        f"{small_mount}: read-only file system")


# --- 10: secrets never reach output, logs or files -----------------------------------------------------
@pytest.mark.parametrize("command", ["evaluate", "mine", "train-adapter"])
def test_planted_key_never_printed_or_written(tmp_path, command):
    data = tmp_path / "d.json"
    _train_set(8).save(data)
    env = {"EMBTUNE_TEST_KEY": PLANTED_KEY, "EMBTUNE_CACHE": str(tmp_path / "cache")}
    with OpenAIServer(faults=[{"status": 401, "echo_headers": True}]) as server:
        host = server.base_url.split("//", 1)[1]
        url = f"http://user:{PLANTED_KEY}@{host}"  # credentials in the URL as well
        spec = f"openai:test-embed@{url}"
        argv = {"evaluate": ("evaluate", str(data), "--system", spec, "--out", str(tmp_path / "report")),
                "mine": ("mine", str(data), "-o", str(tmp_path / "mined.json"), "--encoder", spec),
                "train-adapter": ("train-adapter", "--train", str(data), "--encoder", spec, "--api-key-env",
                                  "EMBTUNE_TEST_KEY", "--epochs", "1", "--out", str(tmp_path / "ad"))}[command]
        refused = _embtune(*argv, env={**env, "OPENAI_API_KEY": PLANTED_KEY})
        assert refused.returncode == 5, refused.stderr
        # The server saw the key (the URL's credentials travel base64-encoded) and echoed it back.
        encoded = base64.b64encode(f"user:{PLANTED_KEY}".encode()).decode()
        assert any(form in str(server.requests[0][2]) for form in (PLANTED_KEY, encoded))
        ok = _embtune(*argv, env={**env, "OPENAI_API_KEY": PLANTED_KEY})
        assert ok.returncode == 0, ok.stderr
    for text in (refused.stdout, refused.stderr, ok.stdout, ok.stderr):
        assert PLANTED_KEY not in text and encoded not in text
    for path in tmp_path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert PLANTED_KEY.encode() not in data and encoded.encode() not in data, f"key leaked into {path}"


# --- found by trying to break the above -----------------------------------------------------------
@pytest.mark.slow
def test_relative_run_dir_moved_reads_its_own_files(tmp_path, tiny_model_dir):
    _train_set(8).save(tmp_path / "train.json")
    (tmp_path / "run.toml").write_text(f'[data]\ntrain = "train.json"\n[train]\nenabled = false\n'
                                       f'model = "{tiny_model_dir}"\n[adapter]\ntype = "linear"\nepochs = 1\n'
                                       '[split]\nval_fraction = 0.25\nsplit_by = "chunk"\n[evaluate]\nk = [1]\n')
    env = {**os.environ, "EMBTUNE_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1"}

    def run(run_dir: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "embtune_core.cli", "run", "run.toml", "--run-dir", run_dir],
                              cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300, check=False)

    assert run("first").returncode == 0
    shutil.copytree(tmp_path / "first", tmp_path / "copy")
    shutil.rmtree(tmp_path / "first")  # the original is gone: the copy must read only its own files
    again = run("copy")
    assert again.returncode == 0, again.stderr
    assert "[evaluate] up to date" in again.stdout and "[adapter] up to date" in again.stdout


def _log_records(path: Path) -> list[dict]:
    """loss_log.jsonl without what differs between attempts by nature: wall-clock times and runtimes."""
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "time" and not k.endswith(("_runtime", "_per_second", "_time"))}
            for r in records]


def _card_rows(model_dir: Path) -> list[str]:
    after = (model_dir / "README.md").read_text().split("### Training Logs", 1)[1].lstrip("\n").splitlines()
    rows = []
    for line in after:
        if not line.startswith("|"):
            break
        rows.append(line)
    assert len(rows) > 4, after[:5]
    return rows


def test_train_loss_of_a_resumed_run_equals_the_uninterrupted_one(tiny_model_dir, tmp_path):
    """...and so does its whole record (issue 26, kind 7): loss_log.jsonl without the killed attempt's lines
    repeated, the model card's training-log rows, and a training time that counts every attempt."""
    data, val = tmp_path / "train.json", tmp_path / "val.json"
    _train_set().save(data)
    held = _train_set(24)
    held.subset([f"q{i}" for i in range(16, 24)]).save(val)
    common = ("--train", str(data), "--val", str(val), "--model", tiny_model_dir, "--max-steps", "60",
              "--save-steps", "15", "--batch-size", "4", "--keep-if-worse")
    assert _embtune("train", *common, "--out", str(tmp_path / "ref")).returncode == 0
    argv = ("train", *common, "--out", str(tmp_path / "m"))
    env = {**os.environ, "EMBTUNE_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(interruptible_cli(*argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)
    marker = tmp_path / "m.checkpoints" / "checkpoint-15" / "embtune_complete.json"
    _signal_when(proc, lambda: marker.exists() and len((tmp_path / "m.checkpoints" / "loss_log.jsonl").read_text()
                                                       .splitlines()) > 6, signal.SIGINT)
    assert proc.returncode == 130
    killed = _log_records(tmp_path / "m.checkpoints" / "loss_log.jsonl")
    first_attempt = json.loads(marker.read_text())["train_seconds"]
    assert _embtune(*argv).returncode == 0
    ref = json.loads((tmp_path / "ref" / "embtune_train.json").read_text())
    new = json.loads((tmp_path / "m" / "embtune_train.json").read_text())
    assert new["resumed_from"] and not ref["resumed_from"]
    assert new["train_loss"] == ref["train_loss"]
    assert _weights(tmp_path / "m") == _weights(tmp_path / "ref")
    resumed_log = _log_records(tmp_path / "m.checkpoints" / "loss_log.jsonl")
    assert [r["step"] for r in resumed_log] == [r["step"] for r in _log_records(tmp_path / "ref.checkpoints" /
                                                                                 "loss_log.jsonl")]
    assert resumed_log == _log_records(tmp_path / "ref.checkpoints" / "loss_log.jsonl")
    assert max(r["step"] for r in killed) > 15  # the killed attempt did log past its checkpoint
    assert _card_rows(tmp_path / "m") == _card_rows(tmp_path / "ref")  # before: only the resumed rows
    assert new["train_seconds"] > first_attempt > 0  # before: the resumed attempt's seconds only


def test_two_trainings_cannot_share_a_checkpoint_folder(tiny_model_dir, tmp_path):
    from embtune_core.runtime.locking import lock_path_for_output

    checkpoints = tmp_path / "ck"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import time; from embtune_core.runtime.locking import hold\n"
        f"with hold({str(lock_path_for_output(checkpoints))!r}, subject='x', what='--checkpoint-dir'):\n"
        "    print('held', flush=True); time.sleep(120)")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    data = tmp_path / "train.json"
    _train_set(8).save(data)
    refused = _embtune("train", "--train", str(data), "--model", tiny_model_dir, "--checkpoint-dir", str(checkpoints),
                       "--out", str(tmp_path / "m2"))
    holder.kill()
    holder.wait()
    assert refused.returncode == 3 and f"in use by embtune (pid {holder.pid}" in refused.stderr


def test_replacing_a_symlinked_output_leaves_no_link_behind(tmp_path):
    (tmp_path / "v3").mkdir()
    (tmp_path / "v3" / "keep.txt").write_text("the link's target is the user's")
    (tmp_path / "current").symlink_to("v3")
    with atomic.atomic_directory(tmp_path / "current") as staging:
        (staging / "model.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current", "v3"]
    assert (tmp_path / "current" / "model.json").is_file() and (tmp_path / "v3" / "keep.txt").is_file()


def test_credentials_never_reach_run_folder_files(tmp_path):
    from embtune_core.runtime.rundir import RunDir

    run = RunDir(tmp_path / "run")
    url = f"http://user:{PLANTED_KEY}@127.0.0.1:9/v1"
    run.write_manifest({"config": {"generate": {"base_url": url}}})
    stage = run.stage("adapter", {"encoder": f"openai:m@{url}"})
    stage.start()
    stage.finish({"encoder": f"openai:m@{url}", "adapter": str(stage.path / "adapter")}, 1.0)
    for path in (tmp_path / "run").rglob("*.json"):
        assert PLANTED_KEY not in path.read_text()
    assert stage.outputs()["adapter"] == str(stage.path / "adapter")


def test_small_change_in_a_big_file_changes_the_fingerprint(tmp_path):
    from embtune_core.encoders import fingerprint

    folder = tmp_path / "model"
    folder.mkdir()
    weights = bytearray(20 << 20)  # 20 MiB: large files used to be sampled
    (folder / "model.safetensors").write_bytes(bytes(weights))
    before = fingerprint.directory_fingerprint(folder)
    weights[12_345_678] = 1  # one byte, between any sampled blocks
    (folder / "model.safetensors").write_bytes(bytes(weights))
    assert fingerprint.directory_fingerprint(folder) != before


def test_hub_timeout_setting_is_checked(tmp_path):
    data = tmp_path / "d.json"
    _train_set(2).save(data)
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    for value in ("abc", "0"):
        result = subprocess.run([sys.executable, "-m", "embtune_core.cli", "evaluate", str(data), "--system",
                                 "model:some-org/some-model"], capture_output=True, text=True, timeout=60, check=False,
                                env={**env, "EMBTUNE_HUB_TIMEOUT": value})
        assert result.returncode == 3
        assert result.stderr.strip() == (f"embtune: error: EMBTUNE_HUB_TIMEOUT: must be a positive number of "
                                         f"seconds, got '{value}'")
