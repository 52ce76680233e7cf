"""LangChain's own conformance suites (``langchain-tests``) against embtune's integrations (issue 27).

* ``EmbeddingsUnitTests`` and ``EmbeddingsIntegrationTests`` against :class:`EmbtuneEmbeddings` made from a
  model folder, and from a base model plus a query adapter;
* ``VectorStoreIntegrationTests`` against embtune's FAISS store (:func:`build_faiss_store`, an
  ``EmbtuneFAISS``) with the suite's own embeddings (``DeterministicFakeEmbedding``, not embtune's), for
  both distance strategies, and once with :class:`EmbtuneEmbeddings` plus an adapter.

The standard tests run unchanged; none is overridden or skipped (a test that cannot pass by design would be
marked ``xfail`` with its reason, which ``test_no_overrides_DO_NOT_OVERRIDE`` checks). Async tests run with
pytest-asyncio in auto mode (pyproject's ``asyncio_mode``), as in LangChain's own packages.
"""

from __future__ import annotations

import typing

import pytest

pytest.importorskip("langchain_tests", reason="needs the dev extra (langchain-tests)")

from langchain_tests.integration_tests import EmbeddingsIntegrationTests, VectorStoreIntegrationTests
from langchain_tests.unit_tests import EmbeddingsUnitTests

from embtune_integrations.faiss_store import build_faiss_store
from embtune_integrations.langchain import EmbtuneEmbeddings


@pytest.fixture(scope="module")
def suite_adapter(tiny_model_dir, tmp_path_factory):
    """A linear adapter a little off the identity, as trained ones are (their identity penalty keeps them
    near it): queries change, and a text still finds itself first, as the standard store tests expect."""
    import numpy as np
    import torch

    from embtune_core.adapters.adapter_io import AdapterConfig, build_adapter, save_adapter

    base = EmbtuneEmbeddings(tiny_model_dir)
    torch.manual_seed(11)
    module = build_adapter("linear", base.dimension, {"bias": True})
    with torch.no_grad():
        module.linear.weight.add_(0.05 * torch.randn_like(module.linear.weight))
    directory = tmp_path_factory.mktemp("suite-adapter") / "adapter"
    save_adapter(directory, module, AdapterConfig("linear", base.dimension, {"bias": True},
                                                  base_encoder_identity=base.identity, base_normalize=True))
    adapted = EmbtuneEmbeddings(tiny_model_dir, adapter=directory)
    assert not np.allclose(adapted.embed_query("foo"), base.embed_query("foo"), atol=1e-3)
    return str(directory)


class _Params:
    """Model parameters from session fixtures: the standard suites read them as class properties."""

    params: typing.ClassVar[dict] = {}

    @pytest.fixture(autouse=True)
    def _model(self, tiny_model_dir, suite_adapter):
        type(self).params = self.make_params(tiny_model_dir, suite_adapter)

    @property
    def embeddings_class(self) -> type[EmbtuneEmbeddings]:
        return EmbtuneEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return dict(self.params)


class _ModelFolder(_Params):
    @staticmethod
    def make_params(model_dir, adapter):
        return {"model": model_dir, "batch_size": 4}


class _BaseAndAdapter(_Params):
    @staticmethod
    def make_params(model_dir, adapter):
        return {"model": model_dir, "adapter": adapter, "batch_size": 4}


class TestModelFolderEmbeddingsUnit(_ModelFolder, EmbeddingsUnitTests):
    pass


class TestModelFolderEmbeddingsIntegration(_ModelFolder, EmbeddingsIntegrationTests):
    pass


class TestAdaptedEmbeddingsUnit(_BaseAndAdapter, EmbeddingsUnitTests):
    pass


class TestAdaptedEmbeddingsIntegration(_BaseAndAdapter, EmbeddingsIntegrationTests):
    pass


class TestEmbtuneFAISSInnerProduct(VectorStoreIntegrationTests):
    strategy = "max_inner_product"

    @pytest.fixture
    def vectorstore(self):
        """An empty embtune store over the suite's own embeddings (any LangChain Embeddings must work)."""
        return build_faiss_store([], self.get_embeddings(), distance_strategy=self.strategy, use_gpu=False)


class TestEmbtuneFAISSEuclidean(TestEmbtuneFAISSInnerProduct):
    strategy = "euclidean"


class TestEmbtuneFAISSWithAdaptedEmbeddings(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self, tiny_model_dir, suite_adapter):
        """The store as embtune users build it: a tuned base model with a query adapter."""
        return build_faiss_store([], EmbtuneEmbeddings(tiny_model_dir, adapter=suite_adapter, batch_size=4),
                                 use_gpu=False)
