"""Every command with every kind of first module sentence-transformers 6 loads (issue 27, fault 4).

``StaticEmbedding`` (model2vec-style; a ``tokenizers.Tokenizer`` that is not callable, no token limit),
the same with its tokenizer's truncation, an asymmetric ``Router`` and ``WordEmbeddings``: each command
works, or refuses in one line (exit 2 or 3) naming the model and the option. Never exit 1.
"""

from __future__ import annotations

import json

import pytest

from embtune_core.cli import main

KINDS = ("static", "static-cut", "router", "word")
TOPICS = ["volcano", "glacier", "desert", "reef", "forest", "tundra", "canyon", "delta", "prairie", "marsh"]
LONG = " ".join(f"The volcano number {j} has feature volcano{j} that visitors remember." for j in range(40))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kinds-data")
    corpus = {f"{t}-{j}": f"The {t} number {j} has feature {t}{j} that visitors of the {t} remember."
              for t in TOPICS for j in range(3)}
    corpus["volcano-long"] = LONG  # over 128 tokens: cut by the models that have a limit
    meta = {c: {"source": c.split("-")[0]} for c in corpus}
    train = {"queries": {f"q-{c}": f"Which {c.split('-')[0]} has feature {c.replace('-', '')}?" for c in corpus},
             "corpus": corpus, "relevant_docs": {f"q-{c}": [c] for c in corpus}, "mode": "text",
             "corpus_metadata": meta}
    val = {**train, "queries": {f"v-{c}": f"Tell me about {c.replace('-', ' ')}" for c in corpus},
           "relevant_docs": {f"v-{c}": [c] for c in corpus}}
    (folder / "train.json").write_text(json.dumps(train))
    (folder / "val.json").write_text(json.dumps(val))
    docs = folder / "docs"
    docs.mkdir()
    for i in range(3):
        (docs / f"d{i}.txt").write_text(LONG)
    return folder


def _run(args, capsys) -> tuple[int, str]:
    code = main(args)
    err = capsys.readouterr().err
    assert code != 1 and "unexpected error" not in err, err[-2000:]
    if code:
        errors = [line for line in err.splitlines() if line.startswith("embtune: error:")]
        assert len(errors) == 1, err[-2000:]
        return code, errors[0]
    return code, ""


# (command, {kind: expected exit code}); the refusals' words are checked below.
def _commands(model: str, data, out):
    return {
        "evaluate": (["evaluate", str(data / "val.json"), "--system", f"m=model:{model}", "--out", str(out / "ev")],
                     dict.fromkeys(KINDS, 0)),
        "evaluate-windows": (["evaluate", str(data / "val.json"), "--system", f"m=model:{model}", "--document-windows",
                              "mean", "--out", str(out / "evw")],
                             {"static": 2, "static-cut": 0, "router": 0, "word": 2}),
        "evaluate-limit": (["evaluate", str(data / "val.json"), "--system", f"m=model:{model}", "--max-seq-length",
                            "8", "--out", str(out / "evl")], dict.fromkeys(KINDS, 0)),
        "mine": (["mine", str(data / "train.json"), "--encoder", model, "--out", str(out / "mined.json")],
                 dict.fromkeys(KINDS, 0)),
        "train-adapter": (["train-adapter", "--model", model, "--host-vectors", "--train", str(data / "train.json"),
                           "--epochs", "1", "--out", str(out / "adapter")], dict.fromkeys(KINDS, 0)),
        "train": (["train", "--train", str(data / "train.json"), "--model", model, "--max-steps", "2",  # 1: warm-up, lr 0
                   "--out", str(out / "model")], {"static": 0, "static-cut": 0, "router": 0, "word": 3}),
        "train-lora": (["train", "--train", str(data / "train.json"), "--model", model, "--max-steps", "1", "--lora",
                        "--out", str(out / "lora")], dict.fromkeys(KINDS, 3)),
        "train-partial": (["train", "--train", str(data / "train.json"), "--model", model, "--max-steps", "1",
                           "--train-last-layers", "1", "--out", str(out / "partial")], dict.fromkeys(KINDS, 3)),
        "export-onnx": (["export", model, "--format", "onnx", "--out", str(out / "onnx")], dict.fromkeys(KINDS, 3)),
        "build-dataset": (["build-dataset", str(data / "docs"), "-o", str(out / "built"), "--model", model],
                          {"static": 0, "static-cut": 0, "router": 0, "word": 2}),
    }


REFUSALS = {
    "evaluate-windows": "document_windows",
    "train": "no trainable weights",
    "train-lora": "needs a Transformer first module",
    "train-partial": "needs a Transformer first module",
    "export-onnx": "needs a Transformer first module",
    "build-dataset": "no tokenizer.json",
}


@pytest.mark.parametrize("kind", KINDS)
def test_every_command_works_or_refuses_in_one_line(module_kind_models, data, kind, tmp_path, capsys):
    model = module_kind_models[kind]
    for command, (args, expected) in _commands(model, data, tmp_path).items():
        code, error = _run(args, capsys)
        assert code == expected[kind], (command, error)
        if code:
            assert REFUSALS[command] in error, (command, error)
    if kind == "router":  # trained through both routes: queries and documents moved
        from sentence_transformers import SentenceTransformer

        before, after = SentenceTransformer(model), SentenceTransformer(str(tmp_path / "model"))
        for encode in ("encode_query", "encode_document"):
            assert not (getattr(before, encode)([LONG]) == getattr(after, encode)([LONG])).all(), encode
    if expected_trained := (kind != "word"):
        summary = json.loads((tmp_path / "model" / "embtune_train.json").read_text())
        assert expected_trained and summary["max_seq_length"] == {"static": None, "static-cut": 128,
                                                                  "router": None}[kind]


@pytest.mark.parametrize("kind, limit, over", [("static", None, None), ("static-cut", 128, 1), ("router", 128, 1),
                                               ("word", 1000000, 0)])
def test_token_limits_are_the_modules_own(module_kind_models, kind, limit, over):
    """A static model's limit is its tokenizer's truncation (none: texts read whole), a Router's the limit of
    the route that reads the kind; over-long texts are counted with that module's own tokenizer."""
    from embtune_core.encoders import token_limits
    from embtune_core.encoders.encoding import encoder_from_spec

    encoder = encoder_from_spec(module_kind_models[kind])
    record = token_limits.check_encoder(encoder, {"document": [LONG, "a short text"], "query": ["short"]})
    if limit is None:
        assert record is None  # nothing is cut, nothing to count
    else:
        assert record["limit"] == limit and record["document"] == {"over": over, "total": 2}
    if kind == "router":  # the query route is the static table: it reads queries whole
        assert encoder.count_over_limit([LONG], "query") == (0, None)


def test_max_seq_length_on_a_static_model_sets_its_tokenizer_truncation(module_kind_models):
    from embtune_core.encoders.encoding import encoder_from_spec

    whole = encoder_from_spec(module_kind_models["static"])
    cut = encoder_from_spec(module_kind_models["static"], max_seq_length=8)
    assert whole.token_limit is None and cut.token_limit == 8 and "max_seq_length=8" in cut.identity
    short = "The volcano number one"
    assert (whole.encode_documents([short]) == cut.encode_documents([short])).all()
    assert not (whole.encode_documents([LONG]) == cut.encode_documents([LONG])).all()
