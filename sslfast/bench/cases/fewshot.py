"""Few-shot candidate scoring: ``sslfast.models.gpt2.fewshot.score_choices`` (every prompt + candidate packed into one
forward pass, only the rows that predict a candidate token through the vocabulary) against transformers'
``GPT2LMHeadModel`` (sdpa) with the same weights.

Two baselines, both summing the candidate tokens' log-probabilities as an evaluation harness does, both
projecting only the rows that predict a candidate token onto the vocabulary:
- one forward pass per prompt + candidate (the plain loop, ``logits_to_keep``);
- all prompt + candidate sequences of the batch right-padded into one forward pass with an attention mask (the
  batched way; the hidden rows gathered before ``lm_head``).
Shape: GPT-2-mini width (256, 4 heads), 4 layers, vocabulary 8192, 16 prompts of 96–160 tokens (a 4-shot prompt's
length), 2–6 candidates of 1–3 tokens each (quick: 4 prompts). Candidates per second go in ``extra``. Correctness:
the log-likelihoods against the same model in float64.
"""
import random

import torch

from sslfast.bench.case import Case, float64_twin
from sslfast.models import GPT2LMHeadModel
from sslfast.models.gpt2.fewshot import score_choices

BENCH_OPS = ("fewshot",)  # the `sslfast bench --ops` names these cases serve

_VOCAB = 8192


def unavailable_reason():
    try:
        import tokenizers  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        return "transformers and tokenizers are needed"
    return None


def _tokenizer():
    """A word-level ``tokenizers.Tokenizer`` over words ``w0`` … ``w8191``: one word is one token."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(_VOCAB)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok


def _workload(prompts: int):
    rng = random.Random(11)
    words = lambda n: " ".join(f"w{rng.randrange(1, _VOCAB)}" for _ in range(n))  # noqa: E731
    texts = [words(rng.randint(96, 160)) for _ in range(prompts)]
    choices = [[words(rng.randint(1, 3)) for _ in range(rng.randint(2, 6))] for _ in range(prompts)]
    return texts, choices


def _per_candidate(model, tokenizer, prompts, choices):
    """(P, C) summed candidate log-probabilities, one forward pass per prompt + candidate."""
    device = next(model.parameters()).device
    total = torch.full((len(prompts), max(map(len, choices))), float("-inf"), dtype=torch.float64)
    with torch.no_grad():
        for row, (prompt, options) in enumerate(zip(prompts, choices)):
            p = tokenizer.encode(prompt, add_special_tokens=False).ids
            for j, option in enumerate(options):
                c = tokenizer.encode(" " + option, add_special_tokens=False).ids
                ids = torch.tensor([p + c], device=device)
                logits = model(input_ids=ids, logits_to_keep=len(c) + 1).logits[0, :-1]  # (len(c), V): only
                logp = torch.log_softmax(logits, -1)  # the rows predicting the candidate
                total[row, j] = logp.gather(1, ids[0, len(p):, None]).sum().double().cpu()
    return total


def _padded_batch(model, tokenizer, prompts, choices):
    """(P, C) summed candidate log-probabilities, every prompt + candidate right-padded into one forward pass."""
    device = next(model.parameters()).device
    seqs, spans = [], []
    for row, (prompt, options) in enumerate(zip(prompts, choices)):
        p = tokenizer.encode(prompt, add_special_tokens=False).ids
        for j, option in enumerate(options):
            c = tokenizer.encode(" " + option, add_special_tokens=False).ids
            seqs.append(p + c)
            spans.append((row, j, len(p), len(c)))
    width = max(map(len, seqs))
    ids = torch.zeros(len(seqs), width, dtype=torch.long, device=device)
    mask = torch.zeros(len(seqs), width, dtype=torch.long, device=device)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s, device=device)
        mask[i, :len(s)] = 1
    rows = torch.tensor([i * width + t for i, (_, _, p, c) in enumerate(spans) for t in range(p - 1, p + c - 1)],
                        device=device)
    targets = torch.cat([ids[i, p:p + c] for i, (_, _, p, c) in enumerate(spans)])
    with torch.no_grad():  # the vocabulary projection only on the rows that predict a candidate token
        hidden = model.transformer(input_ids=ids, attention_mask=mask).last_hidden_state  # (N, S, E)
        logp = torch.log_softmax(model.lm_head(hidden.reshape(-1, hidden.shape[-1]).index_select(0, rows)), -1)
        token_logp = logp.gather(1, targets[:, None])[:, 0].double().cpu()
    total = torch.full((len(prompts), max(map(len, choices))), float("-inf"), dtype=torch.float64)
    offset = 0
    for row, j, p, c in spans:
        total[row, j] = token_logp[offset:offset + c].sum()
        offset += c
    return total


def cases(quick: bool, device: str):
    if unavailable_reason():
        return []
    import transformers

    config = transformers.GPT2Config(vocab_size=_VOCAB, n_embd=256, n_head=4, n_layer=4, n_positions=256,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, attn_implementation="sdpa")
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(config).to(device).eval()
    ours = GPT2LMHeadModel.from_pretrained(hf).to(device).eval()
    hf64 = float64_twin(hf).eval()
    tokenizer = _tokenizer()
    prompts, choices = _workload(4 if quick else 16)
    candidates = sum(map(len, choices))

    def make_inputs():
        return (prompts, choices)

    def ours_run(p, c):
        return score_choices(ours, tokenizer, p, c)[0].double()

    def error(reference, out):
        finite = torch.isfinite(reference)
        if not bool((torch.isfinite(out) == finite).all()):
            return float("inf")
        return (out[finite] - reference[finite]).abs().max().item()

    reference = lambda p, c: _per_candidate(hf64, tokenizer, p, c)  # noqa: E731
    out = []
    for name, short, baseline in (("one forward pass per candidate", "per candidate", _per_candidate),
                                  ("padded batch", "padded batch", _padded_batch)):
        out.append(Case(op="fewshot", case=f"score {candidates} candidates of {len(prompts)} prompts (96–160 "
                                           f"tokens) 4L×256 V={_VOCAB} fp32 vs {short}",
                        dtype="fp32", baseline_name=f"transformers sdpa, {name}", make_inputs=make_inputs,
                        baseline=lambda p, c, f=baseline: f(hf, tokenizer, p, c), candidate=ours_run,
                        reference=reference, error=error, tolerance=1e-4,
                        extra={"items": ("candidates", candidates)}))
    return out
