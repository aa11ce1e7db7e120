"""sslfast.data: sampler and loader."""
import json

import numpy as np
import pytest
import torch

import sslfast.data as D


def test_sampler_ranks_are_disjoint_and_global_batches_independent_of_world_size():
    n, m = 103, 4
    one = D.ResumableSampler(n, batch_size=2 * m, seed=7)
    two = [D.ResumableSampler(n, batch_size=m, seed=7, rank=r, world_size=2) for r in range(2)]
    assert len(one) == len(two[0]) == n // (2 * m)
    seen = []
    for k in range(len(one)):
        parts = [s.batch(0, k) for s in two]
        assert not set(parts[0]) & set(parts[1])
        assert set(np.concatenate(parts)) == set(one.batch(0, k))
        seen.extend(one.batch(0, k))
    assert len(set(seen)) == len(seen) == len(one) * 2 * m
    assert not np.array_equal(one.order(0), one.order(1))
    assert np.array_equal(one.order(1), D.ResumableSampler(n, batch_size=8, seed=7).order(1))
    wrap = D.ResumableSampler(n, batch_size=8, seed=7, drop_last=False)
    assert len(wrap) == 13 and len(wrap.batch(0, 12)) == 8


def test_accumulated_micro_batches_equal_the_ranks_micro_batches():
    accumulating = D.ResumableSampler(64, batch_size=4, seed=2, accumulation=2)
    ranks = [D.ResumableSampler(64, batch_size=4, seed=2, rank=r, world_size=2) for r in range(2)]
    four = [D.ResumableSampler(64, batch_size=2, seed=2, rank=r, world_size=2, accumulation=2) for r in range(2)]
    assert len(accumulating) == 2 * len(ranks[0]) == 16
    for step in range(8):
        for j in range(2):  # micro-batch j of one process == rank j's batch of two processes
            assert np.array_equal(accumulating.batch(0, 2 * step + j), ranks[j].batch(0, step))
        assert set(np.concatenate([s.batch(0, 2 * step + j) for s in four for j in range(2)])) == \
            set(np.concatenate([r.batch(0, step) for r in ranks]))
    for _ in range(6):
        accumulating.advance()
    ranks[1].load_state_dict(accumulating.state_dict())  # 3 global steps done, now split over ranks
    assert ranks[1].batches_done == 3
    accumulating.advance()
    with pytest.raises(ValueError, match="middle of a global batch"):
        ranks[0].load_state_dict(accumulating.state_dict())
    four[0].advance()
    same_accumulation = D.ResumableSampler(64, batch_size=4, seed=2, accumulation=2)
    with pytest.raises(ValueError, match="middle of a global batch"):  # same accumulation, other world size
        same_accumulation.load_state_dict(four[0].state_dict())


def test_sampler_state_restores_and_checks_the_data():
    s = D.ResumableSampler(50, batch_size=4, seed=1)
    for _ in range(17):  # into the second epoch
        s.advance()
    state = s.state_dict()
    assert (state["epoch"], state["batches_done"]) == (1, 5)
    t = D.ResumableSampler(50, batch_size=2, seed=1, rank=1, world_size=2)  # same global batch, other split
    t.load_state_dict(state)
    assert (t.epoch, t.batches_done) == (1, 5)
    with pytest.raises(ValueError, match="num_examples"):
        D.ResumableSampler(51, batch_size=4, seed=1).load_state_dict(state)
    with pytest.raises(ValueError, match="global_batch"):
        D.ResumableSampler(50, batch_size=5, seed=1).load_state_dict(state)
    with pytest.raises(ValueError, match="fill no global batch"):
        D.ResumableSampler(3, batch_size=4)


@pytest.mark.parametrize("prefetch", [0, 2])
def test_loader_resumes_exactly(tokenized, special, wordpiece, prefetch):
    ds = D.SentencePairDataset(tokenized, max_length=64, special=special, documents=range(60))
    collate = D.MLMCollator(special, wordpiece.get_vocab_size())

    def loader():
        return D.BatchLoader(ds, collate, batch_size=16, seed=3, prefetch=prefetch)

    reference = loader()
    straight = [b for _, b in zip(range(len(reference) + 5), reference.forever())]
    first = loader()
    it = first.forever()
    head = [next(it) for _ in range(len(first) - 2)]
    state = json.loads(json.dumps(first.state_dict()))  # survives a checkpoint file
    it.close()
    resumed = loader()
    resumed.load_state_dict(state)
    tail = [b for _, b in zip(range(7), resumed.forever())]
    for got, want in zip(head + tail, straight):
        for key in want:
            assert torch.equal(got[key], want[key]), key
    assert resumed.epoch == 1


def test_loader_epoch_iteration_and_errors(special, wordpiece, tokenized):
    ds = D.MaskedLMDataset(tokenized, max_length=64, special=special, documents=range(10))
    loader = D.BatchLoader(ds, D.MLMCollator(special, wordpiece.get_vocab_size()), batch_size=8)
    assert len(list(loader)) == len(loader) and loader.epoch == 1

    def broken(examples, seeds):
        raise RuntimeError("collate failed")
    with pytest.raises(RuntimeError, match="collate failed"):
        next(iter(D.BatchLoader(ds, broken, batch_size=8, prefetch=2)))
    with pytest.raises(ValueError, match="empty"):
        D.MLMCollator(special, 100)([], [])


def test_mlm_batches_are_the_same_in_any_world_size_and_packed_form(tokenized, special, wordpiece):
    ds = D.SentencePairDataset(tokenized, max_length=64, special=special, documents=range(80))
    padded = D.MLMCollator(special, wordpiece.get_vocab_size())
    packed = D.MLMCollator(special, wordpiece.get_vocab_size(), packed=True)
    one = D.BatchLoader(ds, padded, batch_size=8, seed=2).make_batch(0, 3)
    ranks = [D.BatchLoader(ds, padded, batch_size=4, seed=2, rank=r, world_size=2).make_batch(0, 3)
             for r in range(2)]

    def rows(batch):
        return sorted(tuple(ids[m.bool()].tolist() + lab[m.bool()].tolist())
                      for ids, lab, m in zip(batch["input_ids"], batch["labels"], batch["attention_mask"]))
    assert rows(one) == sorted(rows(ranks[0]) + rows(ranks[1]))
    flat = D.BatchLoader(ds, packed, batch_size=8, seed=2).make_batch(0, 3)
    mask = one["attention_mask"].bool()
    for key in ("input_ids", "labels", "token_type_ids"):
        assert torch.equal(flat[key], one[key][mask])
    assert flat["cu_seqlens"].tolist() == [0] + torch.cumsum(mask.sum(1), 0).tolist()
    assert torch.equal(flat["next_sentence_label"], one["next_sentence_label"])


def test_packed_mlm_batch_gives_bert_the_same_loss_as_padded(tokenized, special, wordpiece):
    from sslfast.models import BertConfig, BertForPreTraining
    ds = D.SentencePairDataset(tokenized, max_length=48, special=special, documents=range(40))
    idx = np.arange(6)
    examples, seeds = [ds[i] for i in idx], D.example_seeds(0, 0, idx)
    padded = D.MLMCollator(special, wordpiece.get_vocab_size())(examples, seeds)
    packed = D.MLMCollator(special, wordpiece.get_vocab_size(), packed=True)(examples, seeds)
    torch.manual_seed(0)
    model = BertForPreTraining(BertConfig(vocab_size=wordpiece.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
                                          num_attention_heads=4, intermediate_size=64, hidden_dropout_prob=0.0,
                                          attention_probs_dropout_prob=0.0))
    a, b = model(**padded), model(**packed)
    assert torch.allclose(a.loss, b.loss, atol=1e-6, rtol=0)
    assert torch.allclose(a.seq_relationship_logits, b.seq_relationship_logits, atol=1e-5)
