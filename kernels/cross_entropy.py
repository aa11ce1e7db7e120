"""Row-wise softmax cross-entropy over logits in V-blocks: loss, log-sum-exp and the gradient.

One program per kept row. Pass 1 runs an online max/sum over the row's V-blocks (fp32 whatever the
logits' dtype) and picks the target logit; pass 2 writes d loss / d logits, which may overwrite the
logits themselves (the LM-head path does that on its chunk buffer). Label smoothing and PaLM's z-loss
are folded in: grad = softmax·(1 + 2·z·lse) − (1 − ε)·onehot − ε/V.
"""
import triton
import triton.language as tl


@triton.jit
def cross_entropy_kernel(
    logits_ptr, stride_row, rows_ptr, labels_ptr, loss_ptr, lse_ptr, grad_ptr, stride_grad_row,
    V, label_smoothing, z_loss,
    WANT_GRAD: tl.constexpr, BLOCK_V: tl.constexpr,
):
    pid = tl.program_id(0)
    row = tl.load(rows_ptr + pid).to(tl.int64)
    label = tl.load(labels_ptr + pid).to(tl.int64)
    row_ptr = logits_ptr + row * stride_row
    cols = tl.arange(0, BLOCK_V)

    running_max = tl.full((), float("-inf"), tl.float32)
    running_sum = tl.zeros((), tl.float32)
    logit_sum = tl.zeros((), tl.float32)
    for v0 in range(0, V, BLOCK_V):
        ok = (v0 + cols) < V
        z = tl.load(row_ptr + v0 + cols, mask=ok, other=float("-inf")).to(tl.float32)  # (BV,)
        new_max = tl.maximum(running_max, tl.max(z, axis=0))
        safe_max = tl.where(new_max == float("-inf"), 0.0, new_max)  # all -inf so far: exp(-inf - -inf) is NaN
        running_sum = running_sum * tl.exp(running_max - safe_max) + tl.sum(tl.exp(z - safe_max), axis=0)
        running_max = new_max
        logit_sum += tl.sum(tl.where(ok, z, 0.0), axis=0)
    lse = running_max + tl.log(running_sum)
    target = tl.load(row_ptr + label).to(tl.float32)
    # the smoothing term only when smoothing is on: with a -inf logit, logit_sum is -inf and 0 * inf is NaN
    smoothing_term = tl.where(label_smoothing > 0.0, label_smoothing * (lse - logit_sum / V), 0.0)
    loss = (1.0 - label_smoothing) * (lse - target) + smoothing_term
    loss += z_loss * lse * lse
    tl.store(loss_ptr + pid, loss)
    tl.store(lse_ptr + pid, lse)

    if WANT_GRAD:
        grad_row_ptr = grad_ptr + row * stride_grad_row
        softmax_scale = 1.0 + 2.0 * z_loss * lse
        for v0 in range(0, V, BLOCK_V):
            ok = (v0 + cols) < V
            z = tl.load(row_ptr + v0 + cols, mask=ok, other=0.0).to(tl.float32)
            g = tl.exp(z - lse) * softmax_scale - label_smoothing / V
            g = tl.where(v0 + cols == label, g - (1.0 - label_smoothing), g)
            tl.store(grad_row_ptr + v0 + cols, g.to(grad_ptr.dtype.element_ty), mask=ok)


LAUNCH_CONFIG = dict(BLOCK_V=4096, num_warps=8, num_stages=1)
INTERPRETED_CONFIG = dict(BLOCK_V=1024, num_warps=1, num_stages=1)  # the interpreter's cost grows with the block


def launch_config(interpreted: bool) -> dict:
    """The one launch configuration of the kernel (also what the AOT check compiles)."""
    return dict(INTERPRETED_CONFIG if interpreted else LAUNCH_CONFIG)


def aot_configs():
    """Launch configurations for the ahead-of-time sm_90/sm_80 compile check."""
    configs = []
    for dtype in ("fp32", "fp16", "bf16"):
        for want_grad in (True, False):
            launch = launch_config(False)
            configs.append(dict(
                kernel=cross_entropy_kernel, name=f"cross_entropy_{dtype}{'_grad' if want_grad else ''}",
                signature={"logits_ptr": f"*{dtype}", "stride_row": "i64", "rows_ptr": "*i64",
                           "labels_ptr": "*i64", "loss_ptr": "*fp32", "lse_ptr": "*fp32", "grad_ptr": f"*{dtype}",
                           "stride_grad_row": "i64", "V": "i32", "label_smoothing": "fp32", "z_loss": "fp32"},
                constexprs={"WANT_GRAD": want_grad, "BLOCK_V": launch.pop("BLOCK_V")},
                options=launch))
    return configs
