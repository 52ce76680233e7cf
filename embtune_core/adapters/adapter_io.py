"""Saving, loading and importing query adapters: safetensors weights plus a JSON config, no pickle.

An adapter folder holds two files, written together atomically::

    adapter_config.json   {"format": "embtune-adapter", "format_version": 1, "adapter_type": "linear",
                           "options": {...}, "dimension": 384, "normalize_output": true,
                           "base_encoder": {"identity": "...", "normalize": true, "name": "...",
                                            "weights": "...", "prompts": true,
                                            "convention": {"unit_length": true, "query_prompt": "",
                                                           "document_prompt": ""}},
                           "training": {...}}
    adapter.safetensors   the module's state dict

``adapter_type`` and ``options`` rebuild the module through the ``adapters`` plugin family, so
custom adapters from plugins save and load like the built-in ones. ``base_encoder.identity`` is
the identity of the encoder whose query vectors the adapter was trained on: an adapter only makes
sense on that encoder, and :func:`load_adapter` refuses another one with a one-line error.
``normalize_output`` says whether adapted queries are scaled back to unit length (cosine search);
``index_metric`` the metric of the index it was trained for: ``"inner_product"`` or ``"l2"`` (FAISS
``IndexFlatL2``, LangChain's and DocsGPT's default), which matters for vectors that are not unit length
(:mod:`embtune_core.adapters.adapter_training`; :meth:`SavedAdapter.check_index` refuses the wrong one).

``base_encoder.prompts`` and ``base_encoder.convention`` record how the base computed the query
vectors the adapter was trained on: through the model's query/document prompts or plain
``encode()`` (what DocsGPT and LangChain's ``HuggingFaceEmbeddings`` call), and the resulting
``unit_length`` (normalised by embtune or by the model's own ``Normalize`` module) and prompt
strings. :meth:`SavedAdapter.check_base` accepts an encoder of the same model whose settings differ
only in ways that leave the vectors equal (``normalize=True`` on a model that normalises anyway,
prompts on a model without any) and refuses one whose vectors differ, naming the difference.
Adapters saved before these keys existed are read as before: their convention is derived from the
recorded identity.

LlamaIndex adapter folders (``config.json`` + ``pytorch_model.bin`` of ``LinearLayer`` or
``TwoLayerNN``) are imported by :func:`load_adapter` too. Their weights are read with
``torch.load(weights_only=True)``, which refuses any pickled object but tensors. They record no
base model, so pass ``expected_encoder_identity`` knowingly.

Example::

    adapter = load_adapter("out/adapter", expected_encoder_identity=encoder.identity)
    queries = adapter.transform(encoder.encode_queries(["What was Uber's 2021 revenue?"]))
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from embtune_core.encoders.encoder_identity import EncoderDescription, EncoderIdentity
from embtune_core.encoders.encoder_identity import describe as describe_encoder
from embtune_core.errors import ConfigError, InputError, PluginError
from embtune_core.runtime import atomic

log = logging.getLogger(__name__)

FORMAT = "embtune-adapter"
FORMAT_VERSION = 1
CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter.safetensors"
LLAMAINDEX_CONFIG = "config.json"
LLAMAINDEX_WEIGHTS = "pytorch_model.bin"


@dataclass
class AdapterConfig:
    adapter_type: str
    dimension: int
    options: dict[str, Any] = field(default_factory=dict)
    base_encoder_identity: str | None = None
    base_normalize: bool | None = None
    base_encoder_name: str | None = None  # for people: the model name it was trained with
    normalize_output: bool = True
    base_weights: str | None = None  # module fingerprint of a local base model's weights and prompts
    base_token_limit: int | None = None  # tokens the base model read of each text when the adapter was trained
    base_prompts: bool | None = None  # True: encode_query/encode_document with the model's prompts; False: encode()
    base_convention: dict[str, Any] | None = None  # unit_length, query_prompt, document_prompt of the base vectors
    # The metric of the index the adapter was trained and selected for (adapter_training: "inner_product" or
    # "l2"); adapters saved before it was recorded were trained by inner product.
    index_metric: str = "inner_product"
    training: dict[str, Any] = field(default_factory=dict)
    imported_from: str | None = None

    def to_json(self) -> dict[str, Any]:
        out = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "adapter_type": self.adapter_type,
            "options": self.options,
            "dimension": self.dimension,
            "normalize_output": self.normalize_output,
            "index_metric": self.index_metric,
            "base_encoder": {"identity": self.base_encoder_identity, "normalize": self.base_normalize,
                             "name": self.base_encoder_name,
                             **({"weights": self.base_weights} if self.base_weights else {}),
                             **({"token_limit": self.base_token_limit} if self.base_token_limit else {}),
                             **({"prompts": self.base_prompts} if self.base_prompts is not None else {}),
                             **({"convention": self.base_convention} if self.base_convention else {})},
            "training": self.training,
        }
        if self.imported_from:
            out["imported_from"] = self.imported_from
        return out

    @classmethod
    def from_json(cls, data: Any, path: Path) -> AdapterConfig:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise InputError(f"not an embtune adapter config (expected \"format\": \"{FORMAT}\")", path=path)
        if data.get("format_version", 0) > FORMAT_VERSION:
            raise InputError(f"adapter format version {data['format_version']} is newer than this embtune "
                             f"understands ({FORMAT_VERSION}); upgrade embtune", path=path)
        for key, kind in (("adapter_type", str), ("dimension", int), ("options", dict)):
            if not isinstance(data.get(key), kind):
                raise InputError(f"missing or not a {kind.__name__}", path=path, field=key)
        base = data.get("base_encoder") or {}
        if not isinstance(base, dict):
            raise InputError("must be an object", path=path, field="base_encoder")
        return cls(adapter_type=data["adapter_type"], dimension=data["dimension"], options=data["options"],
                   base_encoder_identity=base.get("identity"), base_normalize=base.get("normalize"),
                   base_encoder_name=base.get("name"), base_weights=base.get("weights"),
                   base_token_limit=base.get("token_limit"),
                   base_prompts=base.get("prompts") if isinstance(base.get("prompts"), bool) else None,
                   base_convention=base.get("convention") if isinstance(base.get("convention"), dict) else None,
                   normalize_output=bool(data.get("normalize_output", True)),
                   index_metric=_index_metric(data.get("index_metric", "inner_product"), path),
                   training=data.get("training") or {}, imported_from=data.get("imported_from"))


def _index_metric(value: Any, path: Path) -> str:
    if value not in ("inner_product", "l2"):
        raise InputError(f"must be \"inner_product\" or \"l2\", not {value!r}", path=path, field="index_metric")
    return str(value)


class SavedAdapter:
    """A query adapter module with its config: what :func:`load_adapter` returns and ``save`` writes."""

    def __init__(self, module: nn.Module, config: AdapterConfig, path: Path | None = None):
        self.module = module.eval()
        self.config = config
        self.path = path

    @classmethod
    def wrap(cls, module: nn.Module, *, dimension: int, normalize_output: bool = True) -> SavedAdapter:
        """A bare module (no recorded base encoder), e.g. one just built in Python.

        Raises :class:`InputError` when the module does not map ``(n, dimension)`` vectors to
        ``(n, dimension)``: probed once with a zero batch, so a wrong width fails here, in one line,
        not later inside a matrix product."""
        check_width(module, int(dimension))
        adapter_type = getattr(module, "adapter_type", type(module).__name__)
        options = module.config() if hasattr(module, "config") else {}
        return cls(module, AdapterConfig(adapter_type, int(dimension), options, normalize_output=normalize_output))

    @property
    def fingerprint(self) -> str:
        """A short hash of type, options and weights (names an adapted encoder in cache keys)."""
        digest = hashlib.blake2b(digest_size=8)
        digest.update(json.dumps([self.config.adapter_type, self.config.options, self.config.normalize_output],
                                 sort_keys=True).encode())
        for name, tensor in sorted(self.module.state_dict().items()):
            digest.update(name.encode() + tensor.detach().cpu().float().contiguous().numpy().tobytes())
        return f"{self.config.adapter_type}-{digest.hexdigest()}"

    def check_base(self, encoder: Any) -> None:
        """Refuse an encoder other than the one the adapter was trained on.

        ``encoder`` is an encoder or its identity string. The identities are compared on what
        changes the vectors: a local model named by folder and the same model passed in memory
        (a ``SentenceTransformer`` object) match when their weights and prompts are equal and every
        other setting (token limit, truncation) is the same. Normalisation and prompts are compared
        on their effect (the encoder's ``convention``): ``normalize=True`` and ``False`` are the same
        vectors for a model ending in a ``Normalize`` module, prompts on or off the same for a model
        without prompts. Raises :class:`InputError` in one line naming the difference. (The width
        is checked where vectors meet the adapter, :meth:`transform`: reading an API encoder's width
        may cost a call.)
        """
        from embtune_core.encoders.encoder_identity import CONVENTION_KEYS, EncoderIdentity, identity_of

        # Documents read as windows change document vectors only; the adapter maps query vectors.
        current = identity_of(encoder).without(("document_windows",))
        recorded = self.config.base_encoder_identity
        if recorded is None:
            log.warning("adapter %s records no base encoder; assuming it fits %s", self.path or "", current)
            return
        expected = EncoderIdentity.parse(recorded).without(("document_windows",))  # recorded as text
        if str(expected) == str(current):
            return
        description = None if isinstance(encoder, str) else describe_encoder(encoder)
        name = f" ({self.config.base_encoder_name})" if self.config.base_encoder_name else ""
        # The token limit, where both sides know it, is compared as a number: a folder states it only
        # when it differs from the model's own, an in-memory model always.
        current_limit = description.token_limit if description is not None else None
        limits_known = self.config.base_token_limit is not None and current_limit is not None
        if limits_known and int(current_limit) != int(self.config.base_token_limit):
            raise InputError(f"adapter was trained on query vectors of {self.config.base_token_limit} tokens per text"
                             f"{name}, but this encoder reads {current_limit}; set its max_seq_length to "
                             f"{self.config.base_token_limit} (--max-seq-length) or train an adapter at {current_limit}",
                             path=self.path)
        leave = ("max_seq_length",) if limits_known else ()
        same_model = description is not None and (
            (expected.content is not None and expected.content == current.content)
            or self._same_weights(description))
        if same_model and expected.same_settings(current, CONVENTION_KEYS + leave):
            trained, now = self._trained_convention(encoder, expected), description.convention
            if trained is not None and trained == now:
                return  # settings differ, vectors do not
            if trained is not None and now is not None:
                raise InputError(
                    f"adapter was trained on query vectors {_describe_convention(trained)} of this model{name}, but "
                    f"these embeddings compute {_describe_convention(now)}; train the adapter on the vectors the "
                    "host computes (embtune train-adapter --host-vectors) or set normalize/prompts to match it (the "
                    "index must then hold documents embedded the same way)", path=self.path)
        if same_model and expected.same_settings(current, leave):
            return  # same weights under another name (folder vs in-memory model), same settings
        raise InputError(f"adapter was trained on encoder '{expected}'{name}, not on '{current}'; "
                         "train an adapter for this encoder", path=self.path)

    def check_index(self, metric: str, *, unit_vectors: bool, where: str) -> None:
        """Refuse serving against an index ranked by ``metric`` (``"inner_product"`` or ``"l2"``) when the
        adapter was trained for the other and the index's vectors are not unit length (on unit vectors
        both rank alike): one-line :class:`InputError` naming ``where`` (the index) and the way out."""
        if unit_vectors or metric == self.config.index_metric:
            return
        trained = {"inner_product": "inner product", "l2": "L2 distance"}
        fix = ("retrain it with embtune train-adapter --host-vectors (it trains for L2 distance, as LangChain's "
               "FAISS and DocsGPT rank)" if metric == "l2" else "retrain it with --index-metric inner_product, or "
               "build the index with distance_strategy='euclidean'")
        raise InputError(f"adapter was trained to rank by {trained[self.config.index_metric]} but {where} ranks by "
                         f"{trained.get(metric, metric)} over vectors that are not unit length, where the adapter "
                         f"can rank below the base model; {fix}", path=self.path)

    def _same_weights(self, description: EncoderDescription) -> bool:
        """True when the encoder's model has the weights the adapter records (a folder's file hash
        against an in-memory model's weight hash name one model two ways)."""
        if not self.config.base_weights:
            return False
        return description.weights_fingerprint is not None and description.weights_fingerprint == self.config.base_weights

    def _trained_convention(self, encoder: Any, recorded: EncoderIdentity) -> dict[str, Any] | None:
        """The convention of the vectors the adapter was trained on: recorded, or (older adapters)
        derived from the recorded identity's settings on ``encoder``'s model (an encoder that can say
        how its model computes under other settings: ``convention_for``)."""
        if self.config.base_convention:
            return dict(self.config.base_convention)
        derive = getattr(encoder, "convention_for", None)  # a sentence-transformers encoder's (or its wrapper's)
        if derive is None or recorded.get("normalize") is None:
            return None
        return derive(normalize=recorded.get("normalize") == "True",
                                      prompts=recorded.get("prompts") != "none",
                                      query_prompt=_literal(recorded.get("query_prompt")),
                                      document_prompt=_literal(recorded.get("document_prompt")))

    @torch.no_grad()
    def transform(self, queries: np.ndarray) -> np.ndarray:
        """Adapted query vectors, float32 ``(n, dim)``, unit length when ``normalize_output``."""
        queries = np.asarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.config.dimension:
            raise InputError(f"adapter expects vectors of dimension {self.config.dimension}, got shape "
                             f"{queries.shape}", path=self.path)
        param = next(iter(self.module.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
        out = self.module(torch.from_numpy(queries).to(device)).float()
        if self.config.normalize_output:
            out = torch.nn.functional.normalize(out, dim=-1)
        return np.ascontiguousarray(out.cpu().numpy(), dtype=np.float32)

    def save(self, directory: str | Path) -> Path:
        return save_adapter(directory, self.module, self.config)


def _literal(value: str | None) -> str | None:
    import ast

    if value is None:
        return None
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value
    return parsed if isinstance(parsed, str) else value


def _describe_convention(convention: dict[str, Any]) -> str:
    """``{'unit_length': True, 'query_prompt': 'query: '}`` as 'unit length, query prompt 'query: ''."""
    parts = ["unit length" if convention.get("unit_length") else "not normalised"]
    for kind in ("query", "document"):
        prompt = convention.get(f"{kind}_prompt") or ""
        parts.append(f"{kind} prompt {prompt!r}" if prompt else f"no {kind} prompt")
    return "(" + ", ".join(parts) + ")"


@torch.no_grad()
def check_width(module: nn.Module, dimension: int) -> None:
    """Raise :class:`InputError` unless ``module`` maps a ``(1, dimension)`` batch to ``(1, dimension)``."""
    param = next(iter(module.parameters()), None)
    probe = torch.zeros(1, dimension, device=param.device if param is not None else "cpu",
                        dtype=param.dtype if param is not None else torch.float32)
    was_training = module.training
    module.eval()
    try:
        out = module(probe)
    except RuntimeError as exc:
        raise InputError(f"adapter module does not accept {dimension}-dimensional query vectors (the encoder's "
                         f"width): {' '.join(str(exc).split())[:160]}", field="adapter") from None
    finally:
        module.train(was_training)
    if tuple(getattr(out, "shape", ())) != (1, dimension):
        raise InputError(f"adapter module maps {dimension}-dimensional vectors to shape "
                         f"{tuple(getattr(out, 'shape', ()))}; expected (n, {dimension})", field="adapter")


def build_adapter(adapter_type: str, dimension: int, options: dict[str, Any] | None = None) -> nn.Module:
    """A fresh adapter from the ``adapters`` plugin family (``factory(dim, **options)``)."""
    from embtune_core.plugins import get_registry

    try:
        return get_registry().create("adapters", adapter_type, dim=int(dimension), **(options or {}))
    except TypeError as exc:  # an option the factory does not take
        raise PluginError(f"adapter '{adapter_type}': {exc}") from None


PROBE_DIM = 8  # width of the throw-away adapter that checks options before anything is embedded


def check_adapter_options(adapter_type: str, options: dict[str, Any] | None, *, path: Any = None,
                          table: str = "adapter.adapter_options") -> None:
    """Refuse an option the adapter does not declare (``hidden`` for ``linear``) or a value it refuses
    (``activation = "foo"``) before any text is embedded: checked against the adapter's declared options
    (:mod:`embtune_core.plugin_options`), then the adapter is built once at a width of :data:`PROBE_DIM`
    (a value only the module can judge). ConfigError naming ``path`` and ``table.key``; an unknown adapter
    name is left to the command's plugin check (exit 4)."""
    from embtune_core.errors import EmbtuneError
    from embtune_core.plugin_options import check_options
    from embtune_core.plugins import get_registry

    try:
        get_registry().get("adapters", adapter_type)
    except PluginError:
        return
    options = dict(options or {})
    check_options("adapters", adapter_type, options, path=path, table=table,
                  unknown=f"unknown option {{key}}: the {adapter_type} adapter does not take it{{suggestion}}; "
                          "known: {known}")
    try:
        get_registry().create("adapters", adapter_type, dim=PROBE_DIM, **options)
    except EmbtuneError as exc:
        raise ConfigError(exc.problem, path=path, field=f"{table}.{exc.field}" if exc.field else table) from None
    except (TypeError, ValueError) as exc:  # e.g. hidden = "wide" for a plugin that declares no types
        raise ConfigError(f"the {adapter_type} adapter refuses these options ({exc})", path=path,
                          field=table) from None


def non_finite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the tensors holding a NaN or an infinity (what a diverged training run leaves)."""
    return [name for name, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def save_adapter(directory: str | Path, module: nn.Module, config: AdapterConfig) -> Path:
    """Write ``adapter_config.json`` and ``adapter.safetensors`` into ``directory``, all or nothing.

    Raises :class:`InputError` (one line, nothing written) when a weight is NaN or infinite: such an
    adapter turns every query into NaN and every search result into noise."""
    from safetensors.torch import save_file

    directory = Path(directory)
    tensors = {name: t.detach().cpu().contiguous() for name, t in module.state_dict().items()}
    bad = non_finite(tensors)
    if bad:
        raise InputError(f"adapter weights {', '.join(bad[:3])} hold NaN or infinite values (training diverged: "
                         "lower the learning rate); not saved", path=directory)
    with atomic.atomic_directory(directory) as staging:
        save_file(tensors, str(staging / WEIGHTS_NAME), metadata={"format": FORMAT})
        from embtune_core.publishing.portable import portable

        atomic.write_json(staging / CONFIG_NAME, portable(config.to_json()))  # no machine's absolute path
    return directory


def load_adapter(directory: str | Path, *, expected_encoder_identity: str | None = None,
                 map_location: str | torch.device = "cpu") -> SavedAdapter:
    """Load an embtune adapter folder (or import a LlamaIndex one); check the base encoder if given."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError("no such adapter folder", path=directory)
    if (directory / CONFIG_NAME).is_file():
        adapter = _load_embtune(directory, map_location)
    elif (directory / LLAMAINDEX_CONFIG).is_file() and (directory / LLAMAINDEX_WEIGHTS).is_file():
        adapter = import_llamaindex_adapter(directory)
    else:
        raise InputError(f"not an adapter folder: expected {CONFIG_NAME} + {WEIGHTS_NAME} (embtune) or "
                         f"{LLAMAINDEX_CONFIG} + {LLAMAINDEX_WEIGHTS} (LlamaIndex)", path=directory)
    if expected_encoder_identity is not None:
        adapter.check_base(expected_encoder_identity)
    return adapter


def _load_embtune(directory: Path, map_location) -> SavedAdapter:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config_path = directory / CONFIG_NAME
    try:
        data = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"malformed JSON: {exc}", path=config_path) from None
    config = AdapterConfig.from_json(data, config_path)
    weights_path = directory / WEIGHTS_NAME
    if not weights_path.is_file():
        raise InputError("missing adapter weights", path=weights_path)
    try:
        state = load_file(str(weights_path), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"unreadable safetensors file: {exc}", path=weights_path) from None
    bad = non_finite(state)
    if bad:
        raise InputError(f"weights {', '.join(bad[:3])} hold NaN or infinite values (a diverged training run); "
                         "train the adapter again", path=weights_path)
    module = build_adapter(config.adapter_type, config.dimension, config.options)
    _load_state(module, state, weights_path)
    return SavedAdapter(module, config, directory)


def _load_state(module: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InputError(f"weights do not fit the configured adapter: {' '.join(str(exc).split())[:300]}",
                         path=path) from None


# --- LlamaIndex import -------------------------------------------------------------------------------
def import_llamaindex_adapter(directory: str | Path, *, base_encoder_identity: str | None = None) -> SavedAdapter:
    """Convert a LlamaIndex ``LinearLayer`` / ``TwoLayerNN`` folder into an embtune adapter.

    ``LinearLayer``: ``linear.weight`` (+ ``linear.bias``) -> ``linear`` adapter (bias zero when absent).
    ``TwoLayerNN``: ``linear1``, ``linear2``, ``residual_weight``; with ``add_residual`` its
    output ``embed + r * linear2(act(linear1(embed)))`` is our ``two-layer`` adapter with
    ``up = r * linear2``; without it, the ``two-layer`` adapter with ``residual=False``.
    LlamaIndex's ``AdapterEmbeddingModel`` does not normalise adapted queries, so neither does the
    import (``normalize_output=False``); with unit-length documents the ranking is the same.
    """
    directory = Path(directory)
    config_path, weights_path = directory / LLAMAINDEX_CONFIG, directory / LLAMAINDEX_WEIGHTS
    try:
        raw = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"unreadable LlamaIndex adapter config: {exc}", path=config_path) from None
    if not isinstance(raw, dict):
        raise InputError("expected a JSON object", path=config_path)
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - weights_only refuses arbitrary objects with several error types
        raise InputError(f"not a plain tensor state dict (refused to unpickle): {' '.join(str(exc).split())[:200]}",
                         path=weights_path) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError("expected a state dict of tensors", path=weights_path)
    bad = non_finite(state)
    if bad:
        raise InputError(f"weights {', '.join(bad[:3])} hold NaN or infinite values (a diverged training run)",
                         path=weights_path)

    if "linear.weight" in state:
        weight = state["linear.weight"]
        if weight.ndim != 2 or weight.shape[0] != weight.shape[1]:
            raise InputError(f"linear.weight must be square, got {tuple(weight.shape)}", path=weights_path)
        dim = weight.shape[0]
        bias = state.get("linear.bias", torch.zeros(dim))
        module = build_adapter("linear", dim, {"bias": True})
        _load_state(module, {"linear.weight": weight.float(), "linear.bias": bias.float()}, weights_path)
        adapter_type, options = "linear", {"bias": True}
    elif "linear1.weight" in state and "linear2.weight" in state:
        w1, w2 = state["linear1.weight"].float(), state["linear2.weight"].float()
        hidden, dim = w1.shape
        if w2.shape != (dim, hidden):
            raise InputError(f"linear2.weight must be ({dim}, {hidden}), got {tuple(w2.shape)}", path=weights_path)
        residual = bool(raw.get("add_residual", False))
        scale = state.get("residual_weight", torch.ones(1)).float().reshape(-1)[0] if residual else 1.0
        activation = str(raw.get("activation_fn_str", "relu"))
        options = {"hidden": int(hidden), "activation": activation, "dropout": 0.0, "residual": residual}
        module = build_adapter("two-layer", dim, options)
        _load_state(module, {
            "down.weight": w1, "down.bias": state.get("linear1.bias", torch.zeros(hidden)).float(),
            "up.weight": w2 * scale, "up.bias": state.get("linear2.bias", torch.zeros(dim)).float() * scale,
        }, weights_path)
        adapter_type = "two-layer"
    else:
        raise InputError(f"unknown LlamaIndex adapter weights {sorted(state)[:6]}; expected LinearLayer "
                         "(linear.weight) or TwoLayerNN (linear1.*, linear2.*)", path=weights_path)
    config = AdapterConfig(adapter_type, int(dim), options, base_encoder_identity=base_encoder_identity,
                           normalize_output=False, imported_from=f"llamaindex:{directory}")
    return SavedAdapter(module, config, directory)


def describe(config: AdapterConfig) -> dict[str, Any]:
    """The config as a plain dict (for reports)."""
    return asdict(config)
