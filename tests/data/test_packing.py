"""sslfast.data: causal LM."""

import numpy as np
import pytest
import torch

import sslfast.data as D


def test_pack_documents_rows_and_boundaries():
    docs = [[1, 2, 3], [4, 5], [6, 7, 8, 9, 10], [11]]
    ids, cu = D.pack_documents(docs, 4)
    assert ids.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert [c.tolist() for c in cu] == [[0, 3, 4], [0, 1, 4]] and cu[0].dtype == torch.int32
    ids, cu = D.pack_documents(docs, 4, drop_last=False, pad_token_id=-1)
    assert ids.tolist()[-1] == [9, 10, 11, -1] and cu[-1].tolist() == [0, 2, 3]
    with pytest.raises(ValueError, match="no full row"):
        D.pack_documents([[1, 2]], 4)


def test_causal_lm_packed_rows_never_cross_documents(tokenized, special):
    ds = D.CausalLMDataset(tokenized, seq_len=64, special=special, documents=range(20))
    stream = np.concatenate([np.append(tokenized.document_tokens(d), special.eos) for d in range(20)
                             if len(tokenized.document_tokens(d))])
    assert len(ds) == len(stream) // 64
    idx = [0, 3, 7]
    batch = D.CausalLMCollator(special)([ds[i] for i in idx], [])
    flat = batch["input_ids"].view(-1)
    assert torch.equal(batch["input_ids"], torch.from_numpy(np.stack([stream[i * 64:(i + 1) * 64] for i in idx])))
    cu = batch["cu_seqlens"].long()
    assert cu[0] == 0 and cu[-1] == flat.numel() and batch["max_seqlen"] == int((cu[1:] - cu[:-1]).max())
    assert set(range(0, flat.numel(), 64)) <= set(cu.tolist()), "a piece crosses a row"
    for lo, hi in zip(cu[:-1].tolist(), cu[1:].tolist()):
        piece = flat[lo:hi]
        assert (piece[:-1] != special.eos).all(), "a piece spans an end-of-text"
        assert batch["position_ids"].view(-1)[lo:hi].tolist() == list(range(hi - lo))
        assert batch["labels"].view(-1)[lo] == -100 and torch.equal(batch["labels"].view(-1)[lo + 1:hi], piece[1:])


def test_causal_lm_document_ending_exactly_at_a_piece_boundary(wordpiece, special):
    corpus = D.TokenizedCorpus.encode([["the sum of"], ["the value"]], wordpiece)
    lengths = [len(corpus.document_tokens(d)) for d in range(2)]
    ds = D.CausalLMDataset(corpus, seq_len=lengths[1] + 1, special=special, packed=False)  # doc 1 + eos fills one
    ds_short = D.CausalLMDataset(corpus, seq_len=lengths[1], special=special, packed=False)  # eos alone in a piece
    assert ds[len(ds) - 1]["input_ids"][-1] == special.eos
    assert ds_short[len(ds_short) - 1]["input_ids"].tolist() == [special.eos]


def test_packed_rows_with_padding_and_empty_documents_collate_correctly(special):
    ids, cu = D.pack_documents([[5, 6], [], [7, 8, 9], [10]], 4, drop_last=False, pad_token_id=0)
    assert [c.tolist() for c in cu] == [[0, 2, 4], [0, 1, 2]]
    batch = D.CausalLMCollator(special)([{"input_ids": ids[r].numpy(), "cu_seqlens": cu[r].numpy()}
                                         for r in range(2)], [])
    assert batch["cu_seqlens"].tolist() == [0, 2, 4, 5, 6, 8]
    assert batch["labels"].tolist() == [[-100, 6, -100, 8], [-100, -100, -100, -100]]
    assert batch["position_ids"].tolist() == [[0, 1, 0, 1], [0, 0, 0, 1]]


def test_causal_lm_per_document_padding(tokenized, special):
    ds = D.CausalLMDataset(tokenized, seq_len=32, special=special, packed=False, documents=[0, 1])
    pieces = [ds[i]["input_ids"] for i in range(len(ds))]
    assert np.array_equal(np.concatenate(pieces), np.concatenate(
        [np.append(tokenized.document_tokens(d), special.eos) for d in (0, 1)]))
    batch = D.CausalLMCollator(special)([ds[i] for i in range(3)], [])
    lengths = batch["attention_mask"].sum(1)
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()
    assert lengths.tolist() == [len(pieces[i]) for i in range(3)]
