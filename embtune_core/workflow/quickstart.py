"""The offline quickstart: a corpus every CPython ships, the packaged MiniLM, an LLM-free generator.

The corpus is the Python language reference as ``pydoc_data.topics`` carries it (79 topics, about
465 KB of real technical prose), written out as one ``.txt`` file per topic so the run goes
through the ordinary loaders like any user's documents.
"""

from __future__ import annotations

import re
from pathlib import Path

from embtune_core.encoders.models import DEFAULT_MODEL
from embtune_core.runtime import atomic

QUICKSTART_CONFIG = """\
# embtune quickstart: written by `embtune quickstart`; run it again with `embtune run {config}`.
[run]
name = "quickstart"
seed = 42

[data]
inputs = ["{corpus}"]

[chunk]
chunker = "sentence"
chunk_size = 128           # short chunks keep the demo fast on a laptop CPU
chunk_overlap = 16

[generate]
generator = "ict"          # LLM-free: a sentence is the query, the rest of its chunk the answer
questions_per_chunk = 1

[split]
# By source document: no topic is on both sides. Half the topics: the fine-tune's 10 steps use about
# 320 of the training rows, so the other half is worth more as validation (about 480 questions
# instead of 280: the verdict can tell a 0.015 NDCG@10 gain from noise).
val_fraction = 0.5

# Hard negatives help MNRL but cost one more embedding pass; add a [mine] table to try them:
# [mine]
# num_negatives = 1

[train]
model = "{model}"
# A third of the training topics held out (about 150 questions): they choose the fine-tune's checkpoint,
# the adapter's epoch, the index tuning's bound, the fusions and the recommended system; nothing trains on them.
dev_fraction = 0.3
loss = "mnrl"
matryoshka_dims = [384, 256, 128, 64]
epochs = 1
max_steps = 10             # about 320 pairs: the whole quickstart stays within 300 CPU-seconds
batch_size = 32
lr = 5e-5
# 32 short rows fit a laptop when embedded at once (3.3 GB peak); GradCache mini-batches, the default when a
# batch would not fit 1 GB, would cost about 15% more CPU here for memory the demo does not need.
loss_options = {{ mini_batch_size = 32 }}
max_seq_length = 128       # trained at 128 tokens for speed; the model is exported with its own 256
# Index-aware: like the adapter below, the fine-tune also learns from one inverse-cloze and one crop
# pseudo-query per indexed chunk (texts only), so the two compare on equal terms.
index_pseudo_queries = {{ ict = 1, crop = 1 }}

[adapter]
type = "two-layer"
epochs = 12
temperature = 0.1          # measured best for this corpus (3 of 4 adapter seeds; README)
# The index's own chunks are known: one inverse-cloze and one crop pseudo-query per chunk (train and
# val documents alike, texts only) teach the adapter the documents it will search.
index_pseudo_queries = {{ ict = 1, crop = 1 }}

[index_tuning]
# Document-side tuning (NUDGE-N): the stored chunk vectors move towards their questions and pseudo-queries,
# no model weights change; the bound is chosen on held-out training topics. Over the base model and the
# adapter (their vectors are cached); add "fine-tuned" to tune the fine-tune's too (about 80 CPU-seconds).
pseudo_queries = {{ ict = 1, crop = 1 }}
systems = ["base", "adapter"]

# [recommend] is on by default: every candidate (base, fine-tune, adapter, tuned index, BM25, tuned hybrids,
# sparse-dense vectors) is compared on held-out training topics, and the winner is written to run/deploy.

[evaluate]
dims = [384, 256, 128, 64]
# The validation chunks. corpus = "both" also searches the whole index (training + validation chunks,
# as deployed) in report-index.html, for about 25 CPU-seconds more.
corpus = "validation"
"""


def write_corpus(folder: Path) -> int:
    """Write each pydoc topic to ``folder/<topic>.txt``; returns the number of files."""
    from pydoc_data.topics import topics

    folder.mkdir(parents=True, exist_ok=True)
    for name, text in sorted(topics.items()):
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        atomic.write_text(folder / f"{safe}.txt", text)
    return len(topics)


def prepare(out: Path, *, model: str = DEFAULT_MODEL) -> Path:
    """Write the corpus and the config into ``out``; returns the config path."""
    out = out.resolve()
    corpus = out / "corpus"
    write_corpus(corpus)
    config = out / "quickstart.toml"
    atomic.write_text(config, QUICKSTART_CONFIG.format(corpus=corpus.as_posix(), model=model, config=config))
    return config
