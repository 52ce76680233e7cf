"""Every command refuses bad input before any heavy work, as one stderr line and a documented exit code.

The line reads ``embtune: error: <file>: <field>: <problem>`` (``<command line>`` is the file of a
bad option); the codes are 2 for a bad command line, 3 for a bad input file or config, 4 for an
unknown plugin name. Each case runs the real CLI in a subprocess from a folder of small bad inputs.
No case may load a model or read a document: a case that does shows up as log lines before the
error, files written, and seconds instead of a fraction of one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CL = "<command line>"
MODEL = "model:fake-model"  # a folder that passes for a 32-wide sentence-transformers model until loaded
GOOD = {"queries": {"q1": "what is a?", "q2": "what is b?"},
        "corpus": {"c1": "a is a letter", "c2": "b is too"},
        "relevant_docs": {"q1": ["c1"], "q2": ["c2"]}}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bad-inputs")
    files = {
        "good.json": json.dumps(GOOD),
        "dangling.json": json.dumps({**GOOD, "relevant_docs": {"q1": ["c9"]}}),
        "empty.json": "",
        "doc.txt": "A short document. It has two sentences.\n",
        "afile": "not a folder\n",
        "broken.toml": "[mine\n",
        "mine-type.toml": '[mine]\nnum_negatives = "five"\n',
        "train-type.toml": '[train]\nepochs = "two"\n',
        "adapter-type.toml": '[adapter]\nepochs = "x"\n',
        "dataset-zero.toml": "[dataset]\nchunk_size = 0\n",
        "run-loss.toml": '[data]\ntrain = "good.json"\n[train]\nloss = "nosuch"\n',
        "run-adapter.toml": '[data]\ntrain = "good.json"\n[adapter]\nepochs = "x"\n',
        "fake-model/modules.json": json.dumps([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]),
        "fake-model/config.json": "{}",
        "fake-model/1_Pooling/config.json": json.dumps({"word_embedding_dimension": 32,
                                                        "pooling_mode_mean_tokens": True}),
        "lora-model/modules.json": json.dumps([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]),
        "lora-model/adapter_config.json": json.dumps({"peft_type": "LORA"}),
        "bad-corpus.jsonl": '{"id": "c1", "text": "a chunk"}\n{"id": "c2", "text": "  "}\n',
        "adapter-option.toml": '[adapter]\ntype = "two-layer"\nadapter_options = { hiden = 3 }\n',
        "run-loss-option.toml": '[data]\ntrain = "good.json"\n[train]\nloss_options = { foo = 1 }\n',
        "run-pseudo.toml": '[data]\ntrain = "good.json"\n[train]\nindex_pseudo_queries = { ictt = 1 }\n',
        "run-adapter-pseudo.toml": '[data]\ntrain = "good.json"\n[adapter]\nindex_pseudo_queries = { ictt = 1 }\n',
        "not-a-model/notes.txt": "a folder, but no modules.json or config.json\n",
        "not-an-adapter/notes.txt": "a folder, but no adapter_config.json\n",
        "not-ours/data.txt": "a folder an --out must not replace\n",
    }
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")
    return folder


CASES = [
    # id, exit code, file, field (None: no field), problem (a part of it), arguments
    ("cli-unknown-command", 2, CL, "COMMAND", "invalid choice: 'nosuch'", "nosuch"),
    ("cli-missing-argument", 2, CL, None, "required: path", "validate"),
    ("validate-empty-file", 3, "empty.json", None, "malformed JSON at line 1", "validate", "empty.json"),
    ("validate-folder-not-beir", 3, "not-ours/corpus.jsonl", None, "missing BEIR file",
     "validate", "not-ours"),
    ("validate-dangling-id", 3, "dangling.json", "relevant_docs.q1", "dangling relevant id 'c9'",
     "validate", "dangling.json"),
    ("mine-missing-dataset", 3, "missing.json", None, "no such file",
     "mine", "missing.json", "-o", "o.json", "--encoder", "fake-model"),
    ("mine-zero-negatives", 2, CL, "--num-negatives", "must be a positive integer, got '0'",
     "mine", "good.json", "-o", "o.json", "--num-negatives", "0"),
    ("mine-range", 2, CL, "--range-min", "need 0 <= range_min < range_max",
     "mine", "good.json", "-o", "o.json", "--encoder", "fake-model", "--range-min", "9", "--range-max", "5"),
    ("mine-unknown-miner", 4, CL, "--miner", "no negative_miners implementation named 'nosuch'",
     "mine", "good.json", "-o", "o.json", "--miner", "nosuch"),
    ("mine-unknown-encoder", 4, CL, "--encoder", "unknown encoder 'nosuch'",
     "mine", "good.json", "-o", "o.json", "--encoder", "nosuch:x"),
    ("mine-out-is-folder", 3, "not-ours", "--out", "is a folder", "mine", "good.json", "-o", "not-ours"),
    ("mine-malformed-toml", 3, "broken.toml", None, "invalid TOML",
     "mine", "good.json", "-o", "o.json", "--config", "broken.toml"),
    ("mine-config-type", 3, "mine-type.toml", "mine.num_negatives", "must be an integer",
     "mine", "good.json", "-o", "o.json", "--config", "mine-type.toml"),
    ("evaluate-empty-model", 2, CL, "--system", "no model after 'model:'",
     "evaluate", "good.json", "--system", "m=model:"),
    ("evaluate-missing-model", 3, "./missing-model", "--system", "no such model folder",
     "evaluate", "good.json", "--system", "model:./missing-model"),
    ("evaluate-missing-adapter", 3, "missing-adapter", "--system", "no such adapter folder",
     "evaluate", "good.json", "--system", f"{MODEL}+adapter:missing-adapter"),
    ("evaluate-not-an-adapter", 3, "not-an-adapter", "--system", "not an adapter folder",
     "evaluate", "good.json", "--system", f"{MODEL}+adapter:not-an-adapter"),
    ("evaluate-dims", 2, CL, "--dims", "comma-separated positive integers", "evaluate", "good.json",
     "--system", MODEL, "--dims", "256,abc"),
    ("evaluate-dims-wider-than-model", 2, CL, "--dims", "32-dimensional embeddings, narrower than every",
     "evaluate", "good.json", "--system", MODEL, "--dims", "64"),
    ("evaluate-k", 2, CL, "--k", "comma-separated positive integers", "evaluate", "good.json",
     "--system", MODEL, "--k", "0"),
    ("evaluate-same-name", 2, CL, "--system", "system name 'a' is used twice", "evaluate", "good.json",
     "--system", f"a={MODEL}", "--system", f"a={MODEL}"),
    ("evaluate-out-is-file", 3, "afile", "--out", "is a file", "evaluate", "good.json", "--system", MODEL,
     "--out", "afile"),
    ("evaluate-dangling-id", 3, "dangling.json", "relevant_docs.q1", "dangling relevant id",
     "evaluate", "dangling.json", "--system", MODEL),
    ("train-epochs-not-a-number", 2, CL, "--epochs", "must be a positive number, got 'two'",
     "train", "--train", "good.json", "--out", "o", "--epochs", "two"),
    ("train-negative-batch", 2, CL, "--batch-size", "got '-1'",
     "train", "--train", "good.json", "--out", "o", "--batch-size", "-1"),
    ("train-lr-nan", 2, CL, "--lr", "got 'nan'",
     "train", "--train", "good.json", "--out", "o", "--lr", "nan"),
    ("train-unknown-loss", 4, CL, "--loss", "no loss_strategies implementation named 'nosuch'",
     "train", "--train", "good.json", "--out", "o", "--loss", "nosuch"),
    ("train-out-under-file", 3, "afile/model", "--out", "afile is a file",
     "train", "--train", "good.json", "--out", "afile/model"),
    ("train-out-not-a-model", 3, "not-ours", "--out", "refusing to replace it",
     "train", "--train", "good.json", "--out", "not-ours"),
    ("train-model-not-a-model", 3, "not-a-model", "--model", "not a model folder",
     "train", "--train", "good.json", "--out", "o", "--model", "not-a-model"),
    ("train-config-type", 3, "train-type.toml", "train.epochs", "must be a positive number",
     "train", "--train", "good.json", "--out", "o", "--config", "train-type.toml"),
    ("train-merge-without-lora", 2, CL, "--merge", "applies to LoRA training only",  # it named --lora-merge
     "train", "--train", "good.json", "--out", "o", "--merge"),
    ("train-unknown-pseudo-query-generator", 4, CL, "--index-pseudo-queries",
     "no question_generators implementation named 'ictt'",
     "train", "--train", "good.json", "--out", "o", "--index-corpus", "good.json", "--index-pseudo-queries", "ictt=1"),
    ("train-bad-index-corpus", 3, "bad-corpus.jsonl", "line 2: text", "empty text",
     "train", "--train", "good.json", "--out", "o", "--index-corpus", "bad-corpus.jsonl"),
    ("train-empty-dataset", 3, "empty.json", None, "malformed JSON",
     "train", "--train", "empty.json", "--out", "o"),
    ("train-adapter-no-encoder", 2, CL, "--encoder", "give --encoder SPEC or --model NAME",
     "train-adapter", "--train", "good.json", "--out", "a"),
    ("train-adapter-missing-encoder", 3, "./missing-model", "--encoder", "no such model folder",
     "train-adapter", "--train", "good.json", "--out", "a", "--encoder", "st:./missing-model"),
    ("train-adapter-uncached-encoder", 3, "no-such-org/no-such-model", "--model", "Hugging Face cache",
     "train-adapter", "--train", "good.json", "--out", "a", "--model", "no-such-org/no-such-model"),
    ("train-adapter-unknown-encoder", 4, CL, "--encoder", "unknown encoder 'nosuch'",
     "train-adapter", "--train", "good.json", "--out", "a", "--encoder", "nosuch:x"),
    ("train-adapter-hidden", 2, CL, "--hidden", "must be a positive integer",
     "train-adapter", "--train", "good.json", "--out", "a", "--model", "fake-model", "--hidden", "0"),
    ("train-adapter-option-of-another-adapter", 2, CL, "--hidden", "the linear adapter does not take it",
     "train-adapter", "--train", "good.json", "--out", "a", "--model", "fake-model", "--hidden", "5"),
    ("train-adapter-infinite-temperature", 2, CL, "--temperature-grid", "must be comma-separated finite numbers > 0",
     "train-adapter", "--train", "good.json", "--out", "a", "--model", "fake-model", "--temperature-grid", "0.1,inf"),
    ("train-adapter-bad-activation", 2, CL, "--activation", "unknown activation 'foo'",
     "train-adapter", "--train", "good.json", "--out", "a", "--model", "fake-model", "--adapter", "two-layer",
     "--activation", "foo"),
    ("train-adapter-config-option-typo", 3, "adapter-option.toml", "adapter.adapter_options.hiden",
     "did you mean 'hidden'", "train-adapter", "--train", "good.json", "--out", "a", "--model", "fake-model",
     "--config", "adapter-option.toml"),
    ("train-adapter-bad-index-corpus", 3, "bad-corpus.jsonl", "line 2: text", "empty text",
     "train-adapter", "--train", "good.json", "--out", "a", "--model", "fake-model",
     "--index-corpus", "bad-corpus.jsonl"),
    ("train-adapter-out-is-file", 3, "afile", "--out", "is a file",
     "train-adapter", "--train", "good.json", "--out", "afile", "--model", "fake-model"),
    ("train-adapter-unknown-adapter", 4, CL, "--adapter", "no adapters implementation named 'nosuch'",
     "train-adapter", "--train", "good.json", "--out", "a", "--model", "fake-model", "--adapter", "nosuch"),
    ("train-adapter-config-type", 3, "adapter-type.toml", "adapter.epochs", "must be an integer",
     "train-adapter", "--train", "good.json", "--out", "a", "--model", "fake-model",
     "--config", "adapter-type.toml"),
    ("export-repo-id-without-owner", 2, CL, "--push-to-hub", "give the repository as OWNER/NAME",  # it exited 3
     "export", "fake-model", "--push-to-hub", "badname"),
    ("export-malformed-repo-id", 2, CL, "--push-to-hub", "not a hub repository id",
     "export", "fake-model", "--push-to-hub", "bad name/x"),
    ("evaluate-onnx-backend-on-lora-folder", 3, "lora-model", "backend", "embtune train --lora --merge",
     "evaluate", "good.json", "--system", "model:lora-model", "--backend", "onnx"),
    ("evaluate-bad-index-corpus", 3, "bad-corpus.jsonl", "line 2: text", "empty text",
     "evaluate", "good.json", "--system", MODEL, "--index", "bad-corpus.jsonl"),
    ("export-not-a-model", 3, "not-a-model", None, "no modules.json",
     "export", "not-a-model", "--out", "m.zip"),
    ("export-file-not-a-folder", 3, "afile", None, "is a file", "export", "afile", "--out", "m.zip"),
    ("build-dataset-missing-input", 3, "missing-docs", None, "no such file or folder",
     "build-dataset", "missing-docs", "-o", "d"),
    ("build-dataset-no-out", 2, CL, "--out", "no output folder", "build-dataset", "doc.txt"),
    ("build-dataset-out-is-file", 3, "afile", "--out", "is a file",
     "build-dataset", "doc.txt", "-o", "afile"),
    ("build-dataset-unknown-chunker", 4, CL, "--chunker", "no chunkers implementation named 'nosuch'",
     "build-dataset", "doc.txt", "-o", "d", "--chunker", "nosuch"),
    ("build-dataset-chunk-size", 2, CL, "--chunk-size", "must be a positive integer",
     "build-dataset", "doc.txt", "-o", "d", "--chunk-size", "0"),
    ("build-dataset-config-chunk-size", 3, "dataset-zero.toml", "dataset.chunk_size", "a positive integer",
     "build-dataset", "doc.txt", "-o", "d", "--chunker", "recursive", "--config", "dataset-zero.toml"),
    ("build-dataset-no-api-key", 2, CL, "--api-key-env", "no API key",
     "build-dataset", "doc.txt", "-o", "d", "--chunker", "recursive", "--generator", "openai"),
    ("run-missing-config", 3, "missing.toml", None, "no such file", "run", "missing.toml"),
    ("run-unknown-loss", 4, "run-loss.toml", "train.loss", "no loss_strategies implementation named 'nosuch'",
     "run", "run-loss.toml"),
    ("run-loss-option", 3, "run-loss-option.toml", "train.loss_options",  # it failed at the train stage
     "unexpected keyword argument 'foo'", "run", "run-loss-option.toml"),
    ("run-unknown-pseudo-query-generator", 4, "run-pseudo.toml", "train.index_pseudo_queries",
     "no question_generators implementation named 'ictt'", "run", "run-pseudo.toml"),
    ("run-adapter-unknown-pseudo-query-generator", 4, "run-adapter-pseudo.toml", "adapter.index_pseudo_queries",
     "no question_generators implementation named 'ictt'", "run", "run-adapter-pseudo.toml"),
    ("run-config-type", 3, "run-adapter.toml", "adapter.epochs", "must be an integer",
     "run", "run-adapter.toml"),
    ("run-dir-is-file", 3, "afile", "--run-dir", "is a file", "run", "run-loss.toml", "--run-dir", "afile"),
    ("quickstart-out-is-file", 3, "afile", "--out", "is a file", "quickstart", "--out", "afile"),
    ("plugins-unknown-family", 2, CL, "--family", "invalid choice: 'nosuch'",
     "plugins", "--family", "nosuch"),
]


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize(("code", "file", "field", "problem", "argv"),
                         [pytest.param(code, file, field, problem, argv, id=case_id)
                          for case_id, code, file, field, problem, *argv in CASES])
def test_bad_input_is_one_line_with_its_exit_code(inputs, code, file, field, problem, argv):
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    before = _listing(inputs)
    result = subprocess.run([sys.executable, "-m", "embtune_core.cli", *argv], cwd=inputs, env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr  # nothing logged before it: no model loaded, no document read
    assert result.returncode == code, result.stderr
    assert lines[0].startswith(f"embtune: error: {file}: " + (f"{field}: " if field else "")), lines[0]
    assert problem in lines[0]
    assert _listing(inputs) == before  # refused before writing anything
