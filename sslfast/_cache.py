"""Where sslfast keeps what it can rebuild: parsed corpora, tokenized datasets, kernel self-checks."""
from __future__ import annotations

import os

__all__ = ["cache_root"]


def cache_root() -> str:
    """``$SSLFAST_CACHE``, else ``$XDG_CACHE_HOME/sslfast``, else ``~/.cache/sslfast``."""
    if os.environ.get("SSLFAST_CACHE"):
        return os.environ["SSLFAST_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "sslfast")
