"""Push a student folder to the Hugging Face Hub, after checking before training that the push can happen."""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import HfApi, constants, get_token
from huggingface_hub.errors import HfHubHTTPError, HFValidationError
from huggingface_hub.utils import validate_repo_id

from .save import CONFIG_NAME, WEIGHTS_NAME

__all__ = ["check_push_to_hub_ready", "hub_api", "push_student", "PUSH_IGNORE_PATTERNS"]

# Trainer checkpoints and our staging folders live in the output dir too; they are not part of the model.
PUSH_IGNORE_PATTERNS = ("checkpoint-*", "checkpoint-*/**", ".ltkd-tmp-*", ".ltkd-tmp-*/**")


def hub_api(token: str | None = None) -> HfApi:
    """An ``HfApi`` on the endpoint in use now: ``HF_ENDPOINT`` when set (``HfApi``'s default endpoint is read
    when huggingface_hub is imported), else huggingface_hub's."""
    return HfApi(endpoint=os.environ.get("HF_ENDPOINT") or constants.ENDPOINT, token=token)


def check_push_to_hub_ready(repo_id: str, token: str | None = None) -> str:
    """Check, before training, that a push to ``repo_id`` can happen; return the token.

    ``repo_id`` must be a valid Hub repo id, offline mode must be off, and the token (``token`` if given, else
    ``HF_TOKEN``, else the one saved by ``hf auth login``) must be accepted by the endpoint in use (``HF_ENDPOINT``)
    with write access to the repo's namespace (the token's user or one of its organisations). A fine-grained token
    is accepted as it is: its per-repo permissions are checked by the upload itself.
    """
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(
            f"repo_id={repo_id!r} is not a valid Hub repo id: {err} Expected 'owner/name' (or 'name' for "
            "your own namespace), e.g. --hub_model_id my-user/resnet8x4-cifar100lt-ltkd."
        ) from err
    if constants.HF_HUB_OFFLINE:
        raise ValueError(
            f"--push_to_hub true (repo {repo_id!r}), but offline mode is on (HF_HUB_OFFLINE=1), so the upload "
            "cannot happen; unset HF_HUB_OFFLINE, or drop --push_to_hub and push the folder later."
        )
    resolved = token or get_token()
    if not resolved:
        raise ValueError(
            f"Pushing to the Hub (repo_id={repo_id!r}) needs a token and none was found: pass --hub_token, "
            "set HF_TOKEN, or run `hf auth login` once. Checked before training so the run does not end "
            "without its upload."
        )
    api = hub_api(resolved)
    endpoint = api.endpoint
    try:
        me = api.whoami()
    except HfHubHTTPError as err:
        status = getattr(err.response, "status_code", None)
        raise ValueError(
            f"--hub_token: {endpoint} refused the token (HTTP {status}); pass a valid token with --hub_token, set "
            "HF_TOKEN, or run `hf auth login`. Checked before training so the run does not end without its upload."
        ) from None
    except Exception as err:  # the transport's own errors: httpx's or httpx2's, by huggingface_hub's version
        raise ConnectionError(
            f"--push_to_hub true: cannot reach {endpoint} to check the token ({type(err).__name__}: {err}); check "
            "the network or HF_ENDPOINT, or drop --push_to_hub and push the folder later."
        ) from None
    access = (me.get("auth") or {}).get("accessToken") or {}
    if access.get("role") == "read":
        raise ValueError(
            f"--hub_token: the token of {me.get('name')!r} is read-only, so it cannot push to {repo_id!r}; pass a "
            "token with write access."
        )
    namespace = repo_id.split("/")[0] if "/" in repo_id else me.get("name")
    allowed = {me.get("name")} | {org.get("name") for org in me.get("orgs") or []}
    if namespace not in allowed:
        raise ValueError(
            f"--hub_model_id {repo_id}: the token belongs to {me.get('name')!r} (organisations "
            f"{sorted(allowed - {me.get('name')})}), which cannot create a repo under {namespace!r}; pass a repo id "
            "in one of those namespaces or a token of that namespace."
        )
    return resolved


def push_student(
    output_dir: str | os.PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    commit_message: str = "Upload LTKD-distilled student",
    revision: str | None = None,
) -> str:
    """Upload a student folder (written by ``save_student``) to the Hub repo ``repo_id``; returns the commit URL.

    The repo is created if it does not exist, and so is the branch ``revision`` (default: main). The endpoint is
    ``HF_ENDPOINT`` when set. Trainer checkpoints in the folder (``checkpoint-*``) are not uploaded.
    """
    folder = Path(output_dir)
    missing = [name for name in (CONFIG_NAME, WEIGHTS_NAME) if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"output_dir={str(folder)!r} lacks {missing}; write the student there with "
            "ltkd_hf.hub.save_student(model, output_dir, label_names=...) before pushing."
        )
    token = check_push_to_hub_ready(repo_id, token)
    api = hub_api(token)
    repo = api.create_repo(repo_id, private=private, exist_ok=True)
    if revision is not None:
        api.create_branch(repo.repo_id, branch=revision, exist_ok=True)
    commit = api.upload_folder(
        repo_id=repo.repo_id,
        folder_path=folder,
        commit_message=commit_message,
        ignore_patterns=list(PUSH_IGNORE_PATTERNS),
        revision=revision,
    )
    return commit.commit_url
