"""VQ nearest-codebook lookup against ``torch.cdist(x, c).argmin(-1)`` and, where installed (an optional bench
extra), FAISS's exact ``IndexFlatL2`` (CPU; the index is built outside the timed step, so the baseline times
only its search)."""
import numpy as np
import torch

from sslfast.bench.case import Case
from sslfast.bench.cases._inputs import randn
from sslfast.ops import vq_lookup


def _chosen_sqdist(x, codebook, idx):
    return (x.double() - codebook.double()[idx]).pow(2).sum(-1)  # (N,)


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

        def error(base_idx, ours, make_inputs=make_inputs):
            x, c = make_inputs()
            # both choices must be equally near, in float64, up to the fp32 rounding of near-ties
            return (_chosen_sqdist(x, c, ours[0]) - _chosen_sqdist(x, c, base_idx)).abs().max().item()

        out.append(Case(
            op="vq", case=f"N={n} K={k} D={d} {dtype}", dtype=dtype, baseline_name="cdist+argmin",
            make_inputs=make_inputs,
            baseline=lambda x, c: torch.cdist(x, c).argmin(-1),
            candidate=lambda x, c: vq_lookup(x, c),
            error=error, tolerance=1e-2 if dtype == "fp32" else 1.0,
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
                error=error, tolerance=1e-2, flops=2.0 * n * k * d))
    return out


def _faiss():
    try:
        import faiss
    except ImportError:
        return None
    return faiss
