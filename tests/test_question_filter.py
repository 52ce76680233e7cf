"""Generated questions that cannot stand on their own are dropped and counted (embtune_core.data.question_filter),
through the openai generator and a real OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from openai_server import OpenAIServer
from test_qgen_openai import generator, make_chunks

from embtune_core.data.qgen import parse_questions
from embtune_core.data.question_filter import (
    COPIES_THE_CHUNK,
    REFERS_TO_CONTEXT,
    copies_chunk,
    filter_questions,
    refers_to_context,
)

CHUNK = ("Lyft's revenue grew 36 percent in 2021 as ridership recovered from the pandemic, while "
         "insurance costs for drivers rose in California.")


@pytest.mark.parametrize("question", [
    "According to the passage, how much did revenue grow?",
    "What does the passage say about insurance?",
    "In this text, which state is named?",
    "Based on the given context, why did costs rise?",
    "What is mentioned above about ridership?",
    "What does the author think of Lyft?",
    "Which costs are discussed in this section?",
    "What does the text say?",
    "What does the document describe?",
])
def test_questions_pointing_at_an_unseen_text_are_dropped(question):
    assert refers_to_context(question)
    assert filter_questions(CHUNK, [question]) == ([], [(question, REFERS_TO_CONTEXT)])


@pytest.mark.parametrize("question", [
    "lyft revenue growth 2021",
    "How fast did Lyft's revenue grow in 2021?",
    "Why did driver insurance get more expensive in California?",
    "What is the text of Lyft's arbitration clause?",   # 'the text' of something named is fine
    "Which document must drivers carry?",
])
def test_standalone_questions_are_kept(question):
    assert not refers_to_context(question)
    assert filter_questions(CHUNK, [question]) == ([question], [])


def test_a_sentence_of_the_chunk_with_a_question_mark_is_a_copy():
    copy = "Lyft's revenue grew 36 percent in 2021 as ridership recovered from the pandemic?"
    assert copies_chunk(copy, CHUNK)
    assert filter_questions(CHUNK, [copy])[1] == [(copy, COPIES_THE_CHUNK)]
    assert not copies_chunk("How much did Lyft's revenue grow in 2021?", CHUNK)  # shares words, not a sentence
    assert not copies_chunk("Lyft revenue 2021", CHUNK)  # keyword queries are short by design


@given(st.lists(st.text(min_size=1, max_size=40), max_size=6))
def test_every_question_is_either_kept_or_dropped_once(questions):
    kept, dropped = filter_questions(CHUNK, questions)
    assert sorted(kept + [q for q, _ in dropped]) == sorted(questions)


@pytest.mark.parametrize("reply, expected", [
    ('{"queries": ["lyft revenue 2021", "How did Lyft grow?"]}', ["lyft revenue 2021", "How did Lyft grow?"]),
    ('```json\n{"questions": ["a b c", "a b c", "d?"]}\n```', ["a b c", "d?"]),
    ('Sure! ["one query", "two query"]', ["one query", "two query"]),
    ("<think>hmm {}</think>\n1. What is X?\n2. Why Y?", ["What is X?", "Why Y?"]),
])
def test_json_replies_keep_keyword_queries(reply, expected):
    assert parse_questions(reply, 3) == expected


def test_generator_drops_and_reports_what_cannot_stand_alone(tmp_path, caplog):
    def reply(body):
        chunk = body["messages"][-1]["content"].split("---------------------")[1].strip()
        return json.dumps({"queries": ["lyft revenue growth", "According to the passage, what grew?",
                                       chunk.rstrip(".") + "?"]})

    chunks = make_chunks(4)
    with OpenAIServer(chat_reply=reply) as server:
        gen = generator(server, questions_per_chunk=3)
        with caplog.at_level("WARNING"):
            dataset = gen.generate(chunks, work_dir=tmp_path)
        assert sorted(set(dataset.queries.values())) == ["lyft revenue growth"]
        assert gen.last_report["dropped_questions"] == {REFERS_TO_CONTEXT: 4, COPIES_THE_CHUNK: 4}
        assert "dropped 8 of 12 generated questions (4 referring to the context, 4 copying the chunk)" in caplog.text
        # The filter runs after the journal: switching it off re-reads the answers, no new call.
        calls = server.count("/chat/completions")
        unfiltered = generator(server, questions_per_chunk=3, filter=False).generate(chunks, work_dir=tmp_path)
        assert server.count("/chat/completions") == calls
    assert len(unfiltered.queries) == 12
