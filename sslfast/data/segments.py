"""Single-segment examples for masked-LM pretraining: ``[CLS] sentences… [SEP]`` within one document."""
from __future__ import annotations

import numpy as np

from sslfast.data.corpus import CorpusError
from sslfast.data.tokenized import TokenizedCorpus
from sslfast.data.tokenizer import SpecialTokens

__all__ = ["MaskedLMDataset", "document_indices"]


def document_indices(corpus: TokenizedCorpus, documents) -> np.ndarray:
    """``documents`` (indices into the corpus, or None for all) as a checked int64 array."""
    if documents is None:
        return np.arange(corpus.num_documents, dtype=np.int64)
    documents = np.asarray(documents, dtype=np.int64)
    if documents.size and (documents.min() < 0 or documents.max() >= corpus.num_documents):
        raise IndexError(f"document indices must be in [0, {corpus.num_documents})")
    return documents


class MaskedLMDataset:
    """Examples of whole sentences packed greedily up to ``max_length`` tokens (``[CLS]`` and ``[SEP]``
    included) without crossing a document; a sentence longer than that is cut into pieces. ``ds[i]`` is a
    dict of int64 arrays ``input_ids`` and ``token_type_ids`` (zeros); masking happens in the collator, so
    it is drawn anew every epoch."""

    def __init__(self, corpus: TokenizedCorpus, *, max_length: int, special: SpecialTokens, documents=None):
        special.require("cls", "sep", purpose="masked-LM examples")
        if max_length < 3:
            raise ValueError(f"max_length must be at least 3 ([CLS] token [SEP]), got {max_length}")
        self.corpus, self.max_length, self.special = corpus, max_length, special
        self.spans = self._spans(document_indices(corpus, documents), max_length - 2)  # (N, 2) token ranges
        if len(self.spans) == 0:
            raise CorpusError(f"no masked-LM example: the {len(document_indices(corpus, documents))} selected "
                              f"document(s) hold no tokens")

    def _spans(self, documents, target) -> np.ndarray:
        offsets = np.asarray(self.corpus.sentence_offsets)
        spans = []
        for d in documents:
            first, last = self.corpus.document_sentences(int(d))
            start = end = int(offsets[first])
            for s in range(first, last):
                s_end = int(offsets[s + 1])
                if s_end - start <= target:
                    end = s_end
                    continue
                if end > start:
                    spans.append((start, end))
                    start = end
                while s_end - start > target:  # a sentence longer than a whole example
                    spans.append((start, start + target))
                    start += target
                end = s_end
            if end > start:
                spans.append((start, end))
        return np.asarray(spans, dtype=np.int64).reshape(-1, 2)

    def __len__(self) -> int:
        return len(self.spans)

    def lengths(self) -> np.ndarray:
        """(N,) tokens of every example, [CLS] and [SEP] included."""
        return self.spans[:, 1] - self.spans[:, 0] + 2

    def __getitem__(self, i: int) -> dict:
        start, end = self.spans[i]
        ids = np.empty(end - start + 2, dtype=np.int64)
        ids[0], ids[-1] = self.special.cls, self.special.sep
        ids[1:-1] = self.corpus.tokens(int(start), int(end))
        return {"input_ids": ids, "token_type_ids": np.zeros_like(ids)}
