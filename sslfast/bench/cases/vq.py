"""VQ nearest-codebook lookup against ``torch.cdist(x, c).argmin(-1)`` and, where installed (an optional bench
extra), FAISS's exact ``IndexFlatL2`` (CPU; the index is built outside the timed step, so the baseline times
only its search)."""
import numpy as np
import torch

from sslfast.bench.case import Case
from sslfast.bench.cases._inputs import randn
from sslfast.ops import vq_lookup

BENCH_OPS = ("vq",)  # the `sslfast bench --ops` names these cases serve


def _float64_nearest(x, codebook, rows=4096):
    """(N,) float64 squared distance to each row's nearest code, and each row's scale ‖x‖² + max ‖c‖² (rows in
    chunks: no N×K float64 matrix of the full batch)."""
    c = codebook.double()
    best = torch.cat([torch.cdist(x[i:i + rows].double(), c).pow(2).min(-1).values
                      for i in range(0, x.shape[0], rows)]) if x.shape[0] else x.new_zeros(0, dtype=torch.float64)
    scale = x.double().pow(2).sum(-1) + c.pow(2).sum(-1).max()
    return best, scale


class NearestCode:
    """The float64 reference of an index output (``reference``: each row's nearest float64 distance, remembering
    the inputs) and its error (``error``: the largest float64 excess distance of a chosen code over the nearest,
    relative to the row's scale; exact ties cost nothing, near-ties what fp32 rounding can move)."""

    def reference(self, x, codebook, *rest):
        self.x, self.codebook = x, codebook
        return _float64_nearest(x, codebook)

    def error(self, truth, out):
        best, scale = truth
        idx = out[0] if isinstance(out, tuple) else out
        chosen = (self.x.double() - self.codebook.double()[idx.long()]).pow(2).sum(-1)
        return ((chosen - best) / scale).abs().max().item() if idx.numel() else 0.0


def cases(quick: bool, device: str):
    if device == "cuda":
        shapes = [(16384, 1024, 64, d) for d in ("fp32", "bf16")] if quick else \
                 [(262144, 16384, 128, d) for d in ("fp32", "bf16")]
    else:
        shapes = [(8192, 512, 64, "fp32")] if quick else [(65536, 1024, 64, "fp32"), (16384, 4096, 32, "fp32")]
    out = []
    for n, k, d, dtype in shapes:
        def make_inputs(n=n, k=k, d=d, dtype=dtype):
            return randn(n, d, device=device, dtype=dtype, seed=1), randn(k, d, device=device, dtype=dtype, seed=2)

        nearest = NearestCode()
        out.append(Case(
            op="vq", case=f"N={n} K={k} D={d} {dtype}", dtype=dtype, baseline_name="cdist+argmin",
            make_inputs=make_inputs,
            baseline=lambda x, c: torch.cdist(x, c).argmin(-1),
            candidate=lambda x, c: vq_lookup(x, c), reference=nearest.reference,
            error=nearest.error, tolerance=1e-6 if dtype == "fp32" else 1e-2,
            flops=2.0 * n * k * d))
        faiss = _faiss()
        if faiss is not None and device == "cpu" and dtype == "fp32":
            def make_with_index(make_inputs=make_inputs, d=d):
                x, c = make_inputs()
                index = faiss.IndexFlatL2(d)
                index.add(np.ascontiguousarray(c.numpy()))
                return x, c, index

            def faiss_search(x, c, index):
                _, idx = index.search(np.ascontiguousarray(x.numpy()), 1)  # (N, 1) int64
                return torch.from_numpy(idx[:, 0])

            out.append(Case(
                op="vq", case=f"N={n} K={k} D={d} {dtype} vs FAISS", dtype=dtype, baseline_name="FAISS IndexFlatL2",
                make_inputs=make_with_index, baseline=faiss_search, candidate=lambda x, c, index: vq_lookup(x, c),
                reference=nearest.reference, error=nearest.error, tolerance=1e-6,
                flops=2.0 * n * k * d))
    return out


def _faiss():
    try:
        import faiss
    except ImportError:
        return None
    return faiss
