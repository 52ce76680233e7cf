"""``embtune export --push-to-hub REPO``: upload a model folder to the Hugging Face hub with huggingface_hub.

The repository is created private unless ``private=False`` (``--public``); the token comes from the
``token`` argument, else ``HF_TOKEN`` (huggingface_hub's own variable), else the hub's stored login
(``hf auth login``), through :func:`huggingface_hub.get_token`. The folder must carry a model card
(``README.md``, which ``embtune train`` writes); one without gets a minimal card stating the base
model and that embtune made it, so nothing reaches the hub undescribed. The upload is one commit of
every file (``HfApi.create_repo`` then ``HfApi.upload_folder``), as sentence-transformers'
``push_to_hub`` does. ``HF_ENDPOINT`` (or ``endpoint=``) points it at another hub server.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from embtune_core.errors import ConfigError, InputError, ServiceError, UsageError

log = logging.getLogger(__name__)

IGNORED = [".*", "**/.*", "*.lock"]


def resolve_token(token: str | None = None) -> str:
    """The token to upload with (argument, ``HF_TOKEN``, or the stored login); ConfigError when none."""
    from huggingface_hub import get_token

    found = token or get_token()
    if not found:
        raise ConfigError("no Hugging Face token: set HF_TOKEN or run `hf auth login`", field="--push-to-hub")
    return found


def check_repo_id(repo_id: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    """Refuse a malformed repository id: a usage error (exit 2), the value was typed as --push-to-hub."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise UsageError(f"not a hub repository id ({str(exc).splitlines()[0]})", field="--push-to-hub") from None
    if "/" not in repo_id:
        raise UsageError(f"give the repository as OWNER/NAME, got '{repo_id}'", field="--push-to-hub")


def model_card_for(folder: Path) -> str | None:
    """A minimal model card for a folder without README.md (None when it has one)."""
    if (folder / "README.md").is_file():
        return None
    summary_path = folder / "embtune_train.json"
    base = None
    if summary_path.is_file():
        try:
            base = json.loads(summary_path.read_text(encoding="utf-8")).get("base_model")
        except (OSError, ValueError, AttributeError):  # damaged: the card names no base rather than failing
            base = None
    lines = ["---", "library_name: sentence-transformers", "pipeline_tag: sentence-similarity",
             *([f"base_model: {json.dumps(base)}"] if base else []),
             "tags: [sentence-transformers, sentence-similarity, feature-extraction, embtune]", "---", "",
             "# Embedding model made with embtune", "",
             f"Fine-tuned from {base} with embtune." if base else "Exported with embtune.",
             'Load it with `SentenceTransformer("<repo id>")`.', ""]
    return "\n".join(lines)


def push_folder(folder: str | Path, repo_id: str, *, private: bool = True, token: str | None = None,
                endpoint: str | None = None, commit_message: str | None = None) -> dict[str, Any]:
    """Create ``repo_id`` (private by default; an existing repo is reused) and upload ``folder`` in one
    commit. Returns ``{"repo_id", "url", "commit", "private", "files"}``. Raises InputError for a
    folder that is no model, ConfigError without a token, ServiceError when the hub refuses or cannot
    be reached."""
    import httpx
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    folder = Path(folder)
    if not (folder / "modules.json").is_file():
        raise InputError("not a sentence-transformers model directory (no modules.json)", path=folder)
    check_repo_id(repo_id)
    api = HfApi(endpoint=endpoint, token=resolve_token(token))
    card = model_card_for(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not any(part.startswith(".")
                                                                            for part in p.relative_to(folder).parts))
    try:
        url = api.create_repo(repo_id, visibility="private" if private else "public", exist_ok=True,
                              repo_type="model")
        operations = [CommitOperationAdd(path_in_repo=p.relative_to(folder).as_posix(), path_or_fileobj=str(p))
                      for p in files]
        if card is not None:
            operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card.encode("utf-8")))
        info = api.create_commit(repo_id, operations=operations, repo_type="model",
                                 commit_message=commit_message or f"Upload {folder.name} with embtune")
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise ServiceError(f"the hub refused the upload (HTTP {status}): {str(exc).splitlines()[0]}",
                           path=repo_id, field="--push-to-hub") from None
    except (OSError, httpx.HTTPError) as exc:
        raise ServiceError(f"cannot reach the hub ({type(exc).__name__}: {exc})", path=repo_id,
                           field="--push-to-hub") from None
    names = [op.path_in_repo for op in operations]
    return {"repo_id": repo_id, "url": str(url), "commit": getattr(info, "oid", None), "private": private,
            "files": names}
