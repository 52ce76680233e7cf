"""Built-in encoders: a sentence-transformers model, an OpenAI-compatible embeddings API, any LangChain
``Embeddings`` object.

Each factory returns an :class:`embtune_core.encoders.encoding.Encoder` (``identity``, ``dimension``,
``encode_queries``, ``encode_documents``; float32 ``(n, dimension)`` arrays, unit length by default).

* ``sentence-transformers``: ``factory(model=name_or_path_or_SentenceTransformer, device=None,
  batch_size=32, normalize=True, prompts=True, query_prompt=None, document_prompt=None, truncate_dim=None,
  max_seq_length=None, precision="fp32", backend="torch")``. ``backend`` ``"onnx"`` (the export's default
  file), ``"onnx-fp32"`` or ``"onnx-int8"`` runs the transformer of a folder written by ``embtune export
  --format onnx`` in ONNX Runtime (:mod:`embtune_core.encoders.onnx_export`); the backend and file are part of
  the identity, so cached vectors of two backends never mix. ``precision`` ``"bf16"``/``"fp16"`` casts a model loaded
  by name to that dtype (vectors still come back float32) and is part of the identity; the device
  and precision are logged in one line when the model loads.
  Loaded through :func:`embtune_core.encoders.models.load_sentence_transformer` (packaged copies first),
  lazily: a run whose vectors are all in the embedding cache never loads the model. With
  ``prompts=True`` queries use the model's ``"query"`` prompt and documents its ``"document"``
  prompt when it defines them (``encode_query`` / ``encode_document``). With ``prompts=False``
  both go through plain ``model.encode(texts)``, which is what DocsGPT's ``EmbeddingsWrapper`` and
  LangChain's ``HuggingFaceEmbeddings`` call; with ``normalize=False`` too, the vectors are exactly
  the host's (unit length only when the model ends in a ``Normalize`` module). ``prompts=False``
  adds ``prompts=none`` to the identity; ``prompts=True`` adds nothing, so identities recorded
  before the option existed still match.
  The identity of a local model is a fingerprint of its files, so a model retrained into the same
  folder never reuses stale cached vectors.
* ``openai``: ``factory(model="text-embedding-3-small", base_url=None, api_key=None,
  api_key_env="OPENAI_API_KEY", batch_size=128, dimensions=None, normalize=True, max_retries=6,
  timeout=60.0, concurrency=1, max_input_tokens=8192, max_request_tokens=300000, tokenizer=None)``.
  Works with OpenAI and any compatible server (vLLM, Ollama,
  llama.cpp, LiteLLM) through ``base_url``. Requests respect OpenAI's documented limits
  (:mod:`embtune_core.encoders.api_limits`): at most ``batch_size`` (and 2,048) inputs and ``max_request_tokens``
  tokens each, counted with tiktoken when its encoding is available offline, else as UTF-8 bytes (an
  upper bound). An input over ``max_input_tokens`` is cut to fit, as a local model cuts at its limit,
  and said in one line per call (``token_limit``/``count_over_limit`` report it beforehand, as for
  local models, when tiktoken counts); ``document_windows="mean"`` reads it whole as windows instead.
  Where the count is only a bound, the server's own count decides: a refusal for an over-long input
  or an over-full request (HTTP 400, OpenAI's messages) splits the request or cuts the input by the
  server's numbers and asks again. Batched; the OpenAI SDK retries 429, 408, 409, 5xx,
  timeouts and dropped connections ``max_retries`` times with its own backoff, honouring
  ``Retry-After`` up to two minutes; a 200 reply that is unusable (not JSON, wrong count) is asked
  again by embtune (``backoff``, ``max_backoff``); other errors (401, 404...) stop at once with a
  one-line :class:`~embtune_core.errors.ServiceError`. The key is read from the
  environment (``api_key="env:NAME"`` or ``api_key_env``) and is never logged nor part of the
  identity.
* ``langchain``: ``factory(embeddings=obj, identity=None, normalize=True, batch_size=None)`` wraps
  any ``langchain_core.embeddings.Embeddings``. Pass ``identity=`` naming the model and settings
  when the object's class and ``model`` attribute do not identify its vectors.

Example::

    from embtune_core.plugins import get_registry
    encoder = get_registry().create("encoders", "openai", model="text-embedding-3-small",
                                    base_url="http://127.0.0.1:8000/v1")
    vectors = encoder.encode_documents(["first chunk", "second chunk"])
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from embtune_core import hookimpl
from embtune_core.config import secret
from embtune_core.encoders.api_limits import (
    MAX_INPUT_TOKENS,
    MAX_INPUTS,
    MAX_REQUEST_TOKENS,
    TokenCounter,
    batches,
)
from embtune_core.encoders.encoder_identity import EncoderIdentity, EncoderOptions
from embtune_core.encoders.encoding import Encoder
from embtune_core.encoders.fingerprint import directory_fingerprint
from embtune_core.encoders.token_limits import set_limit
from embtune_core.errors import ConfigError, InputError, ServiceError

log = logging.getLogger(__name__)
ENCODER_PRECISIONS = ("fp32", "bf16", "fp16")


# --- sentence-transformers -------------------------------------------------------------------------
def module_fingerprint(model: Any) -> str:
    """A hash of an in-memory model's weights and prompts (for models never saved to disk)."""
    digest = hashlib.blake2b(digest_size=12)
    for name, tensor in model.state_dict().items():
        digest.update(name.encode() + b"\0" + tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(repr(sorted(getattr(model, "prompts", {}).items())).encode())
    return digest.hexdigest()


def _own_limit(folder: str | os.PathLike) -> int | None:
    from embtune_core.encoders.token_limits import model_max_seq_length

    try:
        return model_max_seq_length(str(folder))
    except (OSError, ValueError):
        return None


class SentenceTransformerEncoder(Encoder):
    """A sentence-transformers model as an encoder (see the module docstring)."""

    def __init__(self, model: Any = None, *, device: str | None = None, batch_size: int = 32,
                 normalize: bool = True, prompts: bool = True, query_prompt: str | None = None,
                 document_prompt: str | None = None, truncate_dim: int | None = None,
                 max_seq_length: int | None = None, precision: str = "fp32", backend: str = "torch"):
        from embtune_core.encoders.models import DEFAULT_MODEL, resolve
        from embtune_core.encoders.onnx_export import BACKENDS

        if backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got '{backend}'", field="backend")
        self.backend = backend

        if precision not in ENCODER_PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(ENCODER_PRECISIONS)}, got '{precision}'",
                              field="precision")
        self.precision = precision
        self.device = device
        self.batch_size = int(batch_size)
        self.normalize = bool(normalize)
        self.prompts = bool(prompts)
        self.query_prompt = query_prompt
        self.document_prompt = document_prompt
        self.truncate_dim = truncate_dim
        # Tokens past the model's max_seq_length are cut; a longer limit lets long chunks count in full.
        self.max_seq_length = int(max_seq_length) if max_seq_length else None
        self._model = None
        self._weights: str | None = None
        if model is None:
            model = DEFAULT_MODEL
        if isinstance(model, (str, os.PathLike)):
            self.name = str(model)
            resolution = resolve(self.name)
            content = (f"files={directory_fingerprint(resolution.target)}" if resolution.is_local
                       else f"hub={self.name}")
            if resolution.is_local:  # a LoRA adapter folder's vectors depend on its base model's files too
                from embtune_core.encoders.lora import base_fingerprint

                base = base_fingerprint(resolution.target)
                content += f"+base:{base}" if base else ""
            own = _own_limit(resolution.target) if resolution.is_local else None
            if self.max_seq_length is not None and self.max_seq_length == own:
                self.max_seq_length = None  # the model's own limit: same vectors, same identity
        else:  # an already loaded SentenceTransformer, e.g. one being fine-tuned
            self._model = model
            self.name = getattr(model, "embtune_model_name", type(model).__name__)
            if self.max_seq_length:
                set_limit(model, self.max_seq_length, self.name)
            # In memory the limit is whatever its owner set: always part of the identity (the weight
            # hash does not cover it), and compared as a number by adapters (SavedAdapter.check_base).
            from embtune_core.encoders.model_modules import token_limit

            self.max_seq_length = token_limit(model)  # None: a model that reads texts whole
            self._weights = module_fingerprint(model)
            content = f"weights={self._weights}"
        # The options and identity, typed (embtune_core.encoders.encoder_identity); the identity's text is the cache key.
        self.options = EncoderOptions(normalize=self.normalize, prompts=self.prompts, query_prompt=query_prompt,
                                      document_prompt=document_prompt, truncate_dim=truncate_dim,
                                      max_seq_length=self.max_seq_length, precision=self.precision,
                                      backend=self.backend)
        backend_file = None
        if self.backend != "torch":
            from embtune_core.encoders.onnx_export import backend_file as onnx_backend_file

            backend_file = onnx_backend_file(self.name, self.backend, self._model)
        self.encoder_identity = EncoderIdentity("sentence-transformers", content,
                                                self.options.identity_settings(backend_file))
        self.identity = str(self.encoder_identity)

    @property
    def model(self):
        if self._model is None:
            from embtune_core.encoders.models import load_sentence_transformer

            if self.backend != "torch":
                from embtune_core.encoders.onnx_export import load_backend_model

                self._model = load_backend_model(self.name, self.backend)
            else:
                self._model = load_sentence_transformer(self.name, device=self.device)
            if self.max_seq_length:
                set_limit(self._model, self.max_seq_length, self.name)
            if self.precision != "fp32":
                import torch

                self._model.to({"bf16": torch.bfloat16, "fp16": torch.float16}[self.precision])
            log.info("encoder %s: device %s, precision %s", self.name, self._model.device, self.precision)
        return self._model

    @property
    def weights_fingerprint(self) -> str:
        """:func:`module_fingerprint` of the model (loads it once): what an adapter records of its
        base, so a folder and the same model passed in memory are recognised as one."""
        if self._weights is None:
            self._weights = module_fingerprint(self.model)
        return self._weights

    @property
    def dimension(self) -> int:
        model = self.model
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        dim = get_dim()
        return min(dim, int(self.truncate_dim)) if self.truncate_dim else dim

    @property
    def token_limit(self) -> int | None:
        """Tokens the model reads of each text (its ``max_seq_length``, or a static model's tokenizer
        truncation); the rest is cut. None: the model reads texts whole."""
        from embtune_core.encoders.model_modules import token_limit

        return token_limit(self.model)

    def count_over_limit(self, texts: list[str], kind: str) -> tuple[int, int | None]:
        """(texts longer than :attr:`token_limit`, the limit), counted with the model's tokenizer
        and the prompt ``kind`` gets; see :mod:`embtune_core.encoders.token_limits`."""
        from embtune_core.encoders.token_limits import count_over

        prompt = self.query_prompt if kind == "query" else self.document_prompt
        if not self.prompts and prompt is None:
            kind = "plain"  # encode() applies only the model's default prompt, as prompt_for does for an unknown kind
        return count_over(self.model, texts, kind, prompt)

    @property
    def convention(self) -> dict[str, Any]:
        """How the vectors come out, whatever settings say so (loads the model): ``unit_length``
        (normalised here, or by the model's own ``Normalize`` module) and the exact ``query_prompt``
        and ``document_prompt`` prepended ("" for none). Two encoders of the same model with equal
        conventions give equal vectors; an adapter's base check compares them."""
        return self.convention_for(normalize=self.normalize, prompts=self.prompts, query_prompt=self.query_prompt,
                                   document_prompt=self.document_prompt)

    def convention_for(self, *, normalize: bool, prompts: bool, query_prompt: str | None = None,
                       document_prompt: str | None = None) -> dict[str, Any]:
        """:attr:`convention` of this model under other settings (an adapter's recorded ones)."""
        from sentence_transformers.models import Normalize

        model = self.model
        table = getattr(model, "prompts", None) or {}
        default_name = getattr(model, "default_prompt_name", None)
        default = table.get(default_name, "") if default_name else ""

        def used(kind: str, explicit: str | None) -> str:
            if explicit is not None:
                return explicit
            if prompts:  # encode_query / encode_document pick these, as sentence-transformers does
                for name in (("query",) if kind == "query" else ("document", "passage", "corpus")):
                    if name in table:
                        return table[name]
            return default

        return {"unit_length": bool(normalize or any(isinstance(m, Normalize) for m in model)),
                "query_prompt": used("query", query_prompt), "document_prompt": used("document", document_prompt)}

    def _encode(self, texts: list[str], kind: str) -> np.ndarray:
        from embtune_core.encoders.token_prefix import readable_texts

        prompt = self.query_prompt if kind == "query" else self.document_prompt
        texts = readable_texts(self.model, texts)  # the tokens the model reads, never a long text tokenised whole
        options = {"batch_size": self.batch_size, "convert_to_numpy": True, "show_progress_bar": False,
                   "normalize_embeddings": False, "truncate_dim": self.truncate_dim}
        if not self.prompts:
            # The host's call: plain encode() (only the model's default prompt, if it names one).
            return self.model.encode(texts, prompt=prompt, **options)
        encode = self.model.encode_query if kind == "query" else self.model.encode_document
        return encode(texts, prompt=prompt, **options)


# --- OpenAI-compatible embeddings API --------------------------------------------------------------
DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"


class OpenAIEncoder(Encoder):
    """An OpenAI-compatible ``/v1/embeddings`` endpoint as an encoder (see the module docstring)."""

    def __init__(self, model: str = "text-embedding-3-small", *, base_url: str | None = None,
                 api_key: Any = None, api_key_env: str = "OPENAI_API_KEY", batch_size: int = 128,
                 dimensions: int | None = None, normalize: bool = True, max_retries: int = 6,
                 timeout: float = 60.0, backoff: float = 1.0, max_backoff: float = 60.0, concurrency: int = 1,
                 query_prefix: str = "", document_prefix: str = "",
                 max_input_tokens: int | None = MAX_INPUT_TOKENS, max_request_tokens: int | None = MAX_REQUEST_TOKENS,
                 tokenizer: str | None = None):
        import openai

        if not model:
            raise InputError("the openai encoder needs a model name", field="model")
        self.model_name = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_OPENAI_BASE_URL).rstrip("/")
        self.batch_size = max(1, min(int(batch_size), MAX_INPUTS))
        self.max_input_tokens = int(max_input_tokens) if max_input_tokens else None
        self.max_request_tokens = int(max_request_tokens) if max_request_tokens else None
        self.tokenizer = tokenizer
        self._counter: TokenCounter | None = None
        self._announced: set[int] = set()  # over-long texts count_over_limit already reported (hashes)
        # What rebuilds the client after pickling: the key's source (never the key itself).
        self._client_settings = {"api_key": api_key, "api_key_env": api_key_env, "timeout": timeout}
        self.dimensions = int(dimensions) if dimensions else None
        self.normalize = bool(normalize)
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.concurrency = max(1, int(concurrency))
        self.query_prefix = query_prefix
        self.document_prefix = document_prefix
        key = secret(api_key, default_env=api_key_env, field="api_key")
        # Local servers (vLLM, Ollama) accept any key; the client insists on one.
        # The SDK retries transport faults itself (429, 408, 409, 5xx, timeouts, dropped connections),
        # honouring Retry-After; embtune's loop below retries only replies the SDK cannot judge.
        self._client = openai.OpenAI(base_url=self.base_url, api_key=key or "not-needed",
                                     max_retries=self.max_retries, timeout=timeout)
        self._dimension = self.dimensions
        from embtune_core.runtime.secrets_scrub import scrub

        # Credentials in the URL change no vector: the identity (cache key, reports) never holds them.
        settings = [("model", model), ("base_url", scrub(self.base_url)), ("normalize", str(self.normalize))]
        if self.dimensions:
            settings.append(("dimensions", str(self.dimensions)))
        if query_prefix:
            settings.append(("query_prefix", repr(query_prefix)))
        if document_prefix:
            settings.append(("document_prefix", repr(document_prefix)))
        if self.max_input_tokens != MAX_INPUT_TOKENS:  # another cut point: other vectors for long texts
            settings.append(("max_input_tokens", str(self.max_input_tokens)))
        self.encoder_identity = EncoderIdentity("openai", settings=tuple(settings))
        self.identity = str(self.encoder_identity)

    @property
    def name(self) -> str:  # type: ignore[override]
        """The model name (what an adapter records of its base, for people)."""
        return self.model_name

    # -- pickling: the client holds locks and sockets; it is made again from the key's source ---------
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_client", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        import openai

        self.__dict__.update(state)
        settings = self._client_settings
        key = secret(settings["api_key"], default_env=settings["api_key_env"], field="api_key")
        self._client = openai.OpenAI(base_url=self.base_url, api_key=key or "not-needed",
                                     max_retries=self.max_retries, timeout=settings["timeout"])

    # -- tokens: OpenAI's documented limits (embtune_core.encoders.api_limits) ----------------------------------
    @property
    def counter(self) -> TokenCounter:
        """How tokens are counted (tiktoken's encoding, or the UTF-8 byte bound)."""
        if self._counter is None:
            self._counter = TokenCounter.for_model(self.model_name, self.tokenizer)
        return self._counter

    @property
    def token_limit(self) -> int | None:
        """Tokens one input may hold (``max_input_tokens``); a longer one is cut (or read as windows)."""
        return self.max_input_tokens

    def count_over_limit(self, texts: list[str], kind: str) -> tuple[int, int | None]:
        """(texts longer than :attr:`token_limit` with this kind's prefix, the limit) when tokens can be
        counted exactly (tiktoken); (0, None) with the byte bound, which cannot tell (the server's count
        decides, and each cut is said when it happens)."""
        if not self.max_input_tokens or not self.counter.exact or not texts:
            return 0, None
        prefix = self.query_prefix if kind == "query" else self.document_prefix
        over = [t for t, n in zip(texts, self.counter.count([prefix + t for t in texts])) if n > self.max_input_tokens]
        self._announced.update(hash(prefix + t) for t in over)
        return len(over), self.max_input_tokens

    def split_windows(self, texts: list[str]) -> Any:
        """``texts`` as windows that fit :attr:`token_limit` with the document prefix (``document_windows``,
        :mod:`embtune_core.encoders.long_documents`); weights are token counts (bytes with the byte bound)."""
        from embtune_core.encoders.long_documents import Windows

        budget = (self.max_input_tokens or MAX_INPUT_TOKENS) - (self.counter.count([self.document_prefix])[0]
                                                                if self.document_prefix else 0)
        out, owner, tokens = [], [], []
        for index, text in enumerate(texts):
            for piece, n in self.counter.windows(text, budget):
                out.append(piece)
                owner.append(index)
                tokens.append(n)
        return Windows(out, np.asarray(owner, dtype=np.int64), np.asarray(tokens, dtype=np.float64), len(texts))

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            self._dimension = int(self._request_fitting(["dimension probe"]).shape[1])
        return self._dimension

    def _encode(self, texts: list[str], kind: str) -> np.ndarray:
        prefix = self.query_prefix if kind == "query" else self.document_prefix
        # The API rejects empty strings; a space embeds as "nothing" on every server we know.
        texts = [f"{prefix}{t}" if (prefix or t) else " " for t in texts]
        counts = self.counter.count(texts)
        if self.max_input_tokens and self.counter.exact:  # cut as a local model cuts at its limit
            over = [i for i, n in enumerate(counts) if n > self.max_input_tokens]
            # Said once: here, unless count_over_limit reported these very texts beforehand (as commands do).
            unannounced = any(hash(texts[i]) not in self._announced for i in over)
            for i in over:
                texts[i] = self.counter.cut(texts[i], self.max_input_tokens)
                counts[i] = self.max_input_tokens
            if over:
                log.log(logging.WARNING if unannounced else logging.DEBUG,
                        "%d of %d %s exceed %d tokens of %s (%s); they are cut (document_windows='mean' reads them "
                        "whole)", len(over), len(texts), "queries" if kind == "query" else "corpus texts",
                        self.max_input_tokens, self.model_name, self.counter.name)
        ranges = batches(counts, max_inputs=self.batch_size,
                         max_tokens=self.max_request_tokens or sum(counts) + 1)
        groups = [texts[a:b] for a, b in ranges]
        if self.concurrency > 1 and len(groups) > 1:
            with ThreadPoolExecutor(self.concurrency) as pool:
                parts = list(pool.map(self._request_fitting, groups))
        else:
            parts = [self._request_fitting(group) for group in groups]
        vectors = np.concatenate(parts) if parts else np.zeros((0, self.dimension), np.float32)
        if self._dimension is None and len(vectors):
            self._dimension = vectors.shape[1]
        return vectors

    def _request_fitting(self, batch: list[str], attempt: int = 0) -> np.ndarray:
        """:meth:`_request`, made to fit where the server refuses by its own token count (HTTP 400 with
        OpenAI's messages): an over-full request is split in two, an over-long input is cut by the
        ratio of the server's limit to its count (said in one line) and asked again, up to 3 times."""
        try:
            return self._request(batch)
        except _Refused as refusal:
            if refusal.kind == "request" or len(batch) > 1:
                if len(batch) == 1:
                    raise refusal.error from None
                log.info("%s refused a request of %d inputs (%s); splitting it", self.base_url, len(batch),
                         refusal.message)
                half = len(batch) // 2
                return np.concatenate([self._request_fitting(batch[:half]), self._request_fitting(batch[half:])])
            if attempt >= 3 or not refusal.limit or not refusal.requested:
                raise refusal.error from None
            text = batch[0]
            keep = max(1, int(len(text) * refusal.limit / refusal.requested * 0.97))
            log.warning("an input of %d characters exceeds %s's limit by the server's count (%d of %d tokens); "
                        "it is cut to %d characters (document_windows='mean' reads it whole)", len(text),
                        self.model_name, refusal.requested, refusal.limit, keep)
            return self._request_fitting([text[:keep]], attempt + 1)

    def _request(self, batch: list[str]) -> np.ndarray:
        """One batch through the SDK (which retries transport faults ``max_retries`` times, honouring
        Retry-After); a 200 reply that is unusable (not JSON, wrong count) is asked again here, with
        exponential backoff from ``backoff`` up to ``max_backoff`` seconds."""
        import openai

        unusable = (openai.APIResponseValidationError, ValueError)
        transport = (openai.RateLimitError, openai.InternalServerError, openai.APITimeoutError,
                     openai.APIConnectionError)
        extra = {"dimensions": self.dimensions} if self.dimensions else {}
        for attempt in range(self.max_retries + 1):
            try:
                response = self._client.embeddings.create(model=self.model_name, input=batch, **extra)
                data = sorted(response.data, key=lambda item: item.index)
                if len(data) != len(batch):
                    raise ValueError(f"{len(data)} embeddings for {len(batch)} inputs")
                return np.asarray([item.embedding for item in data], dtype=np.float32)
            except transport as exc:
                raise ServiceError(f"embeddings request to {self.base_url} failed after "
                                   f"{self.max_retries + 1} attempts: {_describe(exc)}") from None
            except openai.APIStatusError as exc:  # 400, 401, 403, 404...: retrying cannot help
                error = ServiceError(f"embeddings request to {self.base_url} refused: {_describe(exc)}")
                refusal = _Refused.parse(exc, error)
                if refusal is not None:
                    raise refusal from None
                raise error from None
            except unusable as exc:
                if attempt == self.max_retries:
                    raise ServiceError(f"embeddings request to {self.base_url} failed after "
                                       f"{attempt + 1} attempts: {_describe(exc)}") from None
                wait = min(self.max_backoff, self.backoff * 2 ** attempt) * (0.5 + random.random() / 2)
                log.warning("embeddings request to %s gave an unusable reply (%s); retry %d/%d in %.1fs",
                            self.base_url, _describe(exc), attempt + 1, self.max_retries, wait)
                time.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover


class _Refused(Exception):
    """An HTTP 400 that says, in OpenAI's words, that an input or a request holds too many tokens."""

    INPUT = re.compile(r"maximum context length is (\d+) tokens, however you requested (\d+) tokens")
    REQUEST = re.compile(r"Requested (\d+) tokens, max (\d+) tokens per request")

    def __init__(self, kind: str, requested: int, limit: int, message: str, error: ServiceError):
        super().__init__(message)
        self.kind, self.requested, self.limit, self.message, self.error = kind, requested, limit, message, error

    @classmethod
    def parse(cls, exc: Any, error: ServiceError) -> _Refused | None:
        if getattr(exc, "status_code", None) != 400:
            return None
        message = getattr(exc, "message", None) or str(exc)
        if match := cls.INPUT.search(message):
            return cls("input", int(match.group(2)), int(match.group(1)), message, error)
        if match := cls.REQUEST.search(message):
            return cls("request", int(match.group(1)), int(match.group(2)), message, error)
        return None


def _describe(exc: Exception) -> str:
    status = getattr(exc, "status_code", None)
    name = type(exc).__name__
    message = getattr(exc, "message", None) or str(exc)
    return f"HTTP {status} {name}: {message}" if status else f"{name}: {message}"


# --- LangChain ---------------------------------------------------------------------------------------
_IDENTIFYING_ATTRIBUTES = ("model", "model_name", "model_id", "deployment", "dimensions", "size",
                           "task_type", "query_instruction", "embed_instruction")


class LangChainEncoder(Encoder):
    """Any LangChain ``Embeddings`` object as an encoder (see the module docstring)."""

    def __init__(self, embeddings: Any = None, *, identity: str | None = None, normalize: bool = True,
                 batch_size: int | None = None):
        if embeddings is None or not (hasattr(embeddings, "embed_documents") and hasattr(embeddings, "embed_query")):
            raise InputError("the langchain encoder needs embeddings=<a LangChain Embeddings object>",
                             field="embeddings")
        self.embeddings = embeddings
        self.normalize = bool(normalize)
        self.batch_size = int(batch_size) if batch_size else None
        self._dimension: int | None = None
        if identity is None:
            cls = type(embeddings)
            # Only whitelisted, non-secret attributes: a model object may hold an API key.
            attrs = [f"{a}={getattr(embeddings, a)}" for a in _IDENTIFYING_ATTRIBUTES
                     if isinstance(getattr(embeddings, a, None), (str, int, float))]
            if not attrs:
                log.warning("%s exposes no model name; pass identity= so cached vectors are not mixed up",
                            cls.__name__)
            identity = " ".join([f"class={cls.__module__}.{cls.__qualname__}", *attrs])
        self.encoder_identity = EncoderIdentity("langchain", label=identity,
                                                settings=(("normalize", str(self.normalize)),))
        self.identity = str(self.encoder_identity)

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            self._dimension = len(self.embeddings.embed_query("dimension probe"))
        return self._dimension

    def _encode(self, texts: list[str], kind: str) -> np.ndarray:
        if kind == "query":
            vectors = [self.embeddings.embed_query(t) for t in texts]
        else:
            step = self.batch_size or max(1, len(texts))
            vectors = [v for i in range(0, len(texts), step)
                       for v in self.embeddings.embed_documents(texts[i:i + step])]
        array = np.asarray(vectors, dtype=np.float32)
        if self._dimension is None and array.ndim == 2 and len(array):
            self._dimension = array.shape[1]
        return array


@hookimpl
def register_encoders(register):
    register("sentence-transformers", SentenceTransformerEncoder,
             description="a sentence-transformers model (name, folder or loaded model)")
    register("openai", OpenAIEncoder,
             description="an OpenAI-compatible embeddings API (OpenAI, vLLM, Ollama...) via base_url")
    register("langchain", LangChainEncoder, description="any LangChain Embeddings object (embeddings=...)")
