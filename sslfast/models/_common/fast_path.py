"""Whether a fused path may read a submodule's weights instead of calling it.

A fused path (BERT's one-GEMM QKV projection, an LM head's projection fused into its loss) reads
``module.weight`` directly. That is only right when calling the module would do nothing else: the module is
exactly ``nn.Linear`` or a ``Conv1D`` (sslfast's or transformers'), with no forward hooks (its own or global)
and no parametrization. Otherwise (a PEFT LoRA / DoRA / IA3 layer, a quantized or other subclass, a hook,
``torch.nn.utils.parametrize``) the model calls the module, and says once which fast path it gave up and why.
The check is a few attribute reads on every call, so an adapter added after the first forward pass counts.
"""
from __future__ import annotations

import warnings
from typing import Optional

import torch.nn as nn
from torch.nn.modules import module as _module_globals

from sslfast.models._common.conv1d import Conv1D

__all__ = ["is_plain", "why_not_plain", "fused_path_allowed"]

_warned: set = set()


def _plain_type(module: nn.Module) -> bool:
    """Exactly nn.Linear, sslfast's Conv1D or its transformers twin, or transformers' own Conv1D (recognised by
    name: transformers is not imported for the check)."""
    kind = type(module)
    if kind is nn.Linear or kind is Conv1D or (kind.__name__ == "TransformersConv1D" and kind.__bases__[0] is Conv1D):
        return True
    return kind.__name__ == "Conv1D" and kind.__module__ == "transformers.pytorch_utils"


def why_not_plain(module: nn.Module) -> Optional[str]:
    """Why calling ``module`` may differ from reading its weights (None when it may not)."""
    if not _plain_type(module):
        return f"it is a {type(module).__module__}.{type(module).__qualname__}, not a plain nn.Linear / Conv1D"
    if module._forward_hooks or module._forward_pre_hooks:
        return "it has forward hooks"
    if _module_globals._global_forward_hooks or _module_globals._global_forward_pre_hooks:
        return "global module forward hooks are registered"
    return None


def is_plain(module: nn.Module) -> bool:
    """``module`` is exactly nn.Linear / Conv1D, without hooks: reading its weights equals calling it."""
    return why_not_plain(module) is None


def fused_path_allowed(path: str, **modules: nn.Module) -> bool:
    """True when every module of a fused path is plain; otherwise warns once (naming the path, the module and
    why) and returns False, and the caller calls the modules instead."""
    for name, module in modules.items():
        reason = why_not_plain(module)
        if reason is not None:
            key = (path, name, type(module), reason)
            if key not in _warned:
                _warned.add(key)
                warnings.warn(f"sslfast: {path} calls {name} instead of reading its weights: {reason}",
                              RuntimeWarning, stacklevel=3)
            return False
    return True
