"""sslfast.data: sentence pairs."""

import numpy as np
import pytest

import sslfast.data as D
from tests.data.conftest import within


def _document_of(tokenized, token):
    return int(np.searchsorted(np.asarray(tokenized.sentence_offsets)[np.asarray(tokenized.document_offsets)],
                               token, side="right")) - 1


@pytest.mark.parametrize("objective", ["nsp", "sop"])
def test_sentence_pairs_structure_and_label_balance(tokenized, special, objective):
    ds = D.SentencePairDataset(tokenized, max_length=96, special=special, objective=objective, seed=1)
    assert len(ds) > 1000
    labels = ds.pairs[:, 4]
    assert within(labels.mean(), 0.5, len(ds))
    for i in np.random.default_rng(0).choice(len(ds), 300, replace=False):
        a0, a1, b0, b1, label = ds.pairs[i]
        ex = ds[i]
        ids, types = ex["input_ids"], ex["token_type_ids"]
        assert len(ids) <= 96 and ex["next_sentence_label"] == label
        la = a1 - a0
        assert ids[0] == special.cls and ids[la + 1] == special.sep and ids[-1] == special.sep
        assert (types[:la + 2] == 0).all() and (types[la + 2:] == 1).all()
        assert np.array_equal(ids[1:la + 1], tokenized.tokens(a0, a1))
        same_doc = _document_of(tokenized, a0) == _document_of(tokenized, b0)
        if objective == "nsp":
            assert same_doc == (label == 0)
            if label == 0:
                assert b0 >= a1  # B comes after A (its front may be truncated)
        else:
            assert same_doc and ((b1 <= a0) == (label == 1))


def test_sentence_pairs_from_documents_and_a_seed(corpus, wordpiece):
    docs = corpus[:30]
    a = D.sentence_pairs(docs, wordpiece, max_length=64, objective="sop", seed=4)
    b = D.sentence_pairs(docs, wordpiece, max_length=64, objective="sop", seed=4)
    c = D.sentence_pairs(docs, wordpiece, max_length=64, objective="sop", seed=5)
    assert len(a) > 20 and set(a[0]) == {"input_ids", "token_type_ids", "next_sentence_label"}
    assert all(np.array_equal(x["input_ids"], y["input_ids"]) for x, y in zip(a, b))
    assert not all(np.array_equal(x["input_ids"], y["input_ids"]) for x, y in zip(a, c))


def test_sentence_pair_errors(tokenized, special, wordpiece):
    with pytest.raises(D.CorpusError, match="at least two distinct non-empty documents"):
        D.SentencePairDataset(tokenized, max_length=64, special=special, documents=[0])
    with pytest.raises(D.CorpusError, match="at least two distinct non-empty documents"):
        D.SentencePairDataset(tokenized, max_length=64, special=special, documents=[0, 0])
    with pytest.raises(ValueError, match="objective"):
        D.SentencePairDataset(tokenized, max_length=64, special=special, objective="mlm")
    with pytest.raises(ValueError, match="max_length"):
        D.SentencePairDataset(tokenized, max_length=4, special=special)
    with pytest.raises(D.CorpusError, match="no SOP example"):
        D.sentence_pairs([["the"], ["a"]], wordpiece, max_length=32, objective="sop")
    with pytest.raises(ValueError, match=r"special token\(s\) \['cls', 'sep'\]"):
        D.SentencePairDataset(tokenized, max_length=64, special=D.SpecialTokens(eos=0))
