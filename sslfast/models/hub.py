"""Loading and saving in Hugging Face's on-disk format (``config.json`` + ``model.safetensors``), offline."""
from __future__ import annotations

import json
import os
import warnings

import torch
import torch.nn as nn

from sslfast._atomic import atomic_write
from sslfast.models.config import config_to_dict, load_config

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, or does not fit the model."""


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


class PretrainedMixin:
    """``from_pretrained`` / ``save_pretrained`` for models whose state_dict keys follow Hugging Face's."""
    base_model_prefix = ""
    _tied_weights: dict[str, str] = {}  # key -> the key it shares storage with

    @classmethod
    def from_pretrained(cls, source, *, config=None, dtype: torch.dtype | None = None, **config_overrides):
        """A model from a local checkpoint directory or a Hugging Face model object. Never downloads.

        ``config_overrides`` (e.g. ``num_labels=3``) are set on the config first. Heads absent from the
        checkpoint are freshly initialised, with a warning; a tensor whose shape does not fit raises
        :class:`CheckpointError`. Returns the model in eval mode, as Hugging Face does.
        """
        if isinstance(source, nn.Module):
            config = config if config is not None else source.config
            state = source.state_dict()
        elif isinstance(source, (str, os.PathLike)):
            if not os.path.isdir(source):
                raise CheckpointError(f"{source!r} is not a local directory (sslfast never downloads; pass a "
                                      f"directory with config.json and model.safetensors, or a model object)")
            config = config if config is not None else load_config(source)
            state = read_state_dict(source)
        else:
            raise TypeError(f"from_pretrained takes a directory or a model object, got {type(source).__name__}")
        for name, value in config_overrides.items():
            setattr(config, name, value)
        model = cls(config)
        model.load_pretrained_state(state)
        if dtype is not None:
            model.to(dtype)
        return model.eval()

    def load_pretrained_state(self, state: dict[str, torch.Tensor]) -> None:
        """Load ``state`` whether or not its keys carry ``base_model_prefix``; warn about missing heads."""
        target = self.state_dict()
        prefix = self.base_model_prefix + "." if self.base_model_prefix else ""
        mapped, unexpected = {}, []
        for key, tensor in state.items():
            for candidate in (key, prefix + key, key[len(prefix):] if prefix and key.startswith(prefix) else None):
                if candidate is not None and candidate in target:
                    mapped[candidate] = tensor
                    break
            else:
                unexpected.append(key)
        wrong = [f"{k}: checkpoint {tuple(t.shape)} vs model {tuple(target[k].shape)}"
                 for k, t in mapped.items() if t.shape != target[k].shape]
        if wrong:
            raise CheckpointError("checkpoint does not fit this model's configuration:\n  " + "\n  ".join(wrong))
        for key, source_key in self._tied_weights.items():  # tied copies may be left out of a checkpoint
            if key in target and key not in mapped and source_key in mapped:
                mapped[key] = mapped[source_key]
        missing = sorted(set(target) - set(mapped))
        if len(mapped) == 0:
            raise CheckpointError("no tensor of the checkpoint matches this model (wrong architecture?)")
        self.load_state_dict(mapped, strict=False)
        if hasattr(self, "tie_weights"):
            self.tie_weights()
        if missing:
            warnings.warn(f"{type(self).__name__}: newly initialised (not in the checkpoint): {', '.join(missing)}",
                          stacklevel=3)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write ``config.json`` and ``model.safetensors`` (atomically), loadable by Hugging Face too."""
        from safetensors.torch import save_file
        os.makedirs(directory, exist_ok=True)
        values = config_to_dict(self.config)
        values["architectures"] = [type(self).__name__]
        state = self.state_dict()
        for key, source_key in self._tied_weights.items():  # shared tensors are stored once, as HF does
            if key in state and source_key in state and state[key].data_ptr() == state[source_key].data_ptr():
                del state[key]
        state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
        atomic_write(os.path.join(directory, "model.safetensors"),
                      lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))

        def write_config(tmp):
            with open(tmp, "w") as f:
                json.dump(values, f, indent=2, sort_keys=True, default=str)
        atomic_write(os.path.join(directory, "config.json"), write_config)
