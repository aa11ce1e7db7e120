"""What the tests and ``sslfast selftest`` both use to judge an output: errors against a float64 reference,
bounded by the same-dtype PyTorch path's own error, and forward + backward on fresh leaves."""
from __future__ import annotations

import math

import torch

__all__ = ["max_abs_err", "rms_err", "worst_error", "fwd_bwd", "assert_within_torch_error",
           "assert_rms_within_torch_error"]


def max_abs_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    """max |a - ref| in float64 (0 for empty tensors)."""
    return (a.double() - ref.double()).abs().max().item() if a.numel() else 0.0


def rms_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    """Root mean square of (a - ref) in float64 (0 for empty tensors)."""
    return (a.double() - ref.double()).square().mean().sqrt().item() if a.numel() else 0.0


def worst_error(pairs, factor: float = 2.0, floor: float = 1e-5) -> tuple[float, float]:
    """(error, allowed) of the worst of (candidate, same-dtype torch, float64) triples: each is allowed
    ``factor`` × the torch path's error plus ``floor`` × the reference's scale."""
    worst = (0.0, 1.0)
    for got, base, ref in pairs:
        scale = max(1.0, ref.double().abs().max().item() if ref.numel() else 1.0)
        allowed = factor * max_abs_err(base, ref) + floor * scale
        error = max_abs_err(got, ref)
        if not math.isfinite(error) or error / allowed > worst[0] / worst[1]:
            worst = (error, allowed)
    return worst


def fwd_bwd(fn, tensors, grad_out):
    """[output, grad of each tensor] of ``fn(*tensors)`` backpropagating ``grad_out``, on fresh leaves."""
    leaves = [t.detach().clone().requires_grad_(True) for t in tensors]
    out = fn(*leaves)
    out.backward(grad_out.to(out.dtype))
    return [out.detach()] + [t.grad for t in leaves]


def assert_within_torch_error(candidate, torch_path, reference, *, factor=2.0, floor=1e-6, what="output"):
    """The candidate's error against ``reference`` (float64) is within ``factor`` x the error of the
    same-dtype PyTorch path (plus a small absolute floor for paths that happen to be exact)."""
    err = max_abs_err(candidate, reference)
    base = max_abs_err(torch_path, reference)
    bound = factor * base + floor * max(1.0, reference.double().abs().max().item() if reference.numel() else 1.0)
    assert err <= bound, f"{what}: error {err:.3e} vs float64 exceeds {factor}x torch's {base:.3e} (bound {bound:.3e})"


def assert_rms_within_torch_error(candidate, torch_path, reference, *, factor=2.0, max_factor=4.0, floor=1e-6,
                                  what="output"):
    """For outputs of a few hundred elements, whose largest error alone swings several-fold between two equally
    accurate fp32 paths: the candidate's root-mean-square error against ``reference`` (float64) within
    ``factor`` x the same-dtype PyTorch path's, and its largest error within ``max_factor`` x torch's (plus
    ``floor`` x the reference's scale)."""
    err, base = rms_err(candidate, reference), rms_err(torch_path, reference)
    scale = max(1.0, reference.double().abs().max().item() if reference.numel() else 1.0)
    assert err <= factor * base + floor * scale, \
        f"{what}: rms error {err:.3e} vs float64 exceeds {factor}x torch's {base:.3e}"
    assert_within_torch_error(candidate, torch_path, reference, factor=max_factor, floor=floor, what=what)
