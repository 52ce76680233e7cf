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

Factories import their module on first use, so listing plugins stays cheap.

Example::

    generator = get_registry().create("question_generators", "ict", seed=0)
    dataset = generator.generate(chunks)          # QADataset in LlamaIndex's format
"""

from __future__ import annotations

from embtune_core import hookimpl


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
    register("openai", _openai, description="OpenAI-compatible chat LLM (OpenAI, vLLM, Ollama, llama.cpp); "
                                            "concurrent, retrying, resumable")
    register("ict", _ict, description="inverse cloze task: a sentence is the query, the rest of the chunk "
                                      "the positive (LLM-free, seeded)")
    register("crop", _crop, description="independent cropping: two random spans of one chunk (LLM-free, seeded)")
    register("local-llm", _local_llm, description="small local GGUF model with a few-shot prompt "
                                                  "(extra: embtune[local-llm])")
