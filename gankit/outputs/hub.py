"""Exports on the Hugging Face Hub: a repo id in place of a folder, and `gankit push`.

An export folder is a Hub model repo as it stands (config.json, model.safetensors, README.md,
samples.png). Loading a repo id downloads only those files through `snapshot_download`, into the
usual cache (`HF_HUB_CACHE` or `HF_HOME`), and honours `HF_HUB_OFFLINE`: offline, a cached
snapshot is used as it is. huggingface_hub is imported only when a repo id is used.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from gankit.core.errors import ExportError, GankitError, cut, shown

# namespace/name, as the Hub spells them (letters, digits, '-', '_', '.'; 96 characters at most)
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
UPLOADED_FILES = ("config.json", "model.safetensors", "README.md", "samples.png")
INSTALL_HINT = "pip install 'gankit[hub]'"


def looks_like_repo_id(source: str | Path) -> bool:
    """Whether `source` names a Hub repo ('user/repo') rather than a folder: a string of that
    shape that is not an existing path."""
    if not isinstance(source, str) or not _REPO_ID.match(source):
        return False
    if ".." in source or "--" in source or source.endswith((".", "-")):
        return False
    return not Path(source).exists()


def _unreachable(error: Exception) -> bool:
    """Whether `error` is the HTTP client's own (a connection or timeout failure), which
    huggingface_hub lets through unwrapped."""
    return type(error).__module__.split(".")[0] in ("httpx", "httpcore", "httpx2")


def _hub() -> Any:
    try:
        import huggingface_hub
    except ImportError:
        raise GankitError(
            f"using the Hugging Face Hub needs huggingface_hub; install it: {INSTALL_HINT}"
        ) from None
    return huggingface_hub


def resolve_export(source: str | Path, *, revision: str | None = None) -> Path:
    """The local folder of an export: `source` itself, or for a Hub repo id ('user/repo') its
    snapshot in the Hugging Face cache, downloaded first if needed (only the export's files)."""
    if looks_like_repo_id(source):
        return download_export(str(source), revision=revision)
    if revision is not None:
        raise ExportError(
            f"revision {shown(revision)} applies to Hub repos, but {shown(str(source))} is a "
            "local folder; leave the revision out"
        )
    return Path(source)


def download_export(repo_id: str, *, revision: str | None = None) -> Path:
    """Download (or find in the cache) the export files of the Hub model repo `repo_id`."""
    hub = _hub()
    from huggingface_hub import constants, errors  # submodules: not attributes until imported

    where = f"Hub repo '{repo_id}'" + (f" at revision {shown(revision)}" if revision else "")
    try:
        folder = hub.snapshot_download(
            repo_id,
            revision=revision,
            allow_patterns=list(UPLOADED_FILES),
            library_name="gankit",
        )
    except errors.RevisionNotFoundError:
        raise ExportError(
            f"{where}: no such revision; give a branch, tag or commit of that repo"
        ) from None
    except (errors.RepositoryNotFoundError, errors.GatedRepoError):
        raise ExportError(
            f"{where} was not found or is not accessible (and no folder '{repo_id}' exists "
            "here): check the name, or log in (`hf auth login` or HF_TOKEN) if it is private "
            "or gated"
        ) from None
    except errors.LocalEntryNotFoundError:
        raise ExportError(
            f"{where} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and the Hub "
            "cannot be reached (HF_HUB_OFFLINE is set, or no network); download it once online, "
            f"or point at a local export folder (no folder '{repo_id}' exists here)"
        ) from None
    except errors.HFValidationError as error:
        raise ExportError(
            f"{shown(repo_id)} is not a valid Hub repo id: {cut(str(error))}"
        ) from None
    except (errors.HfHubHTTPError, OSError, ValueError) as error:
        reason = cut(" ".join(str(error).split()), 200)
        raise ExportError(f"could not download {where}: {reason}") from None
    except Exception as error:
        if not _unreachable(error):
            raise
        raise ExportError(
            f"could not download {where}: the Hub could not be reached "
            f"({type(error).__name__}); check the network, or set HF_HUB_OFFLINE=1 to use the cache"
        ) from None
    return Path(folder)


def push_export(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    message: str | None = None,
) -> str:
    """Upload an export folder to the Hub model repo `repo_id` (created if missing); only the
    export's own files go up. Returns the commit URL."""
    from gankit.outputs.export import CONFIG_FILE, load_model

    folder = Path(folder)
    if not _REPO_ID.match(repo_id) or ".." in repo_id or "--" in repo_id:
        raise GankitError(
            f"{shown(repo_id)} is not a Hub repo id; give it as user/name or org/name"
        )
    config_file = folder / CONFIG_FILE
    if not config_file.is_file():
        raise ExportError(
            f"no export at '{folder}' ({config_file} not found); push an export folder such as "
            "runs/<name>/export/generator"
        )
    load_model(folder)  # the checksum, the header and finite weights, as a user would load it
    hub = _hub()
    from huggingface_hub import constants, errors  # submodules: not attributes until imported

    if constants.HF_HUB_OFFLINE:
        raise GankitError("cannot push: HF_HUB_OFFLINE is set; unset it to reach the Hub")
    if hub.get_token() is None:
        raise GankitError(
            "cannot push: no Hugging Face token; log in with `hf auth login` or set HF_TOKEN"
        )
    api = hub.HfApi(library_name="gankit")
    files = [name for name in UPLOADED_FILES if (folder / name).is_file()]
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision is not None:
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            repo_type="model",
            revision=revision,
            allow_patterns=files,
            commit_message=message or f"Upload gankit export {folder.name}",
        )
    except (errors.HfHubHTTPError, errors.OfflineModeIsEnabled, OSError, ValueError) as error:
        reason = cut(" ".join(str(error).split()), 200)
        raise GankitError(f"could not push '{folder}' to {repo_id}: {reason}") from None
    except Exception as error:
        if not _unreachable(error):
            raise
        raise GankitError(
            f"could not push '{folder}' to {repo_id}: the Hub could not be reached "
            f"({type(error).__name__}); check the network and try again"
        ) from None
    return str(getattr(commit, "commit_url", commit))
