"""Question generation throughput: embtune's concurrent ``openai`` generator vs a sequential loop.

Both run in the same process against the same local OpenAI-compatible server (tests/openai_server.py,
run in a child process as a real server would be, so that it does not compete for this process's
GIL) that adds ``--latency`` seconds to every call, on the same chunks:

* baseline: one call at a time with the synchronous ``openai`` client, as LlamaIndex's
  ``generate_qa_embedding_pairs`` does (same prompt; replies parsed with embtune's parser so that
  the questions can be compared one to one);
* embtune: ``OpenAIQuestionGenerator`` with ``--concurrency`` requests in flight, journaling each
  call to disk (fsync) as in a real run.

It checks that both produce identical questions, and also counts the preamble lines ("Here are
two questions:") that LlamaIndex's own parser would have kept as questions.

Usage::

    python bench/bench_qgen.py                     # 64 chunks, 300 ms per call, concurrency 16
    python bench/bench_qgen.py --chunks 128 --latency 0.3 --concurrency 32

Writes bench/results/qgen.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("EMBTUNE_NO_PROGRESS", "1")

import openai
from openai_server import OpenAIServer

from embtune_core.data.documents import Chunk
from embtune_core.data.qgen import parse_questions
from embtune_core.runtime import atomic
from embtune_plugins.qgen_openai import OpenAIQuestionGenerator


def make_chunks(n: int) -> list[Chunk]:
    return [Chunk(f"chunk-{i:04d}", f"Section {i}: Lyft's revenue in quarter {i % 4 + 1} grew by {i} million "
                                    f"dollars as riders returned to cities number {i}.", {"source": f"doc{i % 8}"})
            for i in range(n)]


def llamaindex_parse(reply: str, n: int) -> list[str]:
    """LlamaIndex's generate_qa_embedding_pairs parsing: split lines, strip "1." prefixes, keep the first n."""
    lines = [re.sub(r"^\d+[\).\s]", "", line).strip() for line in reply.strip().split("\n")]
    return [line for line in lines if line][:n]


def sequential(base_url: str, generator: OpenAIQuestionGenerator, chunks: list[Chunk]) -> tuple[dict, list[str]]:
    client = openai.OpenAI(base_url=base_url, api_key="bench", max_retries=0, timeout=60)
    questions, replies = {}, []
    for chunk in chunks:
        response = client.chat.completions.create(**generator.request(chunk))
        reply = response.choices[0].message.content
        replies.append(reply)
        questions[chunk.id] = parse_questions(reply, generator.questions_per_chunk)
    client.close()
    return questions, replies


def serve(conn, latency: float) -> None:
    """Child process: run the server; answer "count" with the number of chat calls, stop on "stop"."""
    with OpenAIServer(latency=latency) as server:
        conn.send(server.base_url)
        while (message := conn.recv()) != "stop":
            conn.send(server.count("/chat/completions") if message == "count" else None)


class ServerProcess:
    def __init__(self, latency: float):
        import multiprocessing

        self.conn, child = multiprocessing.Pipe()
        self.process = multiprocessing.Process(target=serve, args=(child, latency), daemon=True)

    def __enter__(self):
        self.process.start()
        self.base_url = self.conn.recv()
        return self

    def count(self) -> int:
        self.conn.send("count")
        return self.conn.recv()

    def __exit__(self, *exc) -> None:
        self.conn.send("stop")
        self.process.join(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "qgen.json"))
    args = parser.parse_args()

    chunks = make_chunks(args.chunks)
    with ServerProcess(args.latency) as server:
        generator = OpenAIQuestionGenerator(model="bench-model", base_url=server.base_url,
                                            concurrency=args.concurrency, questions_per_chunk=2)
        started = time.perf_counter()
        baseline, replies = sequential(server.base_url, generator, chunks)
        sequential_s = time.perf_counter() - started
        sequential_calls = server.count()

        with tempfile.TemporaryDirectory() as work_dir:
            started = time.perf_counter()
            dataset = generator.generate(chunks, work_dir=Path(work_dir))
            concurrent_s = time.perf_counter() - started
        concurrent_calls = server.count() - sequential_calls

    by_chunk: dict[str, list[str]] = {}
    for qid, ids in dataset.relevant_docs.items():
        by_chunk.setdefault(ids[0], []).append(dataset.queries[qid])
    identical = all(by_chunk.get(c.id, []) == baseline[c.id] for c in chunks)
    preamble_kept = sum(1 for reply in replies for q in llamaindex_parse(reply, 2) if not q.endswith("?"))
    result = {
        "benchmark": "question generation against a local OpenAI-compatible server",
        "chunks": len(chunks), "latency_per_call_s": args.latency, "concurrency": args.concurrency,
        "questions_per_chunk": 2,
        "sequential": {"seconds": round(sequential_s, 3), "calls": sequential_calls,
                       "chunks_per_s": round(len(chunks) / sequential_s, 2)},
        "embtune_concurrent": {"seconds": round(concurrent_s, 3), "calls": concurrent_calls,
                               "chunks_per_s": round(len(chunks) / concurrent_s, 2),
                               "journal": "fsync per call"},
        "throughput_ratio": round(sequential_s / concurrent_s, 2),
        "target_ratio": 8.0,
        "identical_questions": identical,
        "questions": sum(len(v) for v in baseline.values()),
        "llamaindex_parser_kept_preamble_lines": preamble_kept,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_average_1min": round(os.getloadavg()[0], 2)},
    }
    atomic.write_json(args.out, result)
    print(json.dumps(result, indent=2))
    if not identical:
        sys.exit("questions differ between the sequential and the concurrent run")


if __name__ == "__main__":
    main()
