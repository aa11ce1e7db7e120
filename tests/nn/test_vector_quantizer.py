"""VectorQuantizer: straight-through gradient, losses and EMA updates against a plain PyTorch VQ-VAE."""
import socket

import pytest
import torch
import torch.nn.functional as F

from sslfast.nn import VectorQuantizer
from tests.conftest import cpu_backends

BACKENDS = cpu_backends()


def plain_vq_forward(x, codebook, commitment_weight, learned_codebook):
    """Textbook VQ-VAE step with a one-hot assignment matrix (reference only)."""
    flat = x.reshape(-1, codebook.shape[1])
    d = torch.cdist(flat.double(), codebook.double())
    idx = d.argmin(-1)
    one_hot = F.one_hot(idx, codebook.shape[0]).to(flat.dtype)  # (N, K)
    q = one_hot @ codebook
    loss = commitment_weight * F.mse_loss(flat, q.detach())
    if learned_codebook:
        loss = loss + F.mse_loss(q, flat.detach())
    st = flat + (q - flat).detach()
    return st.reshape(x.shape), idx, loss, one_hot


@pytest.mark.parametrize("backend", BACKENDS)
def test_straight_through_and_commitment_gradient(backend, seed):
    vq = VectorQuantizer(13, 6, commitment_weight=0.3, decay=0.9, backend=backend).eval()
    x = torch.randn(4, 7, 6, requires_grad=True)
    q, idx, loss = vq(x)
    x_ref = x.detach().clone().requires_grad_(True)
    q_ref, idx_ref, loss_ref, _ = plain_vq_forward(x_ref, vq.codebook, 0.3, learned_codebook=False)
    assert torch.equal(idx.reshape(-1), idx_ref)
    assert torch.allclose(q, q_ref, atol=1e-6) and torch.allclose(loss, loss_ref, atol=1e-6)
    g = torch.randn_like(q)
    (q * g).sum().add(loss).backward()
    (q_ref * g).sum().add(loss_ref).backward()
    assert torch.allclose(x.grad, x_ref.grad, atol=1e-6)
    # straight-through: the upstream gradient passes to x unchanged (plus the commitment term)
    commit_grad = 2 * 0.3 * (x.detach() - q.detach()) / x.numel()
    assert torch.allclose(x.grad, g + commit_grad, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_learned_codebook_gets_codebook_loss_gradient(backend, seed):
    vq = VectorQuantizer(9, 5, decay=None, backend=backend)
    x = torch.randn(31, 5, requires_grad=True)
    q, idx, loss = vq(x)
    loss.backward()
    codebook = vq.codebook.detach().clone().requires_grad_(True)
    x_ref = x.detach().clone().requires_grad_(True)
    _, _, loss_ref, _ = plain_vq_forward(x_ref, codebook, 0.25, learned_codebook=True)
    loss_ref.backward()
    assert torch.allclose(loss, loss_ref, atol=1e-6)
    assert torch.allclose(vq.codebook.grad, codebook.grad, atol=1e-6)
    assert torch.allclose(x.grad, x_ref.grad, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ema_update_matches_one_hot_statistics(backend, seed):
    k, d, decay, eps = 11, 4, 0.8, 1e-5
    vq = VectorQuantizer(k, d, decay=decay, eps=eps, backend=backend).train()
    count0, sum0 = vq.ema_count.clone(), vq.ema_sum.clone()
    codebook0 = vq.codebook.clone()
    x = torch.randn(57, d)
    _, idx, _ = vq(x)
    _, idx_ref, _, one_hot = plain_vq_forward(x, codebook0, 0.25, learned_codebook=False)
    assert torch.equal(idx, idx_ref)
    count = decay * count0 + (1 - decay) * one_hot.sum(0)
    sums = decay * sum0 + (1 - decay) * one_hot.t() @ x
    total = count.sum()
    smoothed = (count + eps) / (total + k * eps) * total
    assert torch.allclose(vq.ema_count, count, atol=1e-6)
    assert torch.allclose(vq.ema_sum, sums, atol=1e-5)
    assert torch.allclose(vq.codebook, sums / smoothed[:, None], atol=1e-5)


def test_eval_mode_leaves_codebook_unchanged(seed):
    vq = VectorQuantizer(8, 3).eval()
    before = vq.codebook.clone()
    vq(torch.randn(20, 3))
    assert torch.equal(vq.codebook, before)


def test_dead_codes_restart_from_inputs(seed):
    vq = VectorQuantizer(16, 4, decay=0.5, dead_code_threshold=0.5).train()
    with torch.no_grad():
        vq.codebook[8:] += 1000.0  # codes 8.. can never win: they die
        vq.ema_sum[8:] = vq.codebook[8:]
    x = torch.randn(64, 4)
    vq(x)  # unused codes' EMA count: 1 -> 0.5 (not yet below the threshold)
    assert (vq.codebook[8:] > 100).all()
    vq(x)  # 0.5 -> 0.25 < 0.5: restarted
    dists = (vq.codebook[8:, None] - x[None]).norm(dim=-1).min(-1).values  # each restarted code is an input
    assert (dists < 1e-4).all(), "dead codes were not restarted from the inputs"


def test_kmeans_init_beats_random_init(seed):
    centers = torch.randn(6, 5) * 4
    x = centers[torch.randint(0, 6, (600,))] + 0.05 * torch.randn(600, 5)
    km = VectorQuantizer(6, 5, kmeans_init=True, kmeans_iters=15).train()
    assert not bool(km.initialized)
    _, _, _ = km(x)
    assert bool(km.initialized)
    rnd = VectorQuantizer(6, 5).eval()
    km.eval()
    _, _, loss_km = km(x)
    _, _, loss_rnd = rnd(x)
    assert loss_km < loss_rnd


def test_wrong_dim_is_a_clear_error():
    with pytest.raises(ValueError, match="last dimension must be 4"):
        VectorQuantizer(3, 4)(torch.randn(2, 5))
    with pytest.raises(ValueError, match="decay"):
        VectorQuantizer(3, 4, decay=1.5)
    bad = torch.randn(2, 4)
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        VectorQuantizer(3, 4).eval()(bad)
    unchecked = VectorQuantizer(3, 4, check_finite_inputs=False).eval()  # no check, no host sync: no error
    assert unchecked(bad)[1].shape == (2,)


def _ddp_worker(rank, world, port, x_all, init_codebook, results):
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    vq = VectorQuantizer(init_codebook.shape[0], init_codebook.shape[1], decay=0.7).train()
    with torch.no_grad():
        vq.codebook.copy_(init_codebook)
        vq.ema_sum.copy_(init_codebook)
    vq(x_all.chunk(world)[rank])
    results[rank] = vq.codebook.clone()
    dist.destroy_process_group()


def test_ema_statistics_all_reduced_under_torch_distributed(seed):
    import torch.multiprocessing as mp
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    x_all, init = torch.randn(40, 3), torch.randn(5, 3)
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_ddp_worker, args=(2, port, x_all, init, results), nprocs=2, join=True)
    single = VectorQuantizer(5, 3, decay=0.7).train()
    with torch.no_grad():
        single.codebook.copy_(init)
        single.ema_sum.copy_(init)
    single(x_all)
    assert torch.allclose(results[0], results[1])
    assert torch.allclose(results[0], single.codebook, atol=1e-5)
