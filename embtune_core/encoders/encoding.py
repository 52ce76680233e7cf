"""Encoders: the embedding backends that turn texts into vectors, and a spec syntax to name one.

An encoder is any object with

* ``identity: str`` -- the model and every setting that changes the vectors (normalisation,
  prompts, output dimensions, the model's content hash). It is the embedding cache's key, so two
  encoders with the same identity must give the same vectors. It never contains an API key.
  Built-in encoders state it typed too, ``encoder_identity``
  (:class:`~embtune_core.encoders.encoder_identity.EncoderIdentity`), and ``identity`` is its text.
* ``dimension: int`` -- the length of each vector.
* ``encode_queries(texts) -> np.ndarray`` and ``encode_documents(texts) -> np.ndarray`` -- float32
  arrays of shape ``(len(texts), dimension)``. They differ when a model embeds queries and
  documents differently (query prompts, asymmetric APIs); otherwise they are the same call.

:class:`Encoder` is a small base class for new backends (subclass it, implement ``_encode``);
:class:`EncoderProtocol` states the same contract for duck typing. Beyond the four members above,
an encoder may state what an adapter records of its base -- ``name``, ``options``
(:class:`~embtune_core.encoders.encoder_identity.EncoderOptions`), ``weights_fingerprint``, ``token_limit``,
``convention`` -- which :class:`Encoder` declares (None: not stated) and :meth:`Encoder.description`
returns as one :class:`~embtune_core.encoders.encoder_identity.EncoderDescription`; :func:`describe` reads it
from any encoder (a duck-typed one states its identity only). Built-in encoders are the
plugins in :mod:`embtune_plugins.encoders`; :class:`AdaptedEncoder` puts a trained query adapter
in front of any encoder.

Encoder specs
-------------
A command line names an encoder with one string, parsed by :func:`encoder_from_spec`:

==========================================================  ============================================
``st:sentence-transformers/all-MiniLM-L6-v2``               sentence-transformers model (name or folder)
``sentence-transformers:/path/to/model``                    the same, long prefix
``sentence-transformers/all-MiniLM-L6-v2``                  no known prefix: a sentence-transformers model
``openai:text-embedding-3-small``                           OpenAI embeddings API (key from OPENAI_API_KEY)
``openai:text-embedding-3-small@http://127.0.0.1:8000/v1``  any OpenAI-compatible server (vLLM, Ollama...)
``NAME:VALUE``                                              plugin encoder NAME, called as ``factory(model=VALUE)``
==========================================================  ============================================

Everything after the first ``@`` of an ``openai:`` spec is the ``base_url``. ``document_windows="mean"``
or ``"max"`` reads documents longer than a local model's token limit whole
(:mod:`embtune_core.encoders.long_documents`). Further options
(``batch_size``, ``dimensions``, ``api_key="env:MY_KEY"``...) are keyword arguments of
:func:`encoder_from_spec`. LangChain ``Embeddings`` objects live in Python, so they have no spec:
build them with ``get_registry().create("encoders", "langchain", embeddings=obj)``.

Example::

    encoder = encoder_from_spec("st:sentence-transformers/all-MiniLM-L6-v2")
    docs = encoder.encode_documents(["Uber's revenue grew 57% in 2021."])   # (1, 384) float32
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from embtune_core.encoders.encoder_identity import (  # noqa: F401 - same_vectors: public here too
    EncoderDescription,
    EncoderIdentity,
    EncoderOptions,
    describe,
    identity_of,
    same_vectors,
)
from embtune_core.errors import InputError, ServiceError
from embtune_core.hookspecs import Encoder as EncoderProtocol  # the contract every encoder meets
from embtune_core.retrieval.search import normalize


class Encoder:
    """Base class for encoders: implement ``identity``, ``dimension`` and ``_encode(texts, kind)``.

    ``kind`` is ``"query"`` or ``"document"``. The base class checks the shape, converts to
    float32 and applies ``normalize`` (unit length rows) when the subclass sets it.
    """

    identity: str
    normalize: bool = True
    # Optional members of the contract (module docstring): None where this encoder does not state them.
    encoder_identity: EncoderIdentity | None = None  # typed; ``identity`` is str(encoder_identity)
    name: str | None = None
    options: EncoderOptions | None = None
    weights_fingerprint: str | None = None
    token_limit: int | None = None
    convention: dict[str, Any] | None = None

    @property
    def dimension(self) -> int:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    def description(self) -> EncoderDescription:
        """What this encoder states about itself (an adapter records it of its base). Reads
        ``weights_fingerprint``, ``token_limit`` and ``convention``, which load a local model."""
        return EncoderDescription(identity_of(self), name=self.name, normalize=self.normalize,
                                  options=self.options, weights_fingerprint=self.weights_fingerprint,
                                  token_limit=self.token_limit, convention=self.convention)

    def _encode(self, texts: list[str], kind: str) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._checked(self._encode(list(texts), "query"), len(texts))

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._checked(self._encode(list(texts), "document"), len(texts))

    def _checked(self, vectors: Any, n: int) -> np.ndarray:
        if n == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        array = np.asarray(vectors, dtype=np.float32)
        if array.ndim != 2 or array.shape[0] != n:
            raise ServiceError(f"{self.identity}: expected {n} vectors, got an array of shape {array.shape}")
        if not np.all(np.isfinite(array)):
            raise ServiceError(f"{self.identity}: returned NaN or infinite values")
        if self.normalize:
            array = normalize(array)
        return np.ascontiguousarray(array, dtype=np.float32)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.identity!r})"


class AdaptedEncoder(Encoder):
    """An encoder whose *queries* pass through a trained adapter; documents are left untouched.

    Because documents come out exactly as the base encoder makes them, an existing vector index
    of the corpus stays valid. ``adapter`` is a :class:`embtune_core.adapters.adapter_io.SavedAdapter`
    (from :func:`~embtune_core.adapters.adapter_io.load_adapter`) or a bare ``torch.nn.Module``; with a
    SavedAdapter, a base encoder whose identity differs from the one it was trained on is refused.

    Example::

        adapter = load_adapter("out/adapter")
        encoder = AdaptedEncoder(encoder_from_spec("st:all-MiniLM-L6-v2"), adapter)
    """

    def __init__(self, encoder: EncoderProtocol, adapter: Any, *, normalize: bool | None = None,
                 check_identity: bool = True):
        from embtune_core.adapters.adapter_io import SavedAdapter

        self.base = encoder
        if isinstance(adapter, SavedAdapter):
            if check_identity:
                adapter.check_base(encoder)
            self.adapter = adapter
        else:
            self.adapter = SavedAdapter.wrap(adapter, dimension=encoder.dimension,
                                             normalize_output=True if normalize is None else normalize)
        self.normalize = False  # the adapter decides; documents come from the base encoder as they are

    @property
    def encoder_identity(self) -> EncoderIdentity:  # type: ignore[override]
        from dataclasses import replace

        return replace(identity_of(self.base), adapter=self.adapter.fingerprint)

    @property
    def identity(self) -> str:  # type: ignore[override]
        return f"{self.base.identity} | adapter {self.adapter.fingerprint}"

    @property
    def dimension(self) -> int:  # type: ignore[override]
        return self.adapter.config.dimension

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.adapter.transform(self.base.encode_queries(list(texts)))

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self.base.encode_documents(list(texts))

    @property
    def count_over_limit(self):
        """The base encoder's token counter (see :mod:`embtune_core.encoders.token_limits`), or None."""
        return getattr(self.base, "count_over_limit", None)


# --- specs ----------------------------------------------------------------------------------------
SPEC_ALIASES = {"st": "sentence-transformers", "sentence-transformers": "sentence-transformers",
                "sbert": "sentence-transformers", "model": "sentence-transformers", "openai": "openai"}


def parse_encoder_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``spec`` as (registered encoder name, factory options); see the module docstring."""
    from embtune_core.plugins import get_registry

    spec = str(spec).strip()
    if not spec:
        raise InputError("empty encoder spec; expected e.g. st:sentence-transformers/all-MiniLM-L6-v2",
                         field="encoder")
    from embtune_core.runtime.secrets_scrub import register_credentials

    register_credentials(spec)  # openai:MODEL@http://user:key@host/v1: the key in every form it travels in
    prefix, sep, rest = spec.partition(":")
    name = SPEC_ALIASES.get(prefix.lower()) if sep else None
    if name is None and sep and len(prefix) > 1 and prefix in get_registry().names("encoders"):
        name = prefix  # a plugin encoder: NAME:VALUE
    if name is None:  # no known prefix (a hub name, a path, C:\ on Windows): a sentence-transformers model
        return "sentence-transformers", {"model": spec}
    if not rest:
        raise InputError(f"encoder spec '{spec}' names no model after '{prefix}:'", field="encoder")
    if name == "openai":
        model, at, base_url = rest.partition("@")
        if at and not base_url:
            raise InputError(f"encoder spec '{spec}': nothing after '@' (expected a base URL)", field="encoder")
        options: dict[str, Any] = {"model": model}
        if base_url:
            options["base_url"] = base_url
        return name, options
    return name, {"model": rest}


def encoder_from_spec(spec: str, **options: Any) -> EncoderProtocol:
    """Build the encoder a spec string names; ``options`` go to its factory (and win over the spec).

    Example: ``encoder_from_spec("openai:text-embedding-3-small@http://127.0.0.1:8000/v1", batch_size=64)``.
    """
    from embtune_core.encoders.long_documents import wrap
    from embtune_core.plugins import get_registry

    windows = options.pop("document_windows", None)  # a layer over any encoder, not a factory option
    name, parsed = parse_encoder_spec(spec)
    return wrap(get_registry().create("encoders", name, **{**parsed, **options}), windows)
