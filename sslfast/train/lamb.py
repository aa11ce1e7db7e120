"""LAMB: layer-wise adaptive large-batch optimizer (You et al., "Large Batch Optimization for Deep Learning:
Training BERT in 76 minutes", ICLR 2020, Algorithm 2), vectorised over parameters with ``torch._foreach_*``."""
from __future__ import annotations

from typing import Optional

import torch

__all__ = ["Lamb"]


class Lamb(torch.optim.Optimizer):
    """For each parameter tensor x with gradient g, at step t::

        m = β1·m + (1-β1)·g            v = β2·v + (1-β2)·g²
        r = m̂ / (sqrt(v̂) + eps)        with m̂ = m/(1-β1^t), v̂ = v/(1-β2^t) (``bias_correction``)
        u = r + weight_decay·x
        x = x - lr · φ(‖x‖)/‖u‖ · u    (the trust ratio; 1 where ‖x‖ or ‖u‖ is 0)

    φ is the identity, clipped to ``[0, max_trust_ratio]`` when that is set (the paper's φ(z) = min(max(z,
    γl), γu) with γl = 0). Parameter groups set their own ``weight_decay`` (biases and LayerNorm usually 0).
    All norms are computed on the device without a host sync; state is kept in fp32 for fp32 parameters.
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-6, weight_decay: float = 0.01,
                 bias_correction: bool = True, max_trust_ratio: Optional[float] = None):
        if not lr >= 0.0:
            raise ValueError(f"Lamb: lr must be non-negative, got {lr}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"Lamb: betas must be in [0, 1), got {betas}")
        if not eps >= 0.0 or not weight_decay >= 0.0:
            raise ValueError(f"Lamb: eps and weight_decay must be non-negative, got {eps} and {weight_decay}")
        if max_trust_ratio is not None and not max_trust_ratio > 0:
            raise ValueError(f"Lamb: max_trust_ratio must be positive, got {max_trust_ratio}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      bias_correction=bias_correction, max_trust_ratio=max_trust_ratio))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if any(p.grad.is_sparse for p in params):
                raise RuntimeError("Lamb does not support sparse gradients")
            for p in params:
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            self._update(group, params)
        return loss

    def _update(self, group, params):
        beta1, beta2 = group["betas"]
        grads = [p.grad for p in params]
        states = [self.state[p] for p in params]
        exp_avgs = [s["exp_avg"] for s in states]
        exp_avg_sqs = [s["exp_avg_sq"] for s in states]
        steps = [s["step"] for s in states]
        torch._foreach_add_(steps, 1.0)
        torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)  # m = β1 m + (1-β1) g
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1.0 - beta2)  # v = β2 v + (1-β2) g²
        if group["bias_correction"]:
            step = torch.stack(steps)  # (P,) on the device: no host sync
            m_hat = torch._foreach_div(exp_avgs, list((1.0 - beta1 ** step).unbind()))
            denom = torch._foreach_div(exp_avg_sqs, list((1.0 - beta2 ** step).unbind()))
        else:
            m_hat = [m.clone() for m in exp_avgs]
            denom = [v.clone() for v in exp_avg_sqs]
        torch._foreach_sqrt_(denom)
        torch._foreach_add_(denom, group["eps"])
        updates = torch._foreach_div(m_hat, denom)  # r
        if group["weight_decay"]:
            torch._foreach_add_(updates, params, alpha=group["weight_decay"])  # u = r + λx
        weight_norms = torch.stack(torch._foreach_norm(params)).float()  # (P,)
        update_norms = torch.stack(torch._foreach_norm(updates)).float()
        phi = weight_norms if group["max_trust_ratio"] is None else weight_norms.clamp(max=group["max_trust_ratio"])
        usable = (weight_norms > 0) & (update_norms > 0)
        trust = torch.where(usable, phi / torch.where(usable, update_norms, torch.ones_like(update_norms)),
                            torch.ones_like(update_norms))
        scale = -group["lr"] * trust  # (P,)
        torch._foreach_mul_(updates, list(scale.to(params[0].dtype).unbind()))
        torch._foreach_add_(params, updates)
