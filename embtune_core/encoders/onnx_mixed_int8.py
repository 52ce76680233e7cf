"""int8 ONNX with the outlier channels of the user's own chunks kept in fp32 (LLM.int8()-style decomposition).

ONNX Runtime's dynamic quantisation gives each linear layer's input one int8 scale per batch. A few
input channels of a transformer carry values far larger than the rest (the feed-forward output
projection's input after GELU most of all; Bondarenko et al. 2021, https://arxiv.org/abs/2109.12948),
so one scale either clips them or leaves the other channels a handful of levels. Quantising every
linear layer of MiniLM that way ran 2.1x torch's speed but lost up to 0.007 NDCG@10 on the Uber chunks;
keeping the six feed-forward output projections in fp32 (the ``int8`` file) held quality (-0.004) but
ran 1.6x.

Here the outliers are found on the user's own chunks (calibration) and split off, as LLM.int8() does
(Dettmers et al. 2022, "LLM.int8(): 8-bit Matrix Multiplication for Transformers at Scale",
https://arxiv.org/abs/2208.07339): for each linear layer ``Y = X W`` whose input channel ``j`` reached
``max |X_j| > threshold`` on the calibration chunks,

    Y = (X * inlier_mask) W  +  X[:, outliers] W[outliers, :]

the first product int8 (the outlier channels zeroed, so the scale fits the rest), the second, a few
channels wide, fp32. Everything else is the ``int8`` file's quantisation (weights per channel,
activations per batch, ``onnxruntime.quantization.quantize_dynamic``), with the fused attention
(QAttention) and every feed-forward layer in int8 and the embedding layer in fp32.

:func:`calibrate` measures the per-channel maxima, :func:`write_mixed_int8` writes the graph.
Which file a folder recommends is measured on the user's chunks by :mod:`embtune_core.encoders.onnx_choice`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

OUTLIER_THRESHOLD = 6.0  # LLM.int8()'s: an input channel whose magnitude exceeds it is computed in fp32
CALIBRATION_BATCH = 8


def weight_matmuls(graph: Any) -> list[Any]:
    """The MatMul nodes of ``graph`` whose second input is a weight (an initializer): its linear layers."""
    weights = {i.name for i in graph.initializer}
    return [n for n in graph.node if n.op_type == "MatMul" and n.input[1] in weights]


def calibrate(source: Path, features: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """``{linear layer input name: max |x| per channel}`` over the calibration batches ``features``
    (the graph's inputs, as the model's tokenizer makes them), padding positions left out."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    model = onnx.load(str(source))
    names = [n.input[0] for n in weight_matmuls(model.graph)]
    for name in names:
        model.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    wanted = [i.name for i in session.get_inputs()]
    maxima: dict[str, np.ndarray] = {}
    for batch in features:
        values = session.run(names, {k: batch[k] for k in wanted})
        mask = batch["attention_mask"].astype(bool)
        for name, value in zip(names, values):
            peak = np.abs(value[mask]).max(axis=0)
            maxima[name] = peak if name not in maxima else np.maximum(maxima[name], peak)
    return maxima


def split_outliers(model: Any, maxima: dict[str, np.ndarray], *,
                   threshold: float = OUTLIER_THRESHOLD) -> tuple[list[str], dict[str, int]]:
    """Split, in place, every linear layer of the ONNX ``model`` whose input has channels above
    ``threshold`` in ``maxima`` into an inlier product and an outlier product (module docstring), still
    in fp32: the graph computes exactly what it did. Returns (the outlier MatMul nodes, to keep in fp32;
    outlier channels per split layer)."""
    from onnx import helper, numpy_helper

    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    split = {n.name for n in weight_matmuls(graph)}
    nodes, kept_fp32, outliers = [], [], {}
    for node in graph.node:
        peak = maxima.get(node.input[0]) if node.name in split else None
        channels = np.nonzero(peak > threshold)[0].astype(np.int64) if peak is not None else np.zeros(0, np.int64)
        if not len(channels):
            nodes.append(node)
            continue
        outliers[node.name] = len(channels)
        weight = numpy_helper.to_array(initializers[node.input[1]])
        mask = np.ones(weight.shape[0], dtype=np.float32)
        mask[channels] = 0.0
        base = node.name.strip("/").replace("/", "_")
        graph.initializer.extend([numpy_helper.from_array(mask, f"{base}_inlier_mask"),
                                  numpy_helper.from_array(channels, f"{base}_outlier_channels"),
                                  numpy_helper.from_array(weight[channels, :].astype(np.float32), f"{base}_outlier_weight")])
        activation, output = node.input[0], node.output[0]
        nodes.append(helper.make_node("Mul", [activation, f"{base}_inlier_mask"], [f"{base}_inliers"],
                                      name=f"{base}_inlier_mask_mul"))
        nodes.append(helper.make_node("Gather", [activation, f"{base}_outlier_channels"], [f"{base}_outliers"],
                                      name=f"{base}_outlier_gather", axis=-1))
        fp32 = helper.make_node("MatMul", [f"{base}_outliers", f"{base}_outlier_weight"], [f"{base}_outlier_part"],
                                name=f"{base}_outlier_matmul")
        kept_fp32.append(fp32.name)
        nodes.append(fp32)
        node.input[0] = f"{base}_inliers"
        node.output[0] = f"{base}_inlier_part"
        nodes.append(node)
        nodes.append(helper.make_node("Add", [f"{base}_inlier_part", f"{base}_outlier_part"], [output],
                                      name=f"{base}_outlier_add"))
    del graph.node[:]
    graph.node.extend(nodes)
    return kept_fp32, outliers


def write_mixed_int8(source: Path, target: Path, maxima: dict[str, np.ndarray], *,
                     threshold: float = OUTLIER_THRESHOLD) -> dict[str, Any]:
    """Write ``target``: ``source`` (fp32, fused) with its linear layers split by :func:`split_outliers` and
    quantised to int8 (the outlier products kept in fp32). Returns what was done: outlier channels per
    layer and the nodes kept in fp32."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from embtune_core.runtime.scratch_cwd import scratch_cwd

    source, target = Path(source).resolve(), Path(target).resolve()
    model = onnx.load(str(source))
    kept_fp32, outliers = split_outliers(model, maxima, threshold=threshold)
    with scratch_cwd() as scratch:  # the split graph and shape inference's leftovers: never the user's cwd
        split_path = scratch / "model.split.onnx"
        onnx.save(model, str(split_path))
        quantize_dynamic(str(split_path), str(target), weight_type=QuantType.QInt8, per_channel=True,
                         reduce_range=False, op_types_to_quantize=["MatMul", "Attention"],
                         nodes_to_exclude=kept_fp32, extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return {"threshold": threshold, "outlier_channels": outliers, "kept_fp32": kept_fp32}
