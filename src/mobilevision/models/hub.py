"""Downloading and caching published weights: release URLs (sha256-checked, `torch.hub`) and the Hugging Face
Hub (`huggingface_hub`). Without network access both fail fast with one message that says how to pass a
local file instead."""
from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

OFFLINE_HINT = ("Without network access, download the file elsewhere and pass it with checkpoint_path=PATH "
                "(CLI: --checkpoint PATH).")
HF_ENDPOINT = "https://huggingface.co"


def cache_dir() -> Path:
    """Where downloaded weights live: $MOBILEVISION_CACHE or ~/.cache/mobilevision."""
    return Path(os.environ.get("MOBILEVISION_CACHE", Path.home() / ".cache" / "mobilevision"))


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download_url(url: str, sha256: str | None, filename: str | None = None) -> Path:
    """Fetch `url` into the cache (once) with `torch.hub.download_url_to_file`, verifying its sha256.

    `file://` URLs work too. RuntimeError (with the offline hint) when the URL cannot be read, ValueError
    when the hash differs.
    """
    from torch.hub import download_url_to_file

    name = filename or url.rstrip("/").split("/")[-1]
    dest = cache_dir() / "url" / name
    if dest.is_file() and (sha256 is None or sha256_of(dest) == sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        download_url_to_file(url, str(dest), hash_prefix=None, progress=False)
    except (urllib.error.URLError, OSError) as err:
        raise RuntimeError(f"could not download {url} ({getattr(err, 'reason', err)}). {OFFLINE_HINT}") from None
    # checked here rather than with torch.hub's hash_prefix so that a bad file does not stay in the cache
    if sha256 is not None and (got := sha256_of(dest)) != sha256:
        dest.unlink()
        raise ValueError(f"sha256 of {url} is {got}, expected {sha256}: the download is corrupt or altered")
    from .checkpoint import file_mode

    os.chmod(dest, file_mode())  # torch.hub's temporary file is 0600
    return dest


def offline_reason(endpoint: str | None = None, timeout: float = 5.0) -> str | None:
    """Why the Hugging Face Hub cannot be reached (None when it answers): HF_HUB_OFFLINE set, or one
    short request to the endpoint failing. huggingface_hub itself retries for ~25 s before giving up."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    url = endpoint or os.environ.get("HF_ENDPOINT", HF_ENDPOINT)
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None  # the server answered
    except (urllib.error.URLError, OSError) as err:
        return f"{url} is unreachable: {getattr(err, 'reason', err)}"


def download_hf(repo_id: str, filename: str = "model.safetensors") -> Path:
    """Fetch a file from the Hugging Face Hub (cached by huggingface_hub); the cache is tried first, and an
    unreachable Hub is one RuntimeError without the library's retries."""
    try:
        from huggingface_hub import hf_hub_download
    except ModuleNotFoundError:
        raise RuntimeError(f"fetching {repo_id} needs the package huggingface_hub (pip install huggingface_hub). "
                           + OFFLINE_HINT) from None
    try:
        return Path(hf_hub_download(repo_id, filename, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached (the hub raises several types for that)
        pass
    reason = offline_reason()
    if reason:
        raise RuntimeError(f"could not fetch {filename} from the Hugging Face Hub repo {repo_id}: {reason}. "
                           + OFFLINE_HINT)
    try:
        return Path(hf_hub_download(repo_id, filename))
    except Exception as err:  # noqa: BLE001 - the hub raises many connection / HTTP error types
        raise RuntimeError(f"could not fetch {filename} from the Hugging Face Hub repo {repo_id} "
                           f"({type(err).__name__}). " + OFFLINE_HINT) from None
