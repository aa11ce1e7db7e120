"""Row-wise softmax cross-entropy over logits in V-blocks: loss, log-sum-exp and the gradient.

One program per row. A row whose label is ``ignore_index`` costs nothing beyond zeros: loss 0 and, when a
gradient is wanted, a zero gradient row. Otherwise pass 1 runs an online max/sum over the row's V-blocks
(fp32 whatever the logits' dtype) and picks the target logit; pass 2 writes d loss / d logits times the row's
gradient scale (the mean's 1/count, or an upstream per-row gradient), which may overwrite the logits
themselves (the LM-head path does that on its chunk buffer). Label smoothing and PaLM's z-loss are folded in:
grad = scale·(softmax·(1 + 2·z·lse) − (1 − ε)·onehot − ε/V). A label outside [0, V) that is not ignored gives
a NaN loss and a NaN gradient row (the host-side label check is optional).
"""
import triton
import triton.language as tl


@triton.jit
def cross_entropy_kernel(
    logits_ptr, stride_row, labels_ptr, loss_ptr, lse_ptr, grad_ptr, stride_grad_row, grad_scale_ptr,
    V, ignore_index, label_smoothing, z_loss,
    WANT_GRAD: tl.constexpr, SCALE_PER_ROW: tl.constexpr, BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    label = tl.load(labels_ptr + row).to(tl.int64)
    row_ptr = logits_ptr + row * stride_row
    grad_row_ptr = grad_ptr + row * stride_grad_row
    cols = tl.arange(0, BLOCK_V)

    if label == ignore_index:
        tl.store(loss_ptr + row, 0.0)
        tl.store(lse_ptr + row, 0.0)
        if WANT_GRAD:
            zeros = tl.zeros((BLOCK_V,), tl.float32).to(grad_ptr.dtype.element_ty)
            for v0 in range(0, V, BLOCK_V):
                tl.store(grad_row_ptr + v0 + cols, zeros, mask=(v0 + cols) < V)
    else:
        valid = (label >= 0) & (label < V)
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
        target = tl.load(row_ptr + label, mask=valid, other=float("nan")).to(tl.float32)
        # the smoothing term only when smoothing is on: with a -inf logit, logit_sum is -inf and 0 * inf is NaN
        smoothing_term = tl.where(label_smoothing > 0.0, label_smoothing * (lse - logit_sum / V), 0.0)
        loss = (1.0 - label_smoothing) * (lse - target) + smoothing_term
        loss += z_loss * lse * lse
        loss = tl.where(valid, loss, float("nan"))
        tl.store(loss_ptr + row, loss)
        tl.store(lse_ptr + row, lse)

        if WANT_GRAD:
            if SCALE_PER_ROW:
                scale = tl.load(grad_scale_ptr + row).to(tl.float32)
            else:
                scale = tl.load(grad_scale_ptr).to(tl.float32)
            softmax_scale = 1.0 + 2.0 * z_loss * lse
            for v0 in range(0, V, BLOCK_V):
                ok = (v0 + cols) < V
                z = tl.load(row_ptr + v0 + cols, mask=ok, other=0.0).to(tl.float32)
                g = tl.exp(z - lse) * softmax_scale - label_smoothing / V
                g = tl.where(v0 + cols == label, g - (1.0 - label_smoothing), g)
                g = tl.where(valid, g * scale, float("nan"))
                tl.store(grad_row_ptr + v0 + cols, g.to(grad_ptr.dtype.element_ty), mask=ok)


@triton.jit
def scale_unless_one_kernel(x_ptr, scale_ptr, n_elements, BLOCK: tl.constexpr):
    """x *= scale in place, where ``scale`` is a device scalar; when it is exactly 1 (``loss.backward()``'s
    seed) no element is read or written, with no host synchronization to find that out."""
    scale = tl.load(scale_ptr).to(tl.float32)
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    todo = offsets < tl.where(scale != 1.0, n_elements, 0)  # scale 1: an empty range
    x = tl.load(x_ptr + offsets, mask=todo, other=0.0).to(tl.float32)
    tl.store(x_ptr + offsets, (x * scale).to(x_ptr.dtype.element_ty), mask=todo)


LAUNCH_CONFIG = dict(BLOCK_V=4096, num_warps=8, num_stages=1)
INTERPRETED_CONFIG = dict(BLOCK_V=1024, num_warps=1, num_stages=1)  # the interpreter's cost grows with the block
SCALE_LAUNCH_CONFIG = dict(BLOCK=4096, num_warps=8, num_stages=1)
SCALE_INTERPRETED_CONFIG = dict(BLOCK=1024, num_warps=1, num_stages=1)


def launch_config(interpreted: bool) -> dict:
    """The one launch configuration of the loss kernel (also what the AOT check compiles)."""
    return dict(INTERPRETED_CONFIG if interpreted else LAUNCH_CONFIG)


def scale_launch_config(interpreted: bool) -> dict:
    """The one launch configuration of the in-place scale kernel (also what the AOT check compiles)."""
    return dict(SCALE_INTERPRETED_CONFIG if interpreted else SCALE_LAUNCH_CONFIG)


def aot_configs():
    """Launch configurations for the ahead-of-time sm_90/sm_80 compile check."""
    configs = []
    for dtype in ("fp32", "fp16", "bf16"):
        for want_grad, per_row in ((True, False), (True, True), (False, False)):
            launch = launch_config(False)
            configs.append(dict(
                kernel=cross_entropy_kernel,
                name=f"cross_entropy_{dtype}{'_grad' if want_grad else ''}{'_per_row' if per_row else ''}",
                signature={"logits_ptr": f"*{dtype}", "stride_row": "i32", "labels_ptr": "*i64", "loss_ptr": "*fp32",
                           "lse_ptr": "*fp32", "grad_ptr": f"*{dtype}", "stride_grad_row": "i32",
                           "grad_scale_ptr": "*fp32", "V": "i32", "ignore_index": "i32", "label_smoothing": "fp32",
                           "z_loss": "fp32"},
                constexprs={"WANT_GRAD": want_grad, "SCALE_PER_ROW": per_row, "BLOCK_V": launch.pop("BLOCK_V")},
                options=launch))
        launch = scale_launch_config(False)
        configs.append(dict(
            kernel=scale_unless_one_kernel, name=f"scale_unless_one_{dtype}",
            signature={"x_ptr": f"*{dtype}", "scale_ptr": "*fp32", "n_elements": "i64"},
            constexprs={"BLOCK": launch.pop("BLOCK")}, options=launch))
    return configs
