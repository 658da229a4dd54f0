"""Models on the Hub as the loaders name them, ``hf-hub:<owner>/<name>[@<revision>]``: parsing the name, its
files, and the commit its revision points at, which a run records so that a repo pushed again is another model."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from huggingface_hub import errors as hf_errors
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from timm.models._hub import HF_WEIGHTS_NAME, _get_safe_alternatives  # timm exports them only from _hub
from transformers.utils.hub import extract_commit_hash

__all__ = ["HUB_PREFIX", "HubConfig", "hub_config", "hub_file", "is_repo_id", "parse_hub_source", "pin_hub_source",
           "require_hub_safetensors"]

HUB_PREFIX = "hf-hub:"
# Not found on the Hub; offline misses (LocalEntryNotFoundError) are not "missing": they are raised, naming the file.
_REMOTE_MISSING = getattr(hf_errors, "RemoteEntryNotFoundError", hf_errors.EntryNotFoundError)


def is_repo_id(name: str) -> bool:
    """Whether ``name`` is a Hub model id of the form ``owner/name`` (not a local path that exists)."""
    if name.count("/") != 1 or Path(name).exists():
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def parse_hub_source(source: str) -> tuple[str, str | None]:
    """``hf-hub:<owner>/<name>[@<revision>]`` -> (repo id, revision)."""
    repo_id, at, revision = source[len(HUB_PREFIX):].partition("@")
    try:
        validate_repo_id(repo_id)
        if at and (not revision or "@" in revision):
            raise HFValidationError(f"bad revision {revision!r}")
    except HFValidationError as error:
        raise ValueError(
            f"source={source!r} is not a valid Hub model spec ({error}); write 'hf-hub:<owner>/<name>' or "
            f"'hf-hub:<owner>/<name>@<revision>'."
        ) from None
    return repo_id, revision or None


def hub_file(source: str, repo_id: str, filename: str, revision: str | None) -> Path | None:
    """A file of a Hub repo, downloaded to the cache; None when the repo does not hold it."""
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision))
    except hf_errors.RepositoryNotFoundError:
        raise ValueError(
            f"source={source!r}: the Hub has no model repo {repo_id!r} that this login may read (check the "
            f"name; a private or gated repo needs `hf auth login` or HF_TOKEN)."
        ) from None
    except hf_errors.RevisionNotFoundError:
        raise ValueError(
            f"source={source!r}: the Hub repo {repo_id!r} has no revision {revision!r}; pass a branch, tag or "
            f"commit of that repo after '@', or drop it for main."
        ) from None
    except _REMOTE_MISSING:
        return None
    except hf_errors.LocalEntryNotFoundError:  # its own message names neither the repo nor the file
        raise hf_errors.LocalEntryNotFoundError(
            f"source={source!r} cannot be read: the Hub is unreachable (offline mode, HF_HUB_OFFLINE=1, or no "
            f"network) and the local Hub cache holds no {filename} of {repo_id!r}; load it once where the Hub is "
            "reachable (the cache then serves it offline), or pass a local folder ('local-dir:DIR')."
        ) from None


def require_hub_safetensors(source: str, repo_id: str, revision: str | None, pretrained_cfg: dict[str, Any]) -> None:
    """Raise unless the Hub repo holds the safetensors file timm loads first, so timm never falls back to a
    pickled ``pytorch_model.bin``."""
    filename = pretrained_cfg.get("hf_hub_filename") or HF_WEIGHTS_NAME
    names = [filename] if filename.endswith(".safetensors") else list(_get_safe_alternatives(filename))
    if any(hub_file(source, repo_id, name, revision) is not None for name in names):
        return
    raise ValueError(
        f"source={source!r}: the Hub repo {repo_id!r} holds no safetensors weights ({', '.join(names) or filename} "
        f"not found). Only safetensors are loaded (unpickling a file can run arbitrary code): convert the weights "
        f"(safetensors.torch.save_file(state_dict, 'model.safetensors')) and use that repo or a 'local-dir:' folder."
    )


class HubConfig(NamedTuple):
    """An ``hf-hub:`` source's repo, the commit its revision (default main) points at now, and that commit's
    config.json, downloaded. Every other file is then read from that commit: config and weights agree, and the
    commit says exactly which weights a run used (a repo pushed again is another model)."""

    repo_id: str
    commit: str
    path: Path

    @property
    def pinned(self) -> str:
        """The source at that commit: ``hf-hub:<owner>/<name>@<commit>``."""
        return f"{HUB_PREFIX}{self.repo_id}@{self.commit}"


def hub_config(source: str) -> HubConfig:
    """The `HubConfig` of an ``hf-hub:`` source, its config.json downloaded."""
    repo_id, revision = parse_hub_source(source)
    config_path = hub_file(source, repo_id, "config.json", revision)
    if config_path is None:
        raise ValueError(
            f"source={source!r}: the Hub repo {repo_id!r} has no config.json, so it is not a timm or transformers "
            f"TimmWrapper model repo (those hold config.json + model.safetensors)."
        )
    return HubConfig(repo_id, extract_commit_hash(str(config_path), None), config_path)


def pin_hub_source(source: str) -> str:
    """``hf-hub:<owner>/<name>[@<revision>]`` as ``hf-hub:<owner>/<name>@<commit>``, the commit its revision
    points at now, so that what a run records names one set of weights; any other source as it is."""
    return hub_config(source).pinned if source.startswith(HUB_PREFIX) else source
