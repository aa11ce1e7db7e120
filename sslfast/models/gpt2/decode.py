"""GPT-2's token-by-token decoding on the CPU, with no module calls. A decoding step is bound by streaming the
weights once; what this removes is the small calls around the projections, each slowed by the caches the
weight stream empties (measured in ``benchmarks/results/design-measurements.md``):

- :func:`decode_step_in_one_call`: the embeddings, every block, the final layer norm and the LM head in one C++
  call (``sslfast::gpt2_decode_step``, ``csrc/gpt2_decode.cpp``: one parallel region, nothing between the pieces);
- :func:`decode_block`, where that call does not apply (a build without it, an embedding, final norm or LM head
  that is not plain, weights that are not contiguous fp32, a cache laid out for other blocks): per block 2 layer
  norms, 4 projections (sslfast's few-row kernel, bias, GELU and the residual add fused into it) and the
  attention over the cache (sslfast's C++ kernel, appending the new keys and values in the same call).

Used only where it reads what calling the modules would compute: eval mode, no gradient, fp32 on the CPU, a few
rows, and every module of every block plain (exactly sslfast's classes, nn.LayerNorm / Conv1D, no hooks or
parametrizations: :mod:`sslfast.models._common.fast_path`); otherwise the blocks are called as modules.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from sslfast.models._common.activations import activation
from sslfast.models._common.fast_path import is_plain
from sslfast.ops.inference_linear import FEW_ROW_AVAILABLE, FEW_ROWS
from sslfast.ops.kv_attention import CPP_KVCACHE_AVAILABLE, decode_attention

__all__ = ["fused_decode_allowed", "decode_step_in_one_call", "decode_block", "DECODE_STEP_AVAILABLE"]

_GELU_TANH = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")
# whether this build of the C++ extension has the one-call decoding step (and the kernels it runs)
DECODE_STEP_AVAILABLE = FEW_ROW_AVAILABLE and CPP_KVCACHE_AVAILABLE and hasattr(torch.ops.sslfast, "gpt2_decode_step")
if DECODE_STEP_AVAILABLE:
    @torch.library.register_fake("sslfast::gpt2_decode_step")
    def _(input_ids, wte, wpe, weights, key_caches, value_caches, cache_seqlens, eps, scales, final_weight,
          final_bias, head_weight=None, head_bias=None):
        if head_weight is not None:
            return wte.new_empty(input_ids.shape[0], head_weight.shape[0])
        return wte.new_empty(input_ids.numel(), wte.shape[1])


def _hookless(module: nn.Module, kind: type) -> bool:
    return type(module) is kind and not (module._forward_hooks or module._forward_pre_hooks)


def _idle_dropout(module: nn.Module) -> bool:
    """An nn.Dropout that passes its input through (eval mode, no hooks)."""
    return _hookless(module, nn.Dropout) and not module.training


def fused_decode_allowed(model: nn.Module, x: torch.Tensor, kinds: tuple) -> bool:
    """Whether every block of ``model`` (a GPT2Model) may decode ``x`` (R, D) through :func:`decode_block`;
    ``kinds``: the (block, attention, MLP) classes a block must be exactly."""
    return _blocks_allowed(model, x.shape[0], x.device, x.dtype, kinds)


def _blocks_allowed(model: nn.Module, rows: int, device: torch.device, dtype: torch.dtype, kinds: tuple) -> bool:
    if model.training or torch.is_grad_enabled() or device.type != "cpu" or dtype != torch.float32:
        return False
    if torch.is_autocast_enabled("cpu") or torch.is_autocast_enabled("cuda"):
        return False  # autocast chooses the projections' dtype (and the cache's): the module path follows it
    if rows > FEW_ROWS or not FEW_ROW_AVAILABLE or torch.compiler.is_compiling():
        return False
    if model.config.activation_function not in _GELU_TANH:
        return False
    gelu_tanh = activation(model.config.activation_function)
    block_kind, attention_kind, mlp_kind = kinds
    for block in model.h:
        if not (_hookless(block, block_kind) and _hookless(block.attn, attention_kind) and _hookless(block.mlp, mlp_kind)
                and _hookless(block.ln_1, nn.LayerNorm) and _hookless(block.ln_2, nn.LayerNorm)):
            return False
        if not (_idle_dropout(block.attn.resid_dropout) and _idle_dropout(block.mlp.dropout)):
            return False  # e.g. Monte-Carlo dropout: the modules apply it
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


def _block_weights(block: nn.Module) -> list:
    """A block's 12 tensors in ``gpt2_decode_step``'s order."""
    attn, mlp = block.attn, block.mlp
    return [block.ln_1.weight, block.ln_1.bias, attn.c_attn.weight, attn.c_attn.bias, attn.c_proj.weight,
            attn.c_proj.bias, block.ln_2.weight, block.ln_2.bias, mlp.c_fc.weight, mlp.c_fc.bias, mlp.c_proj.weight,
            mlp.c_proj.bias]


def decode_step_in_one_call(model: nn.Module, input_ids: torch.Tensor, cache, kinds: tuple,
                            head: Optional[nn.Module] = None) -> Optional[torch.Tensor]:
    """``model``'s (a GPT2Model) final hidden states (B · s, D) for the next tokens ``input_ids`` (B, s) of a
    filled ``cache`` (extended in place), or with ``head`` (an LM head) the logits (B, V) of each row's last new
    token, in one ``gpt2_decode_step`` call; None where that call does not compute what calling the modules
    would (then the caller calls them). ``kinds``: as for :func:`fused_decode_allowed`."""
    if not DECODE_STEP_AVAILABLE:
        return None
    wte, wpe, ln_f = model.wte, model.wpe, model.ln_f
    if not (_hookless(wte, nn.Embedding) and _hookless(wpe, nn.Embedding) and _idle_dropout(model.drop)
            and _hookless(ln_f, nn.LayerNorm)) or wte.max_norm is not None or wpe.max_norm is not None:
        return None
    if not _blocks_allowed(model, input_ids.numel(), input_ids.device, wte.weight.dtype, kinds):
        return None
    if head is not None and not is_plain(head):
        return None
    blocks = model.h
    if len(cache.keys) != len(blocks) or any(block.attn.layer_idx != i or block.attn.num_heads != cache.keys[i].shape[2]
                                             for i, block in enumerate(blocks)):
        return None  # a cache laid out for other blocks (e.g. some removed): the modules index it themselves
    weights = [w for block in blocks for w in _block_weights(block)]
    tensors = weights + [wpe.weight, ln_f.weight, ln_f.bias] + cache.keys + cache.values
    if head is not None:
        tensors += [head.weight] if head.bias is None else [head.weight, head.bias]
    if not all(t is not None and t.dtype == torch.float32 and t.is_contiguous() for t in tensors):
        return None  # a layer norm without affine parameters, another dtype (the modules promote), a strided view
    eps = [ln.eps for block in blocks for ln in (block.ln_1, block.ln_2)] + [ln_f.eps]
    scales = [block.attn.scale for block in blocks]
    out = torch.ops.sslfast.gpt2_decode_step(input_ids.contiguous().long(), wte.weight, wpe.weight, weights,
                                             cache.keys, cache.values, cache.lengths, eps, scales, ln_f.weight,
                                             ln_f.bias, None if head is None else head.weight,
                                             None if head is None else head.bias)
    cache.appended(input_ids.shape[1])
    return out
