"""VQ modules in training: ``sslfast.nn.VectorQuantizer`` against vector-quantize-pytorch's ``VectorQuantize``
(the library VQ-VAE code imports), and a VQ-VAE training step against the same model quantizing with
``torch.cdist`` + ``argmin``.

- ``vq_module``: one training step (forward, EMA codebook update, backward of the commitment loss plus a
  downstream term) at N=65536, K=8192, D=64 and at a VQ-VAE-sized N=8192 (32 images × 16×16 codes), K=512, D=64;
  both start from the same codebook (decay 0.99, commitment 0.25, no k-means, no dead-code restart, the
  straight-through estimator: vector-quantize-pytorch's rotation trick, its default, off), so their first
  indices agree. Needs the optional extra ``vector-quantize-pytorch``.
- ``vqvae``: ``sslfast.models.VQVAE`` training step (forward, backward, Adam) on a digits batch (8×8) and a
  32×32 batch; the baseline is the same model and weights with the quantizer's lookup done by ``cdist``.
"""
import copy

import torch

from sslfast.bench.case import Case
from sslfast.bench.cases._inputs import randn
from sslfast.bench.cases.vq import NearestCode
from sslfast.models import VQVAE
from sslfast.nn import VectorQuantizer

BENCH_OPS = ("vq_module", "vqvae")  # the `sslfast bench --ops` names these cases serve


def unavailable_reason(op="vq_module"):
    if op != "vq_module":
        return None
    try:
        import vector_quantize_pytorch  # noqa: F401
    except ImportError:
        return "vector-quantize-pytorch is not installed (an optional benchmark extra)"
    return None


class _CdistQuantizer(torch.nn.Module):
    """The VectorQuantizer's forward with the nearest code from ``torch.cdist(x, codebook).argmin(-1)``."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.codebook = inner.codebook

    def forward(self, x):
        inner = self.inner
        flat = x.reshape(-1, inner.dim)
        indices = torch.cdist(flat.detach(), inner.codebook.detach()).argmin(-1)
        quantized = torch.nn.functional.embedding(indices, inner.codebook)
        loss = inner.commitment_weight * torch.nn.functional.mse_loss(flat, quantized.detach())
        if inner.training:
            inner._ema_update(flat.detach(), indices)
        quantized = flat + (quantized - flat).detach()
        return quantized.reshape(x.shape), indices.reshape(x.shape[:-1]), loss


class _VQPQuantizer(torch.nn.Module):
    """vector-quantize-pytorch's ``VectorQuantize`` behind the VQ-VAE's quantizer interface: (N, *grid, D)
    vectors in, (quantized, indices, loss) out; its codebook starts as the replaced quantizer's."""

    def __init__(self, inner):
        super().__init__()
        import vector_quantize_pytorch as vqp
        k, d = inner.codebook.shape
        self.vq = vqp.VectorQuantize(dim=d, codebook_size=k, decay=inner.decay, commitment_weight=inner.commitment_weight,
                                     kmeans_init=False, threshold_ema_dead_code=0,
                                     rotation_trick=False)
        with torch.no_grad():
            self.vq._codebook.embed.copy_(inner.codebook.detach().reshape(self.vq._codebook.embed.shape))
            self.vq._codebook.embed_avg.copy_(inner.codebook.detach().reshape(self.vq._codebook.embed_avg.shape))

    def forward(self, x):
        flat = x.reshape(x.shape[0], -1, x.shape[-1])  # (N, positions, D)
        quantized, indices, loss = self.vq(flat)
        return quantized.reshape(x.shape), indices.reshape(x.shape[:-1]), loss.sum()


def _vq_module_cases(quick, device):
    import vector_quantize_pytorch as vqp

    shapes = [(4096, 512, 64)] if quick else [(65536, 8192, 64), (8192, 512, 64)]
    out = []
    for n, k, d in shapes:
        theirs = vqp.VectorQuantize(dim=d, codebook_size=k, decay=0.99, commitment_weight=0.25, kmeans_init=False,
                                    threshold_ema_dead_code=0, rotation_trick=False).to(device).train()
        ours = VectorQuantizer(k, d, commitment_weight=0.25, decay=0.99).to(device).train()
        with torch.no_grad():
            start = theirs._codebook.embed.reshape(k, d).clone()
            ours.codebook.copy_(start)
            ours.ema_sum.copy_(start)

        def make_inputs(n=n, d=d):
            return (randn(1, n, d, device=device, seed=7).requires_grad_(True),)

        def step(module):
            def run(x):
                x.grad = None
                q, idx, loss = module(x)
                (loss + q.square().mean()).backward()
                return idx.detach().reshape(-1)
            return run

        nearest = NearestCode()  # the first step's codes, judged on the shared starting codebook in float64
        out.append(Case(op="vq_module", case=f"training step N={n} K={k} D={d} fp32", dtype="fp32",
                        baseline_name="vector-quantize-pytorch VectorQuantize", make_inputs=make_inputs,
                        baseline=step(theirs), candidate=step(ours),
                        reference=lambda x, start=start, d=d, nearest=nearest: nearest.reference(
                            x.detach().reshape(-1, d), start),
                        error=nearest.error, tolerance=1e-6))
    return out


def _vqvae_cases(quick, device):
    out = []
    settings = [((1, 8, 8), 256, "cdist"), ((1, 28, 28), 64, "cdist"), ((3, 32, 32), 64, "cdist")]
    if unavailable_reason("vq_module") is None:
        settings.insert(2, ((1, 28, 28), 64, "vector-quantize-pytorch"))
    for shape, batch, quantizer in settings:
        batch = batch // 4 if quick else batch
        torch.manual_seed(0)
        ours = VQVAE(input_shape=shape, num_codes=512, code_dim=64, kmeans_init=False,
                     dead_code_threshold=0.0).to(device).train()
        base = copy.deepcopy(ours)
        if quantizer == "cdist":
            base.quantizer = _CdistQuantizer(base.quantizer)
            baseline_name, vs = "same VQ-VAE, cdist+argmin quantizer", ""
        else:
            base.quantizer = _VQPQuantizer(ours.quantizer).to(device)
            baseline_name, vs = "same VQ-VAE, vector-quantize-pytorch VectorQuantize", " vs vector-quantize-pytorch"
        opts = {id(m): torch.optim.Adam(m.parameters(), lr=1e-3) for m in (ours, base)}

        def make_inputs(shape=shape, batch=batch):
            return (torch.rand(batch, *shape, generator=torch.Generator().manual_seed(3)).to(device),)

        def step(model, opts=opts):
            def run(x):
                opt = opts[id(model)]
                opt.zero_grad(set_to_none=True)
                loss = model(pixel_values=x).loss
                loss.backward()
                opt.step()
                return loss.detach()
            return run

        out.append(Case(op="vqvae", case=f"VQVAE train step {batch}×{'×'.join(map(str, shape))} K=512 D=64 fp32{vs}",
                        dtype="fp32", baseline_name=baseline_name, make_inputs=make_inputs,
                        baseline=step(base), candidate=step(ours),
                        reference=False,  # the EMA codebook statistics ops are fp32/16: no float64 twin
                        error=lambda a, b: abs(float(a) - float(b)), tolerance=1e-4))
    return out


def cases(quick: bool, device: str):
    out = _vqvae_cases(quick, device)
    if unavailable_reason() is None:
        out += _vq_module_cases(quick, device)
    return out
