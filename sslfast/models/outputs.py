"""Model outputs that read like Hugging Face's ``ModelOutput``: by attribute, by key, or as a tuple."""
from __future__ import annotations


class ModelOutput(dict):
    """Fields set to ``None`` are left out, as in ``transformers``; reading an unset field gives ``None``.

    ``out.logits``, ``out["logits"]``, ``out[0]`` (the first set field) and ``out.to_tuple()`` all work.
    """

    def __init__(self, **fields):
        super().__init__((name, value) for name, value in fields.items() if value is not None)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return self.get(name)

    def __getitem__(self, key):
        if isinstance(key, (int, slice)):
            return self.to_tuple()[key]
        return super().__getitem__(key)

    def to_tuple(self) -> tuple:
        return tuple(self.values())
