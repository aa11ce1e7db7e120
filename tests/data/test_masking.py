"""sslfast.data: masked LM."""

import numpy as np
import pytest
import torch

import sslfast.data as D
from tests.data.conftest import within


def test_mask_tokens_statistics_over_100k_tokens():
    vocab, mask_id = 30000, 4
    g = torch.Generator().manual_seed(1234)
    ids = torch.randint(5, vocab, (400, 300), generator=g)  # 120k tokens
    special = torch.zeros_like(ids, dtype=torch.bool)
    special[:, 0] = special[:, -1] = True
    special[::7, 200:] = True  # padding
    before = ids.clone()
    out, labels = D.mask_tokens(ids, mask_token_id=mask_id, vocab_size=vocab, special_tokens_mask=special,
                                generator=torch.Generator().manual_seed(5))
    assert torch.equal(ids, before), "the input must stay untouched"
    eligible = int((~special).sum())
    chosen = labels != -100
    assert not chosen[special].any(), "a special or padding position was chosen"
    assert torch.equal(labels[chosen], ids[chosen]) and (out[~chosen] == ids[~chosen]).all()
    n = int(chosen.sum())
    assert within(n / eligible, 0.15, eligible)
    masked = int((out[chosen] == mask_id).sum())
    kept = int((out[chosen] == ids[chosen]).sum())
    replaced = n - masked - kept
    assert within(masked / n, 0.8, n) and within(replaced / n, 0.1, n) and within(kept / n, 0.1, n, sigmas=6)
    # random replacements are uniform over the vocabulary
    random_ids = out[chosen & (out != mask_id) & (out != ids)].double()
    assert abs(random_ids.mean().item() / (vocab / 2) - 1) < 0.05


def test_mask_tokens_mosaic_rate_custom_split_and_reproducibility():
    ids = torch.randint(5, 1000, (200, 512))
    _, labels = D.mask_tokens(ids, mask_token_id=3, vocab_size=1000, mlm_probability=0.3,
                              generator=torch.Generator().manual_seed(0))
    assert within(float((labels != -100).float().mean()), 0.3, ids.numel())
    out, labels = D.mask_tokens(ids, mask_token_id=3, vocab_size=1000, mask_fraction=1.0, random_fraction=0.0,
                                generator=torch.Generator().manual_seed(0))
    assert (out[labels != -100] == 3).all()
    a = D.mask_tokens(ids, mask_token_id=3, vocab_size=1000, generator=torch.Generator().manual_seed(9))
    b = D.mask_tokens(ids, mask_token_id=3, vocab_size=1000, generator=torch.Generator().manual_seed(9))
    c = D.mask_tokens(ids, mask_token_id=3, vocab_size=1000, generator=torch.Generator().manual_seed(10))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[1], c[1])


def test_per_row_generators_make_a_row_independent_of_its_batch():
    ids = torch.randint(5, 1000, (6, 40))
    rows = [D.mask_tokens(ids[i:i + 1], mask_token_id=3, vocab_size=1000,
                          generator=[torch.Generator().manual_seed(100 + i)]) for i in range(6)]
    padded = torch.cat([ids, torch.zeros(6, 25, dtype=torch.long)], 1)
    whole = D.mask_tokens(padded, mask_token_id=3, vocab_size=1000,
                          generator=[torch.Generator().manual_seed(100 + i) for i in range(6)])
    for i, (out, labels) in enumerate(rows):
        assert torch.equal(whole[0][i, :40], out[0]) and torch.equal(whole[1][i, :40], labels[0])


def test_whole_word_masking_keeps_words_together(tokenized, wordpiece, special):
    table = D.continuation_table(wordpiece)
    ds = D.MaskedLMDataset(tokenized, max_length=128, special=special)
    collate = D.MLMCollator(special, wordpiece.get_vocab_size(), whole_word=table)
    idx = np.arange(min(len(ds), 1200))
    batch = collate([ds[i] for i in idx], D.example_seeds(3, 0, idx))
    ids = torch.from_numpy(np.concatenate([ds[i]["input_ids"] for i in idx]))
    chosen = (batch["labels"][batch["attention_mask"].bool()] != -100)
    assert ids.numel() > 100_000
    cont = torch.from_numpy(table)[ids]
    assert cont.sum() > 1000, "too few multi-piece words to test"
    is_special = torch.isin(ids, torch.tensor(special.ids))
    word_start = ~cont | is_special | torch.cat([torch.tensor([True]), is_special[:-1]])  # a cut word restarts
    starts = torch.nonzero(word_start).flatten()
    word_of = torch.cumsum(word_start.long(), 0) - 1  # every token's word number
    per_word_min = torch.full((len(starts),), 1, dtype=torch.long).scatter_reduce(0, word_of, chosen.long(), "amin")
    per_word_max = torch.zeros(len(starts), dtype=torch.long).scatter_reduce(0, word_of, chosen.long(), "amax")
    assert torch.equal(per_word_min, per_word_max), "a word was partly masked"
    real = ~is_special
    assert within(float(chosen[real].float().mean()), 0.15, int(real.sum()), sigmas=8)  # words, not tokens, drawn
    with pytest.raises(ValueError, match="WordPiece"):
        D.continuation_table(D.train_tokenizer([["some text here."]], "bpe", vocab_size=300))


def test_whole_word_masking_on_a_hand_made_row():
    # [CLS] un ##believ ##able word [SEP] ##cut next ; the cut piece after [SEP] is a word of its own
    ids = torch.tensor([[2, 10, 11, 12, 13, 3, 14, 15]]).repeat(4000, 1)
    cont = torch.tensor([[False, False, True, True, False, False, True, False]]).repeat(4000, 1)
    special = torch.zeros_like(cont)
    special[:, [0, 5]] = True
    _, labels = D.mask_tokens(ids, mask_token_id=4, vocab_size=20, special_tokens_mask=special,
                              continuation_mask=cont, mlm_probability=0.5, generator=torch.Generator().manual_seed(1))
    chosen = labels != -100
    assert not chosen[:, [0, 5]].any()
    assert torch.equal(chosen[:, 1], chosen[:, 2]) and torch.equal(chosen[:, 1], chosen[:, 3])
    for a, b in ((1, 4), (4, 6), (6, 7), (1, 6)):  # different words are drawn independently
        agree = float((chosen[:, a] == chosen[:, b]).float().mean())
        assert 0.4 < agree < 0.6, (a, b, agree)
    assert within(float(chosen[:, 6].float().mean()), 0.5, 4000)


def test_mask_tokens_errors():
    ids = torch.randint(0, 10, (2, 5))
    with pytest.raises(TypeError, match="int64"):
        D.mask_tokens(ids.float(), mask_token_id=1, vocab_size=10)
    with pytest.raises(ValueError, match="mlm_probability"):
        D.mask_tokens(ids, mask_token_id=1, vocab_size=10, mlm_probability=1.5)
    with pytest.raises(ValueError, match="sum to at most 1"):
        D.mask_tokens(ids, mask_token_id=1, vocab_size=10, mask_fraction=0.9, random_fraction=0.2)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        D.mask_tokens(ids, mask_token_id=10, vocab_size=10)
    with pytest.raises(ValueError, match="shape of input_ids"):
        D.mask_tokens(ids, mask_token_id=1, vocab_size=10, special_tokens_mask=torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="generators for 2 rows"):
        D.mask_tokens(ids, mask_token_id=1, vocab_size=10, generator=[torch.Generator()])


def test_masked_lm_examples_cover_each_document_in_order(tokenized, special):
    ds = D.MaskedLMDataset(tokenized, max_length=64, special=special, documents=[3, 4])
    total = sum(len(tokenized.document_tokens(d)) for d in (3, 4))
    assert sum(len(ds[i]["input_ids"]) - 2 for i in range(len(ds))) == total
    body = np.concatenate([ds[i]["input_ids"][1:-1] for i in range(len(ds))])
    assert np.array_equal(body, np.concatenate([tokenized.document_tokens(3), tokenized.document_tokens(4)]))
    assert all(len(ds[i]["input_ids"]) <= 64 and ds[i]["input_ids"][0] == special.cls for i in range(len(ds)))
