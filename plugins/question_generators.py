"""Built-in question generators, and the helper that turns generated questions into a QA dataset.

Registered names (each module holds one technique):

* ``openai``: an OpenAI-compatible chat LLM (OpenAI, vLLM, Ollama, llama.cpp server) writes N
  questions per chunk -- :mod:`embtune_plugins.qgen_openai`.
* ``ict``: inverse cloze task, a sentence of the chunk is the query and the rest the positive;
  LLM-free, seeded -- :mod:`embtune_plugins.qgen_offline`.
* ``crop``: independent cropping, two random spans of a chunk form a pair; LLM-free, seeded --
  :mod:`embtune_plugins.qgen_offline`.
* ``local-llm``: a small local GGUF model with a few-shot prompt (optional extra ``local-llm``)
  -- :mod:`embtune_plugins.qgen_local_llm`.

Factories import their module on first use, so listing plugins stays cheap; the options each one
takes are declared here (:mod:`embtune_core.plugin_options`), so a ``[generate]`` table is checked
without importing them.

Example::

    generator = get_registry().create("question_generators", "ict", seed=0)
    dataset = generator.generate(chunks)          # QADataset in LlamaIndex's format
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from embtune_core import hookimpl


@dataclass
class InverseClozeOptions:
    seed: int = 0
    questions_per_chunk: int = 1  # sentences taken as queries from each chunk (at most)
    keep_probability: float = 0.1  # chance the query sentence stays in the positive
    min_words: int = 5
    max_words: int = 64


@dataclass
class CropOptions:
    seed: int = 0
    questions_per_chunk: int = 1
    min_ratio: float = 0.1  # each crop's length as a fraction of the chunk's words
    max_ratio: float = 0.5
    min_words: int = 8


@dataclass
class OpenAIGeneratorOptions:
    model: str = "gpt-4o-mini"
    base_url: str | None = None
    api_key: Any = None  # "env:NAME", or a key given in Python (never written anywhere)
    questions_per_chunk: int = 2
    prompt: str | None = None
    system_prompt: str | None = None
    concurrency: int = 8
    max_retries: int = 6
    timeout: float = 60.0
    initial_backoff: float = 1.0
    max_backoff: float = 60.0
    temperature: float | None = None
    max_tokens: int | None = None
    seed: int | None = None
    filter: bool = True


@dataclass
class LocalLLMOptions:
    model: str | None = None  # a .gguf file; default: the packaged SmolLM2
    backend: str = "auto"
    questions_per_chunk: int = 1
    max_new_tokens: int = 48
    seed: int = 0


def _openai(**options):
    from embtune_plugins.qgen_openai import OpenAIQuestionGenerator

    return OpenAIQuestionGenerator(**options)


def _ict(**options):
    from embtune_plugins.qgen_offline import InverseClozeGenerator

    return InverseClozeGenerator(**options)


def _crop(**options):
    from embtune_plugins.qgen_offline import CropGenerator

    return CropGenerator(**options)


def _local_llm(**options):
    from embtune_plugins.qgen_local_llm import LocalLLMQuestionGenerator

    return LocalLLMQuestionGenerator(**options)


@hookimpl
def register_question_generators(register):
    register("openai", _openai, options=OpenAIGeneratorOptions, description="OpenAI-compatible chat LLM (OpenAI, vLLM, Ollama, llama.cpp); "
                                            "concurrent, retrying, resumable")
    register("ict", _ict, options=InverseClozeOptions, description="inverse cloze task: a sentence is the query, the rest of the chunk "
                                      "the positive (LLM-free, seeded)")
    register("crop", _crop, options=CropOptions, description="independent cropping: two random spans of one chunk (LLM-free, seeded)")
    register("local-llm", _local_llm, options=LocalLLMOptions, description="small local GGUF model with a few-shot prompt "
                                                  "(extra: embtune[local-llm])")
