"""Pretrained weights: find torchvision's AlexNet checkpoint in torch's cache or
download it there, so alexnet_c and torchvision share one copy.

Only the standard library is used; nothing touches the network until
`load_pretrained` is called and the file is not cached.
"""
from __future__ import annotations

import hashlib
import os
import re
import sys
import secrets
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Dict, Optional, Union

from ._errors import WeightsError

__all__ = ["load_pretrained", "cache_dir", "WEIGHTS_URL_ENV"]

WEIGHTS_URL_ENV = "ALEXNET_C_WEIGHTS_URL"
_CHUNK = 1 << 20
_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class _Weights:
    file_name: str      # name in the cache dir; torch's convention: <stem>-<sha256 prefix>.pth
    url: str


_WEIGHTS: Dict[str, _Weights] = {
    "IMAGENET1K_V1": _Weights("alexnet-owt-7be5be79.pth",
                              "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"),
}
_ALIASES = {"DEFAULT": "IMAGENET1K_V1"}

# Like torch.hub: the hash prefix is the last "-<hex>" before the extension.
_HASH_IN_NAME = re.compile(r"-([a-f0-9]+)\.")


def _weights_name(weights: Any) -> str:
    if weights is None:
        raise ValueError("weights=None means a randomly initialised model; "
                         "load_pretrained needs 'IMAGENET1K_V1' or 'DEFAULT'")
    # str() also covers torchvision's enum (str(AlexNet_Weights.DEFAULT) ==
    # "AlexNet_Weights.IMAGENET1K_V1") without importing torchvision.
    name = str(weights)
    if name.startswith("AlexNet_Weights."):
        name = name[len("AlexNet_Weights."):]
    name = _ALIASES.get(name, name)
    if name not in _WEIGHTS:
        options = sorted(set(_WEIGHTS) | set(_ALIASES))
        raise ValueError(f"unknown AlexNet weights {weights!r}; expected one of {options}")
    return name


def cache_dir() -> str:
    """torch.hub's checkpoint dir: $TORCH_HOME/hub/checkpoints, TORCH_HOME defaulting
    to $XDG_CACHE_HOME/torch, XDG_CACHE_HOME to ~/.cache."""
    xdg = os.getenv("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    torch_home = os.path.expanduser(os.getenv("TORCH_HOME", os.path.join(xdg, "torch")))
    return os.path.join(torch_home, "hub", "checkpoints")


def load_pretrained(weights: Any = "IMAGENET1K_V1", *, progress: bool = True,
                    url: Optional[str] = None,
                    model_dir: Optional[Union[str, "os.PathLike[str]"]] = None) -> str:
    """Path of torchvision's AlexNet checkpoint, downloading it on first use.

    weights: "IMAGENET1K_V1" or "DEFAULT" (or torchvision's AlexNet_Weights member).
    url: download from here instead of download.pytorch.org; the environment
    variable ALEXNET_C_WEIGHTS_URL does the same when no url is passed. The file's
    SHA-256 must start with the prefix in its name (7be5be79), whatever the source.
    model_dir: cache directory, default `cache_dir()` (shared with torch.hub).
    """
    entry = _WEIGHTS[_weights_name(weights)]
    directory = os.fspath(model_dir) if model_dir is not None else cache_dir()
    dst = os.path.join(directory, entry.file_name)
    if os.path.isfile(dst):
        return dst
    source = url or os.getenv(WEIGHTS_URL_ENV) or entry.url
    os.makedirs(directory, exist_ok=True)
    _download(source, dst, _expected_prefix(entry.file_name), progress)
    return dst


def _expected_prefix(file_name: str) -> str:
    m = _HASH_IN_NAME.search(file_name)
    if m is None:
        raise ValueError(f"weights file name {file_name!r} carries no hash prefix")
    return m.group(1)


def _download(url: str, dst: str, expected_prefix: str, progress: bool) -> None:
    """Fetch url into a temp file beside dst, check its SHA-256, rename it into place.

    The rename is atomic, so a concurrent or interrupted download never leaves a
    truncated file under the final name."""
    # Not mkstemp: its 0600 would stay on the checkpoint, which torch.hub (whose cache
    # this is) leaves readable as the umask allows, for other users of the cache.
    tmp = f"{dst}.{secrets.token_hex(8)}.partial"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        sha = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            try:
                req = urllib.request.Request(url, headers={"User-Agent": "alexnet_c"})
                with urllib.request.urlopen(req, timeout=_TIMEOUT_S) as resp:
                    length = resp.headers.get("Content-Length")
                    total = int(length) if length and length.isdigit() else None
                    bar = progress_bar(total, desc=os.path.basename(dst), unit="B",
                                       enabled=progress)
                    received = 0
                    try:
                        while True:
                            chunk = resp.read(_CHUNK)
                            if not chunk:
                                break
                            out.write(chunk)
                            sha.update(chunk)
                            received += len(chunk)
                            bar(len(chunk))
                    finally:
                        bar.close()
                    # urllib ends a body cut short as if it were whole: say so, rather
                    # than let the hash check call it a wrong file.
                    if total is not None and received != total:
                        raise OSError(f"the connection closed after {received} of {total} bytes")
            except (urllib.error.URLError, OSError, ValueError) as e:
                # ValueError: urllib's "unknown url type" for a malformed URL.
                raise RuntimeError(f"could not download AlexNet weights from {url}: {e}") from e
        digest = sha.hexdigest()
        if not digest.startswith(expected_prefix):
            raise WeightsError(
                f"downloaded file from {url} has SHA-256 prefix "
                f"{digest[:len(expected_prefix)]}, expected {expected_prefix}; "
                "the partial file was deleted")
        os.replace(tmp, dst)
    except BaseException:
        # Also on KeyboardInterrupt: never leave a .partial behind.
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


class _Progress:
    """A callable `bar(n)` advancing by n, with .close(): tqdm on stderr when
    available, otherwise a plain line per 10% (or per chunk count when the total
    is unknown)."""

    def __init__(self, total: Optional[int], desc: str, unit: str, enabled: bool) -> None:
        self._tqdm = None
        self._total, self._desc, self._unit = total, desc, unit
        self._done = 0
        self._last_pct = -10
        self._enabled = enabled
        if not enabled:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            print(f"{desc}: (pip install alexnet_c[progress] for a progress bar)",
                  file=sys.stderr)
            return
        self._tqdm = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr,
                          unit_scale=unit == "B", unit_divisor=1024 if unit == "B" else 1000)

    def __call__(self, n: int) -> None:
        self._done += n
        if self._tqdm is not None:
            self._tqdm.update(n)
        elif self._enabled and self._total:
            pct = 100 * self._done // self._total
            if pct >= self._last_pct + 10:
                self._last_pct = pct - pct % 10
                print(f"{self._desc}: {pct}% ({self._done}/{self._total} {self._unit})",
                      file=sys.stderr)

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
        elif self._enabled and not self._total:
            print(f"{self._desc}: {self._done} {self._unit}", file=sys.stderr)


def progress_bar(total: Optional[int], *, desc: str, unit: str = "it",
                 enabled: bool = True) -> _Progress:
    """Shared by the weights download and images.iter_predict."""
    return _Progress(total, desc, unit, enabled)

