"""GPT-2: transformers (``attn_implementation="sdpa"``) against ``sslfast.models`` with the same weights.

- Training step: ``GPT2LMHeadModel`` forward + backward, vocabulary 50257, GPT-2-small width (768, 12 heads),
  4 layers, batch 8 × 256 tokens of full rows, labels = inputs, fp32, dropout off (quick: 2 layers, 4 × 128).
- Generation: 64-token prompts, 128 new tokens, greedy, KV cache on, batch 1 and batch 8 (quick: 16 new
  tokens, batch 2); the two must produce the same tokens.
GPU: the same cases in bf16 with GPT-2 small's 12 layers.
"""
import torch

import sslfast.models as models
from sslfast.bench.case import Case, float64_twin
from sslfast.bench.cases._inputs import randint

BENCH_OPS = ("gpt2",)  # the `sslfast bench --ops` names these cases serve


def unavailable_reason():
    try:
        import transformers  # noqa: F401
    except ImportError:
        return "transformers is not installed"
    return None


def _models(layers, device, dtype):
    import transformers

    config = transformers.GPT2Config(n_layer=layers, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                     attn_implementation="sdpa")
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(config).to(device=device, dtype=dtype)
    ours = models.GPT2LMHeadModel.from_pretrained(hf).to(device=device, dtype=dtype)
    return config, hf, ours


def cases(quick: bool, device: str):
    if unavailable_reason():
        return []
    gpu = device == "cuda"
    dtype, name = (torch.bfloat16, "bf16") if gpu else (torch.float32, "fp32")
    layers = 12 if gpu else (2 if quick else 4)
    b, s = (8, 256) if not quick else (4, 128)
    config, hf, ours = _models(layers, device, dtype)
    out = []

    def train_step(model):
        def run(ids):
            model.train()
            model.zero_grad(set_to_none=True)
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            return loss.detach().double() if loss.dtype == torch.float64 else loss.detach().float()
        return run

    def make_rows():
        return (randint(0, config.vocab_size, (b, s), seed=3).to(device),)

    hf64 = float64_twin(hf)  # the reference of every row
    out.append(Case(op="gpt2", case=f"GPT2LMHeadModel train step {layers}L×768 V=50257 B={b} S={s} {name}",
                    dtype=name, baseline_name="transformers sdpa", make_inputs=make_rows, baseline=train_step(hf),
                    candidate=train_step(ours), reference=train_step(hf64),
                    error=lambda x, y: abs(float(x) - float(y)), tolerance=1e-5 if not gpu else 1e-2))

    def greedy_choices(ids):
        """Scores a generated sequence with the float64 model: the largest margin by which a chosen new token's
        logit falls below the best one (0 when every choice is the float64 argmax; a near-tie that fp32 may flip
        costs only its margin)."""
        def score(tokens):
            if tokens.shape[0] != ids.shape[0] or tokens.shape[1] <= ids.shape[1] \
                    or not bool((tokens[:, :ids.shape[1]] == ids).all()):
                return float("inf")
            with torch.no_grad():
                logits = hf64.eval()(input_ids=tokens).logits[:, ids.shape[1] - 1:-1]  # (B, new, V) float64
            chosen = logits.gather(-1, tokens[:, ids.shape[1]:, None])[..., 0]
            return (logits.max(-1).values - chosen).max().item()
        return score


    new_tokens = 16 if quick else 128
    streamed = [p.detach() for n, p in ours.named_parameters() if p.dim() == 2 and not n.endswith("wpe.weight")]

    @torch.no_grad()
    def read_weights():
        """The machine's limit for one decoding step: read every weight matrix it multiplies by once."""
        for w in streamed:
            w.sum()

    for batch in ((2,) if quick else (1, 8)):
        def make_prompts(batch=batch):
            return (randint(0, config.vocab_size, (batch, 64), seed=5).to(device),)

        def hf_generate(ids):
            hf.eval()
            mask = torch.ones_like(ids)
            return hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens,
                               min_new_tokens=new_tokens, do_sample=False, pad_token_id=0, eos_token_id=None)

        def our_generate(ids):
            ours.eval()
            return ours.generate(ids, max_new_tokens=new_tokens, pad_token_id=0, eos_token_id=None)

        def hf_first_token(ids):
            hf.eval()
            return hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=1,
                               min_new_tokens=1, do_sample=False, pad_token_id=0, eos_token_id=None)

        def our_first_token(ids):
            ours.eval()
            return ours.generate(ids, max_new_tokens=1, pad_token_id=0, eos_token_id=None)

        probe = ("reading the weights a decoding step streams (torch.sum over each)", read_weights, new_tokens)
        out.append(Case(op="gpt2", case=f"generate greedy, prompt 64, {new_tokens} new tokens, batch {batch}, "
                        f"{layers}L×768 {name}", dtype=name, baseline_name="transformers generate (sdpa, cache)",
                        make_inputs=make_prompts, baseline=hf_generate, candidate=our_generate,
                        reference=greedy_choices, error=lambda score, tokens: score(tokens),
                        tolerance=1e-4 if not gpu else 5e-2,
                        extra={"tokens_per_call": batch * new_tokens, "probe": probe,
                               "first_call": (hf_first_token, our_first_token)}))
    return out
