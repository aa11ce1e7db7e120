"""The base of sslfast's models: the parts of ``transformers.PreTrainedModel`` that training scripts and
clients (``Trainer``, sentence-transformers, fine-tuning scripts) call, with checkpoint I/O in Hugging Face's
format. Each model file (``bert.py``, ``gpt2.py``) adds only what is its own."""
from __future__ import annotations

import functools
import math
import os
import warnings
from typing import Optional

import torch
import torch.nn as nn
import torch.utils.checkpoint

from sslfast.models._common.hub import (
    CheckpointError,
    KeyMap,
    config_to_dict,
    load_config,
    map_checkpoint_keys,
    read_state_dict,
    warn_unexpected,
    write_checkpoint,
)

__all__ = ["PreTrainedModel"]


@functools.lru_cache(maxsize=None)
def transformers_output_class(output_class: type) -> type:
    """transformers' own output class of the same name where transformers is installed (so that its pipelines,
    ``isinstance`` checks and pytree handling see a real ``ModelOutput``); sslfast's otherwise."""
    try:
        import transformers.modeling_outputs as outputs
        from transformers.models.bert import modeling_bert
    except ImportError:
        return output_class
    name = output_class.__name__
    found = getattr(outputs, name, None) or getattr(modeling_bert, name, None)
    if found is None or not set(output_class.fields) <= {f for f in found.__dataclass_fields__}:
        return output_class
    return found


def _source_generation_config(source, default):
    """The generation config a checkpoint carries (a model object's ``generation_config``, a directory's
    ``generation_config.json``), or ``default``."""
    import copy
    if isinstance(source, nn.Module):
        found = getattr(source, "generation_config", None)
        return copy.deepcopy(found) if found is not None else default
    if os.path.isfile(os.path.join(source, "generation_config.json")):
        from transformers import GenerationConfig
        return GenerationConfig.from_pretrained(source)
    return default


class PreTrainedModel(nn.Module):
    """Subclasses set ``config_class``, ``base_model_prefix``, ``key_map`` and ``_tied_weights``, build their
    modules, then call :meth:`post_init`."""

    config_class = None
    base_model_prefix = ""
    main_input_name = "input_ids"
    key_map = KeyMap()
    _tied_weights: dict[str, str] = {}  # key -> the key it shares storage with (stored once on disk)
    _keys_to_ignore_on_save = None
    supports_gradient_checkpointing = True
    accepts_loss_kwargs = True  # transformers.Trainer passes num_items_in_batch to forward
    is_parallelizable = False
    model_tags = None

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.gradient_checkpointing = False
        self.warnings_issued: dict = {}

    # --- initialisation and tied weights ---
    def _init_weights(self, module: nn.Module) -> None:
        """Hugging Face's initialisation: normal(0, initializer_range) weights, zero biases, unit LayerNorm."""
        std = getattr(self.config, "initializer_range", 0.02)
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def post_init(self) -> None:
        self.apply(self._init_weights)
        self.tie_weights()

    def tie_weights(self) -> None:
        """Share the output embeddings' weight with the input embeddings (``config.tie_word_embeddings``)."""
        output = self.get_output_embeddings()
        if output is not None and getattr(self.config, "tie_word_embeddings", True):
            output.weight = self.get_input_embeddings().weight

    @property
    def base_model(self) -> nn.Module:
        return getattr(self, self.base_model_prefix, self)

    def get_input_embeddings(self) -> nn.Embedding:
        base = self.base_model
        if base is self:
            raise NotImplementedError(f"{type(self).__name__} must define get_input_embeddings")
        return base.get_input_embeddings()

    def set_input_embeddings(self, embeddings: nn.Embedding) -> None:
        base = self.base_model
        if base is self:
            raise NotImplementedError(f"{type(self).__name__} must define set_input_embeddings")
        base.set_input_embeddings(embeddings)

    def get_output_embeddings(self) -> Optional[nn.Module]:
        return None

    def set_output_embeddings(self, module: nn.Module) -> None:
        raise NotImplementedError(f"{type(self).__name__} has no output embeddings")

    def resize_token_embeddings(self, new_num_tokens: Optional[int] = None, pad_to_multiple_of: Optional[int] = None,
                                mean_resizing: bool = True) -> nn.Embedding:
        """Grow or shrink the vocabulary (after adding tokens to a tokenizer), as transformers: kept rows are
        copied, new rows start at the mean of the old ones (``mean_resizing``) or from the usual init; tied
        output embeddings follow, an untied LM head (and its bias) is resized the same way. Returns the new
        input embeddings."""
        old = self.get_input_embeddings()
        if new_num_tokens is None and pad_to_multiple_of is None:
            return old
        size = old.num_embeddings if new_num_tokens is None else new_num_tokens
        if pad_to_multiple_of:
            size = int(math.ceil(size / pad_to_multiple_of) * pad_to_multiple_of)
        if size < 1:
            raise ValueError(f"new_num_tokens must be positive, got {size}")
        new = nn.Embedding(size, old.embedding_dim, padding_idx=old.padding_idx if (old.padding_idx or 0) < size
                           else None, device=old.weight.device, dtype=old.weight.dtype)
        self._init_weights(new)
        with torch.no_grad():
            keep = min(size, old.num_embeddings)
            new.weight[:keep] = old.weight[:keep]
            if mean_resizing and size > old.num_embeddings:
                new.weight[old.num_embeddings:] = old.weight.mean(0)
        self.set_input_embeddings(new)
        output = self.get_output_embeddings()
        if output is not None:
            if getattr(self.config, "tie_word_embeddings", True):
                output.weight = new.weight
            else:
                head = nn.Linear(old.embedding_dim, size, bias=output.bias is not None, device=output.weight.device,
                                 dtype=output.weight.dtype)
                self._init_weights(head)
                with torch.no_grad():
                    head.weight[:keep] = output.weight[:keep]
                    if mean_resizing and size > old.num_embeddings:
                        head.weight[old.num_embeddings:] = output.weight.mean(0)
                    if head.bias is not None:
                        head.bias[:keep] = output.bias[:keep]
                self.set_output_embeddings(head)
            self._resize_output_bias(size)
        self.config.vocab_size = size
        return new

    def _resize_output_bias(self, size: int) -> None:
        """Models whose LM head keeps its bias apart (BERT) resize it here."""

    # --- what clients read ---
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(p.dtype for p in self.parameters() if p.is_floating_point())

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        """Distinct parameters (tied weights once), optionally trainable only or without embeddings."""
        skip = set()
        if exclude_embeddings:
            skip = {id(m.weight) for m in self.modules() if isinstance(m, nn.Embedding)}
        return sum(p.numel() for p in self.parameters()
                   if id(p) not in skip and (p.requires_grad or not only_trainable))

    def floating_point_ops(self, inputs: dict, exclude_embeddings: bool = True) -> int:
        """6 × parameters × tokens (forward + backward), as transformers estimates it for ``Trainer``."""
        ids = inputs.get(self.main_input_name)
        tokens = ids.numel() if isinstance(ids, torch.Tensor) else 0
        return 6 * tokens * self.num_parameters(exclude_embeddings=exclude_embeddings)

    def can_generate(self) -> bool:
        return False

    def add_model_tags(self, tags) -> None:
        tags = [tags] if isinstance(tags, str) else list(tags)
        self.model_tags = sorted(set(self.model_tags or []) | set(tags))

    # --- gradient checkpointing ---
    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: Optional[dict] = None) -> None:
        """Recompute each layer in the backward instead of storing its activations."""
        self._checkpoint_kwargs = {"use_reentrant": False, **(gradient_checkpointing_kwargs or {})}
        for module in self.modules():
            if isinstance(module, PreTrainedModel):
                module.gradient_checkpointing = True
                module._checkpoint_kwargs = self._checkpoint_kwargs

    def gradient_checkpointing_disable(self) -> None:
        for module in self.modules():
            if isinstance(module, PreTrainedModel):
                module.gradient_checkpointing = False

    @property
    def is_gradient_checkpointing(self) -> bool:
        return any(getattr(m, "gradient_checkpointing", False) for m in self.modules())

    def run_layer(self, layer: nn.Module, *args):
        """``layer(*args)``, through activation checkpointing while training with it enabled."""
        if self.gradient_checkpointing and self.training:
            return torch.utils.checkpoint.checkpoint(layer, *args, **getattr(self, "_checkpoint_kwargs",
                                                                             {"use_reentrant": False}))
        return layer(*args)

    # --- outputs ---
    def output(self, output_class, return_dict: Optional[bool], **fields):
        """``output_class(**fields)``, or its tuple when ``return_dict=False`` (when ``return_dict`` is None,
        the config's ``use_return_dict`` decides, as in transformers)."""
        if return_dict is None:
            return_dict = getattr(self.config, "use_return_dict", getattr(self.config, "return_dict", True))
        out = transformers_output_class(output_class)(**fields)
        return out if return_dict else out.to_tuple()

    def wants_logits(self, labels, return_logits: Optional[bool]) -> bool:
        """Logits are built without labels, when asked for, and in eval mode (as transformers returns them);
        a training step with labels skips them (the fused loss never materializes them)."""
        if labels is None:
            return True
        return (not self.training) if return_logits is None else bool(return_logits)

    # --- checkpoints ---
    @classmethod
    def from_pretrained(cls, source, *args, config=None, dtype: Optional[torch.dtype] = None, torch_dtype=None,
                        **config_overrides):
        """A model from a local checkpoint directory or a Hugging Face model object. Never downloads.

        ``config_overrides`` (e.g. ``num_labels=3``) are set on the config first. Heads absent from the
        checkpoint are freshly initialised, with a warning; checkpoint tensors that fit nothing are reported
        in one warning; a tensor whose shape does not fit raises :class:`CheckpointError`. Returns the model
        in eval mode, as Hugging Face does."""
        if args:
            raise TypeError(f"from_pretrained takes one positional argument (the source), got {1 + len(args)}")
        for hub_only in ("cache_dir", "revision", "token", "trust_remote_code", "local_files_only"):
            config_overrides.pop(hub_only, None)  # accepted for drop-in calls: sslfast never downloads
        dtype = dtype if dtype is not None else torch_dtype
        if isinstance(source, nn.Module):
            config = config if config is not None else source.config
            state = source.state_dict()
        elif isinstance(source, (str, os.PathLike)):
            if not os.path.isdir(source):
                raise CheckpointError(f"{source!r} is not a local directory (sslfast never downloads; pass a "
                                      f"directory with config.json and model.safetensors, or a model object)")
            config = config if config is not None else load_config(source, cls.config_class)
            state = read_state_dict(source)
        else:
            raise TypeError(f"from_pretrained takes a directory or a model object, got {type(source).__name__}")
        for name, value in config_overrides.items():
            setattr(config, name, value)
        model = cls(config)
        model.load_pretrained_state(state)
        if getattr(model, "generation_config", None) is not None:  # a checkpoint's own generation defaults
            model.generation_config = _source_generation_config(source, model.generation_config)
        if dtype is not None and dtype != "auto":
            model.to(dtype)
        return model.eval()

    def load_pretrained_state(self, state: dict[str, torch.Tensor]) -> None:
        """Load ``state`` (keys with or without ``base_model_prefix``); warn about new heads and leftovers."""
        target = self.state_dict()
        mapped, unexpected = map_checkpoint_keys(state, target, self.base_model_prefix, self.key_map)
        wrong = [f"{k}: checkpoint {tuple(t.shape)} vs model {tuple(target[k].shape)}"
                 for k, t in mapped.items() if t.shape != target[k].shape]
        if wrong:
            raise CheckpointError("checkpoint does not fit this model's configuration:\n  " + "\n  ".join(wrong))
        if not mapped:
            raise CheckpointError("no tensor of the checkpoint matches this model (wrong architecture?)")
        for key, source_key in self._tied_weights.items():  # tied copies may be left out of a checkpoint
            if key in target and key not in mapped and source_key in mapped:
                mapped[key] = mapped[source_key]
        missing = sorted(set(target) - set(mapped))
        self.load_state_dict(mapped, strict=False)
        self.tie_weights()
        warn_unexpected(type(self).__name__, unexpected)
        if missing:
            warnings.warn(f"{type(self).__name__}: newly initialised (not in the checkpoint): {', '.join(missing)}",
                          stacklevel=3)

    def save_pretrained(self, save_directory: str | os.PathLike, state_dict: Optional[dict] = None,
                        safe_serialization: bool = True, is_main_process: bool = True, **_ignored) -> None:
        """Write ``config.json`` and ``model.safetensors`` (atomically), loadable by Hugging Face too.
        (``safe_serialization=False`` is accepted and still writes safetensors.)"""
        if not is_main_process:
            return
        values = config_to_dict(self.config, getattr(self.config_class, "model_type", None))
        values["architectures"] = [type(self).__name__]
        state = dict(state_dict if state_dict is not None else self.state_dict())
        for key, source_key in self._tied_weights.items():  # shared tensors are stored once, as HF does
            if key in state and source_key in state and state[key].data_ptr() == state[source_key].data_ptr():
                del state[key]
        state = {k: KeyMap.apply(self.key_map.save_transforms, k, v) for k, v in state.items()}
        write_checkpoint(save_directory, state, values)
        if getattr(self, "generation_config", None) is not None:  # generation_config.json, as transformers writes
            self.generation_config.save_pretrained(save_directory)
