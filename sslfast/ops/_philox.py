"""The attention-dropout keep mask of the Triton kernels, recomputed on the host (for references and tests).

The kernels keep probability (b, h, i, j) when 16 bits of Philox4x32(seed; counter = (j // 8, i, b·H + h, 0))
are >= round(p·2^16): key j takes half j % 2 (low first) of word (j % 8) // 2. i and j are positions
inside the sequence. NumPy's uint64 arithmetic holds the exact 32×32-bit products.
"""
from __future__ import annotations

import numpy as np
import torch

_MASK32 = np.uint64(0xFFFFFFFF)
_ROUND_A, _ROUND_B = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_KEY_A, _KEY_B = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)


def philox4x32(seed: int, c0, c1, c2, c3, rounds: int) -> tuple[np.ndarray, ...]:
    """The four output words of Philox4x32-``rounds`` (as ``triton.language.philox``), broadcast counters."""
    c0, c1, c2, c3 = np.broadcast_arrays(*(np.asarray(c, dtype=np.uint64) & _MASK32 for c in (c0, c1, c2, c3)))
    k0, k1 = np.uint64(seed) & _MASK32, (np.uint64(seed) >> np.uint64(32)) & _MASK32
    for _ in range(rounds):
        prod_b, prod_a = _ROUND_B * c2, _ROUND_A * c0  # < 2^64: exact
        c0, c1, c2, c3 = ((prod_b >> np.uint64(32)) ^ c1 ^ k0, prod_b & _MASK32,
                          (prod_a >> np.uint64(32)) ^ c3 ^ k1, prod_a & _MASK32)
        k0, k1 = (k0 + _KEY_A) & _MASK32, (k1 + _KEY_B) & _MASK32
    return c0, c1, c2, c3


def dropout_threshold(p: float) -> int:
    """The 16-bit threshold below which a draw drops its probability."""
    return int(round(p * (1 << 16)))


def effective_dropout_p(p: float) -> float:
    """The drop probability the kernels realize (p rounded to a multiple of 2^-16); kept values are scaled
    by 1 / (1 - effective p), so the expectation is exact."""
    return dropout_threshold(p) / (1 << 16)


def attention_dropout_keep(seed: int, p: float, batch_index, heads: int, sq: int, sk: int) -> torch.Tensor:
    """(len(batch_index), H, Sq, Sk) bool keep mask for the sequences numbered ``batch_index``."""
    from sslfast.kernels.flash_attention_common import PHILOX_ROUNDS
    b = np.asarray(batch_index, dtype=np.uint64).reshape(-1, 1, 1, 1)
    h = np.arange(heads, dtype=np.uint64).reshape(1, -1, 1, 1)
    i = np.arange(sq, dtype=np.uint64).reshape(1, 1, -1, 1)
    j = np.arange(sk, dtype=np.uint64).reshape(1, 1, 1, -1)
    words = philox4x32(seed, j // np.uint64(8), i, b * np.uint64(heads) + h, 0, int(PHILOX_ROUNDS.value))
    word_index = (j % np.uint64(8)) // np.uint64(2)
    word = np.choose(np.broadcast_to(word_index, words[0].shape).astype(np.int64), words)
    bits = (word >> (np.uint64(16) * (j % np.uint64(2)))) & np.uint64(0xFFFF)
    return torch.from_numpy(bits >= np.uint64(dropout_threshold(p)))
