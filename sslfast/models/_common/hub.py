"""Checkpoints in Hugging Face's on-disk format (``config.json`` + ``model.safetensors``), offline.

Loading maps a checkpoint's keys onto the model's: the ``base_model_prefix`` is added or stripped, each
model's :class:`KeyMap` renames keys and transforms tensors (GPT-2's ``Conv1D`` stores weights as (in, out)),
buffers Hugging Face saves but the model recomputes are dropped, and whatever is left over is reported in one
warning, never dropped silently.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import warnings
from typing import Callable, Optional

import torch

from sslfast._atomic import atomic_write

__all__ = ["CheckpointError", "KeyMap", "read_state_dict", "write_checkpoint", "load_config", "config_to_dict",
           "map_checkpoint_keys", "WEIGHT_FILES"]

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, or does not fit the model."""


@dataclasses.dataclass
class KeyMap:
    """How one model family's checkpoint keys relate to its state_dict.

    ``ignored``: regexes of checkpoint keys the model does not hold (e.g. GPT-2's ``attn.bias`` mask
    buffers); ``load_transforms`` / ``save_transforms``: regex → function applied to matching tensors when
    loading / saving (the two must be inverses)."""
    ignored: tuple[str, ...] = ()
    load_transforms: dict[str, Callable[[torch.Tensor], torch.Tensor]] = dataclasses.field(default_factory=dict)
    save_transforms: dict[str, Callable[[torch.Tensor], torch.Tensor]] = dataclasses.field(default_factory=dict)

    def is_ignored(self, key: str) -> bool:
        return any(re.search(p, key) for p in self.ignored)

    @staticmethod
    def apply(transforms, key, tensor):
        for pattern, fn in transforms.items():
            if re.search(pattern, key):
                return fn(tensor)
        return tensor


def read_state_dict(directory: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint directory: ``model.safetensors`` (single or sharded) or ``pytorch_model.bin``."""
    from safetensors.torch import load_file
    for name in WEIGHT_FILES:
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            continue
        try:
            if name == "model.safetensors":
                return load_file(path)
            if name.endswith(".index.json"):
                with open(path) as f:
                    shards = sorted(set(json.load(f)["weight_map"].values()))
                state = {}
                for shard in shards:
                    state.update(load_file(os.path.join(directory, shard)))
                return state
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # safetensors, pickle and JSON each raise their own types
            raise CheckpointError(f"cannot read {path}: {err}") from err
    raise CheckpointError(f"no weights in {directory!r}: expected one of {', '.join(WEIGHT_FILES)}")


def map_checkpoint_keys(state: dict[str, torch.Tensor], target: dict[str, torch.Tensor], prefix: str,
                        key_map: KeyMap) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(tensors keyed as ``target``, checkpoint keys that fit nothing). The prefix is added or stripped as
    needed; ignored keys are dropped; transforms applied."""
    mapped, unexpected = {}, []
    dotted = prefix + "." if prefix else ""
    for key, tensor in state.items():
        for candidate in (key, dotted + key, key[len(dotted):] if dotted and key.startswith(dotted) else None):
            if candidate is not None and candidate in target:
                mapped[candidate] = KeyMap.apply(key_map.load_transforms, candidate, tensor)
                break
        else:
            if not key_map.is_ignored(key):
                unexpected.append(key)
    return mapped, unexpected


def write_checkpoint(directory: str | os.PathLike, state: dict[str, torch.Tensor], config_values: dict) -> None:
    """``model.safetensors`` and ``config.json``, each written atomically."""
    from safetensors.torch import save_file
    os.makedirs(directory, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    atomic_write(os.path.join(directory, "model.safetensors"),
                 lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))

    def write_config(tmp):
        with open(tmp, "w") as f:
            json.dump(config_values, f, indent=2, sort_keys=True, default=str)
    atomic_write(os.path.join(directory, "config.json"), write_config)


def config_to_dict(config, default_model_type: Optional[str] = None) -> dict:
    """A ``config.json`` dict from a transformers config or one of sslfast's dataclass configs."""
    if hasattr(config, "to_dict"):
        values = dict(config.to_dict())
    else:
        values = dataclasses.asdict(config)
    if default_model_type:
        values.setdefault("model_type", default_model_type)
    return values


def load_config(directory: str | os.PathLike, config_class=None):
    """The config of a checkpoint directory: transformers' config class for its ``model_type`` when
    transformers is installed (so Hugging Face objects round-trip), else ``config_class``."""
    path = os.path.join(directory, "config.json")
    if not os.path.isfile(path):
        raise CheckpointError(f"no config.json in {os.fspath(directory)!r}")
    try:
        with open(path) as f:
            values = json.load(f)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"cannot read {path}: {err}") from None
    model_type = values.get("model_type")
    expected = getattr(config_class, "model_type", None) if config_class is not None else None
    if expected and model_type and model_type != expected:
        raise CheckpointError(f"{path} describes a {model_type!r} model, not {expected!r}")
    try:
        import transformers
        return transformers.AutoConfig.for_model(model_type or expected, **{k: v for k, v in values.items()
                                                                            if k != "model_type"})
    except (ImportError, ValueError, KeyError):
        if config_class is None:
            raise CheckpointError(f"{path}: model_type {model_type!r} needs transformers installed") from None
        return config_class.from_dict(values)


def warn_unexpected(model_name: str, unexpected: list[str]) -> None:
    if unexpected:
        shown = ", ".join(unexpected[:12]) + (f" … ({len(unexpected)} in all)" if len(unexpected) > 12 else "")
        warnings.warn(f"{model_name}: checkpoint tensors that fit no parameter were not loaded: {shown}",
                      stacklevel=4)
