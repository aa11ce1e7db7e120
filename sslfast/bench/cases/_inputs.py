"""Seeded input helpers shared by the case modules."""
import torch

from sslfast._dtypes import DTYPES


def randn(*shape, device="cpu", dtype="fp32", seed=0, scale=1.0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    t = (torch.randn(*shape, generator=g) * scale).to(device=device, dtype=DTYPES[dtype])
    return t.requires_grad_(requires_grad)


def randint(low, high, shape, *, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, high, shape, generator=g).to(device)


def max_abs_diff(a, b) -> float:
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0
