"""Encoder identities compared: which parts name the model's content, which are settings, and which
settings the encoder's convention (unit length, prompts) describes.

An identity is the string an encoder states (:mod:`embtune_core.encoding`): the model, its content
(``files=`` / ``weights=`` / ``hub=``) and every setting that changes the vectors. Adapters
(:mod:`embtune_core.adapter_io`) and stores (:mod:`embtune_integrations.faiss_store`) record it and
compare it here with the encoder they are given.
"""

from __future__ import annotations

import re
from typing import Any

_CONTENT = re.compile(r" (?:files|weights|hub)=\S+")
_SETTING = re.compile(r" (\w+)=('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|\S+)")
# Settings whose effect on the vectors the encoder's convention describes (compared on that effect).
_CONVENTION_KEYS = ("normalize", "prompts", "query_prompt", "document_prompt")


def _settings_of(identity: str, leave_out: tuple[str, ...] = ()) -> str:
    """An encoder identity without the part that names the model's content (files/weights/hub)
    and without the settings named in ``leave_out``."""
    rest = _CONTENT.sub("", identity)
    if leave_out:
        rest = _SETTING.sub(lambda m: "" if m.group(1) in leave_out else m.group(0), rest)
    return rest


def same_vectors(identity_a: str, convention_a: dict[str, Any] | None, identity_b: str,
                 convention_b: dict[str, Any] | None) -> bool:
    """Whether two encoders, given by identity and (where known) convention, make the same vectors:
    the same model content, the same settings apart from normalisation and prompts, and equal
    conventions (so ``normalize=True`` on a model that normalises itself matches ``False``)."""
    if identity_a == identity_b:
        return True
    if not (isinstance(convention_a, dict) and isinstance(convention_b, dict)):
        return False
    content = _content_of(identity_a)
    return (content is not None and content == _content_of(identity_b)
            and _settings_of(identity_a, _CONVENTION_KEYS) == _settings_of(identity_b, _CONVENTION_KEYS)
            and convention_a == convention_b)


def _content_of(identity: str) -> str | None:
    match = _CONTENT.search(identity)
    return match.group(0) if match else None
