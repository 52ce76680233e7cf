"""GPU measurements of embtune, in four timed parts, written to one JSON file (run it through run.sh).

Parts (each runs in its own process with its own time budget; a part that fails or runs out of
time records its error and the script goes on):

1. ``search``: exact top-k search with embtune's torch backend (``exact_search(backend="torch")``,
   on CUDA when torch sees a GPU) against an independent exact reference on the same vectors, numpy
   on the CPU (blocked float32 matmul, every entry tied with the k-th taken, ordered by score then
   position; 16 threads), and against embtune's FAISS backend too when a FAISS build is importable.
   No FAISS wheel travels to the GPU machine (faiss-cpu would not fit in the 64 MiB carry beside
   ``datasets``' pyarrow), so there the reference is numpy: "FAISS-CPU-equivalent" means the exact
   result FAISS's IndexFlatIP gives, by the same tie rule (tests/test_search.py checks FAISS itself).
   Vectors: random unit vectors rounded to multiples of 2^-8, so every float32 inner product is exact
   in any summation order (each partial sum is a multiple of 2^-16 below 2^17): ties are real and any
   difference between the two results is a bug, not rounding. Should the reference run short of the
   part's budget, the queries it did rank are compared and their number recorded. 1% of the corpus rows are exact
   duplicates and 1% of the queries are corpus rows, so tie groups occur. Full: 1,000,000 x 768
   corpus, 10,000 queries, k = 10. Records: time of each, whether ids and scores are identical,
   how many queries had a tie within their top k + 1.
2. ``matryoshka``: the workload of Philipp Schmid's "Fine-tune Embedding models for Retrieval
   Augmented Generation" guide (bge-base on 6.3k financial QA pairs; 3 min 26 s on an A10G) with a
   randomly initialised BERT-base (12 layers, 768 hidden, 30,522-token vocabulary: 109.5M
   parameters), sentence-transformers' own ``SentenceTransformerTrainer``,
   ``MatryoshkaLoss(MultipleNegativesRankingLoss, [768, 512, 256, 128, 64])``, 4 epochs, batch 32,
   gradient accumulation 16, lr 2e-5, cosine schedule, 10% warm-up, no-duplicates batches, fused
   AdamW, TF32 and bf16 where supported (the guide's settings, without its per-epoch evaluation).
   Data: 6,300 synthetic (question, passage) pairs of 8-30 and 30-200 words (assumed lengths of
   the guide's 10-K question/context pairs), one token per word from a locally built WordPiece
   vocabulary (no hub). Records: wall time of ``trainer.train()``, samples/s, peak GPU memory.
3. ``cli``: ``embtune train`` (bf16 on a GPU) and ``embtune evaluate --precision bf16`` through the
   real CLI on a tiny model built here; records exit codes, times and the device/precision each
   reports (train: its summary JSON; evaluate: its one log line per loaded model, and the search
   backend line).
4. ``ddp``: ``torchrun --nproc_per_node 2 -m embtune_core.cli train`` on the one GPU (NCCL refuses
   two ranks on one GPU, so it falls back to ``--nproc_per_node 1``: the same DDP code path);
   on CPU (smoke) two gloo processes. Records every attempt.

``--mode smoke`` runs all four on the CPU at tiny sizes (2,000 x 32 corpus, a 2-layer 32-wide
BERT, a few pairs, 1 epoch) in well under a minute; tests/test_gpu_script.py runs it.

Output JSON: ``{"mode", "host": {versions, device}, "budgets_s", "parts": {name: {"ok", "seconds",
...figures... | "error"}}, "total_s"}``, rewritten after each part so a killed run keeps what finished.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

PARTS = ("search", "matryoshka", "cli", "ddp")
# Seconds per part; the full run's sum (430 s) plus installs stays under 8 minutes.
BUDGETS = {"full": {"search": 120, "matryoshka": 150, "cli": 70, "ddp": 90},
           "smoke": {"search": 60, "matryoshka": 90, "cli": 90, "ddp": 120}}
SIZES = {
    "full": {"corpus": 1_000_000, "dim": 768, "queries": 10_000, "k": 10,
             "pairs": 6300, "epochs": 4, "batch": 32, "accumulation": 16, "bert": "base",
             "cli_steps": 30, "cli_batch": 32},
    "smoke": {"corpus": 2000, "dim": 32, "queries": 100, "k": 10,
              "pairs": 48, "epochs": 1, "batch": 8, "accumulation": 2, "bert": "tiny",
              "cli_steps": 2, "cli_batch": 4},
}
VOCAB_WORDS = 30_522 - 5  # BERT-base's vocabulary size, less the special tokens


# --- shared helpers ---------------------------------------------------------------------------------
def write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False))
    os.replace(tmp, path)


def words() -> list[str]:
    # Pronounceable, distinct, all lower-case: WordPiece keeps each as one token.
    syll = [c + v for c in "bcdfghjklmnprstvz" for v in "aeiou"]
    out = []
    for a in syll:
        for b in syll:
            out.append(a + b)
            if len(out) == VOCAB_WORDS:
                return out
    for a in syll:
        for b in syll:
            for c in syll:
                out.append(a + b + c)
                if len(out) == VOCAB_WORDS:
                    return out
    return out


def build_tokenizer(folder: Path):
    """A BERT WordPiece tokenizer over :func:`words`, built from a vocab file (no hub)."""
    from transformers import BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words()]
    (folder / "vocab.txt").write_text("\n".join(tokens) + "\n")
    # transformers 5 takes the vocabulary as `vocab`; 4 as `vocab_file` (and 5 ignores that name silently).
    tokenizer = BertTokenizerFast(vocab={t: i for i, t in enumerate(tokens)}, do_lower_case=True)
    if len(tokenizer) != len(tokens):
        tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    sample = " ".join(tokens[5:10])
    if len(tokenizer) != len(tokens) or tokenizer(sample)["input_ids"] != [2, 5, 6, 7, 8, 9, 3]:
        raise RuntimeError(f"the locally built tokenizer did not take its {len(tokens)}-token vocabulary")
    return tokenizer


def build_model(folder: Path, size: str):
    """A randomly initialised BERT sentence-transformer (mean pooling) saved in ``folder/st``."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    tokenizer = build_tokenizer(folder / "hf")
    if size == "base":
        config = BertConfig(vocab_size=len(tokenizer))  # bert-base: 12 x 768, 12 heads, 3072 FFN
        max_len = 512
    else:
        config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64, max_position_embeddings=256)
        max_len = 128
    BertModel(config).save_pretrained(folder / "hf")
    tokenizer.save_pretrained(folder / "hf")
    transformer = models.Transformer(str(folder / "hf"), max_seq_length=max_len)
    get_dim = getattr(transformer, "get_embedding_dimension", None) or transformer.get_word_embedding_dimension
    model = SentenceTransformer(modules=[transformer, models.Pooling(get_dim(), "mean"), models.Normalize()])
    model.save(str(folder / "st"))
    return model, folder / "st"


def pairs(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    vocab = words()
    questions = [" ".join(rng.choices(vocab, k=rng.randint(8, 30))) for _ in range(n)]
    passages = [" ".join(rng.choices(vocab, k=rng.randint(30, 200))) for _ in range(n)]
    return questions, passages


def cuda_info() -> dict:
    import torch

    info = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda,
                    bf16_supported=torch.cuda.is_bf16_supported(), gpus=torch.cuda.device_count())
    return info


# --- part 1: search -----------------------------------------------------------------------------------
def grid_unit_vectors(rng, n: int, d: int):
    import numpy as np

    out = np.empty((n, d), np.float32)
    for s in range(0, n, 131072):  # in slices: the float64 temporaries of a 1M x 768 draw would be 6 GB
        x = rng.standard_normal((min(131072, n - s), d), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[s:s + len(x)] = np.round(x * 256) / 256
    return out


def reference_search(queries, corpus, k: int, query_block: int = 512, corpus_block: int = 262_144,
                     stop_at: float = float("inf")):
    """Exact top-k by the tie rule, numpy only (independent of embtune_core.retrieval.search), threaded over query blocks.

    Returns ``(scores, ids, done)``: query blocks not started by ``stop_at`` (a ``time.time()``) are
    skipped, and ``done`` (n_queries,) bool says which rows were ranked.
    """
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    def one(q0: int):
        if time.time() > stop_at:
            return q0, None, None
        q = queries[q0:q0 + query_block]
        best_s = np.empty((len(q), 0), np.float32)
        best_i = np.empty((len(q), 0), np.int64)
        for c0 in range(0, len(corpus), corpus_block):
            s = q @ corpus[c0:c0 + corpus_block].T
            kk = min(k, s.shape[1])
            cut = s.shape[1] - kk
            kth = np.partition(s, cut, axis=1)[:, cut:cut + 1]  # the kk-th best score per row
            rows, cols = np.nonzero(s >= kth)  # every entry tied with it too
            cand_s, cand_i = s[rows, cols], cols.astype(np.int64) + c0
            order = np.lexsort((cand_i, -cand_s, rows))
            rows, cand_s, cand_i = rows[order], cand_s[order], cand_i[order]
            starts = np.searchsorted(rows, np.arange(len(q)))
            take = (starts[:, None] + np.arange(kk)[None, :])  # the first kk of each row's run
            all_s = np.concatenate([best_s, cand_s[take]], axis=1)
            all_i = np.concatenate([best_i, cand_i[take]], axis=1)
            order = np.lexsort((all_i, -all_s), axis=1)[:, :k]
            best_s, best_i = np.take_along_axis(all_s, order, 1), np.take_along_axis(all_i, order, 1)
        return q0, best_s, best_i

    scores = np.zeros((len(queries), k), np.float32)
    ids = np.zeros((len(queries), k), np.int64)
    done = np.zeros(len(queries), bool)
    threads = max(1, min(16, os.cpu_count() or 1))
    with ThreadPoolExecutor(threads) as pool:  # numpy's matmul and partition release the GIL
        for q0, s, i in pool.map(one, range(0, len(queries), query_block)):
            if s is not None:
                scores[q0:q0 + len(s)], ids[q0:q0 + len(s)], done[q0:q0 + len(s)] = s, i, True
    return scores, ids, done


def part_search(size: dict, work: Path, deadline: float = float("inf")) -> dict:
    import numpy as np
    import torch

    from embtune_core.retrieval.search import choose_backend, exact_search, faiss_module

    rng = np.random.default_rng(0)
    n, d, nq, k = size["corpus"], size["dim"], size["queries"], size["k"]
    t0 = time.perf_counter()
    corpus = grid_unit_vectors(rng, n, d)
    dup = max(1, n // 100)
    corpus[n - dup:] = corpus[:dup]  # exact duplicates at the far end: ties across corpus blocks
    queries = grid_unit_vectors(rng, nq, d)
    queries[: max(1, nq // 100)] = corpus[: max(1, nq // 100)]
    out = {"corpus": [n, d], "queries": nq, "k": k, "data_s": round(time.perf_counter() - t0, 2),
           "torch_backend": str(choose_backend("torch"))}
    exact_search(queries[:8], corpus[:4096], k, backend="torch")  # warm-up: CUDA context, cuBLAS handles
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    t_scores, t_ids = exact_search(queries, corpus, k, backend="torch")  # returns numpy: synchronised
    out["torch_s"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    # Leave 20 s of the part's budget for FAISS (when present) and the tie count: rows the reference
    # could not reach by then are left out of the comparison, and their number is recorded.
    r_scores, r_ids, done = reference_search(queries, corpus, k, stop_at=deadline - 20)
    out["reference"] = f"numpy exact search on the CPU ({min(16, os.cpu_count() or 1)} threads)"
    out["reference_s"] = round(time.perf_counter() - t0, 3)
    out["reference_queries_compared"] = int(done.sum())
    out["identical_ids"] = bool(done.any() and np.array_equal(t_ids[done], r_ids[done]))
    out["identical_scores"] = bool(done.any() and np.array_equal(t_scores[done], r_scores[done]))
    out["rows_differing"] = int((t_ids[done] != r_ids[done]).any(axis=1).sum())
    if faiss_module() is not None:  # not on the GPU machine: no FAISS wheel travels there
        t0 = time.perf_counter()
        f_scores, f_ids = exact_search(queries, corpus, k, backend="faiss")
        out["faiss"] = {"backend": str(choose_backend("faiss")), "seconds": round(time.perf_counter() - t0, 3),
                        "identical_ids": bool(np.array_equal(t_ids, f_ids)),
                        "identical_scores": bool(np.array_equal(t_scores, f_scores))}
    # Queries whose top k + 1 holds two equal scores: the tie rule decided their order (or their cut).
    top = exact_search(queries, corpus, k + 1, backend="torch")[0]
    out["queries_with_ties_in_top_k"] = int((np.diff(top, axis=1) == 0).any(axis=1).sum())
    out["ok"] = out["identical_ids"] and out["identical_scores"]  # a mismatch is a failure of this part
    if out["torch_s"] > 0 and done.all():
        out["speedup_vs_reference"] = round(out["reference_s"] / out["torch_s"], 1)
    return out


# --- part 2: Matryoshka guide workload ------------------------------------------------------------------
def part_matryoshka(size: dict, work: Path) -> dict:
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.losses import MatryoshkaLoss, MultipleNegativesRankingLoss

    try:
        from sentence_transformers.training_args import BatchSamplers
    except ImportError:  # sentence-transformers >= 6 moved it
        from sentence_transformers.base.sampler import BatchSamplers

    cuda = torch.cuda.is_available()
    model, _ = build_model(work / "bert", size["bert"])
    dims = [768, 512, 256, 128, 64] if size["bert"] == "base" else [32, 16]
    questions, passages = pairs(size["pairs"])
    data = Dataset.from_dict({"anchor": questions, "positive": passages})
    loss = MatryoshkaLoss(model, MultipleNegativesRankingLoss(model), matryoshka_dims=dims)
    bf16 = bool(cuda and torch.cuda.is_bf16_supported())
    args = SentenceTransformerTrainingArguments(
        output_dir=str(work / "out"), num_train_epochs=size["epochs"], per_device_train_batch_size=size["batch"],
        gradient_accumulation_steps=size["accumulation"], learning_rate=2e-5, warmup_steps=0.1,  # 10% (a ratio)
        lr_scheduler_type="cosine", optim="adamw_torch_fused" if cuda else "adamw_torch", tf32=cuda or None,
        bf16=bf16, batch_sampler=BatchSamplers.NO_DUPLICATES, save_strategy="no", logging_steps=50,
        report_to="none", disable_tqdm=True, dataloader_num_workers=0, seed=42,
    )
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=data, loss=loss)
    tokenizer = model.tokenizer
    lengths = {name: round(sum(len(tokenizer(t)["input_ids"]) for t in texts[:500]) / min(500, len(texts)), 1)
               for name, texts in (("question", questions), ("passage", passages))}
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    result = trainer.train()
    if cuda:
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    return {
        "model": f"random BertModel {size['bert']}", "parameters": sum(p.numel() for p in model.parameters()),
        "vocabulary": len(tokenizer), "mean_tokens": lengths,
        "pairs": size["pairs"], "epochs": size["epochs"], "batch": size["batch"],
        "gradient_accumulation": size["accumulation"], "matryoshka_dims": dims,
        "precision": "bf16" if bf16 else "fp32", "tf32": bool(cuda), "device": str(args.device),
        "optimizer_steps": trainer.state.global_step, "train_loss": result.training_loss,
        "wall_s": round(wall, 2), "samples_per_s": round(size["pairs"] * size["epochs"] / wall, 1),
        "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        "guide_a10g_s": 206, "target_s": 60,
    }


# --- parts 3 and 4: the real CLI --------------------------------------------------------------------------
def qa_dataset(path: Path, n: int) -> Path:
    questions, passages = pairs(n, seed=1)
    path.write_text(json.dumps({
        "queries": {f"q{i}": q for i, q in enumerate(questions)},
        "corpus": {f"d{i}": p for i, p in enumerate(passages)},
        "relevant_docs": {f"q{i}": [f"d{i}"] for i in range(n)}, "mode": "text"}))
    return path


def tiny_setup(work: Path) -> tuple[Path, Path]:
    """The tiny model and dataset parts 3 and 4 share (built once)."""
    model_dir, data = work / "tiny" / "st", work / "qa.json"
    if not (model_dir / "modules.json").exists():
        build_model(work / "tiny", "tiny")
    if not data.exists():
        qa_dataset(data, 64)
    return model_dir, data


def cli_env() -> dict:
    return dict(os.environ, EMBTUNE_NO_PROGRESS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1",
                TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONUNBUFFERED="1")


def run_cli(args: list[str], timeout: float, env: dict | None = None) -> dict:
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env or cli_env(),
                              check=False)
        rc, out = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc, out = "timeout", f"{exc.stdout or ''}{exc.stderr or ''}"
        out = out.decode() if isinstance(out, bytes) else out
    return {"rc": rc, "seconds": round(time.perf_counter() - t0, 2), "output": out}


def lines_with(text: str, needle: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if needle in line]


def tail(text: str, n: int = 1500) -> str:
    return text[-n:]


def part_cli(size: dict, work: Path, deadline: float) -> dict:
    import torch

    model_dir, data = tiny_setup(work)
    cuda = torch.cuda.is_available()
    precision = "bf16" if cuda and torch.cuda.is_bf16_supported() else ("fp16" if cuda else "fp32")
    out_dir = work / "cli-model"
    cli = [sys.executable, "-m", "embtune_core.cli"]
    train = run_cli([*cli, "train", "--train", str(data), "--model", str(model_dir), "--loss", "mnrl",
                     "--batch-size", str(size["cli_batch"]), "--max-steps", str(size["cli_steps"]),
                     "--precision", precision, "--checkpoint-dir", str(work / "cli-work"), "--out", str(out_dir)],
                    timeout=max(5, deadline - time.time()))
    result = {"train": {"rc": train["rc"], "seconds": train["seconds"], "asked_precision": precision}}
    summary_path = out_dir / "embtune_train.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        result["train"].update(device=summary.get("device"), precision=summary.get("precision"),
                               steps=summary.get("global_step"), world_size=summary.get("world_size"))
    result["train"]["report_line"] = lines_with(train["output"], "model written to")
    if train["rc"] != 0:
        result["train"]["output_tail"] = tail(train["output"])
    systems = ["--system", f"base={model_dir}"] + (["--system", f"tuned={out_dir}"] if summary_path.exists() else [])
    evaluate = run_cli([*cli, "evaluate", str(data), *systems, "--device", "cuda" if cuda else "cpu",
                        "--precision", precision, "--resamples", "50", "--permutations", "50"],
                       timeout=max(5, deadline - time.time()),
                       env=dict(cli_env(), EMBTUNE_CACHE=str(work / "cache")))  # fresh cache: models load
    result["evaluate"] = {"rc": evaluate["rc"], "seconds": evaluate["seconds"],
                          "device_precision_lines": lines_with(evaluate["output"], ": device "),
                          "search_line": lines_with(evaluate["output"], "exact search:")}
    if evaluate["rc"] != 0:
        result["evaluate"]["output_tail"] = tail(evaluate["output"])
    result["ok"] = train["rc"] == 0 and evaluate["rc"] == 0
    return result


def part_ddp(size: dict, work: Path, deadline: float) -> dict:
    import torch

    model_dir, data = tiny_setup(work)
    cuda = torch.cuda.is_available()
    precision = "bf16" if cuda and torch.cuda.is_bf16_supported() else ("fp16" if cuda else "fp32")
    attempts = []
    for nproc in (2, 1):
        tag = f"ddp{nproc}"
        run = run_cli([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                       "-m", "embtune_core.cli", "train", "--train", str(data), "--model", str(model_dir),
                       "--loss", "mnrl", "--batch-size", str(size["cli_batch"]), "--max-steps", str(size["cli_steps"]),
                       "--precision", precision, "--checkpoint-dir", str(work / f"{tag}-work"),
                       "--out", str(work / f"{tag}-model")],
                      timeout=max(5, deadline - time.time()),
                      env=dict(cli_env(), OMP_NUM_THREADS="1"))
        attempt = {"nproc_per_node": nproc, "rc": run["rc"], "seconds": run["seconds"]}
        ranks = sorted((json.loads(p.read_text()) for p in (work / f"{tag}-work" / "ranks").glob("rank-*.json")),
                       key=lambda r: r["rank"])
        attempt["ranks"] = ranks
        summary = work / f"{tag}-model" / "embtune_train.json"
        if summary.exists():
            s = json.loads(summary.read_text())
            attempt.update(world_size=s.get("world_size"), device=s.get("device"), precision=s.get("precision"))
        if run["rc"] != 0:
            attempt["output_tail"] = tail(run["output"])
        attempts.append(attempt)
        if run["rc"] == 0 or time.time() > deadline - 10:
            break
    return {"attempts": attempts, "ok": attempts[-1]["rc"] == 0,
            "nproc_per_node_used": attempts[-1]["nproc_per_node"] if attempts[-1]["rc"] == 0 else None}


# --- driver -------------------------------------------------------------------------------------------
def run_part(name: str, mode: str, work: Path, result_file: Path, budget: float) -> None:
    """Child process: one part, its figures (or its error) written to ``result_file``."""
    size = SIZES[mode]
    deadline = time.time() + budget - 5
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        if name == "search":
            figures = part_search(size, work / "search", deadline)
        elif name == "matryoshka":
            figures = part_matryoshka(size, work / "matryoshka")
        elif name == "cli":
            figures = part_cli(size, work, deadline)
        else:
            figures = part_ddp(size, work, deadline)
        figures.setdefault("ok", True)
    except Exception as exc:  # noqa: BLE001 -- recorded, not raised: the other parts still run
        import traceback

        figures = {"ok": False, "error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:1500]}",
                   "traceback_tail": traceback.format_exc()[-3000:]}
    figures["seconds"] = round(time.perf_counter() - t0, 2)
    write_json(result_file, figures)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=("full", "smoke"), default="full")
    parser.add_argument("--out", required=True, help="the JSON file to write")
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated subset of " + ",".join(PARTS))
    parser.add_argument("--part", help=argparse.SUPPRESS)  # internal: run one part in this process
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    import tempfile

    work = Path(args.work or tempfile.mkdtemp(prefix="embtune-gpu-"))
    if args.part:
        run_part(args.part, args.mode, work, Path(args.result), args.budget)
        return 0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    report: dict = {"mode": args.mode, "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "budgets_s": BUDGETS[args.mode], "sizes": SIZES[args.mode]}
    try:
        import sentence_transformers
        import transformers

        report["host"] = {**cuda_info(), "python": sys.version.split()[0], "cpus": os.cpu_count(),
                          "sentence_transformers": sentence_transformers.__version__,
                          "transformers": transformers.__version__}
    except Exception as exc:  # noqa: BLE001 -- a broken install is itself a figure worth recording
        report["host"] = {"error": f"{type(exc).__name__}: {exc}"}
    report["parts"] = {}
    write_json(out, report)
    for name in args.parts.split(","):
        budget = BUDGETS[args.mode][name]
        result_file = work / f"{name}.result.json"
        t0 = time.perf_counter()
        # Own session, so that a part over its budget is killed with the CLI processes it started.
        # The numpy reference runs 16 Python threads: one BLAS thread each, not 16 x 16 fighting for cores.
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1") if name == "search" else None
        proc = subprocess.Popen([sys.executable, __file__, "--mode", args.mode, "--out", str(out), "--work",
                                 str(work), "--part", name, "--result", str(result_file), "--budget", str(budget)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                                env=env)
        try:
            output, _ = proc.communicate(timeout=budget)
            if result_file.exists():
                figures = json.loads(result_file.read_text())
            else:
                figures = {"ok": False, "error": f"part process exited {proc.returncode}", "output_tail": tail(output)}
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
            figures = {"ok": False, "error": f"over its {budget} s budget; killed", "output_tail": tail(output or "")}
        figures["wall_s"] = round(time.perf_counter() - t0, 2)
        report["parts"][name] = figures
        report["total_s"] = round(time.perf_counter() - started, 2)
        write_json(out, report)
        print(f"{name}: {'ok' if figures.get('ok') else 'FAILED'} in {figures['wall_s']} s", flush=True)
    print(f"wrote {out}")
    return 0 if all(p.get("ok") for p in report["parts"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
