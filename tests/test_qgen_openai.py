"""The ``openai`` question generator over real HTTP against a local OpenAI-compatible server."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from openai_server import OpenAIServer

from embtune_core.data.documents import Chunk
from embtune_core.data.qgen import Journal, parse_questions
from embtune_core.errors import ConfigError, ServiceError
from embtune_core.plugins import get_registry
from embtune_plugins.qgen_openai import JOURNAL_NAME, OpenAIQuestionGenerator

TESTS = Path(__file__).resolve().parent
FAST = {"initial_backoff": 0.01, "max_backoff": 0.05, "timeout": 5.0, "seed": 0}


def make_chunks(n: int) -> list[Chunk]:
    return [Chunk(f"chunk-{i:03d}", f"Chunk {i} says Lyft revenue grew {i} percent in 2021.", {"source": "x.txt"})
            for i in range(n)]


def chunk_of(request_body: dict) -> str:
    """Which chunk a request was about, from the prompt text."""
    return request_body["messages"][-1]["content"].split("Chunk ", 1)[1].split(" ", 1)[0]


def generator(server: OpenAIServer, **options) -> OpenAIQuestionGenerator:
    return get_registry().create("question_generators", "openai", model="test-model", base_url=server.base_url,
                                 **{**FAST, **options})


# --- parsing ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("reply,expected", [
    ("Here are two questions:\n1. What is Lyft's revenue?\n2. Who are the drivers?",
     ["What is Lyft's revenue?", "Who are the drivers?"]),
    (("Sure! Here are 2 questions based on the context:\n\n- What was the net loss?\n- How many riders?\n\n"
     "I hope these help."), ["What was the net loss?", "How many riders?"]),
    ("**Question 1:** What risks does Lyft list?\n**Question 2:** What is Express Drive?",
     ["What risks does Lyft list?", "What is Express Drive?"]),
    ("Q1: What is X?\nQ2) What is Y?", ["What is X?", "What is Y?"]),
    ('1) "Quoted question one?"\n2) \u201cQuoted two?\u201d', ["Quoted question one?", "Quoted two?"]),
    ("<think>The user wants questions. Maybe: what?</think>\n1. Real question?", ["Real question?"]),
    ("Questions:\n\u2022 Bullet one?\n\u2022 Bullet two?\n\u2022 Bullet three?", ["Bullet one?", "Bullet two?"]),
    ("Describe the insurance requirements for drivers\nExplain the revenue model",
     ["Describe the insurance requirements for drivers", "Explain the revenue model"]),
    ("1. Same?\n2. same?\n3. Other?", ["Same?", "Other?"]),
    ("", []),
    # JSON that does not parse (a small model's invented nesting; cut off by max_tokens): no questions,
    # rather than its fence and brace lines (SmolLM2-135M's replies, bench/qgen_vs_ict.py)
    ('```json\n{\n  "queries": [\n    {\n      "query_1": {\n        "query_1": {', []),
    ('{"queries": ["What is Lyft\'s revenue?", "Lyft rid', []),
    ('[\n  "What is Lyft\'s revenue?",\n  "Lyft rid', []),
    ("```\nWhat is Lyft's revenue?\nWho drives?\n```", ["What is Lyft's revenue?", "Who drives?"]),
    ("1. What is Lyft's revenue?\n{\n2. Who drives?", ["What is Lyft's revenue?", "Who drives?"]),
])
def test_parse_questions(reply, expected):
    assert parse_questions(reply, 2) == expected


# --- happy path, concurrency, usage, key hygiene -------------------------------------------------------
def test_generates_n_questions_per_chunk_in_chunk_order(tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("EMBTUNE_TEST_KEY", "sk-very-secret-key-123")
    caplog.set_level(logging.DEBUG)
    chunks = make_chunks(5)
    with OpenAIServer() as server:
        gen = generator(server, api_key="env:EMBTUNE_TEST_KEY", concurrency=3)
        ds = gen.generate(chunks, work_dir=tmp_path)
        assert server.count("/chat/completions") == 5
        assert server.requests[0][2]["authorization"] == "Bearer sk-very-secret-key-123"
        prompt = server.requests[0][1]["messages"][0]["content"]
    assert "Write 2 different search queries" in prompt and any(c.text in prompt for c in chunks)
    assert "Teacher" not in prompt and '{"queries": [' in prompt
    assert len(ds.queries) == 10
    for i, chunk in enumerate(chunks):
        qids = [q for q, ids in ds.relevant_docs.items() if ids == [chunk.id]]
        assert [ds.queries[q] for q in qids] == [
            f"What is known about Chunk {i} says Lyft revenue grew?",
            f"Why is Chunk {i} says Lyft revenue grew important?"]
    assert list(ds.corpus) == [c.id for c in chunks]
    assert ds.corpus_metadata[chunks[0].id]["source"] == "x.txt"
    report = gen.last_report
    assert report["calls"] == 5 and report["questions"] == 10 and report["retries"] == 0
    assert report["prompt_tokens"] > 0 and report["total_tokens"] == report["prompt_tokens"] + report[
        "completion_tokens"]
    assert "tokens:" in caplog.text
    assert "sk-very-secret-key-123" not in caplog.text
    assert "sk-very-secret-key-123" not in (tmp_path / JOURNAL_NAME).read_text()


def test_concurrency_is_bounded_and_used():
    lock, state = threading.Lock(), {"now": 0, "max": 0}

    def slow_reply(body):
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.2)
        with lock:
            state["now"] -= 1
        return "1. One?\n2. Two?"

    with OpenAIServer(chat_reply=slow_reply) as server:
        started = time.perf_counter()
        ds = generator(server, concurrency=3).generate(make_chunks(9))
        elapsed = time.perf_counter() - started
    assert state["max"] == 3 and len(ds.queries) == 18
    assert elapsed < 9 * 0.2  # faster than one call at a time


def test_custom_prompt_and_question_count():
    with OpenAIServer(chat_reply=lambda body: "1. A?\n2. B?\n3. C?\n4. D?") as server:
        ds = generator(server, questions_per_chunk=3,
                       prompt="Write {num_questions_per_chunk} questions about:\n{context_str}").generate(
            make_chunks(1))
        content = server.requests[0][1]["messages"][0]["content"]
    assert content.startswith("Write 3 questions about:\nChunk 0 says")
    assert sorted(ds.queries.values()) == ["A?", "B?", "C?"]
    with pytest.raises(ConfigError, match="context_str"):
        OpenAIQuestionGenerator(base_url="http://127.0.0.1:9/v1", prompt="no placeholder")


def test_missing_api_key_for_openai_itself_is_a_config_error(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        OpenAIQuestionGenerator()
    with pytest.raises(ConfigError, match="may not be written in config"):
        OpenAIQuestionGenerator(api_key="sk-literal")


# --- faults ------------------------------------------------------------------------------------------
def test_429_waits_for_retry_after():
    faults = [{"status": 429, "headers": {"Retry-After": "1"}}]
    with OpenAIServer(faults=faults) as server:
        gen = generator(server)
        started = time.perf_counter()
        ds = gen.generate(make_chunks(1))
        elapsed = time.perf_counter() - started
        assert server.count() == 2
    assert elapsed >= 1.0 and len(ds.queries) == 2 and gen.last_report["retries"] == 1


def test_retry_after_ms_and_http_date_are_understood():
    """The OpenAI SDK, which retries transport faults for embtune, reads all three forms."""
    from email.utils import formatdate

    import httpx
    import openai

    parse = openai.OpenAI(api_key="x", base_url="http://127.0.0.1:9/v1")._parse_retry_after_header

    def _retry_after_seconds(headers: dict) -> float | None:
        return parse(httpx.Headers(headers))

    assert _retry_after_seconds({"retry-after-ms": "250"}) == 0.25
    assert _retry_after_seconds({"retry-after": "3"}) == 3.0
    assert 8 <= _retry_after_seconds({"retry-after": formatdate(time.time() + 10, usegmt=True)}) <= 10
    assert _retry_after_seconds({"retry-after": "soon"}) is None and _retry_after_seconds({}) is None


@pytest.mark.parametrize("fault", [
    {"status": 500}, {"status": 503}, {"body": "not json"}, {"body": '{"choices": []}'}, {"drop": True},
    {"delay": 1.5},
], ids=["500", "503", "malformed-json", "no-choices", "dropped-connection", "timeout"])
def test_each_fault_is_retried_and_the_run_completes(fault):
    chunks = make_chunks(3)
    with OpenAIServer(faults=[fault]) as server:
        gen = generator(server, concurrency=1, timeout=0.5)
        ds = gen.generate(chunks)
        assert server.count() == 4  # one failed request, retried once
    assert len(ds.queries) == 6 and gen.last_report["retries"] == 1


def test_exponential_backoff_grows_with_jitter():
    gen = OpenAIQuestionGenerator(base_url="http://127.0.0.1:9/v1", initial_backoff=1.0, max_backoff=8.0, seed=1)
    delays = [gen._delay(attempt, Exception()) for attempt in range(6)]
    for attempt, delay in enumerate(delays):
        cap = min(8.0, 2.0 ** attempt)
        assert cap / 2 <= delay <= cap
    assert len(set(delays)) == len(delays)  # jittered


def test_reply_without_questions_is_retried_then_recorded_as_failed(tmp_path):
    replies = iter(["I cannot help with that."] * 3)
    with OpenAIServer(chat_reply=lambda body: next(replies, "1. Fine?")) as server:
        gen = generator(server, concurrency=1, max_retries=2)
        ds = gen.generate(make_chunks(2), work_dir=tmp_path)
        assert server.count() == 4
    assert gen.last_report["failed_chunks"] == 1 and list(ds.queries.values()) == ["Fine?"]


def test_a_model_that_cannot_write_the_json_is_reported_in_one_line(tmp_path, caplog):
    """Every reply broken JSON: no silent zero (nor fence lines as questions): a warning line naming the
    failure and the plain-text way out, and the build stage's one-line ConfigError with the reason."""
    from embtune_core.data.build import generate_questions
    from embtune_core.settings import PluginTable

    broken = '```json\n{\n  "queries": [\n    {\n      "title": "Lyft",\n      "body": "Lyft is'
    with OpenAIServer(chat_reply=lambda body: broken) as server:
        options = {"model": "tiny", "base_url": server.base_url, "max_retries": 0, **FAST}
        with pytest.raises(ConfigError) as error, caplog.at_level(logging.WARNING):
            generate_questions(make_chunks(3), PluginTable("openai", options), work_dir=tmp_path)
    message = str(error.value)
    assert "no queries from 3 chunks" in message and "3 chunks without a usable reply" in message
    assert "malformed reply" in message and "\n" not in message
    summary = [r.getMessage() for r in caplog.records if "chunks got no usable questions" in r.getMessage()]
    assert len(summary) == 1 and summary[0].startswith("3 of 3") and "--prompt-file" in summary[0]


def test_persistent_5xx_is_a_service_error_and_completed_calls_stay_journaled(tmp_path):
    chunks = make_chunks(3)
    with OpenAIServer(faults=[None, {"status": 502}, {"status": 502}, {"status": 502}]) as server:
        with pytest.raises(ServiceError, match=r"failed after 3 attempts \(HTTP 502\)") as info:
            generator(server, concurrency=1, max_retries=2).generate(chunks, work_dir=tmp_path)
        assert info.value.exit_code == 5
        assert server.count() == 4
        # Resume: the first chunk is not asked again.
        ds = generator(server, concurrency=1).generate(chunks, work_dir=tmp_path)
        assert server.count() == 6
        asked_again = [chunk_of(body) for _, body, _ in server.requests[4:]]
    assert asked_again == ["1", "2"] and len(ds.queries) == 6


def test_401_is_not_retried_and_the_key_is_not_shown(monkeypatch):
    monkeypatch.setenv("EMBTUNE_TEST_KEY", "sk-secret-401")
    faults = [{"status": 401}]
    with OpenAIServer(faults=faults) as server:
        with pytest.raises(ServiceError) as info:
            generator(server, api_key="env:EMBTUNE_TEST_KEY").generate(make_chunks(1))
        assert server.count() == 1
    assert "HTTP 401" in str(info.value) and "sk-secret-401" not in str(info.value)


# --- journal: resume after interruption or crash ----------------------------------------------------------
def test_rerun_with_complete_journal_makes_no_calls(tmp_path):
    chunks = make_chunks(4)
    with OpenAIServer() as server:
        first = generator(server).generate(chunks, work_dir=tmp_path)
        gen = generator(server)
        second = gen.generate(chunks, work_dir=tmp_path)
        assert server.count() == 4
    assert second.queries == first.queries and gen.last_report["resumed"] == 4
    assert gen.last_report["total_tokens"] > 0  # usage totals include journaled calls
    # A different prompt is a different request: nothing stale is reused.
    with OpenAIServer() as server:
        generator(server, prompt="Other {context_str}").generate(chunks, work_dir=tmp_path)
        assert server.count() == 4


def test_torn_last_line_is_dropped_and_that_call_repeated(tmp_path):
    chunks = make_chunks(3)
    with OpenAIServer() as server:
        generator(server).generate(chunks, work_dir=tmp_path)
    journal = tmp_path / JOURNAL_NAME
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join(lines[:2]) + lines[2][:25])  # a crash in the middle of the 3rd write
    with OpenAIServer() as server:
        ds = generator(server).generate(chunks, work_dir=tmp_path)
        assert server.count() == 1
    assert len(ds.queries) == 6
    assert all(json.loads(line) for line in journal.read_bytes().splitlines())  # the journal is whole again


def test_second_run_on_the_same_journal_is_refused(tmp_path):
    from embtune_core.errors import InputError

    with Journal(tmp_path / JOURNAL_NAME), pytest.raises(InputError, match="another run is using this journal"):
        Journal(tmp_path / JOURNAL_NAME).open()


CRASH_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from test_qgen_openai import make_chunks
from embtune_plugins.qgen_openai import OpenAIQuestionGenerator
gen = OpenAIQuestionGenerator(model="test-model", base_url=sys.argv[1], concurrency=3, timeout=60)
gen.generate(make_chunks(12), work_dir=sys.argv[2])
"""


def test_crash_mid_run_then_resume_makes_no_duplicate_calls(tmp_path):
    """A run killed with SIGKILL mid-run; the re-run asks only for what was not completed."""
    release = threading.Event()
    answered: list[str] = []
    lock = threading.Lock()

    def reply(body):
        with lock:
            n = len(answered)
            if n >= 5:  # calls after the 5th hang until the process is killed
                hang = True
            else:
                hang = False
                answered.append(chunk_of(body))
        if hang:
            release.wait(30)
            return "1. Too late?"
        return "1. First?\n2. Second?"

    env = {**os.environ, "EMBTUNE_NO_PROGRESS": "1"}
    with OpenAIServer(chat_reply=reply) as server:
        proc = subprocess.Popen([sys.executable, "-c", CRASH_SCRIPT.format(tests=str(TESTS)), server.base_url,
                                 str(tmp_path)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        journal = tmp_path / JOURNAL_NAME
        deadline = time.time() + 60
        while time.time() < deadline:
            if journal.exists() and journal.read_bytes().count(b"\n") >= 5 and server.count() >= 8:
                break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        release.set()
        first_run_requests = server.count()
    assert first_run_requests == 8, proc.stdout.read().decode()[-2000:]  # 5 answered + 3 in flight
    journaled = [json.loads(line)["chunk_id"] for line in journal.read_bytes().splitlines()]
    assert len(journaled) == 5

    with OpenAIServer() as server:
        gen = OpenAIQuestionGenerator(model="test-model", base_url=server.base_url, concurrency=3)
        ds = gen.generate(make_chunks(12), work_dir=tmp_path)
        asked = sorted(chunk_of(body) for _, body, _ in server.requests)
        assert server.count() == 7
    completed_before = sorted(str(int(c.split("-")[1])) for c in journaled)
    assert not set(asked) & set(completed_before)  # no completed call repeated
    assert sorted(asked + completed_before, key=int) == [str(i) for i in range(12)]
    assert gen.last_report["resumed"] == 5 and gen.last_report["calls"] == 7
    assert len(ds.relevant_docs) == 5 * 2 + 7 * 2


def test_identical_chunks_cost_one_call():
    chunks = [Chunk("a", "Same boilerplate text.", {}), Chunk("b", "Same boilerplate text.", {}),
              Chunk("c", "Other text.", {})]
    with OpenAIServer(chat_reply=lambda body: "1. Q?") as server:
        ds = generator(server).generate(chunks)
        assert server.count() == 2
    assert sorted(ids[0] for ids in ds.relevant_docs.values()) == ["a", "b", "c"]
