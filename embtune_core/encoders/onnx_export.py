"""ONNX export of a sentence-transformers model folder for fast CPU inference, and its loader.

``embtune export MODEL --format onnx --out DIR [--quantize int8]`` writes DIR = a copy of the model
folder (tokenizer, pooling, prompts, the torch weights) plus the transformer as ONNX, laid out as
sentence-transformers' ONNX backend expects (https://sbert.net/docs/sentence_transformer/usage/efficiency.html):

* ``onnx/model.onnx`` -- fp32 graph, inputs ``input_ids``, ``attention_mask`` (and ``token_type_ids``
  where the model takes them), dynamic batch and sequence axes, output ``last_hidden_state``
  ``(batch, tokens, hidden)``.
* ``onnx/model_O2.onnx`` -- the same graph with ONNX Runtime's transformer fusions (attention,
  LayerNorm, GELU; ``onnxruntime.transformers.optimizer``), what optimum's O2 level writes, for BERT-like
  architectures.
* ``onnx/model_qint8_avx512_vnni.onnx`` (``--quantize int8``) -- dynamic int8 quantisation of the fused
  graph's linear layers (weights per channel, activations per batch at run time), the file name
  sentence-transformers' ``export_dynamic_quantized_onnx_model(..., "avx512_vnni")`` uses; the
  feed-forward output projections stay fp32 (see :func:`_quantize_int8`).
* ``embtune_onnx.json`` -- which file is the default, the opset, the exporter and the versions.

How it is built: sentence-transformers' own export path goes through optimum (``optimum-onnx``), whose
only release (0.1.0) requires transformers < 4.58 while sentence-transformers 6 requires transformers >= 5,
so the two cannot be installed together. Until they can, the graph is exported with torch's ONNX exporter
(``torch.onnx.export``, TorchScript mode) and quantised with ONNX Runtime's
``onnxruntime.quantization.quantize_dynamic`` and fused with ``onnxruntime.transformers.optimizer`` -- the
library calls optimum's ``ORTQuantizer`` and ``ORTOptimizer`` make.
The folder layout is sentence-transformers', so ``SentenceTransformer(DIR, backend="onnx")`` (and
``model_kwargs={"file_name": "model_qint8_avx512_vnni.onnx"}``) loads it wherever optimum-onnx is installed;
:func:`load_onnx_model` loads it here with onnxruntime alone, running the folder's own pooling and
normalisation modules after the ONNX transformer.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from embtune_core.errors import ConfigError, InputError
from embtune_core.runtime import atomic

log = logging.getLogger(__name__)

ONNX_DIR = "onnx"
FP32_FILE = "model.onnx"
FUSED_FILE = "model_O2.onnx"
INT8_FILE = "model_qint8_avx512_vnni.onnx"
MIXED_FILE = "model_qint8_mixed.onnx"  # int8, the calibration chunks' outlier channels in fp32
# onnxruntime.transformers.optimizer fuses attention, LayerNorm and GELU for these architectures
FUSABLE = {"bert": "bert", "roberta": "bert", "xlm-roberta": "bert", "distilbert": "bert", "electra": "bert"}
MANIFEST = "embtune_onnx.json"
OPSET = 17
QUANTIZATIONS = ("int8",)
BACKENDS = ("torch", "onnx", "onnx-fp32", "onnx-o2", "onnx-int8", "onnx-int8-mixed")


def _require_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError("ONNX export and the onnx backend need onnxruntime and onnx: pip install 'embtune[onnx]'",
                          field="--format") from None
    return onnxruntime


class _HiddenStates:
    """Wraps a Hugging Face encoder so tracing sees plain tensors in and ``last_hidden_state`` out."""

    @staticmethod
    def module(auto_model: Any, names: list[str]) -> Any:
        import torch

        class Wrapper(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.inner = auto_model

            def forward(self, *tensors: Any) -> Any:
                return self.inner(**dict(zip(names, tensors)), return_dict=True).last_hidden_state

        return Wrapper().eval()


def export_onnx(model_dir: str | Path, out: str | Path, *, quantize: str | None = None,
                calibration: Any = None) -> dict[str, Any]:
    """Write ``out`` (see the module docstring) from the sentence-transformers folder ``model_dir``.

    Refuses (InputError) a folder that is no model and a LoRA adapter folder (merge it first:
    ``embtune train --lora --merge``); ``quantize`` is None or ``"int8"``. ``calibration`` (with
    ``"int8"``): a :class:`~embtune_core.data.dataset.QADataset` of the user's chunks (and questions, if any):
    the export adds ``onnx/model_qint8_mixed.onnx`` (:mod:`embtune_core.encoders.onnx_mixed_int8`) and makes the
    fastest file that holds quality on those chunks the default (:mod:`embtune_core.encoders.onnx_choice`). The
    folder appears complete or not at all. Returns the manifest written to ``embtune_onnx.json``.
    """
    import torch

    from embtune_core.encoders.lora import is_adapter_folder

    ort = _require_onnxruntime()
    model_dir, out = Path(model_dir), Path(out)
    if not (model_dir / "modules.json").is_file():
        raise InputError("not a sentence-transformers model directory (no modules.json)", path=model_dir)
    if is_adapter_folder(model_dir):
        raise InputError("is a LoRA adapter folder; export a merged model (embtune train --lora --merge)",
                         path=model_dir)
    if quantize not in (None, *QUANTIZATIONS):
        raise ConfigError(f"must be one of {', '.join(QUANTIZATIONS)}, got '{quantize}'", field="--quantize")
    if calibration is not None and quantize != "int8":
        raise ConfigError("calibrates int8 quantisation: give --quantize int8 with it", field="--calibration")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu")
    from embtune_core.encoders.model_modules import require_transformer

    require_transformer(model, "--format onnx", str(model_dir))  # a static model has no graph to export
    transformer = model[0]
    if hasattr(transformer.auto_model, "set_attn_implementation"):
        # eager attention exports as plain MatMul/Softmax, the pattern ONNX Runtime's fusions recognise
        transformer.auto_model.set_attn_implementation("eager")
    probe = transformer.tokenizer(["an example sentence to trace", "short"], padding=True, return_tensors="pt")
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in probe]
    wrapper = _HiddenStates.module(transformer.auto_model, names)
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    with atomic.atomic_directory(out) as staging:
        for item in sorted(model_dir.iterdir()):
            if item.name.startswith(".") or item.name in (ONNX_DIR, MANIFEST):
                continue
            target = staging / item.name
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, target)
        (staging / ONNX_DIR).mkdir()
        fp32 = staging / ONNX_DIR / FP32_FILE
        with torch.no_grad():
            torch.onnx.export(wrapper, tuple(probe[n] for n in names), str(fp32), input_names=names,
                              output_names=["last_hidden_state"],
                              dynamic_axes={**axes, "last_hidden_state": {0: "batch", 1: "sequence"}},
                              opset_version=OPSET, dynamo=False)
        files = {"fp32": f"{ONNX_DIR}/{FP32_FILE}"}
        fused = _fuse(fp32, staging / ONNX_DIR / FUSED_FILE, transformer.auto_model.config)
        if fused is not None:
            files["O2"] = f"{ONNX_DIR}/{FUSED_FILE}"
        excluded: list[str] = []
        if quantize == "int8":
            excluded = _quantize_int8(fused or fp32, staging / ONNX_DIR / INT8_FILE)
            files["int8"] = f"{ONNX_DIR}/{INT8_FILE}"
        mixed = None
        if calibration is not None:
            from embtune_core.encoders import onnx_choice
            from embtune_core.encoders.onnx_mixed_int8 import calibrate, write_mixed_int8

            calibration_texts, held_out = onnx_choice.split_chunks(calibration)
            maxima = calibrate(fused or fp32, onnx_choice.feature_batches(model, calibration_texts, names))
            mixed = write_mixed_int8(fused or fp32, staging / ONNX_DIR / MIXED_FILE, maxima)
            mixed["calibration_chunks"] = len(calibration_texts)
            files["int8-mixed"] = f"{ONNX_DIR}/{MIXED_FILE}"
        default = "int8" if quantize else "O2" if fused is not None else "fp32"
        manifest = {"source": str(model_dir), "files": files, "default": default,
                    "inputs": names, "output": "last_hidden_state", "opset": OPSET,
                    "exporter": f"torch.onnx.export (TorchScript) {torch.__version__}",
                    "optimizer": (f"onnxruntime.transformers.optimizer {ort.__version__} "
                                  f"(model_type {FUSABLE.get(transformer.auto_model.config.model_type)})"
                                  if fused is not None else None),
                    "quantizer": (f"onnxruntime.quantization.quantize_dynamic QInt8 per-channel {ort.__version__}"
                                  if quantize else None),
                    "kept_fp32": excluded}
        if mixed is not None:
            manifest["int8_mixed"] = mixed
        from embtune_core.publishing.portable import portable

        atomic.write_json(staging / MANIFEST, portable(manifest))  # no machine's absolute path
        if calibration is not None:  # measured on the chunks calibration did not use
            table = onnx_choice.measure({name: load_onnx_model(staging, name) for name in files}, held_out)
            manifest["default"] = onnx_choice.choose(table)
            manifest["recommendation"] = {
                "chosen": manifest["default"], "line": onnx_choice.describe(manifest["default"], table, held_out),
                "measured_on": {"chunks": len(held_out.corpus), "questions": len(held_out.queries)},
                "rule": (f"fastest file whose NDCG@10 is at most {onnx_choice.NDCG_TOLERANCE} below the fp32 graph's "
                         f"(mean cosine >= {onnx_choice.COSINE_FLOOR} to it when there are no questions)"),
                "files": table}
            atomic.write_json(staging / MANIFEST, portable(manifest))
    return manifest


def _fuse(source: Path, target: Path, config: Any) -> Path | None:
    """ONNX Runtime's transformer fusions (Attention, SkipLayerNormalization, BiasGelu,
    EmbedLayerNormalization) of ``source`` into ``target``, the graph optimum's O2 level gives; None
    (and one log line) for an architecture the optimizer does not know."""
    model_type = FUSABLE.get(getattr(config, "model_type", ""))
    if model_type is None:
        log.info("no ONNX Runtime transformer fusions for model type %r; the plain graph is used",
                 getattr(config, "model_type", None))
        return None
    from onnxruntime.transformers.optimizer import optimize_model

    from embtune_core.runtime.scratch_cwd import scratch_cwd

    source, target = Path(source).resolve(), Path(target).resolve()
    with scratch_cwd():  # shape inference's leftovers go to a scratch folder, not the user's cwd
        optimized = optimize_model(str(source), model_type=model_type, num_heads=int(config.num_attention_heads),
                                   hidden_size=int(config.hidden_size), opt_level=1)
        optimized.save_model_to_file(str(target))
    return target


def _quantize_int8(source: Path, target: Path) -> list[str]:
    """Dynamic int8 quantisation (weights per channel, activations per batch) of ``source``, keeping
    the feed-forward output projections (``.../output/dense/MatMul`` outside attention) in fp32: their
    inputs carry the large outliers that per-tensor activation quantisation handles worst (Bondarenko
    et al. 2021, https://arxiv.org/abs/2109.12948). On MiniLM and the Uber chunks this lifts the mean
    cosine to the fp32 vectors from 0.993 to 0.997. Returns the node names kept in fp32."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(source), load_external_data=False).graph
    excluded = [n.name for n in graph.node if n.op_type == "MatMul" and "/output/dense/" in n.name
                and "attention" not in n.name]
    from embtune_core.runtime.scratch_cwd import scratch_cwd

    source, target = Path(source).resolve(), Path(target).resolve()
    with scratch_cwd():  # shape inference's leftovers go to a scratch folder, not the user's cwd
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True,
                         reduce_range=False, nodes_to_exclude=excluded,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return excluded


def onnx_file(folder: str | Path, variant: str | None = None) -> Path:
    """The ONNX file of ``folder`` for ``variant`` (``"fp32"``, ``"int8"``; None: the export's default).
    Raises InputError when the folder holds no such export, or is a LoRA adapter folder (merge it first)."""
    folder = Path(folder)
    _refuse_lora(folder, folder)
    manifest_path = folder / MANIFEST
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        key = variant or manifest.get("default", "fp32")
        if key not in manifest.get("files", {}):
            raise InputError(f"holds no {key} ONNX file (it has {', '.join(manifest.get('files', {}))}); "
                             "re-export with embtune export --format onnx" + (" --quantize int8" if key == "int8" else ""),
                             path=folder)
        return folder / manifest["files"][key]
    candidate = folder / ONNX_DIR / {"int8": INT8_FILE, "O2": FUSED_FILE, "int8-mixed": MIXED_FILE}.get(variant or "",
                                                                                                  FP32_FILE)
    if not candidate.is_file():
        raise InputError(f"no {candidate.relative_to(folder)}: export it first "
                         f"(embtune export {folder} --format onnx --out DIR)", path=folder)
    return candidate


def load_onnx_model(folder: str | Path, variant: str | None = None, *, threads: int | None = None) -> Any:
    """A SentenceTransformer whose transformer runs in ONNX Runtime (CPU): the folder's tokenizer,
    prompts, pooling and normalisation as they are, the encoder replaced by the ONNX graph. ``encode``,
    ``encode_query`` and ``encode_document`` work as usual; training it is not possible."""
    import torch
    from sentence_transformers import SentenceTransformer

    ort = _require_onnxruntime()
    path = onnx_file(folder, variant)
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    wanted = [i.name for i in session.get_inputs()]
    model = SentenceTransformer(str(folder), device="cpu")
    hf_model = model[0].model

    class OnnxTransformer(torch.nn.Module):
        """Stands in for the Hugging Face model inside sentence-transformers' Transformer module."""

        def __init__(self) -> None:
            super().__init__()
            self.config = hf_model.config
            self.session = session
            self.file = str(path)

        def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, **_: Any) -> dict[str, Any]:
            given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
            if given["token_type_ids"] is None and "token_type_ids" in wanted:
                given["token_type_ids"] = torch.zeros_like(input_ids)
            feed = {name: given[name].cpu().numpy() for name in wanted}
            (hidden,) = self.session.run(["last_hidden_state"], feed)
            return {"last_hidden_state": torch.from_numpy(hidden)}

    model[0].model = OnnxTransformer()
    model[0].model_forward_params = None
    model.embtune_onnx_file = str(path)
    return model


def _refuse_lora(folder: Path, name: Any) -> None:
    """A LoRA adapter folder has no ONNX export and cannot get one (export_onnx refuses it too, so
    "export it first" would send the user in a circle): say what works, naming ``name`` as given."""
    from embtune_core.encoders.lora import is_adapter_folder

    if is_adapter_folder(folder):
        raise InputError("is a LoRA adapter folder, which ONNX Runtime cannot run; train with embtune train --lora "
                         "--merge (a plain model folder), export that with embtune export MERGED --format onnx "
                         "--out DIR, and use DIR", path=name, field="backend")


def _variant(backend: str) -> str | None:
    return {"onnx": None, "onnx-fp32": "fp32", "onnx-o2": "O2", "onnx-int8": "int8", "onnx-int8-mixed": "int8-mixed"}[backend]


def _folder(name: str) -> Path:
    from embtune_core.encoders.models import resolve

    resolution = resolve(name, assemble=False)
    folder = Path(resolution.target)
    if not resolution.is_local or not folder.is_dir():
        raise InputError("the onnx backend needs a local folder written by embtune export --format onnx",
                         path=name, field="backend")
    _refuse_lora(folder, name)
    return folder


def backend_file(name: str, backend: str, model: Any = None) -> str:
    """The ONNX file an encoder with ``backend`` runs (``onnx/model.onnx``), relative to its folder:
    part of its identity (:class:`embtune_core.encoders.encoder_identity.EncoderOptions`), so vectors of torch,
    ONNX fp32 and ONNX int8 never share a cache entry."""
    if model is not None and getattr(model, "embtune_onnx_file", None):
        return Path(model.embtune_onnx_file).name
    if model is not None:
        raise ConfigError("the onnx backend applies to model folders, not to a model passed in memory",
                          field="backend")
    folder = _folder(name)
    return onnx_file(folder, _variant(backend)).relative_to(folder).as_posix()


def load_backend_model(name: str, backend: str) -> Any:
    """:func:`load_onnx_model` for the encoder's ``backend`` option (see :data:`BACKENDS`)."""
    model = load_onnx_model(_folder(name), _variant(backend))
    model.embtune_model_name = name
    from embtune_core.encoders.model_modules import token_limit

    model.embtune_own_max_seq_length = token_limit(model)  # None: a model that reads texts whole
    return model
