"""Fine-tuning with PEFT LoRA adapters (the usual BERT recipe: rank 8 on ``query`` and ``value``, sequence
classification): one training step (forward + backward over the adapters and the head) of transformers' BERT +
PEFT against sslfast's BERT + the same PEFT config and weights. Judged against the float64 transformers + PEFT
model. CPU: all-MiniLM-L6-v2's shape (its weights where installed), 32 × ≤128 tokens; quick: 2 layers × 256."""
import copy

import torch

import sslfast.models as models
from sslfast._dtypes import DTYPES
from sslfast.bench.case import Case, float64_twin
from sslfast.bench.cases.bert import _configs, padded_batch

BENCH_OPS = ("peft",)  # the `sslfast bench --ops` names these cases serve


def unavailable_reason():
    for name in ("transformers", "peft"):
        try:
            __import__(name)
        except ImportError:
            return f"{name} is not installed"
    return None


def cases(quick: bool, device: str):
    if unavailable_reason():
        return []
    import warnings

    import peft
    import transformers

    out = []
    for name, config, path, b, s, dtype in _configs(quick, device):
        config = copy.deepcopy(config)
        config.num_labels, config._attn_implementation = 2, "sdpa"
        torch.manual_seed(0)
        hf = (transformers.BertForSequenceClassification.from_pretrained(path, config=config)
              if path else transformers.BertForSequenceClassification(config))
        hf = hf.to(device=device, dtype=DTYPES[dtype]).train()
        ours = models.BertForSequenceClassification.from_pretrained(hf).to(device=device, dtype=DTYPES[dtype]).train()
        lora = peft.LoraConfig(r=8, lora_alpha=16, target_modules=["query", "value"], lora_dropout=0.0,
                               init_lora_weights=False, modules_to_save=["classifier"])
        torch.manual_seed(1)
        hf_peft = peft.get_peft_model(hf, copy.deepcopy(lora))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the fused QKV path gives way to the adapters: said once, expected
            ours_peft = peft.get_peft_model(ours, copy.deepcopy(lora))
        ours_peft.load_state_dict(hf_peft.state_dict())
        reference = float64_twin(hf_peft)

        def make_inputs(b=b, s=s):
            ids, mask, _ = padded_batch(b, s, config.vocab_size, device)
            return ids, mask, (ids[:, 1] % 2).long()

        def step(model):
            def run(ids, mask, labels):
                model.zero_grad(set_to_none=True)
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
                loss.backward()
                return loss.detach().double() if loss.dtype == torch.float64 else loss.detach().float()
            return run

        out.append(Case(op="peft", case=f"LoRA r=8 q,v fine-tuning step, BertForSequenceClassification {name} "
                        f"B={b} S={s} {dtype}", dtype=dtype, baseline_name="transformers sdpa + PEFT",
                        make_inputs=make_inputs, baseline=step(hf_peft), candidate=step(ours_peft),
                        reference=step(reference), error=lambda x, y: abs(float(x) - float(y)),
                        tolerance=1e-5 if dtype == "fp32" else 1e-2))
    return out
