"""Sentence-pair examples: next-sentence prediction (BERT) and sentence-order prediction (ALBERT).

``[CLS] A [SEP] B [SEP]`` with ``token_type_ids`` 0 over ``[CLS] A [SEP]`` and 1 over ``B [SEP]``.
``next_sentence_label`` follows Hugging Face: for NSP 0 = B continues A, 1 = B comes from another
document; for SOP 0 = A then B in their original order, 1 = swapped. Segments are built as in Google's
``create_pretraining_data.py``: sentences of a document are gathered up to the target length (for a
document, a shorter random target with probability ``short_seq_prob``), cut at a random sentence boundary into A and B, and the pair
is truncated to fit, one token at a time from the longer segment's front or back at random.
"""
from __future__ import annotations

import numpy as np

from sslfast.data.corpus import Corpus, CorpusError
from sslfast.data.segments import document_indices
from sslfast.data.tokenized import TokenizedCorpus
from sslfast.data.tokenizer import SpecialTokens, load_tokenizer, special_tokens

__all__ = ["SentencePairDataset", "sentence_pairs", "OBJECTIVES"]

OBJECTIVES = ("nsp", "sop")


class SentencePairDataset:
    """NSP or SOP examples over a tokenized corpus, drawn once from ``seed`` (the masking on top is
    re-drawn each epoch by the collator). ``ds[i]`` is a dict with int64 arrays ``input_ids``,
    ``token_type_ids`` and the int ``next_sentence_label``. Stored as (a_start, a_end, b_start, b_end,
    label) token ranges: a few bytes per example."""

    def __init__(self, corpus: TokenizedCorpus, *, max_length: int, special: SpecialTokens, objective: str = "nsp",
                 seed: int = 0, short_seq_prob: float = 0.1, documents=None):
        special.require("cls", "sep", purpose="sentence-pair examples")
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        if max_length < 5:
            raise ValueError(f"max_length must be at least 5 ([CLS] a [SEP] b [SEP]), got {max_length}")
        if not 0.0 <= short_seq_prob <= 1.0:
            raise ValueError(f"short_seq_prob must be in [0, 1], got {short_seq_prob}")
        self.corpus, self.max_length, self.special, self.objective = corpus, max_length, special, objective
        docs = document_indices(corpus, documents)
        distinct = np.unique(docs[corpus.document_lengths()[docs] > 0])
        if objective == "nsp" and len(distinct) < 2:
            raise CorpusError("next-sentence prediction needs at least two distinct non-empty documents (its "
                              f"negative pairs take B from another document); got {len(distinct)}")
        self.pairs = _build_pairs(corpus, docs, max_length - 3, objective, np.random.default_rng(seed),
                                  short_seq_prob)  # (N, 5)
        if len(self.pairs) == 0:
            raise CorpusError(f"no {objective.upper()} example: every selected document is shorter than two "
                              f"tokens")

    def __len__(self) -> int:
        return len(self.pairs)

    def lengths(self) -> np.ndarray:
        """(N,) tokens of every example, the three special tokens included."""
        return self.pairs[:, 1] - self.pairs[:, 0] + self.pairs[:, 3] - self.pairs[:, 2] + 3

    def __getitem__(self, i: int) -> dict:
        a0, a1, b0, b1, label = (int(v) for v in self.pairs[i])
        la, lb = a1 - a0, b1 - b0
        ids = np.empty(la + lb + 3, dtype=np.int64)
        ids[0], ids[la + 1], ids[-1] = self.special.cls, self.special.sep, self.special.sep
        ids[1:la + 1] = self.corpus.tokens(a0, a1)
        ids[la + 2:-1] = self.corpus.tokens(b0, b1)
        types = np.zeros_like(ids)
        types[la + 2:] = 1
        return {"input_ids": ids, "token_type_ids": types, "next_sentence_label": label}


def _truncate(a0, a1, b0, b1, target, rng):
    """Shorten the pair to ``target`` tokens: one token at a time from the longer segment (B on ties), each
    from its front or back with probability 1/2 (Google's ``truncate_seq_pair``, in closed form)."""
    la, lb = a1 - a0, b1 - b0
    excess = la + lb - target
    if excess <= 0:
        return a0, a1, b0, b1
    cut_a = min(excess, max(la - lb, 0))
    cut_b = min(excess - cut_a, max(lb - la, 0))
    rest = excess - cut_a - cut_b
    cut_a, cut_b = cut_a + rest // 2, cut_b + (rest + 1) // 2
    front_a, front_b = int(rng.binomial(cut_a, 0.5)), int(rng.binomial(cut_b, 0.5))
    return a0 + front_a, a1 - (cut_a - front_a), b0 + front_b, b1 - (cut_b - front_b)


def _build_pairs(corpus, docs, max_tokens, objective, rng, short_seq_prob) -> np.ndarray:
    offsets = np.asarray(corpus.sentence_offsets)
    nonempty = np.unique(docs[corpus.document_lengths()[docs] > 0])
    pairs = []
    for d in docs:
        first, last = corpus.document_sentences(int(d))
        target = int(rng.integers(2, max_tokens + 1)) if rng.random() < short_seq_prob else max_tokens
        chunk_start, i = first, first  # the chunk is sentences [chunk_start, i]
        while i < last:
            chunk_tokens = int(offsets[i + 1] - offsets[chunk_start])
            if i == last - 1 or chunk_tokens >= target:
                n = i + 1 - chunk_start  # sentences in the chunk
                start, end = int(offsets[chunk_start]), int(offsets[i + 1])
                if end - start >= 1:
                    # A ends at a random sentence boundary (k sentences); a one-sentence chunk is cut at a
                    # random token instead
                    k = int(rng.integers(1, n)) if n >= 2 else 1
                    a_end = int(offsets[chunk_start + k]) if n >= 2 else \
                        start + (int(rng.integers(1, end - start)) if end - start >= 2 else 1)
                    pair = None
                    if objective == "nsp" and (a_end == end or rng.random() < 0.5):
                        others = nonempty[nonempty != d]
                        other = int(others[rng.integers(len(others))])
                        o_first, o_last = corpus.document_sentences(other)
                        o_end = int(offsets[o_last])
                        b0 = o_end
                        while b0 == o_end:  # a random sentence start inside the other document
                            b0 = int(offsets[int(rng.integers(o_first, o_last))])
                        b1 = min(o_end, b0 + max(target - (a_end - start), 1))
                        pair = _truncate(start, a_end, b0, b1, max_tokens, rng) + (1,)
                        i -= n - k  # the chunk's sentences after A go back into the stream (Google's script)
                    elif a_end < end:
                        a0, a1, b0, b1 = _truncate(start, a_end, a_end, end, max_tokens, rng)
                        swap = objective == "sop" and rng.random() < 0.5
                        pair = (b0, b1, a0, a1, 1) if swap else (a0, a1, b0, b1, 0)
                    if pair is not None and pair[1] > pair[0] and pair[3] > pair[2]:
                        pairs.append(pair)
                chunk_start = i + 1
            i += 1
    return np.asarray(pairs, dtype=np.int64).reshape(-1, 5)


def sentence_pairs(documents, tokenizer, *, max_length: int, objective: str = "nsp", seed: int = 0,
                   short_seq_prob: float = 0.1) -> list[dict]:
    """NSP / SOP examples (dicts of ``input_ids``, ``token_type_ids``, ``next_sentence_label``) from
    documents of sentences, tokenized in memory. For large corpora use :class:`SentencePairDataset` over a
    cached :class:`~sslfast.data.TokenizedCorpus` instead."""
    tokenizer = load_tokenizer(tokenizer)
    corpus = TokenizedCorpus.encode(documents if isinstance(documents, Corpus) else Corpus(documents), tokenizer)
    dataset = SentencePairDataset(corpus, max_length=max_length, special=special_tokens(tokenizer),
                                  objective=objective, seed=seed, short_seq_prob=short_seq_prob)
    return [dataset[i] for i in range(len(dataset))]
