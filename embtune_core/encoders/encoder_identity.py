"""An encoder's options and identity, typed: part of the encoder contract (:mod:`embtune_core.encoders.encoding`).

* :class:`EncoderOptions` -- the settings of a local model that change its vectors (normalisation,
  prompts, truncation, token limit, precision, backend). ``SentenceTransformerEncoder.options``.
* :class:`EncoderIdentity` -- what an encoder's vectors depend on: its family, the model's content
  (``files=`` / ``weights=`` / ``hub=``), its settings and, for an adapted encoder, the adapter.
  ``str(identity)`` is the one place it becomes text: the embedding cache's key, and what adapters,
  stores and reports record. The text is the one embtune has always written, so caches made before
  stay valid (``tests/test_encoders.py`` pins keys).

Comparisons (:func:`same_vectors`, :meth:`EncoderIdentity.same_settings`) work on the typed form.
An identity recorded in a file by an earlier run (an adapter's ``base_encoder.identity``, a store's
manifest, a ``report.json``) is text; :meth:`EncoderIdentity.parse` reads it back, here and nowhere
else.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

# Settings whose effect on the vectors the encoder's convention describes (compared on that effect).
CONVENTION_KEYS = ("normalize", "prompts", "query_prompt", "document_prompt")
CONTENT_KEYS = ("files", "weights", "hub")

# How a recorded identity's settings were written: `` key=value`` with a Python-quoted value where it
# held spaces or quotes (a prompt); used by parse() only.
_SETTING = re.compile(r" (\w+)=('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|\S+)")
# Wrappers a system identity (embtune_core.scoring.evaluation.System.identity) puts around an encoder's.
_FUSED = " of BM25 and "
_SUFFIXES = (" | adapter ", " | index tuning ")


@dataclass(frozen=True)
class EncoderOptions:
    """The options of a local model that change its vectors; each one that differs from its default
    is part of the identity (``normalize`` always is). Ranges are checked by the encoder that takes them."""

    normalize: bool = True
    prompts: bool = True  # False: plain encode(), no query/document prompt (DocsGPT's and LangChain's call)
    query_prompt: str | None = None
    document_prompt: str | None = None
    truncate_dim: int | None = None
    max_seq_length: int | None = None  # None: the model's own limit
    precision: str = "fp32"
    backend: str = "torch"

    def identity_settings(self, backend_file: str | None = None) -> tuple[tuple[str, str], ...]:
        """The settings as the identity states them, in its order; ``backend_file``: the ONNX file used."""
        out = [("normalize", str(self.normalize))]
        if not self.prompts:
            out.append(("prompts", "none"))
        if self.query_prompt is not None:
            out.append(("query_prompt", repr(self.query_prompt)))
        if self.document_prompt is not None:
            out.append(("document_prompt", repr(self.document_prompt)))
        if self.truncate_dim:
            out.append(("truncate_dim", str(int(self.truncate_dim))))
        if self.max_seq_length:
            out.append(("max_seq_length", str(self.max_seq_length)))
        if self.precision != "fp32":  # half-precision vectors differ: never mixed with fp32 ones in a cache
            out.append(("precision", self.precision))
        if self.backend != "torch":  # ONNX (int8) vectors differ from torch's: never mixed in a cache
            out += [("backend", "onnx"), ("file", str(backend_file))]
        return tuple(out)


@dataclass(frozen=True)
class EncoderIdentity:
    """What an encoder's vectors depend on (module docstring). ``label``: free text naming the model
    where it has no content hash (a LangChain object's class); ``adapter``: the fingerprint of a query
    adapter in front of it."""

    family: str
    content: str | None = None
    settings: tuple[tuple[str, str], ...] = ()
    label: str | None = None
    adapter: str | None = None

    def __str__(self) -> str:
        parts = [self.family, *([self.label] if self.label else []), *([self.content] if self.content else []),
                 *(f"{key}={value}" for key, value in self.settings)]
        return " ".join(parts) + (f" | adapter {self.adapter}" if self.adapter else "")

    def get(self, key: str) -> str | None:
        """A setting's value as stated (``repr`` of a prompt), or None when not stated."""
        return next((value for k, value in self.settings if k == key), None)

    def without(self, keys: Iterable[str]) -> EncoderIdentity:
        """This identity without the settings ``keys`` (e.g. ``document_windows``: query vectors do not
        depend on how documents are read)."""
        keys = set(keys)
        return replace(self, settings=tuple((k, v) for k, v in self.settings if k not in keys))

    def with_settings(self, *pairs: tuple[str, str]) -> EncoderIdentity:
        return replace(self, settings=(*self.settings, *pairs))

    def same_settings(self, other: EncoderIdentity, leave_out: Iterable[str] = ()) -> bool:
        """Equal apart from the model's content and the settings ``leave_out``."""
        a, b = self.without(leave_out), other.without(leave_out)
        return (a.family, a.label, a.settings, a.adapter) == (b.family, b.label, b.settings, b.adapter)

    @classmethod
    def parse(cls, text: str) -> EncoderIdentity:
        """An identity recorded as text, read back (see the module docstring). A system identity with
        a fusion prefix or adapter suffix (``RRF(k=60) of BM25 and <encoder> | adapter ...``) reads as
        its encoder's."""
        text = str(text)
        adapter = None
        if _FUSED in text:
            text = text.split(_FUSED, 1)[1]
        for suffix in _SUFFIXES:
            if suffix in text:
                text, _, rest = text.partition(suffix)
                adapter = adapter or (rest if suffix == " | adapter " else None)
        family, _, rest = text.partition(" ")
        rest = " " + rest if rest else ""
        content, settings, label, position = None, [], [], 0
        for match in _SETTING.finditer(rest):
            label.append(rest[position:match.start()].strip())
            position = match.end()
            key, value = match.group(1), match.group(2)
            if key in CONTENT_KEYS and content is None:
                content = f"{key}={value}"
            else:
                settings.append((key, value))
        label.append(rest[position:].strip())
        return cls(family, content, tuple(settings), " ".join(p for p in label if p) or None, adapter)


def identity_of(encoder: Any) -> EncoderIdentity:
    """The typed identity of an encoder: its ``encoder_identity``, or (an encoder that states its
    identity only as text, e.g. a third-party one) that text read back. A string is read back too."""
    if isinstance(encoder, EncoderIdentity):
        return encoder
    if isinstance(encoder, str):
        return EncoderIdentity.parse(encoder)
    # Its own (set on it, or a property of its class), never one a wrapper hands on from the encoder it
    # wraps through __getattr__ (a wrapper that changes the identity states it as text).
    typed = vars(encoder).get("encoder_identity") if hasattr(encoder, "__dict__") else None
    if typed is None and isinstance(getattr(type(encoder), "encoder_identity", None), property):
        typed = encoder.encoder_identity
    return typed if isinstance(typed, EncoderIdentity) else EncoderIdentity.parse(encoder.identity)


def same_vectors(identity_a: str | EncoderIdentity, convention_a: dict[str, Any] | None,
                 identity_b: str | EncoderIdentity, convention_b: dict[str, Any] | None) -> bool:
    """Whether two encoders, given by identity and (where known) convention, make the same vectors:
    the same model content, the same settings apart from normalisation and prompts, and equal
    conventions (so ``normalize=True`` on a model that normalises itself matches ``False``)."""
    if str(identity_a) == str(identity_b):
        return True
    if not (isinstance(convention_a, dict) and isinstance(convention_b, dict)):
        return False
    a, b = identity_of(identity_a), identity_of(identity_b)
    return (a.content is not None and a.content == b.content and a.same_settings(b, CONVENTION_KEYS)
            and convention_a == convention_b)


@dataclass(frozen=True)
class EncoderDescription:
    """What an encoder states about itself beside its identity, as an adapter records its base
    (``base_encoder`` of ``adapter_config.json``). Every member but ``identity`` is optional in the
    contract: None where an encoder does not state it (an API has no weights)."""

    identity: EncoderIdentity
    name: str | None = None  # for people: the model name it was built with
    normalize: bool | None = None
    options: EncoderOptions | None = None
    weights_fingerprint: str | None = None  # a local model's weights (and prompts), loaded
    token_limit: int | None = None  # tokens read of each text; None: whole, or unknown
    convention: dict[str, Any] | None = field(default=None, compare=False)  # unit_length, query/document prompt

    @property
    def prompts(self) -> bool | None:
        return self.options.prompts if self.options is not None else None


def describe(encoder: Any) -> EncoderDescription:
    """What ``encoder`` states about itself: its ``description()`` (:class:`embtune_core.encoders.encoding.Encoder`
    and the wrappers define it); an encoder that only meets the protocol (identity, dimension,
    encode_*) and states nothing more is described by its identity alone."""
    if callable(getattr(type(encoder), "description", None)):
        return encoder.description()
    return EncoderDescription(identity_of(encoder))
