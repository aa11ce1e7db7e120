"""The error of the data layer (its own module so every reader can raise it without importing the others)."""

__all__ = ["CorpusError"]


class CorpusError(ValueError):
    """A corpus is empty, unreadable, or has no text usable for the objective."""
