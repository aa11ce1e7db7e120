"""Causal-LM examples: documents concatenated and cut into fixed-length rows, or one document per row.

Packed rows carry ``cu_seqlens``: where each document piece starts and ends inside the row, so attention
never crosses a document boundary (``varlen_attention`` with ``causal=True``) and positions restart per
document. Every document ends with the end-of-text token, so the model learns where documents end.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from sslfast.data.corpus import CorpusError
from sslfast.data.segments import document_indices
from sslfast.data.tokenized import TokenizedCorpus
from sslfast.data.tokenizer import SpecialTokens

__all__ = ["pack_documents", "CausalLMDataset"]


def _row_cu_seqlens(boundaries: np.ndarray, row_start: int, seq_len: int) -> np.ndarray:
    """(pieces + 1,) int32 offsets of the document pieces of the row ``[row_start, row_start + seq_len)``
    of a stream whose documents end at the sorted ``boundaries``."""
    lo = np.searchsorted(boundaries, row_start, side="right")
    hi = np.searchsorted(boundaries, row_start + seq_len, side="left")
    inner = boundaries[lo:hi] - row_start  # document ends strictly inside the row
    return np.concatenate([[0], inner, [seq_len]]).astype(np.int32)


def pack_documents(token_lists: Sequence[Sequence[int]], seq_len: int, *, drop_last: bool = True,
                   pad_token_id: int = 0):
    """Concatenate documents (lists of token ids, end-of-text tokens already in them if wanted) and cut
    the stream into rows of ``seq_len``. Returns ``input_ids`` (R, seq_len) int64 and a list of R
    ``cu_seqlens`` (int32, from 0 to the row's token count): the document pieces of each row. The last,
    partial row is dropped unless ``drop_last=False``, in which case it is padded with ``pad_token_id``
    (its ``cu_seqlens`` ends at its real length)."""
    if seq_len < 1:
        raise ValueError(f"seq_len must be positive, got {seq_len}")
    lengths = np.asarray([len(t) for t in token_lists], dtype=np.int64)
    stream = np.concatenate([np.asarray(t, dtype=np.int64) for t in token_lists]) if len(token_lists) else \
        np.zeros(0, np.int64)
    total = len(stream)
    rows = total // seq_len if drop_last else -(-total // seq_len)
    if rows == 0:
        raise ValueError(f"{total} tokens make no full row of {seq_len}" if total else "no tokens to pack")
    boundaries = np.unique(np.cumsum(lengths))  # empty documents add no boundary
    boundaries = boundaries[(boundaries > 0) & (boundaries < total)]
    padded = np.full(rows * seq_len, pad_token_id, dtype=np.int64)
    padded[:min(total, rows * seq_len)] = stream[:rows * seq_len]
    cu = [_row_cu_seqlens(boundaries, r * seq_len, seq_len) for r in range(rows)]
    if total < rows * seq_len:  # the padded last row ends at its real tokens
        cu[-1] = np.append(cu[-1][cu[-1] < total - (rows - 1) * seq_len], total - (rows - 1) * seq_len)
        cu[-1] = cu[-1].astype(np.int32)
    return torch.from_numpy(padded.reshape(rows, seq_len)), [torch.from_numpy(c) for c in cu]


class CausalLMDataset:
    """Next-token-prediction examples over a tokenized corpus, each document followed by ``special.eos``.

    ``packed=True``: the documents' stream cut into rows of ``seq_len`` (the last partial row dropped);
    ``ds[i]`` has ``input_ids`` (seq_len,) and ``cu_seqlens`` (the row's document pieces).
    ``packed=False``: one example per document, a document longer than ``seq_len`` cut into pieces;
    ``ds[i]`` has ``input_ids`` of its own length (the collator pads)."""

    def __init__(self, corpus: TokenizedCorpus, *, seq_len: int, special: SpecialTokens, packed: bool = True,
                 documents=None):
        special.require("eos", purpose="causal-LM examples")
        if seq_len < 2:
            raise ValueError(f"seq_len must be at least 2, got {seq_len}")
        self.corpus, self.seq_len, self.special, self.packed = corpus, seq_len, special, packed
        docs = document_indices(corpus, documents)
        spans = np.asarray([corpus.document_span(int(d)) for d in docs], dtype=np.int64).reshape(-1, 2)
        spans = spans[spans[:, 1] > spans[:, 0]]  # (D, 2) non-empty documents
        self.doc_spans = spans
        self.doc_ends = np.cumsum(spans[:, 1] - spans[:, 0] + 1)  # (D,) stream offset after each eos
        total = int(self.doc_ends[-1]) if len(spans) else 0
        if packed:
            self.num_rows = total // seq_len
            if self.num_rows == 0:
                raise CorpusError(f"the selected documents hold {total} tokens (end-of-text included): not one "
                                  f"row of seq_len={seq_len}")
        else:
            pieces = -(-(spans[:, 1] - spans[:, 0] + 1) // seq_len)  # (D,) pieces per document
            self.pieces = np.stack([np.repeat(np.arange(len(spans)), pieces),
                                    np.concatenate([np.arange(p) for p in pieces]) if len(pieces) else
                                    np.zeros(0, np.int64)], 1)  # (N, 2): document, piece
            if len(self.pieces) == 0:
                raise CorpusError("no causal-LM example: the selected documents hold no tokens")

    def __len__(self) -> int:
        return self.num_rows if self.packed else len(self.pieces)

    def lengths(self) -> np.ndarray:
        """(N,) tokens of every example."""
        if self.packed:
            return np.full(self.num_rows, self.seq_len, dtype=np.int64)
        doc_lengths = self.doc_spans[:, 1] - self.doc_spans[:, 0] + 1  # eos included
        k, piece = self.pieces[:, 0], self.pieces[:, 1]
        return np.minimum(doc_lengths[k] - piece * self.seq_len, self.seq_len)

    def _document_with_eos(self, k: int, start: int, end: int) -> np.ndarray:
        """Tokens ``[start, end)`` of document k followed by its eos (stream coordinates inside it)."""
        d0, d1 = self.doc_spans[k]
        length = int(d1 - d0)
        body = self.corpus.tokens(int(d0) + start, int(d0) + min(end, length)).astype(np.int64) \
            if start < length else np.zeros(0, np.int64)
        return np.append(body, self.special.eos) if end > length else body

    def __getitem__(self, i: int) -> dict:
        if not self.packed:
            k, piece = (int(v) for v in self.pieces[i])
            return {"input_ids": self._document_with_eos(k, piece * self.seq_len, (piece + 1) * self.seq_len)}
        row_start, row_end = i * self.seq_len, (i + 1) * self.seq_len
        k = int(np.searchsorted(self.doc_ends, row_start, side="right"))  # the document holding row_start
        parts = []
        while row_start < row_end:
            doc_start = int(self.doc_ends[k - 1]) if k else 0
            take_end = min(int(self.doc_ends[k]), row_end)
            parts.append(self._document_with_eos(k, row_start - doc_start, take_end - doc_start))
            row_start, k = take_end, k + 1
        return {"input_ids": np.concatenate(parts),
                "cu_seqlens": _row_cu_seqlens(self.doc_ends, i * self.seq_len, self.seq_len)}
