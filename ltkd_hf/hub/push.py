"""Push a student folder to the Hugging Face Hub, after checking before training that the push can happen."""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import HfApi, get_token
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from .save import CONFIG_NAME, WEIGHTS_NAME

__all__ = ["check_push_to_hub_ready", "push_student", "PUSH_IGNORE_PATTERNS"]

# Trainer checkpoints and our staging folders live in the output dir too; they are not part of the model.
PUSH_IGNORE_PATTERNS = ("checkpoint-*", "checkpoint-*/**", ".ltkd-tmp-*", ".ltkd-tmp-*/**")


def check_push_to_hub_ready(repo_id: str, token: str | None = None) -> str:
    """Check, before training, that ``repo_id`` is a valid Hub repo id and that a token exists; return the token.

    The token is ``token`` if given, else ``HF_TOKEN``, else the one saved by ``hf auth login``.
    """
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(
            f"repo_id={repo_id!r} is not a valid Hub repo id: {err} Expected 'owner/name' (or 'name' for "
            "your own namespace), e.g. --hub_model_id my-user/resnet8x4-cifar100lt-ltkd."
        ) from err
    resolved = token or get_token()
    if not resolved:
        raise ValueError(
            f"Pushing to the Hub (repo_id={repo_id!r}) needs a token and none was found: pass --hub_token, "
            "set HF_TOKEN, or run `hf auth login` once. Checked before training so the run does not end "
            "without its upload."
        )
    return resolved


def push_student(
    output_dir: str | os.PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    commit_message: str = "Upload LTKD-distilled student",
) -> str:
    """Upload a student folder (written by ``save_student``) to the Hub repo ``repo_id``; returns the commit URL.

    The repo is created if it does not exist. The endpoint is ``HF_ENDPOINT`` when set. Trainer checkpoints
    in the folder (``checkpoint-*``) are not uploaded.
    """
    folder = Path(output_dir)
    missing = [name for name in (CONFIG_NAME, WEIGHTS_NAME) if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"output_dir={str(folder)!r} lacks {missing}; write the student there with "
            "ltkd_hf.hub.save_student(model, output_dir, label_names=...) before pushing."
        )
    token = check_push_to_hub_ready(repo_id, token)
    # HfApi's default endpoint is read when huggingface_hub is imported; read HF_ENDPOINT now instead.
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=token)
    repo = api.create_repo(repo_id, private=private, exist_ok=True)
    commit = api.upload_folder(
        repo_id=repo.repo_id,
        folder_path=folder,
        commit_message=commit_message,
        ignore_patterns=list(PUSH_IGNORE_PATTERNS),
    )
    return commit.commit_url
