"""``embtune run``: load -> chunk -> generate -> split -> mine -> train / adapter -> evaluate -> export.

Each stage reads the outputs of earlier stages and writes its own into a folder of the run
directory keyed by the hash of everything it depends on (:mod:`embtune_core.runtime.rundir`). Re-running
the same config skips every finished stage; a stage interrupted midway resumes from its journal
(question generation) or its newest checkpoint (training). The config is TOML::

    [run]        name, out ("runs"), seed
    [data]       inputs = ["docs/"] (files or folders), skip_bad; val_inputs = documents that form the
                 validation set (else [split] holds out whole documents); or train/val = existing datasets
                 (LlamaIndex JSON, pairs JSONL/CSV, or BEIR folders read with train_split/val_split)
    [chunk]      chunker ("sentence"), chunk_size, chunk_overlap, model, ... (chunker options)
    [generate]   generator ("ict"), questions_per_chunk, ... (generator options)
    [split]      val_fraction (0.2), split_by ("source")
    [mine]       enabled, miner ("embedding-rank"), encoder, ... (miner options)
    [train]      enabled, model, loss, epochs, batch_size, matryoshka_dims, ... (see `embtune train`);
                 dev_fraction (0.15): training documents held out (by source) to choose the checkpoint, so
                 the validation split stays unseen; index_pseudo_queries = true or { ict = 1, crop = 1 }:
                 index-aware fine-tuning on pseudo-queries from every chunk's text (index_training.py),
                 index_ratio, index_hard_negatives; document_windows ("off" | "best": long positives trained
                 as their best window, long_documents.py); final_fit (false): after the dev split chose the
                 epochs, retrain on every document for the exported zip (the report keeps the estimate)
    [adapter]    enabled, encoder, type ("linear"), epochs, ... (see `embtune train-adapter`);
                 index_pseudo_queries = true or { ict = 1, crop = 1 }: also train on LLM-free
                 pseudo-queries from every chunk of the index (transductive; see pseudo_queries.py);
                 matryoshka_dims defaults to [evaluate] dims (no evaluated width loses to the base)
    [evaluate]   dims, k, max_seq_length, batch_size, device, precision, confidence, resamples,
                 permutations (as `embtune evaluate`); baselines = ["bm25", "hybrid"] (BM25, and BM25 fused with the base model);
                 corpus = "validation" (default: the validation chunks), "index" (every chunk the index
                 holds: training and validation) or "both" (two reports)
    [export]     zip (true): also write the fine-tuned model as a zip archive

Each table is one typed settings model (:mod:`embtune_core.settings`), checked in full before the run
folder is created; ``embtune run --print-config`` shows them resolved. Each stage calls the library
function the matching command calls (:mod:`embtune_core.data.build`, :func:`embtune_core.finetuning.training.train`,
:func:`embtune_core.adapters.adapter_training.train_adapter`, :mod:`embtune_core.retrieval.systems`,
:func:`embtune_core.publishing.export.export_zip`); the pipeline adds only the stage's cache key and folder.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embtune_core.config import load_config, section
from embtune_core.data.dataset import QADataset, load_any
from embtune_core.data.documents import Chunk
from embtune_core.errors import ConfigError
from embtune_core.runtime import atomic
from embtune_core.runtime.rundir import RunDir, StageDir, inputs_hash

log = logging.getLogger(__name__)

# [train] keys the run fills in itself: its split files, its stage folders, always resuming, and its own
# recommendation over every technique (embtune train's --recommend is for a training run alone).
RUN_SETS_IN_TRAIN = ("train", "val", "out", "checkpoint_dir", "resume", "split", "val_split", "recommend")
# [train] keys beside TrainSettings': how the run chooses the checkpoint and what it exports.
TRAIN_RUN_KEYS = ("dev_fraction", "final_fit")
RUN_MARK = "<run>"  # stands for the run folder's path in stored outputs (a moved run folder reads its own)
# Tables that name a technique; a config naming none of them gets all three with their defaults.
TECHNIQUES = ("train", "adapter", "index_tuning")
# [index_tuning] keys a run config may set (the run supplies the corpus, questions, encoder and folders).
INDEX_TUNING_KEYS = ("pseudo_queries", "gammas", "tuner", "max_seq_length", "batch_size")
# [index_tuning] systems: whose document vectors the run tunes (each one a candidate of its own).
INDEX_TUNED_SYSTEMS = ("base", "adapter", "fine-tuned")
# [adapter] keys beside AdapterTrainingConfig's: the frozen encoder, LLM-free queries from the index, its name.
ADAPTER_RUN_KEYS = ("encoder", "index_pseudo_queries", "type", "final_fit")


@dataclass(frozen=True)
class TrainPlan:
    """The ``[train]`` table as the train stage runs it, built once by ``Pipeline._validate``."""

    settings: Any  # TrainSettings; the stage fills in its split files, folders and index corpora
    key_table: dict[str, Any]  # the table as written, less the run's own keys: the stage key (unchanged)
    dev_fraction: float  # training documents held out (by source) to choose the checkpoint
    final_fit: bool
    index_corpora: tuple[Path, ...]  # named by the config, resolved against it
    index_aware: bool  # pseudo-queries over the run's own chunks (no index corpus named)


@dataclass(frozen=True)
class AdapterPlan:
    """The ``[adapter]`` table as the adapter stage runs it, built once by ``Pipeline._validate``."""

    config: Any  # AdapterTrainingConfig
    key_table: dict[str, Any]  # the table as written, less the run's own keys: the stage key (unchanged)
    encoder: str  # spec of the frozen encoder (default: the base model)
    index_mix: dict[str, int] | None
    final_fit: bool


def table_keys(name: str) -> list[str]:
    """The keys a user may write in table ``name`` of a run config, as unknown-key errors list them
    (``[train]``: TrainSettings' fields less those the run sets itself, plus ``enabled``,
    ``dev_fraction`` and ``final_fit``). None for ``[chunk]``/``[generate]``/``[mine]``, whose keys
    are their plugin's options."""
    from embtune_core.adapters.adapter_training import AdapterTrainingConfig
    from embtune_core.encoders.encoder_options import TABLE_KEYS
    from embtune_core.finetuning.training import TrainSettings
    from embtune_core.settings import (
        DataSettings,
        EvaluateSettings,
        ExportSettings,
        RunSettings,
        SplitSettings,
        field_names,
    )

    if name == "train":
        keys = {*field_names(TrainSettings), *TRAIN_RUN_KEYS, "enabled"} - set(RUN_SETS_IN_TRAIN)
    elif name == "adapter":
        keys = {*field_names(AdapterTrainingConfig), *ADAPTER_RUN_KEYS, *TABLE_KEYS, "enabled"}
    elif name == "index_tuning":
        keys = {*INDEX_TUNING_KEYS, "enabled", "systems"}
    elif name == "recommend":
        from embtune_core.workflow.recommend import RecommendSettings

        keys = {*field_names(RecommendSettings), "enabled"}
    else:
        cls = {"run": RunSettings, "data": DataSettings, "split": SplitSettings, "evaluate": EvaluateSettings,
               "export": ExportSettings}[name]
        keys = {*field_names(cls), *(TABLE_KEYS if name == "evaluate" else ())}
    return sorted(keys)


SECTIONS = ("run", "data", "chunk", "generate", "split", "mine", "train", "adapter", "index_tuning", "recommend",
            "evaluate", "export")


@dataclass
class _Enabled:
    enabled: bool = True  # [mine], [train] and [adapter] may be switched off


def _enabled(table: dict[str, Any]) -> bool:
    return bool(table.pop("enabled", True))


def collect_val_files(paths: list[Path]) -> list[Path]:
    from embtune_core.data.loading import collect_files

    return collect_files(paths) if paths else []


def split_by_named_sources(dataset: QADataset, val_sources: set[str]) -> tuple[QADataset, QADataset]:
    """Validation = the chunks (and their queries) from ``val_sources``; training = the rest."""
    from embtune_core.data.splitting import without_repeated_questions

    def from_val(cid: str) -> bool:
        source = str((dataset.corpus_metadata.get(cid) or {}).get("source", ""))
        # a .jsonl line's source is "<file>:<line>"
        return source in val_sources or source.rsplit(":", 1)[0] in val_sources

    val_corpus = [c for c in dataset.corpus if from_val(c)]
    val_set = set(val_corpus)
    train_corpus = [c for c in dataset.corpus if c not in val_set]
    val_queries = [q for q, ids in dataset.relevant_docs.items() if ids and ids[0] in val_set]
    held = set(val_queries)
    train_queries = [q for q in dataset.queries if q not in held]
    val_queries = without_repeated_questions(dataset, train_queries, val_queries)
    return dataset.subset(train_queries, corpus_ids=train_corpus), dataset.subset(val_queries, corpus_ids=val_corpus)


class Pipeline:
    """One run of a config. ``run()`` returns the run summary (also in ``manifest.json``)."""

    def __init__(self, config: dict[str, Any], *, config_path: str | Path = "<config>",
                 run_dir: str | Path | None = None, echo: Callable[[str], None] = print):
        self.config_path = Path(config_path)
        unknown = sorted(set(config) - set(SECTIONS))
        if unknown:
            from embtune_core.settings import did_you_mean

            raise ConfigError(f"unknown section{did_you_mean(unknown[0], SECTIONS)}; known: {', '.join(SECTIONS)}",
                              path=config_path, field=unknown[0])
        self.config = config
        self.t = {name: dict(section(config, name, self.config_path)) for name in SECTIONS}
        self.written = {name: dict(table) for name, table in self.t.items()}  # as the user wrote it, for reports
        run = self.t["run"]
        base = self.config_path.parent if self.config_path.is_file() else Path.cwd()
        self.base = base
        # A model or encoder that names a folder is read from the config's folder, as [data]'s paths are, from
        # wherever the command runs (config_paths); their stage keys hold their content, never the path.
        from embtune_core.config_paths import resolve_encoder, resolve_model

        for name, key, resolve in (("train", "model", resolve_model), ("chunk", "model", resolve_model),
                                   ("mine", "encoder", resolve_encoder), ("adapter", "encoder", resolve_encoder)):
            if isinstance(self.t[name].get(key), str):
                self.t[name][key] = resolve(self.t[name][key], base)
        self.echo = echo
        self._holdouts: dict[tuple[str, float], tuple[QADataset, QADataset]] = {}
        self._validate()  # before anything is created on disk
        self._root_path = Path(run_dir or base / run.get("out", "runs") / run.get("name", self.config_path.stem))

    @functools.cached_property
    def root(self) -> RunDir:
        """The run folder, created on first use (``--print-config`` creates nothing)."""
        return RunDir(self._root_path)

    # --- config checks, before any heavy work ------------------------------------------------------
    def _path(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.base / path

    def _paths(self, key: str) -> list[Path]:
        raw = self.t["data"].get(key, [])
        return [self._path(p) for p in ([raw] if isinstance(raw, str) else raw)]

    def _validate(self) -> None:
        """Every table through its typed settings (:mod:`embtune_core.settings`): unknown keys, wrong
        types and bad values refused naming ``file: table.key``, before anything is created on disk."""
        from embtune_core.adapters.adapter_training import AdapterTrainingConfig
        from embtune_core.finetuning.training import TrainSettings
        from embtune_core.settings import (
            DataSettings,
            EvaluateSettings,
            ExportSettings,
            RunSettings,
            SplitSettings,
            check_types,
            from_table,
            one_element_lists,
            plugin_table,
            refuse_unknown,
        )

        path = self.config_path
        from embtune_core.encoders.encoder_options import TABLE_KEYS, pop_from_table

        # Prompts and the inference backend are options of the embedding model, not of the miner, the
        # adapter or the metrics: taken out of their tables here, checked, and given to the encoders.
        self.embed_options: dict[str, dict[str, Any]] = {}
        for name in ("mine", "adapter", "evaluate"):
            table = dict(self.t[name])
            self.embed_options[name] = pop_from_table(table, path, name)
            self.t[name] = table
        # A single value where a list belongs is a list of one (index_corpus = "x.json", dims = 256), in
        # the tables the stages read as well as in their settings.
        for name, cls in (("data", DataSettings), ("split", SplitSettings), ("evaluate", EvaluateSettings),
                          ("train", TrainSettings), ("adapter", AdapterTrainingConfig)):
            self.t[name] = one_element_lists(cls, self.t[name])
        self.settings: dict[str, Any] = {"run": from_table(RunSettings, self.t["run"], path=path),
                                         "data": from_table(DataSettings, self.t["data"], path=path)}
        self.seed = self.settings["run"].seed
        data = self.t["data"]
        has_inputs = "inputs" in data
        paths = ([*self._paths("inputs"), *self._paths("val_inputs")] if has_inputs
                 else [self._path(data[k]) for k in ("train", "val") if k in data])
        for value in paths:
            if not value.exists():
                raise ConfigError(f"no such file or folder: {value}", path=self.config_path,
                                  field="data.inputs" if has_inputs else "data.train")
        self.settings["split"] = from_table(SplitSettings, self.t["split"], path=path)
        if self.settings["split"].val_fraction <= 0 and not data.get("val_inputs") and "val" not in data:
            raise ConfigError("the run evaluates on a validation split: must be above 0 (or give val_inputs)",
                              path=path, field="split.val_fraction")
        # The encoder options were taken out above; a typo of one still gets its "did you mean".
        self.settings["evaluate"] = from_table(EvaluateSettings, self.t["evaluate"], path=path,
                                               also_known=TABLE_KEYS)
        self.settings["export"] = from_table(ExportSettings, self.t["export"], path=path)
        for name in ("chunk", "generate", "mine"):
            options = dict(self.t[name])
            if name == "generate":
                options.setdefault("seed", self.seed)
            self.settings[name] = plugin_table(name, options, path=path,
                                               also_known=TABLE_KEYS if name == "mine" else ())
        # A config that names no technique ([train], [adapter], [index_tuning]) gets every one with its
        # defaults, and the recommendation chooses among them; a config that names one gets what it names.
        self.default_techniques = not any(self.t[name] for name in TECHNIQUES)
        self.plans: dict[str, Any] = {}
        for name in ("train", "adapter"):
            table = dict(self.t[name])
            check_types(_Enabled, {k: v for k, v in table.items() if k == "enabled"}, path=path, table=name)
            enabled = bool(table.pop("enabled", True)) and (bool(self.t[name]) or self.default_techniques)
            if name == "train":
                taken = sorted(set(table) & set(RUN_SETS_IN_TRAIN))
                if taken:
                    raise ConfigError("set by the run itself (its split and stage folders); remove it", path=path,
                                      field=f"train.{taken[0]}")
                refuse_unknown(table, table_keys("train"), path=path, table="train")
                corpora = table.get("index_corpus")
                if isinstance(corpora, list) and all(isinstance(p, str) for p in corpora):
                    for corpus in corpora:  # relative to the config, as [data]'s paths are
                        if not self._path(corpus).exists():
                            raise ConfigError(f"no such file or folder: {self._path(corpus)}", path=path,
                                              field="train.index_corpus")
                    table["index_corpus"] = [str(self._path(p)) for p in corpora]
                self._train_run_keys = {
                    "dev_fraction": _dev_fraction(table.pop("dev_fraction", DEV_FRACTION), path),
                    "final_fit": _flag(table.pop("final_fit", False), path, "train.final_fit")}
                index = {"index_corpus": ["-"]} if table.get("index_pseudo_queries") not in (None, False) else {}
                settings = TrainSettings.from_mapping({"seed": self.seed, **index, **table, "train": "-", "out": "-"},
                                                      path)
                if enabled:
                    _check_loss(settings, path)
                written = {k: v for k, v in self.t["train"].items() if k not in ("enabled", *TRAIN_RUN_KEYS)}
                self.base_model = settings.model  # the model every stage starts from, [train] or not
                self.plans["train"] = TrainPlan(
                    settings, {**written, "seed": written.get("seed", self.seed)},
                    self._train_run_keys["dev_fraction"], self._train_run_keys["final_fit"],
                    tuple(Path(p) for p in table.get("index_corpus") or ()),
                    table.get("index_pseudo_queries") not in (None, False) and "index_corpus" not in table)
            else:
                refuse_unknown(table, table_keys("adapter"), path=path, table="adapter")
                encoder = table.pop("encoder", None)
                index_mix = _index_mix(table.pop("index_pseudo_queries", False), path)
                self._adapter_run_keys = {
                    "final_fit": _flag(table.pop("final_fit", False), path, "adapter.final_fit")}
                table = {"seed": self.seed, **_with_evaluated_dims(table, self.t["evaluate"])}
                settings = AdapterTrainingConfig.from_mapping(table, path)
                self.plans["adapter"] = AdapterPlan(settings, table, str(self._base_model() if encoder is None
                                                                         else encoder), index_mix,
                                                    self._adapter_run_keys["final_fit"])
            self.settings[name] = settings if enabled else None
        self.settings["index_tuning"] = self._index_tuning_settings(path)
        from embtune_core.workflow.recommend import RecommendSettings

        recommend = dict(self.t["recommend"])
        check_types(_Enabled, {k: v for k, v in recommend.items() if k == "enabled"}, path=path, table="recommend")
        enabled = bool(recommend.pop("enabled", True))
        self.settings["recommend"] = from_table(RecommendSettings, recommend, path=path) if enabled else None

    def _index_tuning_settings(self, path: Path):
        """``[index_tuning]``: NUDGE-N over the run's index; the run sets the corpus, questions and encoder."""
        from embtune_core.retrieval.tune_index import IndexTuningSettings
        from embtune_core.settings import check_types, from_table, refuse_unknown

        table = dict(self.t["index_tuning"])
        check_types(_Enabled, {k: v for k, v in table.items() if k == "enabled"}, path=path, table="index_tuning")
        enabled = bool(table.pop("enabled", True)) and (bool(self.t["index_tuning"]) or self.default_techniques)
        refuse_unknown(table, [*INDEX_TUNING_KEYS, "systems"], path=path, table="index_tuning")
        systems = table.pop("systems", list(INDEX_TUNED_SYSTEMS))
        if not (isinstance(systems, list) and systems and set(systems) <= set(INDEX_TUNED_SYSTEMS)):
            raise ConfigError(f"must be a non-empty list of {', '.join(INDEX_TUNED_SYSTEMS)} (whose vectors to tune)",
                              path=path, field="index_tuning.systems")
        self._index_tuned_systems = list(systems)
        if "tuner" in table:
            from embtune_core.errors import EmbtuneError
            from embtune_core.plugins import get_registry

            try:
                get_registry().get("index_tuners", str(table["tuner"]))
            except EmbtuneError as exc:
                raise type(exc)(exc.problem, path=path, field="index_tuning.tuner") from None
        settings = from_table(IndexTuningSettings, {"index_corpus": ["<the run's chunks>"], **table}, path=path)
        return settings if enabled else None

    def resolved(self) -> dict[str, Any]:
        """Every table as the stages will read it, defaults filled in (``embtune run --print-config``);
        a disabled or absent ``[train]``/``[adapter]`` is ``{"enabled": false}``."""
        from embtune_core.settings import as_table

        out: dict[str, Any] = {}
        for name in SECTIONS:
            value = self.settings.get(name)
            if value is None:
                out[name] = {"enabled": False}
            elif name in ("chunk", "generate", "mine"):
                key = {"chunk": "chunker", "generate": "generator", "mine": "miner"}[name]
                out[name] = {key: value.name, **value.options}
                if name == "chunk" and value.name == "sentence":
                    out[name].setdefault("model", self._base_model())
                if name == "mine":
                    out[name].update(enabled=value.enabled and bool(self.t["mine"]), encoder=self._mine_encoder())
            else:
                out[name] = {k: v for k, v in as_table(value).items()
                             if name != "train" or k not in RUN_SETS_IN_TRAIN}
        if self.settings["index_tuning"] is not None:  # the run supplies corpus, questions, encoder and folders
            tuning = as_table(self.settings["index_tuning"])
            out["index_tuning"] = {"enabled": True, **{k: tuning[k] for k in INDEX_TUNING_KEYS},
                                   "pseudo_queries": self.settings["index_tuning"].mix(),
                                   "systems": self._index_tuned_systems}
        out["run"]["seed"] = self.seed
        for name, options in self.embed_options.items():  # prompts, backend
            if options and isinstance(out.get(name), dict):
                out[name].update(options)
        if self.settings["split"].seed is None:
            out["split"]["seed"] = self.seed
        if self.settings["adapter"] is not None:
            plan = self.plans["adapter"]
            out["adapter"] = {"enabled": True, "encoder": plan.encoder, **out["adapter"],
                              "index_pseudo_queries": plan.index_mix or False, **self._adapter_run_keys}
        if self.settings["train"] is not None:
            out["train"] = {"enabled": True, **out["train"], "model": self._base_model(), **self._train_run_keys}
            if not self.plans["train"].index_corpora:
                out["train"]["index_corpus"] = ("the run's train and val chunks" if out["train"]["index_corpus"]
                                                else None)
        return out

    def _base_model(self) -> str:
        """The model every stage starts from: ``[train] model`` (typed, read once by ``_validate``)."""
        return str(self.base_model)

    def _mine_encoder(self) -> str:
        return str(self.t["mine"].get("encoder", self._base_model()))

    def _dev_fraction(self) -> float:
        """``[train] dev_fraction``: the training documents held out (by source) as the run's dev split."""
        return self.plans["train"].dev_fraction

    def _holdout(self, train_path: Path) -> tuple[QADataset, QADataset]:
        """The run's dev split: training documents held out by source, the same for every stage (the
        fine-tune's checkpoint, the adapter's epoch, the index tuning's bound, the fusion and the
        recommendation are chosen on it; nothing trains on it; the validation split stays unseen)."""
        from embtune_core.adapters.adapter_training import split_for_validation

        key = (str(train_path), self._dev_fraction())
        if key not in self._holdouts:  # computed once per run: its notes are said once
            self._holdouts[key] = split_for_validation(QADataset.load(train_path), self._dev_fraction(), seed=self.seed)
        return self._holdouts[key]

    # --- stage plumbing ----------------------------------------------------------------------------
    def _stage(self, name: str, key: dict[str, Any], work: Callable[[StageDir], dict[str, Any]]) -> StageDir:
        stage = self.root.stage(name, key)
        if stage.done:
            self.echo(f"[{name}] up to date ({stage.path.name})")
        else:
            self.echo(f"[{name}] running -> {stage.path}")
            stage.start()
            started, cpu = time.time(), time.process_time()
            _reset_peak_memory()
            outputs = work(stage)
            # What the stage cost on this machine (the recommendation shows it beside each candidate).
            outputs.setdefault("cost", {"wall_seconds": round(time.time() - started, 2),
                                        "cpu_seconds": round(time.process_time() - cpu, 2),
                                        "peak_rss_gb": _peak_memory_gb()})
            stage.finish(outputs, round(time.time() - started, 2))
        self.manifest["stages"][name] = {"key": stage.key, "dir": stage.path.relative_to(self.root.root).as_posix(),
                                         **stage.outputs()}
        self.root.write_manifest(self.manifest)
        return stage

    # --- stages ------------------------------------------------------------------------------------
    def _chunks(self, inputs: dict[str, str]) -> StageDir:
        data, options = self.t["data"], dict(self.t["chunk"])
        name = options.pop("chunker", "sentence")
        if name == "sentence":
            options.setdefault("model", self._base_model())

        def work(stage: StageDir) -> dict[str, Any]:
            from embtune_core.data.build import chunk_documents
            from embtune_core.settings import PluginTable

            done = chunk_documents(self._paths("inputs") + self._paths("val_inputs"), PluginTable(name, options),
                                   skip_bad=bool(data.get("skip_bad", False)))
            for path, reason in done.skipped:
                self.echo(f"  skipped {path}: {reason}")
            with atomic.atomic_open(stage.path / "chunks.jsonl") as handle:
                for chunk in done.chunks:
                    handle.write(json.dumps({"id": chunk.id, "text": chunk.text, "metadata": chunk.metadata}) + "\n")
            return {"documents": len(done.documents), "chunks": len(done.chunks), "skipped": done.skipped}

        return self._stage("chunk", {"inputs": inputs, "skip_bad": data.get("skip_bad", False),
                                     "chunker": name, "options": _without(options, "model"),
                                     "model_content": _model_content(options.get("model"))}, work)

    def _generate(self, chunk_stage: StageDir) -> StageDir:
        options = dict(self.t["generate"])
        name = options.pop("generator", "ict")
        options.setdefault("seed", self.seed)

        def work(stage: StageDir) -> dict[str, Any]:
            from embtune_core.config_paths import resolve_model
            from embtune_core.data.build import generate_questions
            from embtune_core.settings import PluginTable

            chunks = [Chunk(**json.loads(line)) for line in
                      (chunk_stage.path / "chunks.jsonl").read_text(encoding="utf-8").splitlines()]
            # files the generator reads (a GGUF model, a prompt file) from the config's folder; the key keeps
            # the values as written and the files' content (_file_contents)
            located = {k: (str(self._path(v)) if k.endswith("_file") else resolve_model(v, self.base))
                       for k, v in options.items() if isinstance(v, str) and (k.endswith("_file") or k == "model")}
            try:
                dataset, report = generate_questions(chunks, PluginTable(name, {**options, **located}),
                                                     work_dir=stage.work)
            except ConfigError as exc:
                if exc.field != "generator":
                    raise
                raise ConfigError(exc.problem, path=self.config_path, field="generate.generator") from None
            dataset.save(stage.path / "dataset.json")
            return {"queries": len(dataset.queries), "corpus": len(dataset.corpus),
                    "dropped_questions": report.get("dropped_questions"),
                    "tokens": report.get("total_tokens")}

        # The key holds the generator settings but not secrets: api keys come from the environment.
        return self._stage("generate", {"chunks": chunk_stage.key, "generator": name, "options": options,
                                        "files": _file_contents(options, self._path)}, work)

    def _split(self, generate_stage: StageDir) -> StageDir:
        options = dict(self.t["split"])
        options.setdefault("seed", self.seed)
        val_sources = sorted(str(p) for p in collect_val_files(self._paths("val_inputs")))

        def work(stage: StageDir) -> dict[str, Any]:
            from embtune_core.data.build import split_dataset

            dataset = QADataset.load(generate_stage.path / "dataset.json")
            if val_sources:
                train, val = split_by_named_sources(dataset, set(val_sources))
            else:
                train, val = split_dataset(dataset, self.settings["split"], seed=self.seed)
            return self._write_split(stage, train, val)

        return self._stage("split", {"dataset": generate_stage.key, "options": options,
                                     "val_sources": val_sources}, work)

    def _write_split(self, stage: StageDir, train: QADataset, val: QADataset) -> dict[str, Any]:
        from embtune_core.data.build import write_dataset_split

        write_dataset_split(train, val, stage.path / "train.json", stage.path / "val.json", self.settings["split"])
        return {"train_queries": len(train.queries), "val_queries": len(val.queries),
                "train_corpus": len(train.corpus), "val_corpus": len(val.corpus)}

    def _import(self, inputs: dict[str, str]) -> StageDir:
        data = self.t["data"]

        def work(stage: StageDir) -> dict[str, Any]:
            from embtune_core.data.build import split_dataset

            train = load_any(self._path(data["train"]), split=data.get("train_split", "train"))
            if "val" in data:
                val = load_any(self._path(data["val"]), split=data.get("val_split", "test"))
            else:
                train, val = split_dataset(train, self.settings["split"], seed=self.seed)
            return self._write_split(stage, train, val)

        # "qrels": BEIR folders keep their graded judgements (scored as pytrec_eval); earlier runs' splits did not
        return self._stage("split", {"inputs": inputs, "split": self.t["split"], "seed": self.seed, "qrels": 1},
                           work)

    def _mine(self, split_stage: StageDir) -> StageDir:
        options = dict(self.t["mine"])
        options.pop("enabled", None)
        name = options.pop("miner", "embedding-rank")
        encoder_spec = options.pop("encoder", self._base_model())

        def work(stage: StageDir) -> dict[str, Any]:
            from embtune_core.data.build import mine_negatives
            from embtune_core.encoders.encoding import encoder_from_spec
            from embtune_core.settings import PluginTable

            mined, report = mine_negatives(QADataset.load(split_stage.path / "train.json"),
                                           PluginTable(name, options, encoder=encoder_spec),
                                           encoder_from_spec(encoder_spec, **self.embed_options["mine"]))
            mined.save(stage.path / "train.json")
            return {"report": report}

        return self._stage("mine", {"split": split_stage.key, "miner": name,
                                    "encoder_content": _model_content(encoder_spec),
                                    "options": {**options, **self.embed_options["mine"]}}, work)

    def _train(self, train_path: Path, val_path: Path, upstream: str) -> StageDir:
        plan: TrainPlan = self.plans["train"]

        def work(stage: StageDir) -> dict[str, Any]:
            from dataclasses import replace

            from embtune_core.finetuning.training import train

            # The checkpoint (and the never-worse check) is chosen on training documents held out by
            # source, never on the validation split: that split is the report's final comparison, and
            # choosing on it would flatter the fine-tune (the adapter stage does the same).
            fit, dev = self._holdout(train_path)
            fit.save(stage.work / "fit.json")
            dev.save(stage.work / "dev.json")
            if plan.index_aware:
                # The index holds every chunk, validation documents included: only their texts are read.
                index_corpus = [str(train_path), str(val_path)]
            else:
                index_corpus = [str(p) for p in plan.index_corpora] or None
            settings = replace(plan.settings, train=str(stage.work / "fit.json"), val=str(stage.work / "dev.json"),
                               out=str(stage.path / "model"), checkpoint_dir=str(stage.work / "checkpoints"),
                               resume=True, index_corpus=index_corpus)
            # ICT pseudo-queries over the validation chunks can be the validation questions word for word
            # (same seed, same chunk id, a chunk kept whole): never trained on, as the adapter stage does.
            validation = QADataset.load(val_path).queries.values() if index_corpus else ()
            summary = train(settings, exclude_questions=validation)
            outputs = {"model": str(stage.path / "model"), "metrics_before": summary.get("metrics_before"),
                       "metrics_after": summary.get("metrics_after"), "train_seconds": summary.get("train_seconds"),
                       "selection": {"fit_queries": len(fit.queries), "dev_queries": len(dev.queries)},
                       "exported": summary.get("exported"), "index_aware": summary.get("index_aware")}
            if plan.final_fit:
                outputs["final_fit"] = self._final_fit(stage, settings, summary, train_path, val_path)
                if "model" in outputs["final_fit"]:  # a path at the top level: stored relative to the run
                    outputs["final_model"] = outputs["final_fit"].pop("model")
            return outputs

        return self._stage("train", {"data": upstream, "settings": _without(plan.key_table, "model"),
                                     "dev": plan.dev_fraction,
                                     "split_seed": self.seed,
                                     "final_fit": plan.final_fit,
                                     # only when given: earlier runs keep their keys
                                     **({"index_corpus_content": inputs_hash(list(plan.index_corpora))}
                                        if plan.index_corpora else {}),
                                     # index-aware runs made before validation questions were left out retrain
                                     **({"without_validation_questions": True}
                                        if plan.index_aware or plan.index_corpora else {}),
                                     "model_content": _model_content(self._base_model())}, work)

    def _final_fit(self, stage: StageDir, settings: Any, summary: dict[str, Any], train_path: Path,
                   val_path: Path) -> dict[str, Any]:
        """Retrain from the base on every document (training and validation questions) for the epochs the
        held-out training documents chose: the artefact a practitioner deploys. The report's figures stay
        those of the model that never saw the validation questions (the validation estimate)."""
        from dataclasses import replace

        from embtune_core.adapters.pseudo_queries import merge
        from embtune_core.finetuning.training import train

        if summary.get("exported") == "base":
            self.echo("  final fit skipped: the trained model did not beat the base on held-out training documents")
            return {"skipped": "the trained model did not beat the base"}
        per_epoch = max(1, summary["data"]["batches"]["per_epoch"])
        best = summary.get("best_checkpoint")
        step = int(Path(best).name.rsplit("-", 1)[1]) if best else summary["global_step"]
        epochs = round(step / per_epoch, 4)
        everything = merge(QADataset.load(train_path), QADataset.load(val_path))
        everything.save(stage.work / "all.json")
        final = replace(settings, train=str(stage.work / "all.json"), val=None, epochs=epochs, max_steps=-1,
                        out=str(stage.path / "final"), checkpoint_dir=str(stage.work / "final-checkpoints"))
        self.echo(f"  final fit: {epochs} epochs (chosen on held-out training documents) on every document")
        result = train(final)
        return {"model": str(stage.path / "final"), "epochs": epochs, "queries": len(everything.queries),
                "train_seconds": result.get("train_seconds")}

    def _adapter(self, train_path: Path, val_path: Path, upstream: str) -> StageDir:
        plan: AdapterPlan = self.plans["adapter"]
        config, index_mix = plan.config, plan.index_mix

        def work(stage: StageDir) -> dict[str, Any]:
            from embtune_core.adapters.adapter_training import train_adapter
            from embtune_core.encoders.encoding import encoder_from_spec

            # The epoch is chosen on training documents held out by source, never on the validation
            # split: that split is the final comparison, and choosing on it would flatter the adapter.
            # They are the run's dev split (the one the fine-tune and the recommendation use), so no
            # candidate ever trained on the questions the candidates are compared on.
            train_qa = QADataset.load(train_path)
            fit, dev = self._holdout(train_path)
            augment = None
            if index_mix:
                from embtune_core.adapters.pseudo_queries import (
                    index_pseudo_queries,
                    merge,
                    without_questions,
                )

                # The index holds every chunk, validation documents included: only their texts are read.
                val_qa = QADataset.load(val_path)
                chunks = merge(train_qa, val_qa).corpus
                augment = index_pseudo_queries(chunks, mix=index_mix, seed=config.seed)
                # ...but never a validation question itself (ICT questions are sentences of those chunks).
                augment, _ = without_questions(augment, val_qa.queries.values())
            encoder = encoder_from_spec(plan.encoder, **self.embed_options["adapter"])
            result = train_adapter(encoder, fit, dev, config=config, output_dir=stage.path / "adapter",
                                   augment=augment)
            outputs = {"adapter": str(stage.path / "adapter"), "encoder": plan.encoder,
                       "best_epoch": result.best_epoch, "metrics_before": result.baseline,
                       "metrics_after": result.best}
            if plan.final_fit and result.best_epoch > 0:
                # Every question (training and validation) for the epochs chosen on held-out training
                # documents: the adapter to deploy. The report evaluates the one that never saw validation.
                from dataclasses import replace

                from embtune_core.adapters.pseudo_queries import merge

                everything = merge(train_qa, QADataset.load(val_path))
                chosen = replace(config, epochs=result.best_epoch,  # and the temperature the grid chose
                                 temperature=result.adapter.config.training["temperature"])
                train_adapter(encoder, everything, everything, config=chosen,
                              output_dir=stage.path / "final-adapter", augment=augment, keep_last=True)
                outputs["final_adapter"] = str(stage.path / "final-adapter")
                outputs["final_fit"] = {"epochs": result.best_epoch, "queries": len(everything.queries)}
                self.echo(f"  adapter final fit: {result.best_epoch} epochs on every question -> "
                          f"{stage.path / 'final-adapter'}")
            elif plan.final_fit:
                self.echo("  adapter final fit skipped: no epoch beat the base, the identity is the adapter")
            return outputs

        return self._stage("adapter", {"data": upstream, "settings": {**plan.key_table, **self.embed_options["adapter"]},
                                       "dev": self._dev_fraction(),
                                       "final_fit": plan.final_fit,
                                       "encoder_content": _model_content(plan.encoder),
                                       "index_pseudo_queries": index_mix}, work)

    def _evaluate(self, val_path: Path, systems: list[tuple[str, str]], upstream: list[str], *,
                  index_path: Path | None = None, train_stage: StageDir | None = None,
                  recommend: StageDir | None = None, with_baselines: bool = True) -> StageDir:
        options = dict(self.t["evaluate"])
        settings = self.settings["evaluate"]
        # The candidates of a recommendation hold BM25 already; the untuned hybrid stays a baseline when asked.
        baselines = [b for b in settings.baselines if with_baselines or b == "hybrid"]
        corpus = settings.corpus
        # bm25 right after the base model; "hybrid" fuses BM25 with the base model (the no-training option)
        systems = list(systems)
        if not with_baselines and "hybrid" in baselines:
            systems.insert(2, ("hybrid", "hybrid:" + systems[0][1]))
            baselines = []
        if "bm25" in baselines:
            systems.insert(1, ("bm25", "bm25"))
        if "hybrid" in baselines:
            systems.insert(2 if "bm25" in baselines else 1, ("hybrid", "hybrid:" + systems[0][1]))

        def work(stage: StageDir) -> dict[str, Any]:
            from embtune_core.reporting.report import report_compact, report_json, write_reports
            from embtune_core.retrieval.systems import build_system, check_token_limit, evaluate, parse_system
            from embtune_core.workflow import run_report

            specs = [parse_system(f"{name}={spec}") for name, spec in systems]
            check_token_limit(specs, settings.max_seq_length)
            built = [build_system(spec, settings, encoder_options=self.embed_options["evaluate"]) for spec in specs]
            val = QADataset.load(val_path)
            index_corpus = QADataset.load(index_path).corpus if index_path is not None else {}
            outputs: dict[str, Any] = {}
            runs = {"validation": None, "index": index_corpus, "both": None}
            plan = [("", runs[corpus])] + ([("index", index_corpus)] if corpus == "both" else [])
            for sub, extra in plan:
                evaluation = evaluate(built, val, settings, dataset_name="validation", seed=self.seed,
                                      extra_corpus=extra)
                evaluation.context.update(run_report.context(self, train_stage))
                if getattr(self, "probe", None) is not None:
                    probe = self.probe.outputs()
                    evaluation.context["will tuning help? (before training)"] = (
                        f"{probe['expectation']}: " + "; ".join(probe["predictions"]))
                if corpus == "both":
                    evaluation.context["also evaluated"] = (
                        "searching the whole index: index/report.html (run folder: report-index.html)" if not sub
                        else "searching the validation chunks only: ../report.html (run folder: report.html)")
                if train_stage is not None:
                    run_report.describe_training(self, evaluation, train_stage)
                run_report.describe_information(self, evaluation)
                if recommend is not None:
                    from embtune_core.workflow.recommend import recommendation_summary

                    evaluation.recommendation = recommendation_summary(evaluation, self._in_this_run(recommend.outputs()))
                data = report_json(evaluation)
                folder = stage.path / sub if sub else stage.path
                write_reports(evaluation, folder, data=data)
                if not sub:
                    atomic.write_text(stage.path / "table.txt", report_compact(data) + "\n")
                    outputs.update({"report": str(folder / "report.html"), "table": str(stage.path / "table.txt"),
                                    "report_json": str(folder / "report.json")})
                else:
                    outputs["report_index"] = str(folder / "report.html")
            return outputs

        # Systems inside the run folder enter the key through the upstream stage keys (already in
        # ``upstream``), never through their paths: a copied or moved run folder keeps its keys.
        run_root = self.root.root.resolve()

        def keyed(spec: str) -> str:
            import re

            pieces = re.split(r"(\+(?:adapter|index|lexical|windows|fusion):)", spec)
            out = []
            for piece in pieces:
                prefix = next((p for p in ("hybrid:model:", "model:", "hybrid:") if piece.startswith(p)), "")
                bare = piece[len(prefix):]
                if piece.startswith("+") or not bare:
                    out.append(piece)
                elif Path(bare).is_absolute() and Path(bare).resolve().is_relative_to(run_root):
                    out.append(prefix + "<stage output>")
                elif Path(bare).expanduser().is_dir():  # a local folder: by content, not by path
                    from embtune_core.encoders.fingerprint import content_key

                    out.append(prefix + content_key(bare))
                else:
                    out.append(piece)
            return "".join(out)

        named = [(name, keyed(spec)) for name, spec in systems]
        from embtune_core.scoring.evaluation import SCORING_VERSION

        return self._stage("evaluate", {"upstream": upstream, "systems": named, "scoring": SCORING_VERSION,
                                        "recommendation": recommend is not None,
                                        "options": {**options, **self.embed_options["evaluate"]},
                                        "base_content": _model_content(self._base_model())},
                           work)

    def _publish(self, evaluate: StageDir) -> dict[str, str]:
        """Copy the latest reports to the run folder (``<run>/report.html``, ``.md``, ``.json``), each
        atomically: a stable entry point beside the hashed stage folders."""
        out = evaluate.outputs()
        published = {}
        for key, prefix in (("report", "report"), ("report_index", "report-index")):
            if not out.get(key):
                continue
            folder = Path(out[key]).parent
            for suffix in ("html", "md", "json"):
                target = self.root.root / f"{prefix}.{suffix}"
                atomic.write_bytes(target, (folder / f"report.{suffix}").read_bytes())
            published[key] = str(self.root.root / f"{prefix}.html")
        return published

    def _export(self, train_stage: StageDir) -> StageDir:
        def work(stage: StageDir) -> dict[str, Any]:
            from embtune_core.publishing.export import export_zip

            final = train_stage.outputs().get("final_model")
            model = final or train_stage.outputs()["model"]
            return {"zip": str(export_zip(model, stage.path / "model.zip")),
                    "artefact": "final fit on every document" if final else "the evaluated fine-tune"}

        return self._stage("export", {"train": train_stage.key}, work)

    # --- the whole run -----------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Run every stage (finished ones are reused), holding the run folder's lock throughout."""
        from embtune_core.runtime.locking import hold

        with hold(self.root.root / ".embtune.lock", subject=self.root.root, what="run folder"):
            return self._run()

    def _run(self) -> dict[str, Any]:
        data = self.t["data"]
        if "inputs" in data:
            raw = data["inputs"]
            inputs = inputs_hash([self._path(p) for p in ([raw] if isinstance(raw, str) else raw)])
        else:
            inputs = inputs_hash([self._path(data[k]) for k in ("train", "val") if k in data])
        self.manifest = RunDir.new_manifest(self.config, inputs, self.seed)
        self.root.write_manifest(self.manifest)

        if "inputs" in data:
            split = self._split(self._generate(self._chunks(inputs)))
        else:
            split = self._import(inputs)
        train_path, val_path, upstream = split.path / "train.json", split.path / "val.json", split.key
        self.probe = self._probe(train_path, upstream) if self.settings["recommend"] is not None and \
            self.settings["recommend"].probe else None
        mine_table = dict(self.t["mine"])
        if mine_table and _enabled(mine_table):
            mine = self._mine(split)
            train_path, upstream = mine.path / "train.json", mine.key

        base_model = self._base_model()
        from embtune_core.workflow.recommend import Candidate, hybrid_of

        base = Candidate("base", _system_spec(base_model))
        candidates: list[Candidate] = [base]
        keys = [upstream]
        train_stage = adapter_spec = None
        if self.settings["train"] is not None:
            train_stage = self._train(train_path, val_path, upstream)
            out = train_stage.outputs()
            candidates.append(Candidate("fine-tuned", _system_spec(out["model"]), reembed=True,
                                        training=out.get("cost", {}), artefacts={"model": out["model"]}))
            keys.append(train_stage.key)
        if self.settings["adapter"] is not None:
            adapter_stage = self._adapter(train_path, val_path, upstream)
            out = adapter_stage.outputs()
            if out.get("best_epoch") == 0:
                self.echo("  adapter: no epoch beat the base model on held-out training documents, so the "
                          "identity was kept (an adapter never makes retrieval worse than the base)")
            # The encoder spec comes from the config, not from _done.json (which holds it scrubbed).
            adapter_encoder = self.plans["adapter"].encoder
            if adapter_encoder != base_model:
                candidates.append(Candidate("adapter-base", _system_spec(adapter_encoder)))
            adapter_spec = f"{_system_spec(adapter_encoder)}+adapter:{out['adapter']}"
            candidates.append(Candidate("adapter", adapter_spec, training=out.get("cost", {}),
                                        artefacts={"adapter": out["adapter"]}))
            keys.append(adapter_stage.key)
        if self.settings["index_tuning"] is not None:
            over = self._index_tuned_systems
            tuned = [("index-tuned", _system_spec(base_model), None, base)] if "base" in over else []
            if "adapter" in over and adapter_spec is not None and self.plans["adapter"].encoder == base_model:
                tuned.append(("adapter-index-tuned", _system_spec(base_model), out_adapter(adapter_spec),
                              next(c for c in candidates if c.name == "adapter")))
            if "fine-tuned" in over and train_stage is not None:
                tuned.append(("fine-tuned-index-tuned", _system_spec(train_stage.outputs()["model"]), None,
                              next(c for c in candidates if c.name == "fine-tuned")))
            for name, encoder_spec, adapter_dir, parent in tuned:
                stage = self._index_tuning(name, encoder_spec, adapter_dir, train_path, val_path,
                                           [*keys])
                folder = stage.outputs()["index"]
                if not stage.outputs().get("moved"):
                    self.echo(f"  {name}: gamma 0 was best on the dev questions (no vector moved): it is "
                              f"{parent.name}, not a candidate of its own")
                    keys.append(stage.key)
                    continue
                spec = encoder_spec + (f"+adapter:{adapter_dir}" if adapter_dir else "") + f"+index:{folder}"
                candidates.append(Candidate(name, spec, reembed=parent.reembed,
                                            training={**parent.training, "index_tuning": stage.outputs().get("cost")},
                                            artefacts={**parent.artefacts, "index": folder}))
                keys.append(stage.key)
        recommend = None
        if self.settings["recommend"] is not None:
            candidates += self._window_candidates(candidates, train_path, val_path)
            dense = [c for c in candidates if not c.lexical]
            candidates = [*dense, Candidate("bm25", "bm25", single_index=False), *[hybrid_of(c) for c in dense]]
            recommend = self._recommend(candidates, train_path, val_path, keys)
            # Every candidate measured on dev (sparse-dense systems included) in the order they were made, the
            # base model first (the report's baseline) and BM25 second.
            rows = sorted(self._in_this_run(recommend.outputs())["rows"], key=lambda r: (r["name"] != "base", r["name"] != "bm25",
                                                                       r["name"].startswith("hybrid-"), r["built"]))
            systems = [(row["name"], row["spec"]) for row in rows]
            keys.append(recommend.key)
        else:
            systems = [(c.name, c.spec) for c in candidates]
        evaluate = self._evaluate(val_path, systems, keys, index_path=split.path / "train.json",
                                  train_stage=train_stage, recommend=recommend,
                                  with_baselines=recommend is None)
        if train_stage is not None and self.settings["export"].zip:
            self._export(train_stage)
        deploy = self._deploy(recommend, candidates, evaluate) if recommend is not None else None

        table = Path(evaluate.outputs()["table"]).read_text(encoding="utf-8")
        published = self._publish(evaluate)
        self.manifest["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.manifest["report"] = published["report"]
        self.root.write_manifest(self.manifest)
        result = {"run_dir": str(self.root.root), "report": published["report"], "table": table,
                  "report_index": published.get("report_index"), "stage_report": evaluate.outputs()["report"],
                  "manifest": str(self.root.root / "manifest.json")}
        if deploy is not None:
            result.update(deploy=deploy["folder"], recommendation=deploy["sentence"])
        return result

    # --- document-side tuning, the recommendation and the deploy folder ------------------------------
    def _index_tuning(self, name: str, encoder_spec: str, adapter_dir: str | None, train_path: Path,
                      val_path: Path, upstream: list[str]) -> StageDir:
        """NUDGE-N over the whole index (training and validation chunks: only their texts are read), on the
        fit questions and pseudo-queries from every chunk, the bound chosen on the dev questions; never on a
        validation question (:func:`embtune_core.retrieval.tune_index.tune_stored_index`)."""
        from dataclasses import replace

        settings = replace(self.settings["index_tuning"], seed=self.seed)

        def work(stage: StageDir) -> dict[str, Any]:
            from embtune_core.adapters.pseudo_queries import merge
            from embtune_core.encoders.encoding import encoder_from_spec
            from embtune_core.retrieval.tune_index import tune_stored_index

            fit, dev = self._holdout(train_path)
            val = QADataset.load(val_path)
            corpus = merge(QADataset.load(train_path), val).corpus
            encoder = encoder_from_spec(encoder_spec.removeprefix("model:"), **self.embed_options["evaluate"])
            adapter = None
            if adapter_dir:
                from embtune_core.adapters.adapter_io import load_adapter

                adapter = load_adapter(adapter_dir)
            tuned = tune_stored_index(settings, encoder=encoder, corpus=corpus, train=fit, dev=dev, adapter=adapter,
                                      exclude_questions=val.queries.values(), output_dir=stage.path / "index",
                                      echo=self.echo)
            return {"index": str(stage.path / "index"), "gamma": tuned.config["gamma"],
                    "moved": tuned.config["documents_moved"], "selection": tuned.config["selection"]}

        from embtune_core.settings import as_table

        return self._stage("index-tuning", {"upstream": upstream, "name": name, "settings": as_table(settings),
                                            "dev": self._dev_fraction(), "encoder_options": self.embed_options["evaluate"],
                                            "adapter": adapter_dir is not None}, work)

    def _probe(self, train_path: Path, upstream: str) -> StageDir:
        """Will tuning help? (:mod:`embtune_core.workflow.probe`) on the training questions, before any training."""

        def work(stage: StageDir) -> dict[str, Any]:
            from embtune_core.workflow.probe import tuning_probe

            # A run that trains an adapter has a better probe in it: the short adapter probe is skipped.
            return tuning_probe(QADataset.load(train_path), self._base_model(),
                                seed=self.seed, dev_fraction=self._dev_fraction(),
                                adapter=self.settings["adapter"] is None)

        stage = self._stage("probe", {"data": upstream, "dev": self._dev_fraction(),
                                      "model_content": _model_content(self._base_model())},
                            work)
        from embtune_core.workflow.probe import describe

        for line in describe(stage.outputs()):
            self.echo(f"  {line}")
        return stage

    def _run_relative(self, value: Any) -> Any:
        """``value`` (JSON) with this run folder's absolute path written as ``<run>`` in every string."""
        return _replace_in_strings(value, str(self.root.root.resolve()), RUN_MARK)

    def _in_this_run(self, value: Any) -> Any:
        """The inverse of :meth:`_run_relative` for the run folder where it lies now."""
        return _replace_in_strings(value, RUN_MARK, str(self.root.root.resolve()))

    def _window_candidates(self, candidates: list, train_path: Path, val_path: Path) -> list:
        """When chunks are longer than the model reads, the base model and the fine-tune reading them whole:
        the mean of their windows (one vector per chunk) and their best window (MaxP, several vectors)."""
        from embtune_core.adapters.pseudo_queries import merge
        from embtune_core.encoders.encoding import encoder_from_spec
        from embtune_core.workflow.recommend import Candidate

        if self.embed_options["evaluate"].get("document_windows"):
            return []  # [evaluate] document_windows already reads every system's chunks that way
        texts = list(merge(QADataset.load(train_path), QADataset.load(val_path)).corpus.values())
        base_model = self._base_model()
        limit = self.settings["evaluate"].max_seq_length
        counter = getattr(encoder_from_spec(base_model, **({"max_seq_length": limit} if limit else {})),
                          "count_over_limit", None)
        over, limit = counter(texts, "document") if counter is not None else (0, None)
        if not over:
            return []
        self.echo(f"  {over} of {len(texts)} chunks are longer than the {limit} tokens {base_model} reads: the "
                  "base model and the fine-tune also compete reading them whole (windows)")
        made = []
        for parent in [c for c in candidates if c.name in ("base", "fine-tuned")]:
            for mode, single in (("mean", True), ("max", False)):
                made.append(Candidate(f"{parent.name}-windows-{mode}", f"{parent.spec}+windows:{mode}", reembed=True,
                                      single_index=single, training=dict(parent.training),
                                      artefacts=dict(parent.artefacts)))
        return made

    def _recommend(self, candidates: list, train_path: Path, val_path: Path, upstream: list[str]) -> StageDir:
        """Every candidate on the dev questions, searched over the whole index; the winner and its costs
        (:func:`embtune_core.workflow.recommend.select`)."""

        def work(stage: StageDir) -> dict[str, Any]:
            from embtune_core.workflow.recommend import select

            _, dev = self._holdout(train_path)
            val = QADataset.load(val_path)
            selection = select(candidates, dev, index_corpus=val.corpus, settings=self.settings["evaluate"],
                               encoder_options=self.embed_options["evaluate"],
                               echo=self.echo, measure_latency=self.settings["recommend"].latency,
                               work_dir=stage.path, sparse_dense=self.settings["recommend"].sparse_dense)
            # Candidate specs name folders of this run: stored relative to it, so a moved run folder reads its own.
            record = self._run_relative(selection.to_json())
            atomic.write_json(stage.path / "recommendation.json", record)
            return record

        named = [(c.name, c.spec) for c in candidates]
        return self._stage("recommend", {"upstream": upstream, "candidates": [n for n, _ in named],
                                         "dev": self._dev_fraction(),
                                         "settings": {**self.t["recommend"], **self.embed_options["evaluate"]}}, work)

    def _deploy(self, recommend: StageDir, candidates: list, evaluate: StageDir) -> dict[str, Any]:
        """``<run>/deploy``: the recommended system's artefacts, copied, with the lines that serve it
        (:mod:`embtune_core.publishing.deploy`); rewritten atomically at every run, from the stages' outputs."""
        from embtune_core.publishing.deploy import write_deploy_folder
        from embtune_core.workflow.recommend import candidate_from_row

        selection = self._in_this_run(recommend.outputs())
        candidates = [candidate_from_row(row) for row in selection["rows"]]
        return write_deploy_folder(self.root.root / "deploy", selection, candidates, recorded=recommend.outputs(),
                                   base_model=self._base_model(),
                                   report=evaluate.outputs().get("report_json"), echo=self.echo)


def _reset_peak_memory() -> None:
    """Start a stage's peak-memory count (Linux: writing 5 to /proc/self/clear_refs resets VmHWM)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass


def _peak_memory_gb() -> float | None:
    """The process's peak resident memory since :func:`_reset_peak_memory` (VmHWM), in GB; None elsewhere."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1e6, 3)
    except (OSError, ValueError, IndexError):
        pass
    return None


def out_adapter(spec: str) -> str:
    """The adapter folder of a ``MODEL+adapter:DIR`` spec."""
    return spec.split("+adapter:", 1)[1]


def run_config(path: str | Path, *, run_dir: str | Path | None = None, echo: Callable[[str], None] = print
               ) -> dict[str, Any]:
    return Pipeline(load_config(path), config_path=path, run_dir=run_dir, echo=echo).run()


def _without(table: dict[str, Any], key: str) -> dict[str, Any]:
    """``table`` less ``key`` (a model path, which enters a stage key by its content instead)."""
    return {k: v for k, v in table.items() if k != key}


def _system_spec(encoder: str) -> str:
    """An encoder (model name, folder or spec such as ``openai:MODEL@URL``) as an evaluate system spec."""
    from embtune_core.encoders.encoding import parse_encoder_spec

    name, options = parse_encoder_spec(str(encoder))
    # "st:DIR" and a bare DIR name the same model; "model:st:DIR" would name a folder called "st:DIR".
    return f"model:{options['model']}" if name == "sentence-transformers" else str(encoder)


def _with_evaluated_dims(table: dict[str, Any], evaluate: dict[str, Any]) -> dict[str, Any]:
    """``[adapter]`` with matryoshka_dims defaulting to ``[evaluate] dims``: trained over the widths the
    report compares, so no width loses to the base (adapter_training)."""
    evaluated = evaluate.get("dims")
    if evaluated and "matryoshka_dims" not in table:
        return {**table, "matryoshka_dims": sorted({int(d) for d in evaluated}, reverse=True)}
    return table


def _model_content(spec: Any) -> str | None:
    """What a model name, folder or encoder spec stands for in a stage key: a local model's file
    fingerprint (replacing the folder's content changes every key that reads it), else the spec."""
    if not spec:
        return None
    from embtune_core.encoders.encoding import parse_encoder_spec
    from embtune_core.encoders.fingerprint import content_key

    name, options = parse_encoder_spec(str(spec))
    return content_key(options["model"]) if name == "sentence-transformers" else str(spec)


def _file_contents(options: dict[str, Any], resolve_path: Callable[[str], Path]) -> dict[str, str]:
    """sha256 of every file an option names (``prompt_file``...), so editing one re-runs its stage."""
    from embtune_core.runtime.rundir import file_hash

    found = {}
    for key, value in options.items():
        if key.endswith("_file") and isinstance(value, str) and resolve_path(value).is_file():
            found[key] = file_hash(resolve_path(value))
    return found


def _check_loss(settings: Any, path: Path) -> None:
    """Build the [train] loss once, as `embtune train` does before it reads a dataset: an option the
    loss does not take (``loss_options = { foo = 1 }``) fails naming the config, not after the stages
    before training have run. An unknown loss name is the run command's check (exit 4)."""
    from embtune_core.errors import PluginError
    from embtune_core.finetuning.losses import create_strategy

    try:
        create_strategy(settings.loss, matryoshka_dims=settings.matryoshka_dims,
                        **{"seed": settings.seed, **settings.loss_options})
    except PluginError as exc:
        raise PluginError(exc.problem, path=path, field="train.loss") from None
    except ConfigError as exc:
        field = "matryoshka_dims" if exc.field == "matryoshka_dims" else "loss_options"
        raise ConfigError(exc.problem, path=path, field=f"train.{field}") from None


def _flag(value: Any, path: Path, field: str) -> bool:
    if isinstance(value, bool):
        return value
    raise ConfigError("must be true or false", path=path, field=field)


DEV_FRACTION = 0.15  # share of training documents held out to choose the fine-tune's checkpoint


def _dev_fraction(value: Any, path: Path) -> float:
    """``[train] dev_fraction``: a number in (0, 1)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1:
        return float(value)
    raise ConfigError("must be a number between 0 and 1 (share of training documents held out to choose the "
                      "checkpoint)", path=path, field="train.dev_fraction")


def _index_mix(value: Any, path: Path) -> dict[str, int] | None:
    """``[adapter] index_pseudo_queries``: false (default), true (the adapters' default mix) or
    {generator = per chunk}; an unknown generator fails now, not after training."""
    from embtune_core.adapters.pseudo_queries import DEFAULT_MIX
    from embtune_core.finetuning.index_training import check_mix

    if value is False:
        return None
    return dict(DEFAULT_MIX) if value is True else check_mix(value, "adapter.index_pseudo_queries", path)


def _replace_in_strings(value: Any, old: str, new: str) -> Any:
    """``value`` (JSON) with ``old`` replaced by ``new`` in every string inside it."""
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, list):
        return [_replace_in_strings(v, old, new) for v in value]
    if isinstance(value, dict):
        return {k: _replace_in_strings(v, old, new) for k, v in value.items()}
    return value
