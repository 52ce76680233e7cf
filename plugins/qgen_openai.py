"""Questions from an OpenAI-compatible chat LLM: concurrent, retrying, resumable.

Inputs: chunks; a chat model behind any OpenAI-compatible endpoint (OpenAI, vLLM, Ollama,
llama.cpp server) given by ``model``, ``base_url`` and an API key taken from the environment
(``OPENAI_API_KEY`` by default, or ``api_key="env:NAME"``). Output: a QA dataset with
``questions_per_chunk`` questions per chunk, in chunk order.

* Prompt: embtune's own by default (:data:`DEFAULT_PROMPT`: search queries of mixed styles, keyword,
  question and paraphrase, that stand on their own, answered as JSON); override it with a template
  holding ``{context_str}`` and ``{num_questions_per_chunk}``.
* Filter: questions that refer to "the passage" or copy a sentence of the chunk are dropped and
  counted (:mod:`embtune_core.data.question_filter`; ``filter=False`` keeps them).
* Parsing survives numbered lists, bullets, "Q1:" labels, Markdown bold, quotes, ``<think>``
  blocks and preamble lines such as "Here are two questions:" (llama_index issues 16745, 10089).
* Up to ``concurrency`` requests in flight (asyncio); each is retried on 429, 408/409, 5xx,
  timeouts, dropped connections and malformed replies, with exponential backoff and jitter,
  waiting at least what a ``Retry-After`` header asks. Other errors (401, 400...) stop at once.
* Every completed call is appended to a JSONL journal in ``work_dir`` and fsynced, so a run that
  is interrupted or crashes resumes without repeating a completed call; a torn last line (a
  crash mid-write) is dropped. The journal key is the request itself (model, messages,
  settings), so changing the prompt or model never reuses stale answers.
* Token usage is totalled in ``last_report`` and logged at the end. The API key is never logged.

Example::

    generator = OpenAIQuestionGenerator(model="gpt-4o-mini", questions_per_chunk=2, concurrency=16)
    dataset = generator.generate(chunks, work_dir=Path("work"))
    generator.last_report["total_tokens"]
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import json
import logging
import random
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from embtune_core.config import secret
from embtune_core.data.dataset import QADataset
from embtune_core.data.documents import Chunk
from embtune_core.data.qgen import Journal, dataset_from_questions, parse_questions
from embtune_core.data.question_filter import count_reasons, filter_questions
from embtune_core.errors import ConfigError, ServiceError
from embtune_core.runtime.progress import progress

log = logging.getLogger(__name__)

# embtune's own prompt: queries as people type them into a search box (keywords, questions,
# paraphrases), standing on their own, as JSON. Any template can replace it (``prompt``/--prompt-file).
DEFAULT_PROMPT = """\
You are writing test queries for a search engine over a document collection.

Passage from the collection:
---------------------
{context_str}
---------------------

Write {num_questions_per_chunk} different search queries that this passage answers, as real users \
who have never seen it would type them. Vary the style across the queries: a short keyword query \
(2 to 6 words, no question mark), a natural question, and a question that says the key idea in \
other words than the passage uses.

Rules:
- Every query must make sense on its own. Never mention "the passage", "the text", "the context", \
"the document" or "the author".
- Name the specific subject (company, product, year, topic) instead of "it", "they" or "this".
- Do not copy a sentence of the passage.

Reply with JSON only, in this form: {"queries": ["first query", "second query"]}
"""

JOURNAL_NAME = "qgen-openai.journal.jsonl"
RETRY_STATUS = {408, 409, 429}

class _BadReply(Exception):
    """A 200 reply we cannot use (malformed JSON, no choices, no questions): worth retrying."""


# HTTP requests the SDK sent for the call running in this task (its own retries included).
_SENDS: contextvars.ContextVar[list[int]] = contextvars.ContextVar("embtune_qgen_sends")


async def _count_send(request: Any) -> None:
    sends = _SENDS.get(None)
    if sends is not None:
        sends[0] += 1


class OpenAIQuestionGenerator:
    """Generate questions per chunk with an OpenAI-compatible chat model.

    Args:
        model: chat model name on the server.
        base_url: endpoint such as ``http://localhost:8000/v1`` (vLLM), ``http://localhost:11434/v1``
            (Ollama); ``None`` means api.openai.com.
        api_key: ``"env:NAME"`` or ``None`` (reads ``OPENAI_API_KEY``); never a literal key.
        questions_per_chunk: N questions asked for, and kept, per chunk.
        prompt: template with ``{context_str}`` and ``{num_questions_per_chunk}`` (default: embtune's
            own, :data:`DEFAULT_PROMPT`).
        filter: drop questions that refer to "the passage" or copy the chunk
            (:mod:`embtune_core.data.question_filter`); counted in ``last_report["dropped_questions"]``.
        system_prompt: optional system message.
        concurrency: requests in flight at once.
        max_retries: retries per call after the first attempt. Transport faults (429, 408, 409, 5xx,
            timeouts, dropped connections) are retried by the OpenAI SDK, which honours Retry-After
            (up to two minutes) and backs off 0.5 s -> 8 s; a reply the SDK cannot judge (not JSON,
            no choices, no questions) is asked again here.
        timeout: seconds per request.
        initial_backoff / max_backoff: bounds in seconds of the (jittered) exponential backoff before
            an unusable reply is asked again.
        temperature / max_tokens: passed to the server when set.
    """

    def __init__(self, model: str = "gpt-4o-mini", base_url: str | None = None, api_key: Any = None,
                 questions_per_chunk: int = 2, prompt: str | None = None, system_prompt: str | None = None,
                 concurrency: int = 8, max_retries: int = 6, timeout: float = 60.0,
                 initial_backoff: float = 1.0, max_backoff: float = 60.0,
                 temperature: float | None = None, max_tokens: int | None = None, seed: int | None = None,
                 filter: bool = True):
        if questions_per_chunk < 1:
            raise ConfigError("must be at least 1", field="questions_per_chunk")
        if concurrency < 1:
            raise ConfigError("must be at least 1", field="concurrency")
        self.prompt = prompt or DEFAULT_PROMPT
        if "{context_str}" not in self.prompt:
            raise ConfigError("the prompt template must contain {context_str}", field="prompt")
        self.model, self.base_url = model, base_url
        self.api_key = secret(api_key, default_env="OPENAI_API_KEY", field="api_key")
        if self.api_key is None:
            if base_url is None:
                raise ConfigError("no API key: set OPENAI_API_KEY (or api_key = \"env:NAME\"), "
                                  "or give base_url for a local server", field="api_key")
            self.api_key = "EMPTY"  # local servers (vLLM, Ollama, llama.cpp) accept any key
        self.questions_per_chunk = questions_per_chunk
        self.system_prompt = system_prompt
        self.concurrency, self.max_retries, self.timeout = concurrency, max_retries, timeout
        self.initial_backoff, self.max_backoff = initial_backoff, max_backoff
        self.temperature, self.max_tokens = temperature, max_tokens
        self._jitter = random.Random(seed)
        if not isinstance(filter, bool):
            raise ConfigError("must be true or false", field="filter")
        self.filter = filter
        self.last_report: dict[str, Any] = {}

    # --- requests ------------------------------------------------------------------------------
    def messages(self, chunk: Chunk) -> list[dict[str, str]]:
        user = (self.prompt.replace("{context_str}", chunk.text)
                .replace("{num_questions_per_chunk}", str(self.questions_per_chunk)))
        messages = [{"role": "user", "content": user}]
        if self.system_prompt:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        return messages

    def request(self, chunk: Chunk) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": self.messages(chunk)}
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        return body

    def request_key(self, body: dict[str, Any]) -> str:
        """The journal key: the request itself (and N), so any change of prompt or model misses.

        The endpoint is not part of it: a restarted server on another port resumes the same run."""
        payload = json.dumps([body, self.questions_per_chunk], sort_keys=True)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def _scrub(self, message: str) -> str:
        from embtune_core.runtime.secrets_scrub import register, scrub

        if self.api_key and self.api_key != "EMPTY":
            register(self.api_key)
        return " ".join(scrub(message).split())[:300]

    def _delay(self, attempt: int, exc: BaseException) -> float:
        """Seconds before asking again after an unusable reply: "equal jitter" exponential backoff."""
        backoff = min(self.max_backoff, self.initial_backoff * (2 ** attempt))
        return backoff / 2 + self._jitter.uniform(0, backoff / 2)

    async def _call(self, client, body: dict[str, Any], chunk: Chunk, stats: dict[str, int]) -> dict[str, Any]:
        """One chunk's questions. The SDK retries transport faults (``stats["retries"]`` counts its
        extra requests too); a reply that cannot be used is asked again here, ``max_retries`` times."""
        import openai

        last_problem = ""
        sent = 0
        for attempt in range(self.max_retries + 1):
            sends = [0]
            _SENDS.set(sends)
            try:
                try:
                    response = await client.chat.completions.create(**body)
                finally:
                    sent += sends[0]
                    stats["retries"] += max(0, sends[0] - 1)
                try:
                    content = response.choices[0].message.content
                except (IndexError, AttributeError, TypeError):
                    raise _BadReply("reply has no choices") from None
                questions = parse_questions(content, self.questions_per_chunk)
                if not questions:
                    raise _BadReply(f"no questions found in the reply {str(content)[:80]!r}")
                usage = getattr(response, "usage", None)
                return {"key": self.request_key(body), "chunk_id": chunk.id, "questions": questions,
                        "reply": content,
                        "usage": {"prompt_tokens": int(getattr(usage, "prompt_tokens", 0) or 0),
                                  "completion_tokens": int(getattr(usage, "completion_tokens", 0) or 0)},
                        "attempts": sent}
            except openai.APIStatusError as exc:
                if exc.status_code not in RETRY_STATUS and exc.status_code < 500:
                    raise ServiceError(f"{self.base_url or 'OpenAI'} refused the request: HTTP {exc.status_code}: "
                                       f"{self._scrub(str(exc))}") from None
                last_problem = f"HTTP {exc.status_code}"
                break  # the SDK has retried it already
            except (openai.APITimeoutError, openai.APIConnectionError) as exc:
                last_problem = "timeout" if isinstance(exc, openai.APITimeoutError) else "connection error"
                break
            except (_BadReply, json.JSONDecodeError, openai.APIResponseValidationError) as exc:
                last_problem = f"malformed reply: {self._scrub(str(exc))}"
                failure = exc
            if attempt == self.max_retries:
                break
            stats["retries"] += 1
            delay = self._delay(attempt, failure)
            log.debug("chunk %s: %s; retry %d in %.2fs", chunk.id, last_problem, attempt + 1, delay)
            await asyncio.sleep(delay)
        if last_problem.startswith("malformed reply"):
            # The model, not the service, failed on this chunk: record it and carry on.
            log.warning("chunk %s: no usable questions after %d attempts (%s)", chunk.id, sent, last_problem)
            return {"key": self.request_key(body), "chunk_id": chunk.id, "questions": [],
                    "error": last_problem, "usage": {"prompt_tokens": 0, "completion_tokens": 0},
                    "attempts": sent}
        raise ServiceError(f"{self.base_url or 'OpenAI'}: chat completion failed after {sent} "
                           f"attempts ({last_problem}); completed calls are journaled, re-run to resume")

    async def _run(self, todo: list[tuple[Chunk, dict[str, Any]]], journal: Journal, bar,
                   stats: dict[str, int]) -> None:
        import openai

        # The SDK retries transport faults (honouring Retry-After); the hook counts what it sends.
        client = openai.AsyncOpenAI(base_url=self.base_url, api_key=self.api_key, max_retries=self.max_retries,
                                    timeout=self.timeout, http_client=openai.DefaultAsyncHttpxClient(
                                        timeout=self.timeout, event_hooks={"request": [_count_send]}))
        queue: asyncio.Queue = asyncio.Queue()
        for item in todo:
            queue.put_nowait(item)

        async def worker() -> None:
            while True:
                try:
                    chunk, body = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                entry = await self._call(client, body, chunk, stats)
                await journal.append_async(entry)
                stats["calls"] += 1
                bar.update(1)

        tasks = [asyncio.ensure_future(worker()) for _ in range(min(self.concurrency, len(todo)))]
        try:
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            for task in done:
                task.result()  # re-raise the first failure
        finally:
            for task in tasks:
                task.cancel()
            await client.close()

    # --- public --------------------------------------------------------------------------------
    def generate(self, chunks: Sequence[Chunk], *, work_dir: Path | None = None) -> QADataset:
        started = time.perf_counter()
        requests = [(chunk, self.request(chunk)) for chunk in chunks]
        journal_dir = Path(work_dir) if work_dir is not None else None
        with contextlib.ExitStack() as stack:
            if journal_dir is None:
                import tempfile

                journal_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="embtune-qgen-")))
            journal = stack.enter_context(Journal(journal_dir / JOURNAL_NAME))
            # One call per distinct request: identical chunks (repeated boilerplate) share the answer.
            todo, queued = [], set()
            for chunk, body in requests:
                key = self.request_key(body)
                if key not in journal.entries and key not in queued:
                    queued.add(key)
                    todo.append((chunk, body))
            resumed = len({self.request_key(b) for _, b in requests} & set(journal.entries))
            if resumed:
                log.info("resuming: %d of %d calls already in %s", resumed, len(requests), journal.path)
            stats = {"calls": 0, "retries": 0}
            bar = stack.enter_context(progress(total=len(todo) + resumed, desc="questions", unit="call"))
            bar.update(resumed)
            if todo:
                _run_coroutine(self._run(todo, journal, bar, stats))
            entries = {c.id: journal.entries[self.request_key(b)] for c, b in requests}
        questions = {cid: e["questions"] for cid, e in entries.items()}
        dropped: list[tuple[str, str]] = []
        if self.filter:
            # After the journal, not inside the call: changing the filter never pays for calls again.
            texts = {chunk.id: chunk.text for chunk in chunks}
            for cid, asked in list(questions.items()):
                questions[cid], gone = filter_questions(texts[cid], asked)
                dropped += gone
        prompt_tokens = sum(e["usage"]["prompt_tokens"] for e in entries.values())
        completion_tokens = sum(e["usage"]["completion_tokens"] for e in entries.values())
        self.last_report = {
            "chunks": len(requests), "calls": stats["calls"], "resumed": resumed, "retries": stats["retries"],
            "failed_chunks": sum(1 for e in entries.values() if not e["questions"]),
            "failure_examples": list(dict.fromkeys(e["error"] for e in entries.values() if e.get("error")))[:3],
            "questions": sum(len(q) for q in questions.values()),
            "dropped_questions": count_reasons(dropped), "dropped_examples": [q for q, _ in dropped[:5]],
            "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "seconds": round(time.perf_counter() - started, 3),
        }
        log.info("question generation: %(questions)d questions for %(chunks)d chunks, %(calls)d calls "
                 "(%(resumed)d resumed, %(retries)d retries, %(failed_chunks)d chunks without questions); "
                 "tokens: %(prompt_tokens)d prompt + %(completion_tokens)d completion = %(total_tokens)d",
                 self.last_report)
        if self.last_report["failed_chunks"]:
            log.warning("%d of %d chunks got no usable questions from %s (e.g. %s)%s",
                        self.last_report["failed_chunks"], len(requests), self.model,
                        (self.last_report["failure_examples"] or ["an empty reply"])[0],
                        "; a model too small for the JSON prompt? give a plain-text template (--prompt-file)"
                        if self.prompt == DEFAULT_PROMPT else "")
        if dropped:
            log.warning("question filter: dropped %d of %d generated questions (%s); e.g. %r", len(dropped),
                        len(dropped) + self.last_report["questions"],
                        ", ".join(f"{n} {r}" for r, n in self.last_report["dropped_questions"].items() if n),
                        dropped[0][0][:120])
        return dataset_from_questions(chunks, questions)


def _run_coroutine(coroutine) -> Any:
    """``asyncio.run``, also from inside a running event loop (Jupyter), via a helper thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = asyncio.run(coroutine)
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result.get("value")
