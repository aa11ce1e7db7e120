"""Zero-, one- and few-shot prompting of a causal LM (the GPT-3 recipe): build prompts from an instruction, k
demonstrations and a query; score multiple-choice candidates by the log-likelihood of their own tokens.

Every candidate of a batch of queries is scored in one forward pass: the prompt + candidate sequences are
packed (``cu_seqlens``), and only the rows that predict a candidate token go through the vocabulary projection.
"""
from __future__ import annotations

import dataclasses
import random
from typing import Optional, Sequence

import torch

__all__ = ["FewShotTemplate", "build_prompt", "score_choices", "evaluate", "sentence_completion_task",
           "classification_examples", "LABEL_WORDS", "TEMPLATES"]


@dataclasses.dataclass
class FewShotTemplate:
    """How examples read: ``instruction`` first, then each demonstration as ``example`` with its answer, then
    the query as ``example`` with an empty answer; a candidate answer is appended as ``answer_prefix`` + text."""
    instruction: str = ""
    example: str = "Q: {query}\nA:{answer}"
    separator: str = "\n\n"
    answer_prefix: str = " "

    def render(self, query: str, answer: Optional[str] = None) -> str:
        return self.example.format(query=query, answer="" if answer is None else self.answer_prefix + answer)


def build_prompt(query: str, demonstrations: Sequence[tuple[str, str]] = (),
                 template: Optional[FewShotTemplate] = None) -> str:
    """The prompt text: instruction, the (query, answer) demonstrations (zero, one or few), the query."""
    template = template or FewShotTemplate()
    parts = [template.instruction] if template.instruction else []
    parts += [template.render(q, a) for q, a in demonstrations]
    parts.append(template.render(query))
    return template.separator.join(parts)


def _encode(tokenizer, text: str) -> list[int]:
    if hasattr(tokenizer, "encode") and hasattr(tokenizer, "get_vocab_size"):  # a tokenizers.Tokenizer
        return tokenizer.encode(text, add_special_tokens=False).ids
    return tokenizer(text, add_special_tokens=False)["input_ids"]  # a transformers tokenizer


@torch.no_grad()
def score_choices(model, tokenizer, prompts: Sequence[str], choices: Sequence[Sequence[str]],
                  template: Optional[FewShotTemplate] = None, truncate: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-likelihood of each candidate continuation given its prompt: (sum over its tokens, mean per token),
    each (num_prompts, max_choices) fp32 (-inf where a prompt has fewer candidates). The prompt's tokens and
    the candidate's are encoded separately, so a candidate is scored on exactly its own tokens. A prompt +
    candidate longer than the model's ``n_positions`` is an error, or with ``truncate`` loses the prompt's first
    tokens (as evaluation harnesses do: the query and the last demonstrations are kept), the same for every
    candidate of the prompt (as many as the longest candidate needs)."""
    template = template or FewShotTemplate()
    limit = getattr(model.config, "n_positions", None)
    sequences, spans = [], []  # token lists; (row, choice, prompt length, candidate length)
    for row, (prompt, options) in enumerate(zip(prompts, choices)):
        prompt_ids = _encode(tokenizer, prompt)
        if not prompt_ids:
            raise ValueError(f"prompt {row} encodes to no token")
        option_ids = [_encode(tokenizer, template.answer_prefix + option) for option in options]
        for option, ids in zip(options, option_ids):
            if not ids:
                raise ValueError(f"candidate {option!r} of prompt {row} encodes to no token")
        kept = prompt_ids  # truncated once, by the longest candidate: every candidate sees the same context
        longest = max(map(len, option_ids), default=0)
        if truncate and limit is not None and len(prompt_ids) + longest > limit:
            if longest >= limit:
                raise ValueError(f"a candidate of prompt {row} alone has {longest} tokens, n_positions={limit}")
            kept = prompt_ids[len(prompt_ids) + longest - limit:]
        for j, ids in enumerate(option_ids):
            sequences.append(kept + ids)
            spans.append((row, j, len(kept), len(ids)))
    device = next(model.parameters()).device
    if limit is not None and max(len(s) for s in sequences) > limit:
        raise ValueError(f"a prompt + candidate has {max(len(s) for s in sequences)} tokens, beyond n_positions={limit} "
                         "(truncate=True drops the prompt's first tokens)")
    ids = torch.tensor([t for s in sequences for t in s], device=device)
    lengths = torch.tensor([len(s) for s in sequences], device=device)
    cu = torch.nn.functional.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)
    targets, rows = [], []
    for (row, j, p, c), start in zip(spans, cu[:-1].tolist()):
        rows.extend(range(start + p - 1, start + p + c - 1))  # the rows predicting the candidate's tokens
        targets.extend(ids[start + p:start + p + c].tolist())
    hidden, _, _, _ = model.transformer.encode(input_ids=ids, cu_seqlens=cu, max_seqlen=int(lengths.max()))
    rows_t = torch.tensor(rows, device=device)
    logp = torch.log_softmax(model.lm_head(hidden.index_select(0, rows_t)).float(), -1)  # (R, V)
    token_logp = logp.gather(1, torch.tensor(targets, device=device)[:, None]).squeeze(1)  # (R,)
    width = max(len(c) for c in choices)
    total = torch.full((len(prompts), width), float("-inf"))
    mean = torch.full((len(prompts), width), float("-inf"))
    offset = 0
    for row, j, p, c in spans:
        s = token_logp[offset:offset + c].sum().item()
        total[row, j], mean[row, j] = s, s / c
        offset += c
    return total, mean


def evaluate(model, tokenizer, examples: Sequence[dict], *, k: int = 0, template: Optional[FewShotTemplate] = None,
             seed: int = 0, batch_size: int = 8, pool: Optional[Sequence[dict]] = None, calibrate: bool = False,
             content_free: str = "N/A", truncate: bool = False) -> dict:
    """k-shot multiple-choice accuracy. ``examples``: dicts with ``query``, ``choices`` (strings) and ``answer``
    (the index of the right choice). Each query's k demonstrations are drawn with ``seed`` from ``pool`` (e.g.
    the training split) or, without one, from the other examples, and shown with their right answer. Returns
    ``accuracy`` (by summed log-likelihood), ``accuracy_normalized`` (by mean log-likelihood per token),
    ``chance`` (the expected accuracy of guessing), ``majority`` (always answering the most frequent answer
    index) and the predictions. With ``calibrate``, also ``accuracy_calibrated``: contextual calibration (Zhao
    et al., 2021) — each candidate's probability, normalised over the candidates, divided by its probability
    after the same demonstrations with the ``content_free`` input instead of the query. ``truncate``: prompts
    longer than the model's context lose their first tokens (``truncated`` counts them) instead of raising."""
    if not examples:
        raise ValueError("evaluate: no examples")
    source = examples if pool is None else pool
    available = len(source) - (1 if pool is None else 0)
    if k < 0 or k > available:
        raise ValueError(f"evaluate: k must be in [0, {available}] for {len(source)} demonstration candidates, got {k}")
    for i, ex in enumerate(examples):
        if not 0 <= ex["answer"] < len(ex["choices"]):
            raise ValueError(f"evaluate: example {i} has answer {ex['answer']} outside its {len(ex['choices'])} choices")
    template = template or FewShotTemplate()
    rng = random.Random(seed)
    prompts, free_prompts = [], []
    for i, ex in enumerate(examples):
        others = rng.sample([j for j in range(len(source)) if pool is not None or j != i], k)
        demos = [(source[j]["query"], source[j]["choices"][source[j]["answer"]]) for j in others]
        prompts.append(build_prompt(ex["query"], demos, template))
        free_prompts.append(build_prompt(content_free, demos, template))
    picked, picked_norm, picked_cal = [], [], []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(examples), batch_size):
            chunk = examples[start:start + batch_size]
            options = [ex["choices"] for ex in chunk]
            total, mean = score_choices(model, tokenizer, prompts[start:start + batch_size], options, template,
                                        truncate)
            picked += total.argmax(1).tolist()
            picked_norm += mean.argmax(1).tolist()
            if calibrate:
                free, _ = score_choices(model, tokenizer, free_prompts[start:start + batch_size], options, template,
                                        truncate)
                # log p(y | x) - log p(y | content-free), each normalised over the candidates
                calibrated = torch.log_softmax(total, 1) - torch.log_softmax(free, 1)
                picked_cal += calibrated.nan_to_num(float("-inf")).argmax(1).tolist()
    finally:
        model.train(was_training)
    answers = [ex["answer"] for ex in examples]
    most = max(set(answers), key=answers.count)

    def accuracy(predictions):
        return sum(p == a for p, a in zip(predictions, answers)) / len(examples)
    limit = getattr(model.config, "n_positions", None)
    truncated = 0 if limit is None else sum(
        len(_encode(tokenizer, p)) + max(len(_encode(tokenizer, template.answer_prefix + c)) for c in ex["choices"])
        > limit for p, ex in zip(prompts, examples))
    out = {"k": k, "examples": len(examples), "truncated": truncated, "accuracy": accuracy(picked),
           "accuracy_normalized": accuracy(picked_norm),
           "chance": sum(1 / len(ex["choices"]) for ex in examples) / len(examples),
           "majority": answers.count(most) / len(answers),
           "predictions": picked, "predictions_normalized": picked_norm}
    if calibrate:
        out["accuracy_calibrated"] = accuracy(picked_cal)
        out["predictions_calibrated"] = picked_cal
    return out


LABEL_WORDS = {  # how a task's classes read as answers
    "rt-polarity": {"negative": "negative", "positive": "positive"},
    "sms-spam": {"ham": "normal", "spam": "spam"},
    "trec-6": {"ABBR": "abbreviation", "DESC": "description", "ENTY": "entity", "HUM": "person", "LOC": "location",
               "NUM": "number"},
}
TEMPLATES = {
    "rt-polarity": FewShotTemplate(instruction="Classify the sentiment of each movie review.",
                                   example="Review: {query}\nSentiment:{answer}"),
    "sms-spam": FewShotTemplate(instruction="Is each message spam or normal?", example="Message: {query}\nType:{answer}"),
    "trec-6": FewShotTemplate(instruction="What does each question ask for?",
                              example="Question: {query}\nAnswer type:{answer}"),
}


def classification_examples(task, split: str, *, limit: Optional[int] = None) -> list[dict]:
    """A :class:`~sslfast.data.downstream.DownstreamTask` split as multiple-choice examples whose candidates are
    the task's label words (:data:`LABEL_WORDS`; else the class names)."""
    words = LABEL_WORDS.get(task.name, {})
    choices = [words.get(name, name) for name in task.label_names]
    data = task[split].subset(limit)
    return [{"query": text, "choices": choices, "answer": label} for text, label in zip(data.texts, data.labels)]


def sentence_completion_task(documents: Sequence[Sequence[str]], *, n: int = 64, num_choices: int = 4,
                             seed: int = 0) -> list[dict]:
    """A multiple-choice task from any text: a sentence with its last word cut off, the right word and
    ``num_choices - 1`` last words of other sentences as candidates (shuffled)."""
    rng = random.Random(seed)
    pool = [s.rstrip(".!?").split() for doc in documents for s in doc]
    pool = [w for w in pool if len(w) >= 6 and w[-1].isalpha()]
    if len(pool) < n + num_choices:
        raise ValueError(f"the documents hold {len(pool)} usable sentences, fewer than {n + num_choices}")
    words = sorted({w[-1] for w in pool})
    examples = []
    for words_of in rng.sample(pool, n):
        right = words_of[-1]
        wrong = rng.sample([w for w in words if w != right], num_choices - 1)
        options = wrong + [right]
        rng.shuffle(options)
        examples.append({"query": "Complete the sentence: " + " ".join(words_of[:-1]) + " ...",
                         "choices": options, "answer": options.index(right)})
    return examples
