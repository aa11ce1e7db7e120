"""Shared assertions for kernel tests."""
import torch


def max_abs_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    return (a.double() - ref.double()).abs().max().item() if a.numel() else 0.0


def assert_within_torch_error(candidate, torch_path, reference, *, factor=2.0, floor=1e-6, what="output"):
    """The candidate's error against ``reference`` (float64) is within ``factor`` x the error of the
    same-dtype PyTorch path (plus a small absolute floor for paths that happen to be exact)."""
    err = max_abs_err(candidate, reference)
    base = max_abs_err(torch_path, reference)
    bound = factor * base + floor * max(1.0, reference.double().abs().max().item() if reference.numel() else 1.0)
    assert err <= bound, f"{what}: error {err:.3e} vs float64 exceeds {factor}x torch's {base:.3e} (bound {bound:.3e})"
