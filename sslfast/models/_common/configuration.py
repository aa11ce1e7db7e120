"""Model configurations without transformers: the fields of transformers' configs that the models read."""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any


class ConfigMixin:
    """``from_dict`` / ``from_json_file`` / ``to_dict`` for the dataclass configs, as transformers' configs."""
    use_return_dict = True  # outputs are ModelOutput objects unless a forward gets return_dict=False

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        """Build from a ``config.json`` dict; unknown keys are ignored, ``id2label`` sets ``num_labels``."""
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in values.items() if k in names}
        if "id2label" in values and "num_labels" not in values and "num_labels" in names:
            kwargs["num_labels"] = len(values["id2label"])
        return cls(**kwargs)

    @classmethod
    def from_json_file(cls, path: str | os.PathLike):
        with open(path) as f:
            return cls.from_dict(json.load(f))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
