"""Loading a sentence-transformers model by name: :func:`load_sentence_transformer`.

Where a name resolves to (a packaged copy, a local folder, the hub) is :mod:`embtune_core.encoders.model_names`;
its names are re-exported here, the import path callers have always used. Loading sits above
:mod:`embtune_core.encoders.lora` (a LoRA adapter folder loads through peft), which itself resolves names.
"""

from __future__ import annotations

import logging
from pathlib import Path

from embtune_core.encoders.lora import is_adapter_folder, load_adapter_folder
from embtune_core.encoders.model_names import (  # noqa: F401 - the public names of embtune_core.encoders.models
    _PACKAGED,
    DEFAULT_MODEL,
    MPNET_PARTS,
    Resolution,
    _minilm_path,
    _mpnet_part_files,
    _mpnet_path,
    assemble_split_zip,
    cache_dir,
    known_models,
    looks_like_path,
    resolve,
)

log = logging.getLogger(__name__)


def load_sentence_transformer(name: str = DEFAULT_MODEL, **kwargs):
    """``SentenceTransformer`` for ``name``, loaded from a packaged copy when one is installed."""
    from sentence_transformers import SentenceTransformer

    resolution = resolve(name)
    folder = Path(resolution.target)
    if folder.is_dir() and not (folder / "modules.json").is_file():
        # sentence-transformers builds Transformer + mean pooling for a plain Hugging Face folder.
        log.warning("%s has no sentence-transformers configuration (modules.json): loading it with mean "
                    "pooling over tokens and the tokenizer's own length limit", name)
    if folder.is_dir() and is_adapter_folder(folder):  # a LoRA adapter folder (embtune train --lora)
        model = load_adapter_folder(folder, **kwargs)
    else:
        model = SentenceTransformer(resolution.target, **kwargs)
    model.embtune_model_name = name  # the identity the user knows it by, for caches and model cards
    from embtune_core.encoders.model_modules import token_limit

    model.embtune_own_max_seq_length = token_limit(model)  # None: a model that reads texts whole
    return model
