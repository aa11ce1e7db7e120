"""Pretraining end to end: the runner's training step (batches from the loader, forward, backward, clipping,
AdamW) with sslfast's BERT against the same loop with ``transformers.BertForPreTraining`` (sdpa).

BERT MLM + NSP on the embedded corpus (WordPiece vocabulary of 8192 trained on it), the same weights, the same
examples and masking, fp32, dropout off so the first losses can be compared. sslfast's side gets packed
batches (``cu_seqlens``), transformers' side padded ones with ``attention_mask`` — each model's own fast input.
Full: BERT-mini (4 layers, hidden 256), global batch 32 × ≤128 tokens; quick: BERT-tiny, batch 8 × ≤64.
GPU: BERT-base, bf16, batch 64 × ≤128.
"""
import atexit
import shutil
import tempfile

from sslfast.bench.case import Case
from sslfast.train import PretrainConfig, Trainer

BENCH_OPS = ("pretrain",)  # the `sslfast bench --ops` names these cases serve


def unavailable_reason():
    try:
        import transformers  # noqa: F401
    except ImportError:
        return "transformers is not installed"
    return None


def _trainer(size, batch, length, device, precision, model=None):
    out = tempfile.mkdtemp(prefix="sslfast-bench-pretrain-")
    atexit.register(shutil.rmtree, out, True)
    config = PretrainConfig(model="bert", size=size, objective="mlm+nsp", max_length=length, global_batch_size=batch,
                            max_steps=10**6, dropout=0.0, eval_every=0, save_every=0, progress=False, plot=False,
                            device=device, precision=precision, prefetch=0,
                            out=out)
    return Trainer(config, model=model).setup()


def cases(quick: bool, device: str):
    if unavailable_reason():
        return []
    import transformers
    if device == "cuda":
        size, batch, length, precision = "base", 64, 128, "bf16"
    else:
        size, batch, length, precision = ("tiny", 8, 64, "fp32") if quick else ("mini", 32, 128, "fp32")
    ours = _trainer(size, batch, length, device, precision)
    hf_config = transformers.BertConfig(**{k: v for k, v in ours.task.model_config.to_dict().items()
                                          if k != "model_type"})
    hf_config._attn_implementation = "sdpa"
    hf_model = transformers.BertForPreTraining(hf_config)
    hf_model.load_state_dict(ours.model_unwrapped.state_dict())
    theirs = _trainer(size, batch, length, device, precision, model=hf_model)
    streams = {"ours": ours.loader.forever(), "theirs": theirs.loader.forever()}

    def step(trainer, name):
        def run():
            micro = [next(streams[name]) for _ in range(trainer.accumulation)]
            return trainer.train_step(micro)["loss"]
        return run

    def loss_error(base, mine):
        return abs(base - mine)

    tokens = f"global batch {batch} × ≤{length}, {precision}"
    return [Case(op="pretrain", case=f"BERT-{size} MLM+NSP train step (loader+fwd+bwd+AdamW) {tokens}",
                 dtype=precision, baseline_name="same loop, transformers BertForPreTraining sdpa",
                 make_inputs=lambda: (), baseline=step(theirs, "theirs"), candidate=step(ours, "ours"),
                 error=loss_error, tolerance=1e-4 if precision == "fp32" else 5e-2,
                 reference=False,  # a stateful loop (loader, AdamW): no float64 twin; judged against the baseline
                 extra={"tokens_per_step": None})]
