"""BERT: transformers' model (attn_implementation="sdpa") against ``sslfast.models`` with the same weights."""
import torch

from sslfast.bench.case import Case
from sslfast.bench.cases._inputs import randint


def unavailable_reason():
    try:
        import transformers  # noqa: F401
    except ImportError:
        return "transformers is not installed"
    try:
        import sslfast.models  # noqa: F401
    except ImportError:
        return "sslfast.models (BERT) is not implemented in this version"
    return None


def _batch(b, s, vocab, device, seed=11):
    lengths = randint(16, s + 1, (b,), seed=seed)  # uniform in 16..s
    mask = (torch.arange(s)[None, :] < lengths[:, None]).long()
    ids = randint(0, vocab, (b, s), seed=seed + 1) * mask
    return ids.to(device), mask.to(device)


def cases(quick: bool, device: str):
    if unavailable_reason():
        return []
    import transformers

    import sslfast.models as models

    size = dict(hidden_size=256, num_hidden_layers=2, num_attention_heads=4, intermediate_size=1024) if quick \
        else dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
    config = transformers.BertConfig(vocab_size=30522, **size, attn_implementation="sdpa")
    b, s = (8, 128) if quick else (32, 128)
    torch.manual_seed(0)
    hf = transformers.BertModel(config).to(device).eval()
    ours = models.BertModel.from_pretrained(hf).to(device).eval()

    def make_inputs():
        return _batch(b, s, config.vocab_size, device)

    @torch.no_grad()
    def run_hf(ids, mask):
        return hf(input_ids=ids, attention_mask=mask).last_hidden_state

    @torch.no_grad()
    def run_ours(ids, mask):
        return ours(input_ids=ids, attention_mask=mask).last_hidden_state

    def error(base, mine):
        _, mask = make_inputs()
        real = mask.bool()
        return (base[real].double() - mine[real].double()).abs().max().item()

    return [Case(op="bert", case=f"BertModel fwd L={config.num_hidden_layers} H={config.hidden_size} "
                                 f"B={b} S={s} fp32", dtype="fp32", baseline_name="transformers sdpa",
                 make_inputs=make_inputs, baseline=run_hf, candidate=run_ours, error=error, tolerance=1e-4)]
