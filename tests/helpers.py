"""Shared assertions for kernel and model tests (what selftest also uses lives in :mod:`sslfast.testing`)."""
import os

import torch

from sslfast.testing import assert_rms_within_torch_error, assert_within_torch_error, fwd_bwd, max_abs_err  # noqa: F401

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository root


def assert_grads_match(reference, ours, *, at_least=11, exact=None):
    """Every parameter gradient of ``ours`` equals the same-named one of ``reference`` (a transformers model),
    and parameters without a reference gradient got none; fails if fewer than ``at_least`` were compared, so
    a renamed state_dict cannot make the check pass vacuously.

    With ``exact`` (a float64 copy of ``reference`` that ran the same step) each gradient's error against it
    must be within 2x ``reference``'s own fp32 error (plus a floor for gradients it happens to get exactly):
    a bound that holds on any CPU. Without it, a fixed tolerance relative to the gradient's scale."""
    reference_grads = {n: p.grad for n, p in reference.named_parameters()}
    exact_grads = {n: p.grad for n, p in exact.named_parameters()} if exact is not None else {}
    checked = 0
    for n, p in ours.named_parameters():
        if reference_grads.get(n) is None:
            assert p.grad is None or not p.grad.any(), n
            continue
        assert p.grad is not None, f"{n}: no gradient"
        if exact is not None:
            assert_within_torch_error(p.grad, reference_grads[n], exact_grads[n], what=f"gradient of {n}")
        else:  # fp32 sums over the tokens in another order: tolerance relative to the gradient's scale
            scale = reference_grads[n].abs().max().item()
            torch.testing.assert_close(p.grad, reference_grads[n], rtol=1e-4, atol=1e-4 * scale + 1e-7, msg=n)
        checked += 1
    assert checked >= at_least, f"only {checked} gradients compared"


def per_sequence_attention_reference(cu_q, cu_k, causal):
    """Packed (T, H, D) attention computed one sequence at a time by ``attention_reference``."""
    from sslfast.ops.attention import varlen_attention_reference
    return lambda q, k, v: varlen_attention_reference(q, k, v, cu_q, cu_k, causal=causal)
