"""Kind 5 of issue 26: secrets are scrubbed where bytes leave the process, not field by field.

One full `embtune run` with a secret planted in every input that can hold one -- the API key (from the
environment), a password in the [generate] base_url and in the adapter's encoder URL (percent-encoded),
a Hugging Face token in the environment -- against a local server that echoes the credentials it
refuses (the Authorization value, and a Basic value decoded to user:password). The run fails twice on
those echoes (exit 5), then resumes to the end; every byte it printed (with -v: debug logs too) and
every file under the test's folder (run folder, embedding cache, exported model and zip) is grepped for
each form a secret travels in.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import zipfile
from urllib.parse import quote

import pytest
from corpora import topic_corpus
from openai_server import OpenAIServer

API_KEY = "sk-embtune-planted-api-key-0123456789"
PASSWORD = "url-pass!word-4567-planted"  # "!" travels percent-encoded in the URL
HF_TOKEN = "hf_PlantedHuggingFaceToken0123456789"
USER = "alice"


def _forms() -> dict[str, str]:
    pair = f"{USER}:{PASSWORD}"
    return {"api key": API_KEY, "password": PASSWORD, "password in the URL": quote(PASSWORD, safe=""),
            "user:password": pair, "Basic value": base64.b64encode(pair.encode()).decode(),
            "hf token": HF_TOKEN}


def _leaks(data: bytes) -> list[str]:
    return [name for name, form in _forms().items() if form.encode() in data]


def _config(path, corpus, url: str, model: str):
    path.write_text(f"""
[run]
name = "secret"
seed = 3
[data]
inputs = ["{corpus.as_posix()}"]
[chunk]
chunker = "recursive"
chunk_size = 200
chunk_overlap = 0
[generate]
generator = "openai"
base_url = "{url}"
model = "test-model"
api_key = "env:EMBTUNE_TEST_KEY"
questions_per_chunk = 1
concurrency = 1
initial_backoff = 0.05
max_retries = 1
[split]
val_fraction = 0.3
[train]
model = "{model}"
max_steps = 2
batch_size = 4
save_steps = 1
[adapter]
encoder = "openai:test-embed@{url}"
type = "linear"
epochs = 1
[evaluate]
k = [1, 5]
baselines = ["bm25", "hybrid"]
resamples = 20
permutations = 20
""")
    return path


@pytest.mark.slow
def test_no_planted_secret_is_printed_or_written_by_a_full_run(tmp_path, tiny_model_dir):
    corpus = topic_corpus(tmp_path / "corpus")
    env = {**os.environ, "EMBTUNE_TEST_KEY": API_KEY, "OPENAI_API_KEY": API_KEY, "HF_TOKEN": HF_TOKEN,
           "EMBTUNE_CACHE": str(tmp_path / "cache"), "EMBTUNE_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1"}
    echo = {"status": 400, "echo_credentials": True}
    with OpenAIServer(path_faults={"/chat/completions": [echo], "/embeddings": [echo]}) as server:
        host = server.base_url.split("//", 1)[1]
        url = f"http://{USER}:{quote(PASSWORD, safe='')}@{host}"
        config = _config(tmp_path / "run.toml", corpus, url, tiny_model_dir)
        outputs = []
        for _ in range(3):  # refused by the chat echo, then by the embeddings echo, then to the end
            result = subprocess.run([sys.executable, "-m", "embtune_core.cli", "-v", "run", str(config), "--run-dir",
                                     str(tmp_path / "run")], capture_output=True, env=env, timeout=900, check=False)
            outputs.append(result)
        # the server saw the credentials and quoted them back: there was something to leak
        seen = " ".join(str(headers) for _, _, headers in server.requests)
        assert API_KEY in seen or _forms()["Basic value"] in seen
    assert [r.returncode for r in outputs] == [5, 5, 0], [r.stderr.decode()[-2000:] for r in outputs]
    assert b"refused credentials ***" in outputs[0].stderr  # the echo reached the error line, scrubbed
    for i, result in enumerate(outputs):
        assert not _leaks(result.stdout + result.stderr), (i, _leaks(result.stdout + result.stderr))
    # every file but the user's own inputs (the documents, and the config that holds the URL)
    files = [p for p in tmp_path.rglob("*") if p.is_file() and not p.is_relative_to(corpus) and p != config]
    assert any(p.name == "model.zip" for p in files) and any(p.name == "report.html" for p in files)
    for path in files:
        data = path.read_bytes()
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as archive:
                data += b"".join(archive.read(name) for name in archive.namelist())
        assert not _leaks(data), f"{_leaks(data)} in {path}"
    # the planted password was in the config the run quotes: the report names the URL without it
    assert b"***:***@" in (tmp_path / "run" / "report.json").read_bytes() or \
        b"base_url" not in (tmp_path / "run" / "report.json").read_bytes()


def test_a_secret_typed_where_a_name_belongs_is_never_echoed(tmp_path):
    from test_state_files import small_dataset

    data = tmp_path / "d.json"
    small_dataset().save(data)
    env = {**os.environ, "HF_TOKEN": HF_TOKEN, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "embtune_core.cli", "evaluate", str(data), "--system",
                             f"model:{HF_TOKEN}"], capture_output=True, env=env, timeout=300, check=False)
    assert result.returncode != 0 and not _leaks(result.stdout + result.stderr)
    literal = tmp_path / "c.toml"
    literal.write_text(f'[generate]\ngenerator = "openai"\napi_key = "{API_KEY}"\n[data]\ninputs = ["."]\n')
    refused = subprocess.run([sys.executable, "-m", "embtune_core.cli", "run", str(literal)], capture_output=True,
                             env=env, timeout=300, check=False)
    assert refused.returncode == 3 and not _leaks(refused.stdout + refused.stderr)


def test_file_writes_scrub_secrets_split_across_pieces_and_blocks(tmp_path, monkeypatch):
    """The file writer scrubs whole lines in blocks: a secret json.dump or a caller writes in pieces, or that
    straddles a block boundary, is still masked; a secret put in the environment after earlier writes is too."""
    from embtune_core.runtime import atomic

    secret = "s3cr3t-" + "x" * 20
    monkeypatch.setenv("MY_API_KEY", secret)
    filler = "a" * 97 + "\n"
    with atomic.atomic_open(tmp_path / "pieces.txt") as handle:
        for _ in range(atomic.SCRUB_BLOCK // len(filler)):
            handle.write(filler)
        for piece in ("before ", secret[:5], secret[5:12], secret[12:], " after\n"):
            handle.write(piece)  # the block boundary falls inside the secret's line
        handle.write(secret)  # a last line with no newline: flushed at close
    text = (tmp_path / "pieces.txt").read_text()
    assert secret not in text and text.count("***") == 2 and text.endswith("***")

    atomic.write_json(tmp_path / "a.json", {"rows": [f"row {i}" for i in range(5000)], "k": secret})
    assert secret not in (tmp_path / "a.json").read_text()
    later = "l4ter-" + "y" * 20  # the environment changed after the writes above
    monkeypatch.setenv("OTHER_TOKEN", later)
    atomic.write_json(tmp_path / "b.json", {"k": later})
    assert later not in (tmp_path / "b.json").read_text()
