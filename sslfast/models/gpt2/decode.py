"""GPT-2's token-by-token decoding layer on the CPU, with no module calls: each layer is 2 layer norms, 4
projections (sslfast's few-row kernel, bias, GELU and the residual add fused into it) and the attention over
the cache (sslfast's C++ kernel, appending the new keys and values in the same call). A decoding step is
bound by streaming the weights once; what this removes is the ~40 small PyTorch calls and module calls per layer
around them (measured in ``benchmarks/results/``).

Used only where it reads what calling the modules would compute: eval mode, no gradient, fp32 on the CPU, a few
rows, and every module of every block plain (exactly sslfast's classes, nn.LayerNorm / Conv1D, no hooks or
parametrizations: :mod:`sslfast.models._common.fast_path`); otherwise the blocks are called as modules.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from sslfast.models._common.activations import activation
from sslfast.models._common.fast_path import is_plain
from sslfast.ops.inference_linear import FEW_ROW_AVAILABLE, FEW_ROWS
from sslfast.ops.kv_attention import decode_attention

__all__ = ["fused_decode_allowed", "decode_block"]

_GELU_TANH = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")


def _hookless(module: nn.Module, kind: type) -> bool:
    return type(module) is kind and not (module._forward_hooks or module._forward_pre_hooks)


def fused_decode_allowed(model: nn.Module, x: torch.Tensor, kinds: tuple) -> bool:
    """Whether every block of ``model`` (a GPT2Model) may decode ``x`` (R, D) through :func:`decode_block`;
    ``kinds``: the (block, attention, MLP) classes a block must be exactly."""
    if model.training or torch.is_grad_enabled() or x.device.type != "cpu" or x.dtype != torch.float32:
        return False
    if torch.is_autocast_enabled("cpu") or torch.is_autocast_enabled("cuda"):
        return False  # autocast chooses the projections' dtype (and the cache's): the module path follows it
    if x.shape[0] > FEW_ROWS or not FEW_ROW_AVAILABLE or torch.compiler.is_compiling():
        return False
    if model.config.activation_function not in _GELU_TANH:
        return False
    gelu_tanh = activation(model.config.activation_function)
    block_kind, attention_kind, mlp_kind = kinds
    for block in model.h:
        if not (_hookless(block, block_kind) and _hookless(block.attn, attention_kind) and _hookless(block.mlp, mlp_kind)
                and _hookless(block.ln_1, nn.LayerNorm) and _hookless(block.ln_2, nn.LayerNorm)):
            return False
        if block.mlp.act is not gelu_tanh:  # an activation swapped in by the user
            return False
        if not all(is_plain(m) for m in (block.attn.c_attn, block.attn.c_proj, block.mlp.c_fc, block.mlp.c_proj)):
            return False
    return True


def _project(x, conv, residual=None, activation="none"):
    # a Conv1D's (in, out) weight seen as (out, in): the kernel reads it in place
    return torch.ops.sslfast.few_row_linear(x, conv.weight.t(), conv.bias, residual, activation)


def decode_block(block: nn.Module, x: torch.Tensor, step) -> torch.Tensor:
    """One GPT2Block on the new tokens ``x`` (R, D) of a decoding ``step`` (their keys and values appended to
    the cache): what ``block(x, layout, step)`` computes in eval mode."""
    attn, mlp = block.attn, block.mlp
    b, s, h = step.batch, step.new, attn.num_heads
    d = x.shape[1]
    hidden = F.layer_norm(x, (d,), block.ln_1.weight, block.ln_1.bias, block.ln_1.eps)
    q, k, v = _project(hidden, attn.c_attn).view(b, s, 3, h, d // h).unbind(2)  # (B, s, H, hd) each
    out = decode_attention(q, step.cache.keys[attn.layer_idx], step.cache.values[attn.layer_idx], step.lengths, k, v,
                           attn.scale, step.backend)
    x = _project(out.reshape(b * s, d), attn.c_proj, residual=x)
    hidden = F.layer_norm(x, (d,), block.ln_2.weight, block.ln_2.bias, block.ln_2.eps)
    return _project(_project(hidden, mlp.c_fc, activation="gelu_tanh"), mlp.c_proj, residual=x)
