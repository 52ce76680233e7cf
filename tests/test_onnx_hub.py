"""Issue 19: ONNX export (agrees with torch to 1e-4 cosine; int8 close), the onnx backend of the encoder
(identity), and --push-to-hub up to the upload against a local fake hub on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import threading
import typing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from embtune_core.cli import main

pytest.importorskip("onnxruntime", reason="ONNX export needs the onnx extra")
pytest.importorskip("onnx", reason="ONNX export needs the onnx extra")

TEXTS = ["what was the revenue growth in 2021", "x", "Uber's drivers are independent contractors " * 30,
         "a risk factor about regulation and insurance"]


def _cos(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def exported(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "tiny-onnx"
    assert main(["export", tiny_model_dir, "--format", "onnx", "--quantize", "int8", "--out", str(out)]) == 0
    return out


def test_onnx_export_agrees_with_torch(tiny_model_dir, exported):
    from sentence_transformers import SentenceTransformer

    from embtune_core.encoders.onnx_export import load_onnx_model

    assert (exported / "onnx" / "model.onnx").is_file()
    assert (exported / "onnx" / "model_qint8_avx512_vnni.onnx").is_file()
    reference = SentenceTransformer(tiny_model_dir).encode(TEXTS, batch_size=2)  # padded batches too
    fp32 = load_onnx_model(exported, "fp32").encode(TEXTS, batch_size=2)
    assert _cos(reference, fp32).min() > 1 - 1e-4
    fused = load_onnx_model(exported, "O2").encode(TEXTS, batch_size=2)  # ONNX Runtime's fused graph
    assert (exported / "onnx" / "model_O2.onnx").is_file() and _cos(reference, fused).min() > 1 - 1e-4
    int8 = load_onnx_model(exported, "int8").encode(TEXTS, batch_size=2)
    assert _cos(reference, int8).min() > 0.9  # a random tiny model; the MiniLM figure is in bench/


@pytest.mark.slow
def test_onnx_export_of_minilm_agrees_with_torch(minilm_path, tmp_path):
    from sentence_transformers import SentenceTransformer

    from embtune_core.encoders.onnx_export import export_onnx, load_onnx_model

    export_onnx(minilm_path, tmp_path / "m")
    reference = SentenceTransformer(minilm_path).encode(TEXTS)
    for variant in ("fp32", "O2"):
        assert _cos(reference, load_onnx_model(tmp_path / "m", variant).encode(TEXTS)).min() > 1 - 1e-4


def test_sentence_transformers_onnx_backend_loads_the_export(exported):
    pytest.importorskip("optimum.onnxruntime", reason="SentenceTransformer(backend='onnx') needs optimum-onnx, "
                                                      "which requires transformers < 4.58 (not installable "
                                                      "beside sentence-transformers 6)")
    from sentence_transformers import SentenceTransformer

    from embtune_core.encoders.onnx_export import load_onnx_model

    model = SentenceTransformer(str(exported), backend="onnx")
    assert _cos(model.encode(TEXTS), load_onnx_model(exported, "fp32").encode(TEXTS)).min() > 1 - 1e-4


def test_onnx_backend_is_part_of_the_encoder_identity(exported):
    from embtune_core.encoders.encoding import encoder_from_spec

    torch_encoder = encoder_from_spec(f"st:{exported}")
    onnx_encoder = encoder_from_spec(f"st:{exported}", backend="onnx-fp32")
    int8_encoder = encoder_from_spec(f"st:{exported}", backend="onnx-int8")
    identities = {torch_encoder.identity, onnx_encoder.identity, int8_encoder.identity}
    assert len(identities) == 3
    assert "backend=onnx file=onnx/model.onnx" in onnx_encoder.identity
    assert _cos(torch_encoder.encode_documents(TEXTS), onnx_encoder.encode_documents(TEXTS)).min() > 1 - 1e-4
    assert encoder_from_spec(f"st:{exported}", backend="onnx").identity == int8_encoder.identity  # the default


def test_onnx_backend_refusals(tiny_model_dir, tmp_path, capsys):
    from embtune_core.encoders.encoding import encoder_from_spec
    from embtune_core.errors import InputError

    with pytest.raises(InputError, match="export it first"):
        encoder_from_spec(f"st:{tiny_model_dir}", backend="onnx")
    assert main(["export", tiny_model_dir, "--quantize", "int8", "--out", str(tmp_path / "a.zip")]) == 2
    assert "--quantize" in capsys.readouterr().err


def test_evaluate_with_onnx_backend(exported, tmp_path):
    from test_losses import make_qa

    data = tmp_path / "qa.json"
    make_qa(negatives=False).save(data)
    assert main(["evaluate", str(data), "--system", f"onnx=model:{exported}", "--backend", "onnx-fp32",
                 "--out", str(tmp_path / "ev")]) == 0
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert "backend=onnx" in report["systems"][0]["identity"]


# --- push to hub ------------------------------------------------------------------------------------
class FakeHub(BaseHTTPRequestHandler):
    """The few endpoints huggingface_hub's create_repo and create_commit call, recording what arrives."""

    log: typing.ClassVar[list] = []

    def log_message(self, *args):  # quiet
        pass

    def _reply(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.log.append((self.path, self.headers.get("authorization"), body))
        if self.path == "/api/repos/create":
            request = json.loads(body)
            self._reply(200, {"url": f"{self.server.url}/{request.get('organization')}/{request['name']}",
                              "name": request["name"]})
        elif self.path == "/api/validate-yaml":  # the hub checks the model card's metadata
            self._reply(200, {"errors": [], "warnings": []})
        elif "/preupload/" in self.path:
            files = json.loads(body)["files"]
            self._reply(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                        for f in files], "commitOid": "0" * 40})
        elif "/commit/" in self.path:
            repo = self.path.split("/api/models/", 1)[1].split("/commit/", 1)[0]
            self._reply(200, {"commitUrl": f"{self.server.url}/{repo}/commit/{'1' * 40}", "commitOid": "1" * 40,
                              "pullRequestUrl": None})
        else:
            self._reply(404, {"error": f"not faked: {self.path}"})

    def do_GET(self):
        self.log.append((self.path, self.headers.get("authorization"), b""))
        self._reply(404, {"error": f"not faked: {self.path}"})


@pytest.fixture
def fake_hub(monkeypatch):
    FakeHub.log = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_TOKEN", "hf_fake_token_for_tests")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # tests run offline; this server is local
    yield server
    server.shutdown()


def test_push_folder_creates_a_private_repo_and_commits_every_file(tiny_model_dir, fake_hub, tmp_path):
    import shutil

    from embtune_core.publishing.hub import push_folder

    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "README.md").unlink()
    result = push_folder(folder, "me/tiny", endpoint=fake_hub.url)
    paths = [entry[0] for entry in FakeHub.log]
    create = next(entry for entry in FakeHub.log if entry[0] == "/api/repos/create")
    assert json.loads(create[2])["visibility"] == "private"
    assert all(entry[1] == "Bearer hf_fake_token_for_tests" for entry in FakeHub.log)
    commit = next(entry for entry in FakeHub.log if "/commit/" in entry[0])
    lines = [json.loads(line) for line in commit[2].decode().splitlines() if line.strip()]
    uploaded = {line["value"]["path"]: base64.b64decode(line["value"]["content"])
                for line in lines if line.get("key") == "file"}
    assert "modules.json" in uploaded and "README.md" in uploaded  # a card is made when the folder has none
    assert b"embtune" in uploaded["README.md"]
    assert set(result["files"]) == set(uploaded)
    assert {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} | {"README.md"} == set(uploaded)
    assert result["private"] and result["commit"] == "1" * 40
    assert any("/preupload/" in p for p in paths)


def test_export_push_to_hub_cli_public_and_without_token(tiny_model_dir, fake_hub, monkeypatch, capsys):
    monkeypatch.setenv("HF_ENDPOINT", fake_hub.url)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", fake_hub.url)
    assert main(["export", tiny_model_dir, "--push-to-hub", "me/tiny", "--public"]) == 0
    create = next(entry for entry in FakeHub.log if entry[0] == "/api/repos/create")
    assert json.loads(create[2])["visibility"] == "public"
    assert "public" in capsys.readouterr().out
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setenv("HF_HOME", str(fake_hub.url.replace(":", "_")))  # no stored login there
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    assert main(["export", tiny_model_dir, "--push-to-hub", "me/tiny"]) == 3
    assert "HF_TOKEN" in capsys.readouterr().err


def test_the_report_names_each_systems_backend(exported, tmp_path):
    """report.json, report.md and report.html name how each local model ran (ONNX Runtime and its
    quantisation, or torch and its precision): the encoder identity held it, the report lines did not."""
    from test_losses import make_qa

    from embtune_core.reporting.report import backend_of

    data = tmp_path / "qa.json"
    make_qa(negatives=False).save(data)
    for backend, expected in (("onnx-int8", "ONNX Runtime, int8 quantised (onnx/model_qint8_avx512_vnni.onnx)"),
                              ("onnx-fp32", "ONNX Runtime, fp32 (onnx/model.onnx)"),
                              ("torch", "torch fp32")):
        out = tmp_path / backend
        assert main(["evaluate", str(data), "--system", f"ft=model:{exported}", "--backend", backend,
                     "--out", str(out), "--resamples", "10", "--permutations", "10"]) == 0
        report = json.loads((out / "report.json").read_text())
        system = report["systems"][0]
        assert system["backend"] == backend_of(system["identity"])
        assert system["backend"]["runtime"] == ("torch" if backend == "torch" else "onnx")
        md = (out / "report.md").read_text()
        assert f"(32 dims; {expected};" in md.split("## Systems", 1)[1], md
        assert f"- **system ft**: model:{exported}; 32 dims; {expected};" in md
        assert f"(32 dims; {expected};" in (out / "report.html").read_text()
    assert backend_of("sentence-transformers files=ab normalize=True precision=bf16") == {
        "runtime": "torch", "precision": "bf16"}
    assert backend_of("RRF(k=60) of BM25 and sentence-transformers files=ab normalize=True backend=onnx "
                      "file=onnx/model_O2.onnx")["graph"] == "fused (O2)"
    assert backend_of("bm25 k1=0.9") is None and backend_of("openai model=e base_url=x") is None


def test_onnx_backend_on_a_lora_folder_says_what_works(tiny_model_dir, tmp_path, capsys):
    """A LoRA adapter folder has no ONNX export and cannot get one (export refuses it): the refusal used to
    say "export it first". It now names the way that works, and following it works."""
    from test_losses import make_qa

    make_qa(negatives=False).save(tmp_path / "qa.json")
    common = ["train", "--train", str(tmp_path / "qa.json"), "--model", tiny_model_dir, "--max-steps", "1",
              "--batch-size", "4", "--lora"]
    assert main([*common, "--out", str(tmp_path / "lora")]) == 0
    evaluate = ["evaluate", str(tmp_path / "qa.json"), "--backend", "onnx", "--resamples", "10", "--permutations", "10"]
    assert main([*evaluate, "--system", f"model:{tmp_path / 'lora'}"]) == 3
    err = capsys.readouterr().err
    assert "is a LoRA adapter folder" in err and "embtune train --lora --merge" in err and "export it first" not in err
    assert main(["export", str(tmp_path / "lora"), "--format", "onnx", "--out", str(tmp_path / "x")]) == 3  # as said
    capsys.readouterr()
    assert main([*common, "--merge", "--out", str(tmp_path / "merged")]) == 0
    assert main(["export", str(tmp_path / "merged"), "--format", "onnx", "--out", str(tmp_path / "merged-onnx")]) == 0
    assert main([*evaluate, "--system", f"model:{tmp_path / 'merged-onnx'}"]) == 0, capsys.readouterr().err
