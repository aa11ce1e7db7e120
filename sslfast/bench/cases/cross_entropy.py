"""LM-head loss: eager ``F.linear`` + ``F.cross_entropy`` against the fused ops (forward + backward), and the
fused peers a user could pick instead (PyTorch's chunked ``F.linear_cross_entropy``; Liger, Cut Cross-Entropy on
CUDA) where installed."""
import torch
import torch.nn.functional as F

from sslfast.bench.case import Case, float64_copies
from sslfast.bench.cases._inputs import randint, randn
from sslfast.constants import IGNORE_INDEX
from sslfast.ops import cross_entropy, linear_cross_entropy

BENCH_OPS = ("linear_cross_entropy", "cross_entropy")  # the `sslfast bench --ops` names these cases serve


def _labels(n, v, ignored, device):
    labels = randint(0, v, (n,), device=device, seed=3)
    drop = torch.rand(n, generator=torch.Generator().manual_seed(4)) < ignored
    return labels.masked_fill(drop.to(labels.device), IGNORE_INDEX)


def _grads_step(loss_fn):
    def step(hidden, weight, labels):
        hidden.grad = weight.grad = None  # (the float64 reference's copies are fresh leaves)
        loss = loss_fn(hidden, weight, labels)
        loss.backward()
        return loss.detach(), hidden.grad, weight.grad
    return step


def _upcast(z):
    """Logits as the loss reads them: fp32 (bf16 logits upcast), float64 kept for the reference."""
    return z if z.dtype == torch.float64 else z.float()


def _float64(step):
    """The float64 reference of a step: the same step on float64 copies of the inputs."""
    return lambda *inputs: step(*float64_copies(inputs))


def _error(base, ours):
    return max((a.double() - b.double()).abs().max().item() / max(1.0, a.double().abs().max().item())
               for a, b in zip(base, ours))


def _peer_losses(device: str) -> dict:
    """Fused linear cross-entropy implementations a user could pick instead, where installed: PyTorch's own
    chunked ``F.linear_cross_entropy`` (torch >= 2.13), and on CUDA Liger-Kernel and Cut Cross-Entropy (optional
    bench extras, never package dependencies). Each maps (hidden, weight, labels) to the mean loss."""
    peers = {}
    if hasattr(F, "linear_cross_entropy") and hasattr(torch.nn, "LinearCrossEntropyOptions"):
        options = torch.nn.LinearCrossEntropyOptions()
        peers["torch F.linear_cross_entropy (chunked)"] = lambda h, w, y: F.linear_cross_entropy(
            h, w, y, options=options)
    if device == "cuda":
        try:
            from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
            liger = LigerFusedLinearCrossEntropyLoss()
            peers["Liger fused linear CE"] = lambda h, w, y: liger(w, h, y)
        except ImportError:
            pass
        try:
            from cut_cross_entropy import linear_cross_entropy as cut_cross_entropy
            peers["Cut Cross-Entropy"] = lambda h, w, y: cut_cross_entropy(h, w, y)
        except ImportError:
            pass
    return peers


def _peer_logit_losses(device: str) -> dict:
    """Cross-entropy over given logits a user could pick instead, where installed: Liger-Kernel's (CUDA; it
    overwrites the logits with their gradient, which the bench's fresh inputs allow)."""
    peers = {}
    if device == "cuda":
        try:
            from liger_kernel.transformers import LigerCrossEntropyLoss
            liger = LigerCrossEntropyLoss()
            peers["Liger CE"] = lambda z, y: liger(z, y)
        except ImportError:
            pass
    return peers


def cases(quick: bool, device: str):
    if device == "cuda":
        shapes = [(4096, 768, 30522, 0.0, "bf16")] if quick else \
                 [(bt, d, v, 0.0, "bf16") for d, v in ((768, 30522), (768, 50257)) for bt in (4096, 8192, 16384, 32768)]
    else:
        shapes = [(1024, 128, 30522, 0.85, "fp32")] if quick else \
                 [(4096, 256, 30522, 0.85, "fp32"), (4096, 256, 30522, 0.0, "fp32")]
    out = []
    for n, d, v, ignored, dtype in shapes:
        def make_inputs(n=n, d=d, v=v, ignored=ignored, dtype=dtype):
            return (randn(n, d, device=device, dtype=dtype, seed=1, requires_grad=True),
                    randn(v, d, device=device, dtype=dtype, seed=2, scale=0.02, requires_grad=True),
                    _labels(n, v, ignored, device))

        name = f"N={n} D={d} V={v} ignored={int(ignored * 100)}% {dtype}"
        eager = _grads_step(lambda h, w, y: F.cross_entropy(_upcast(F.linear(h, w)), y))
        floor = 1e-5 if dtype == "fp32" else 1e-2
        out.append(Case(
            op="linear_cross_entropy", case=name, dtype=dtype, baseline_name="F.linear+F.cross_entropy",
            make_inputs=make_inputs,
            baseline=eager, candidate=_grads_step(lambda h, w, y: linear_cross_entropy(h, w, y)),
            reference=_float64(eager), error=_error, tolerance=floor, flops=6.0 * n * d * v))
        for peer, loss_fn in _peer_losses(device).items():
            out.append(Case(
                op="linear_cross_entropy", case=f"{name} vs {peer}", dtype=dtype, baseline_name=peer,
                make_inputs=make_inputs, baseline=_grads_step(loss_fn),
                candidate=_grads_step(lambda h, w, y: linear_cross_entropy(h, w, y)),
                reference=_float64(eager), error=_error, tolerance=floor, flops=6.0 * n * d * v))

        def make_logits(n=n, v=v, ignored=ignored, dtype=dtype):
            logits = randn(n, v, device=device, dtype=dtype, seed=5, scale=2.0, requires_grad=True)
            return logits, _labels(n, v, ignored, device)

        def logits_step(fn):
            def step(logits, labels):
                logits.grad = None
                loss = fn(logits, labels)
                loss.backward()
                return loss.detach(), logits.grad
            return step

        ce_name = f"N={n} V={v} ignored={int(ignored * 100)}% {dtype}"
        torch_ce = logits_step(lambda z, y: F.cross_entropy(_upcast(z), y))
        out.append(Case(
            op="cross_entropy", case=ce_name, dtype=dtype,
            baseline_name="F.cross_entropy", make_inputs=make_logits, baseline=torch_ce,
            candidate=logits_step(lambda z, y: cross_entropy(z, y)), reference=_float64(torch_ce),
            error=_error, tolerance=floor))
        for peer, loss_fn in _peer_logit_losses(device).items():
            out.append(Case(
                op="cross_entropy", case=f"{ce_name} vs {peer}", dtype=dtype, baseline_name=peer,
                make_inputs=make_logits, baseline=logits_step(loss_fn),
                candidate=logits_step(lambda z, y: cross_entropy(z, y)), reference=_float64(torch_ce),
                error=_error, tolerance=floor))
    return out
