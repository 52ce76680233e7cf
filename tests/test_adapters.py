"""Query adapters: identity at init, save/load, base-encoder check, LlamaIndex import, AdaptedEncoder."""

from __future__ import annotations

import collections
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from embtune_core.adapters.adapter_base import QueryAdapter, check_identity_at_init
from embtune_core.adapters.adapter_io import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    AdapterConfig,
    SavedAdapter,
    build_adapter,
    load_adapter,
    save_adapter,
)
from embtune_core.encoders.encoding import AdaptedEncoder
from embtune_core.errors import ConfigError, InputError, PluginError
from embtune_core.plugins import get_registry

DIM = 12


def _unit(n: int, seed: int = 0) -> torch.Tensor:
    x = torch.randn(n, DIM, generator=torch.Generator().manual_seed(seed))
    return x / x.norm(dim=1, keepdim=True)


@pytest.mark.parametrize("name, options", [
    ("linear", {}), ("linear", {"bias": False}),
    ("two-layer", {}), ("two-layer", {"hidden": 5, "activation": "gelu"}),
    ("two-layer", {"hidden": 30, "activation": "tanh", "dropout": 0.2}),
])
def test_builtin_adapters_are_the_identity_at_init(name, options):
    assert {"linear", "two-layer"} <= set(get_registry().names("adapters"))
    adapter = build_adapter(name, DIM, options).eval()
    check_identity_at_init(adapter, DIM)
    x = _unit(20)
    assert torch.equal(adapter(x), x)  # exactly, not approximately


def test_identity_contract_is_enforced_for_custom_adapters():
    class Scale(QueryAdapter):
        adapter_type = "scale"

        def __init__(self, dim, factor=1.0):
            super().__init__(dim, factor=factor)
            self.factor = torch.nn.Parameter(torch.tensor(float(factor)))

        def forward(self, x):
            return x * self.factor

    check_identity_at_init(Scale(DIM), DIM)
    with pytest.raises(PluginError, match="identity"):
        check_identity_at_init(Scale(DIM, factor=2.0), DIM)
    with pytest.raises(PluginError, match="must map"):
        check_identity_at_init(torch.nn.Linear(DIM, 3), DIM)
    with pytest.raises(ConfigError, match="activation"):  # a bad option value, not an unknown plugin
        build_adapter("two-layer", DIM, {"activation": "nope"})
    with pytest.raises(PluginError, match="unexpected keyword"):
        build_adapter("linear", DIM, {"hidden": 3})


def _perturbed(name: str, options: dict) -> torch.nn.Module:
    torch.manual_seed(1)
    adapter = build_adapter(name, DIM, options)
    with torch.no_grad():
        for p in adapter.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return adapter.eval()


@pytest.mark.parametrize("name, options", [("linear", {}), ("two-layer", {"hidden": 7, "activation": "silu"})])
def test_save_load_round_trip(tmp_path, name, options):
    adapter = _perturbed(name, options)
    config = AdapterConfig(name, DIM, adapter.config(), base_encoder_identity="enc A", base_normalize=True)
    save_adapter(tmp_path / "ad", adapter, config)
    assert sorted(p.name for p in (tmp_path / "ad").iterdir()) == sorted([CONFIG_NAME, WEIGHTS_NAME])
    written = json.loads((tmp_path / "ad" / CONFIG_NAME).read_text())
    assert written["adapter_type"] == name and written["dimension"] == DIM
    assert written["base_encoder"] == {"identity": "enc A", "normalize": True, "name": None}
    assert written["normalize_output"]
    loaded = load_adapter(tmp_path / "ad", expected_encoder_identity="enc A")
    x = _unit(9)
    expected = F.normalize(adapter(x), dim=-1).detach().numpy()
    np.testing.assert_allclose(loaded.transform(x.numpy()), expected, rtol=1e-5, atol=1e-6)
    assert loaded.fingerprint == SavedAdapter(adapter, config).fingerprint


def test_a_mismatched_base_encoder_is_refused(tmp_path):
    adapter = build_adapter("linear", DIM)
    save_adapter(tmp_path / "ad", adapter, AdapterConfig("linear", DIM, adapter.config(), base_encoder_identity="A"))
    with pytest.raises(InputError) as info:
        load_adapter(tmp_path / "ad", expected_encoder_identity="B")
    message = str(info.value)
    assert "\n" not in message and "'A'" in message and "'B'" in message and str(tmp_path / "ad") in message
    with pytest.raises(InputError, match="dimension"):
        load_adapter(tmp_path / "ad").transform(np.zeros((2, DIM + 1), np.float32))


def test_broken_adapter_folders_are_one_line_errors(tmp_path):
    with pytest.raises(InputError, match="no such adapter folder"):
        load_adapter(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="not an adapter folder"):
        load_adapter(tmp_path / "empty")
    adapter = build_adapter("linear", DIM)
    save_adapter(tmp_path / "ad", adapter, AdapterConfig("linear", DIM, adapter.config()))
    config = json.loads((tmp_path / "ad" / CONFIG_NAME).read_text())
    config["dimension"] = DIM + 1
    (tmp_path / "ad" / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(InputError, match="do not fit"):
        load_adapter(tmp_path / "ad")


# --- LlamaIndex folders, written here in LlamaIndex's layout (llama_index/embeddings/adapter/utils.py) ----
def _llamaindex_folder(path, config: dict, state: dict) -> None:
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config))
    torch.save(collections.OrderedDict(state), path / "pytorch_model.bin")


@pytest.mark.parametrize("bias", [False, True])
def test_import_llamaindex_linear_layer(tmp_path, bias):
    weight = torch.eye(DIM) + 0.1 * torch.randn(DIM, DIM)
    state = {"linear.weight": weight}
    if bias:
        state["linear.bias"] = 0.1 * torch.randn(DIM)
    _llamaindex_folder(tmp_path / "li", {"in_features": DIM, "out_features": DIM, "bias": bias}, state)
    adapter = load_adapter(tmp_path / "li")
    x = _unit(6)
    expected = x @ weight.T + (state["linear.bias"] if bias else 0)  # LinearLayer.forward
    np.testing.assert_allclose(adapter.transform(x.numpy()), expected.numpy(), rtol=1e-5, atol=1e-6)
    assert adapter.config.adapter_type == "linear" and adapter.config.base_encoder_identity is None
    # An imported adapter saves in embtune's own format.
    adapter.save(tmp_path / "converted")
    np.testing.assert_allclose(load_adapter(tmp_path / "converted").transform(x.numpy()), expected.numpy(),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("residual", [True, False])
def test_import_llamaindex_two_layer_nn(tmp_path, residual):
    hidden = 5
    state = {"linear1.weight": torch.randn(hidden, DIM), "linear1.bias": torch.randn(hidden),
             "linear2.weight": torch.randn(DIM, hidden), "linear2.bias": torch.randn(DIM),
             "residual_weight": torch.tensor([0.3])}
    config = {"in_features": DIM, "hidden_features": hidden, "out_features": DIM, "bias": False,
              "activation_fn_str": "tanh", "add_residual": residual}
    _llamaindex_folder(tmp_path / "li", config, state)
    adapter = load_adapter(tmp_path / "li")
    x = _unit(6)
    branch = torch.tanh(x @ state["linear1.weight"].T + state["linear1.bias"]) @ state["linear2.weight"].T \
        + state["linear2.bias"]
    expected = x + 0.3 * branch if residual else branch  # TwoLayerNN.forward
    np.testing.assert_allclose(adapter.transform(x.numpy()), expected.numpy(), rtol=1e-4, atol=1e-5)


class _NotATensor:
    pass


def test_llamaindex_import_never_unpickles_arbitrary_objects(tmp_path):
    (tmp_path / "li").mkdir()
    (tmp_path / "li" / "config.json").write_text("{}")
    torch.save({"linear.weight": _NotATensor()}, tmp_path / "li" / "pytorch_model.bin")
    with pytest.raises(InputError, match="refused to unpickle"):
        load_adapter(tmp_path / "li")


def test_adapted_encoder_changes_queries_only():
    from langchain_core.embeddings import DeterministicFakeEmbedding

    base = get_registry().create("encoders", "langchain", embeddings=DeterministicFakeEmbedding(size=DIM))
    adapter = _perturbed("linear", {})
    saved = SavedAdapter(adapter, AdapterConfig("linear", DIM, adapter.config(), base_encoder_identity=base.identity))
    adapted = AdaptedEncoder(base, saved)
    texts = ["alpha", "beta"]
    np.testing.assert_array_equal(adapted.encode_documents(texts), base.encode_documents(texts))
    assert not np.allclose(adapted.encode_queries(texts), base.encode_queries(texts))
    np.testing.assert_allclose(adapted.encode_queries(texts), saved.transform(base.encode_queries(texts)))
    assert adapted.identity != base.identity and adapted.dimension == DIM
    other = SavedAdapter(adapter, AdapterConfig("linear", DIM, adapter.config(), base_encoder_identity="other"))
    with pytest.raises(InputError, match="trained on encoder"):
        AdaptedEncoder(base, other)
