"""sslfast.models GPT-2 against transformers: outputs, losses, every gradient, packed documents, the KV cache,
generation, checkpoints; and the attention_with_kvcache op against float64."""
import copy

import pytest
import torch

transformers = pytest.importorskip("transformers")

import sslfast.models as models  # noqa: E402
from tests.helpers import assert_grads_match, assert_within_torch_error  # noqa: E402

SIZES = {
    "tiny": dict(vocab_size=101, n_positions=64, n_embd=32, n_layer=2, n_head=4),
    "wider": dict(vocab_size=211, n_positions=96, n_embd=48, n_layer=3, n_head=6, activation_function="gelu",
                  n_inner=80),
}
NO_DROPOUT = dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)


def make_config(size, **extra):
    return transformers.GPT2Config(**SIZES[size], **NO_DROPOUT, **extra)


def padded_batch(config, side, b=4, s=13, seed=0):
    """Random lengths (one full, one of length 1), padded on ``side``; labels -100 at padding and at each
    sequence's first token (transformers would predict it from a padding position when left-padded)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, s + 1, (b,), generator=g)
    lengths[0], lengths[-1] = s, 1
    cols = torch.arange(s)[None]
    mask = ((cols < lengths[:, None]) if side == "right" else (cols >= s - lengths[:, None])).long()
    ids = torch.randint(0, config.vocab_size, (b, s), generator=g) * mask
    labels = torch.where(mask.bool(), ids, -100)
    labels[torch.arange(b), mask.argmax(-1)] = -100
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # what sslfast does by itself (and transformers' generate)
    return ids, mask, labels, positions


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("size", sorted(SIZES))
def test_lm_head_outputs_loss_and_every_gradient_match_transformers(size, side, seed):
    config = make_config(size)
    hf = transformers.GPT2LMHeadModel(config).train()
    ours = models.GPT2LMHeadModel.from_pretrained(hf).train()
    ids, mask, labels, positions = padded_batch(config, side, seed=seed)
    exact = copy.deepcopy(hf).double()  # the float64 truth every bound is measured against
    e = exact(input_ids=ids, attention_mask=mask, position_ids=positions, labels=labels, output_hidden_states=True)
    a = hf(input_ids=ids, attention_mask=mask, position_ids=positions, labels=labels, output_hidden_states=True)
    b = ours(input_ids=ids, attention_mask=mask, labels=labels, output_hidden_states=True, return_logits=True)
    real = mask.bool()
    assert_within_torch_error(b.logits[real], a.logits[real], e.logits[real], what="logits")
    assert len(b.hidden_states) == len(a.hidden_states) == config.n_layer + 1
    for x, y, z in zip(a.hidden_states, b.hidden_states, e.hidden_states):
        assert_within_torch_error(y[real], x[real], z[real], what="hidden states")
    assert_within_torch_error(b.loss, a.loss, e.loss, what="loss")
    a.loss.backward()
    b.loss.backward()
    e.loss.backward()
    assert_grads_match(hf, ours, exact=exact)


@pytest.mark.parametrize("side", ["right", "left"])
def test_base_model_and_sequence_classification_match_transformers(side, seed):
    config = make_config("wider", pad_token_id=0, num_labels=3)
    ids, mask, _, positions = padded_batch(config, side, seed=seed)
    ids = torch.where(mask.bool(), ids.clamp(min=1), 0)  # pad id 0 only at padding: the pooled token is defined
    hf_base = transformers.GPT2Model(config).eval()
    ours_base = models.GPT2Model.from_pretrained(hf_base)
    a = hf_base(input_ids=ids, attention_mask=mask, position_ids=positions).last_hidden_state
    b = ours_base(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(b[mask.bool()], a[mask.bool()], rtol=1e-5, atol=1e-5)
    hf = transformers.GPT2ForSequenceClassification(config).train()
    ours = models.GPT2ForSequenceClassification.from_pretrained(hf).train()
    labels = torch.randint(0, 3, (ids.shape[0],))
    a = hf(input_ids=ids, attention_mask=mask, position_ids=positions, labels=labels)
    b = ours(input_ids=ids, attention_mask=mask, labels=labels)
    torch.testing.assert_close(b.logits, a.logits, rtol=1e-5, atol=1e-5)
    a.loss.backward()
    b.loss.backward()
    assert_grads_match(hf, ours)


def test_packed_documents_loss_equals_each_document_alone(seed):
    config = make_config("tiny")
    model = models.GPT2LMHeadModel(config).train()
    docs = [torch.randint(0, config.vocab_size, (n,)) for n in (7, 1, 12, 5)]
    ids = torch.cat(docs)
    cu = torch.tensor([0, 7, 8, 20, 25], dtype=torch.int32)
    labels = ids.clone()
    packed = model(input_ids=ids[None], cu_seqlens=cu, labels=labels[None])
    alone_sum, count = 0.0, 0
    for d in docs:
        if len(d) < 2:
            continue
        out = model(input_ids=d[None], labels=d[None])
        alone_sum = alone_sum + out.loss * (len(d) - 1)
        count += len(d) - 1
    torch.testing.assert_close(packed.loss, alone_sum / count, rtol=1e-5, atol=1e-6)
    logits = model.eval()(input_ids=ids, cu_seqlens=cu).logits  # (T, V): each document from position 0
    torch.testing.assert_close(logits[8:20], model(input_ids=docs[2][None]).logits[0], rtol=1e-5, atol=1e-5)


def make_generation_pair(size="tiny", std=0.3):
    config = make_config(size, initializer_range=std)  # wide weights: varied, non-repeating continuations
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(config).eval()
    return hf, models.GPT2LMHeadModel.from_pretrained(hf)


def left_padded(prompts, pad=0):
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros(len(prompts), width, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    return ids, mask


def test_greedy_generate_gives_exactly_transformers_tokens_with_eos_stopping():
    hf, ours = make_generation_pair()
    prompts = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [14, 15, 16, 17], [3]]
    ids, mask = left_padded(prompts)
    free = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=40, do_sample=False, pad_token_id=0,
                       eos_token_id=None)
    assert torch.equal(ours.generate(ids, mask, max_new_tokens=40, pad_token_id=0, eos_token_id=None), free)
    assert len(set(free[:, ids.shape[1]:].flatten().tolist())) > 10, "degenerate continuation: the test is weak"
    eos = int(free[1, ids.shape[1] + 9])  # a token row 1 produces: it stops there, the others pad after theirs
    want = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=48, do_sample=False, pad_token_id=0,
                       eos_token_id=eos)
    got = ours.generate(ids, mask, max_new_tokens=48, pad_token_id=0, eos_token_id=eos)
    assert torch.equal(got, want)
    new = got[1, ids.shape[1]:].tolist()
    stop = new.index(eos)  # its first EOS (at or before step 9): padding after it
    assert all(t == 0 for t in new[stop + 1:]) and len(new) > stop + 1
    lists = ours.generate(prompts, max_new_tokens=48, pad_token_id=0, eos_token_id=eos)  # a list of lists
    assert torch.equal(lists, got)


def test_cached_logits_equal_uncached_and_transformers_cache_formats_round_trip(seed):
    hf, ours = make_generation_pair("wider")
    ids, mask = left_padded([[5, 6, 7, 8], [9, 10], [11, 12, 13]])
    first = ours(input_ids=ids, attention_mask=mask, use_cache=True)
    assert isinstance(first.past_key_values, models.KVCache)
    nxt = torch.randint(0, 211, (3, 2))
    step = ours(input_ids=nxt, past_key_values=first.past_key_values)
    full_ids = torch.cat([ids, nxt], 1)
    full_mask = torch.cat([mask, torch.ones_like(nxt)], 1)
    full = ours(input_ids=full_ids, attention_mask=full_mask).logits[:, -2:]
    torch.testing.assert_close(step.logits, full, rtol=1e-5, atol=1e-5)
    assert first.cache is first.past_key_values  # the field's current and earlier names
    # transformers' own cache, continued by sslfast and handed back in its format
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        hf_first = hf(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
        legacy = tuple((layer.keys, layer.values) for layer in hf_first.cache.layers)
        for past in (legacy, copy.deepcopy(hf_first.cache)):
            out = ours(input_ids=nxt, cache=past, attention_mask=full_mask)
            torch.testing.assert_close(out.logits, full, rtol=1e-5, atol=1e-5)
            assert type(out.cache) is type(past)
        returned = ours(input_ids=nxt, past_key_values=legacy, attention_mask=full_mask).cache
        hf_next = hf(input_ids=nxt, cache=hf_first.cache, attention_mask=full_mask,
                     position_ids=positions[:, -1:] + torch.arange(1, 3))
    real = full_mask.bool()
    for (k, v), layer in zip(returned, hf_next.cache.layers):
        torch.testing.assert_close(k.transpose(1, 2)[real], layer.keys.transpose(1, 2)[real], rtol=1e-5, atol=1e-5)


def test_sampling_is_reproducible_and_respects_the_options():
    _, ours = make_generation_pair()
    ids, mask = left_padded([[5, 6, 7], [8, 9]])

    def sample(seed, **kw):
        return ours.generate(ids, mask, max_new_tokens=20, do_sample=True, generator=torch.Generator().manual_seed(seed),
                             pad_token_id=0, eos_token_id=None, **kw)
    assert torch.equal(sample(1), sample(1)) and not torch.equal(sample(1), sample(2))
    top1 = sample(3, top_k=1)
    greedy = ours.generate(ids, mask, max_new_tokens=20, pad_token_id=0, eos_token_id=None)
    assert torch.equal(top1, greedy)  # top-k 1 leaves the argmax only
    assert torch.equal(sample(4, top_p=1e-6), greedy)  # so does a vanishing nucleus
    many = sample(5, num_return_sequences=3, temperature=2.0)
    assert many.shape == (6, ids.shape[1] + 20) and torch.equal(many[:3, :ids.shape[1]], ids[[0, 0, 0]])
    seen = []
    ours.generate(ids, mask, max_new_tokens=5, pad_token_id=0, eos_token_id=None, streamer=seen.append)
    assert len(seen) == 5 and all(t.shape == (2,) for t in seen)
    eos = int(greedy[0, ids.shape[1]])
    held = ours.generate(ids, mask, max_new_tokens=6, min_new_tokens=3, pad_token_id=0, eos_token_id=eos)
    assert eos not in held[0, ids.shape[1]:ids.shape[1] + 3].tolist()


def test_generate_errors_name_the_argument():
    _, ours = make_generation_pair()
    ids, mask = left_padded([[5, 6, 7]])
    cases = [
        (dict(input_ids=ids, attention_mask=mask, max_new_tokens=62), "exceeds n_positions=64"),
        (dict(input_ids=ids + 200, attention_mask=mask, max_new_tokens=3), r"input_ids must be in \[0, 101\)"),
        (dict(input_ids=ids, attention_mask=mask, max_new_tokens=3, do_sample=True, temperature=0.0), "temperature"),
        (dict(input_ids=ids, attention_mask=mask, max_new_tokens=3, do_sample=True, top_p=1.5), "top_p"),
        (dict(input_ids=[[]], max_new_tokens=3), "at least one token"),
        (dict(input_ids=ids[:, :0], attention_mask=mask[:, :0], max_new_tokens=3), "prompt is empty"),
        (dict(input_ids=ids, attention_mask=mask.flip(-1).roll(1, -1) * 0 + torch.tensor([[1, 1, 0]]),
              max_new_tokens=3), "left-padded"),
        (dict(input_ids=ids, attention_mask=mask, max_new_tokens=3, num_return_sequences=2), "do_sample=True"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            ours.generate(**kwargs)


def test_checkpoints_both_ways_and_transformers_buffers(tmp_path, seed):
    config = make_config("tiny")
    hf = transformers.GPT2LMHeadModel(config)
    state = hf.state_dict()
    ours = models.GPT2LMHeadModel(config)
    ours.load_state_dict(state, strict=True)  # the same keys and (in, out) Conv1D layout
    ours.save_pretrained(tmp_path / "ours")
    back = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "ours").eval()
    ids = torch.randint(0, config.vocab_size, (2, 9))
    torch.testing.assert_close(back(input_ids=ids).logits, ours.eval()(input_ids=ids).logits, rtol=1e-5, atol=1e-5)
    from safetensors.torch import save_file
    old = {k: v.contiguous() for k, v in state.items() if k != "lm_head.weight"}
    for i in range(config.n_layer):  # the mask buffers older transformers versions saved
        old[f"transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, 64, 64))
        old[f"transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    (tmp_path / "old").mkdir()
    save_file(old, str(tmp_path / "old" / "model.safetensors"))
    config.save_pretrained(tmp_path / "old")
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # ignored buffers are not "unexpected", the tied head is not "missing"
        loaded = models.GPT2LMHeadModel.from_pretrained(tmp_path / "old")
    assert loaded.lm_head.weight is loaded.transformer.wte.weight
    torch.testing.assert_close(loaded(input_ids=ids).logits, ours(input_ids=ids).logits)


def test_fewshot_scores_are_the_candidates_log_likelihood_and_evaluate_counts(seed):
    from sslfast.data import default_corpus, train_tokenizer
    from sslfast.models import fewshot
    corpus = default_corpus()
    tokenizer = train_tokenizer(corpus[:80], "bpe", vocab_size=400)
    # a 400-piece vocabulary spends several tokens on a word: 1024 positions hold 3 sentences of <= 24 words
    config = models.GPT2Config(vocab_size=tokenizer.get_vocab_size(), n_positions=1024, n_embd=32, n_layer=2,
                               n_head=4, **NO_DROPOUT)
    model = models.GPT2LMHeadModel(config).eval()
    task = fewshot.sentence_completion_task(corpus, n=60, num_choices=3, seed=seed)
    task = [ex for ex in task if len(ex["query"].split()) <= 24][:6]
    assert len(task) == 6
    prompts = [fewshot.build_prompt(ex["query"], [(task[0]["query"], task[0]["choices"][0])]) for ex in task[1:3]]
    total, mean = fewshot.score_choices(model, tokenizer, prompts, [ex["choices"] for ex in task[1:3]])
    for row, prompt in enumerate(prompts):  # brute force: the full logits of prompt + candidate
        p = tokenizer.encode(prompt).ids
        for j, option in enumerate(task[1 + row]["choices"]):
            c = tokenizer.encode(" " + option).ids
            logits = model(input_ids=torch.tensor([p + c])).logits[0].float()
            want = torch.log_softmax(logits[len(p) - 1:-1], -1).gather(1, torch.tensor(c)[:, None]).sum()
            assert total[row, j].item() == pytest.approx(want.item(), abs=1e-4)
            assert mean[row, j].item() == pytest.approx(want.item() / len(c), abs=1e-4)
    result = fewshot.evaluate(model, tokenizer, task, k=2, seed=1)
    assert result["examples"] == 6 and result["chance"] == pytest.approx(1 / 3)
    assert len(result["predictions"]) == 6 and 0.0 <= result["accuracy"] <= 1.0
    assert "Q: " in fewshot.build_prompt("x", [("a", "b")]) and fewshot.build_prompt("x").count("Q:") == 1
    with pytest.raises(ValueError, match="k must be in"):
        fewshot.evaluate(model, tokenizer, task, k=6)


def test_fewshot_contextual_calibration_label_words_and_a_demonstration_pool(tmp_path, seed):
    import csv

    from sslfast.data import default_corpus, train_tokenizer
    from sslfast.data.downstream import load_task
    from sslfast.models import fewshot
    with open(tmp_path / "reviews.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for i in range(200):
            writer.writerow([f"review {i} was {'good' if i % 3 else 'bad'}", "positive" if i % 3 else "negative"])
    task = load_task(str(tmp_path / "reviews.csv"))
    task.name = "rt-polarity"  # its label words
    test = fewshot.classification_examples(task, "test", limit=5)
    pool = fewshot.classification_examples(task, "train")
    assert test[0]["choices"] == ["negative", "positive"] and len(test) == 5
    tokenizer = train_tokenizer(default_corpus()[:80] + [[t] for t in task["train"].texts], "bpe", vocab_size=400)
    model = models.GPT2LMHeadModel(models.GPT2Config(vocab_size=tokenizer.get_vocab_size(), n_positions=512,
                                                     n_embd=32, n_layer=2, n_head=4, **NO_DROPOUT)).eval()
    template = fewshot.TEMPLATES["rt-polarity"]
    result = fewshot.evaluate(model, tokenizer, test, k=2, seed=seed, pool=pool, calibrate=True, template=template)
    # by hand: the same demonstrations (drawn from the pool with the seed), the query and the content-free input
    import random
    rng = random.Random(seed)
    for i, ex in enumerate(test):
        others = rng.sample(range(len(pool)), 2)
        demos = [(pool[j]["query"], pool[j]["choices"][pool[j]["answer"]]) for j in others]
        real, _ = fewshot.score_choices(model, tokenizer, [fewshot.build_prompt(ex["query"], demos, template)],
                                        [ex["choices"]], template)
        free, _ = fewshot.score_choices(model, tokenizer, [fewshot.build_prompt("N/A", demos, template)],
                                        [ex["choices"]], template)
        assert result["predictions"][i] == int(real.argmax())
        assert result["predictions_calibrated"][i] == int((real.log_softmax(1) - free.log_softmax(1)).argmax())
    answers = [ex["answer"] for ex in test]
    assert result["majority"] == max(answers.count(0), answers.count(1)) / 5 and result["chance"] == 0.5
    with pytest.raises(ValueError, match="k must be in"):
        fewshot.evaluate(model, tokenizer, test, k=len(pool) + 1, pool=pool)


def test_fewshot_truncation_keeps_the_end_of_a_long_prompt(seed):
    from sslfast.data import default_corpus, train_tokenizer
    from sslfast.models import fewshot
    tokenizer = train_tokenizer(default_corpus()[:80], "bpe", vocab_size=400)
    model = models.GPT2LMHeadModel(models.GPT2Config(vocab_size=tokenizer.get_vocab_size(), n_positions=32,
                                                     n_embd=32, n_layer=2, n_head=4, **NO_DROPOUT)).eval()
    words = " ".join(w for doc in default_corpus()[:3] for sentence in doc for w in sentence.split())
    prompt, choices = words[:400], ["yes", "no answer here"]
    assert len(tokenizer.encode(prompt).ids) > 40
    with pytest.raises(ValueError, match="beyond n_positions=32.*truncate=True"):
        fewshot.score_choices(model, tokenizer, [prompt], [choices])
    total, _ = fewshot.score_choices(model, tokenizer, [prompt], [choices], truncate=True)
    p = tokenizer.encode(prompt).ids
    longest = max(len(tokenizer.encode(" " + option).ids) for option in choices)
    assert longest > 1
    kept = p[len(p) + longest - 32:]  # by hand: one context for every candidate, as long as the longest allows
    for j, option in enumerate(choices):
        c = tokenizer.encode(" " + option).ids
        logits = model(input_ids=torch.tensor([kept + c])).logits[0].float()
        want = torch.log_softmax(logits[len(kept) - 1:-1], -1).gather(1, torch.tensor(c)[:, None]).sum()
        assert total[0, j].item() == pytest.approx(want.item(), abs=1e-4)
    examples = [{"query": prompt, "choices": choices, "answer": 0}, {"query": "short", "choices": choices, "answer": 1}]
    result = fewshot.evaluate(model, tokenizer, examples, k=0, truncate=True)
    assert result["truncated"] == 1 and len(result["predictions"]) == 2


def test_patch_gives_transformers_gpt2_sslfast_attention_and_the_fused_loss(monkeypatch, seed):
    import sslfast
    import sslfast.models._common.attention as patch_module
    calls = []
    real = patch_module.attention
    monkeypatch.setattr(patch_module, "attention", lambda *a, **k: calls.append(k.get("causal")) or real(*a, **k))
    config = make_config("tiny")
    hf = transformers.GPT2LMHeadModel(config).train()
    reference = copy.deepcopy(hf)
    assert sslfast.patch(hf) is hf
    ids, mask, labels, positions = padded_batch(config, "right", seed=seed)
    a = reference(input_ids=ids, attention_mask=mask, labels=labels)
    b = hf(input_ids=ids, attention_mask=mask, labels=labels)
    assert calls == [True] * config.n_layer and b.logits is None  # causal sslfast attention; no logits when training
    torch.testing.assert_close(b.loss, a.loss, rtol=1e-5, atol=1e-6)
    a.loss.backward()
    b.loss.backward()
    assert_grads_match(reference, hf)
    hf.eval()
    c = hf(input_ids=ids, attention_mask=mask, labels=labels)
    torch.testing.assert_close(c.logits[mask.bool()], reference.eval()(input_ids=ids, attention_mask=mask).logits[
        mask.bool()], rtol=1e-5, atol=1e-5)


def test_transformers_cache_objects_are_filled_in_place_from_empty_and_select_updates_lengths(seed):
    from transformers import DynamicCache
    hf, ours = make_generation_pair("wider")
    ids, mask = left_padded([[5, 6, 7, 8], [9, 10]])
    full_mask = torch.cat([mask, torch.ones(2, 3, dtype=torch.long)], 1)
    nxt = torch.randint(0, 211, (2, 3))
    with torch.no_grad():
        want = ours(input_ids=torch.cat([ids, nxt], 1), attention_mask=full_mask).logits[:, -3:]
        cache = DynamicCache()  # transformers' usual first call: an empty cache object, never reassigned
        ours(input_ids=ids, attention_mask=mask, cache=cache)
        assert cache.get_seq_length() == 4
        for j in range(3):
            out = ours(input_ids=nxt[:, j:j + 1], attention_mask=full_mask[:, :5 + j], cache=cache)
            torch.testing.assert_close(out.logits[:, 0], want[:, j], rtol=1e-5, atol=1e-5)
        assert out.cache is cache
    kv = ours(input_ids=ids, attention_mask=mask, use_cache=True).cache
    kv.select(torch.tensor([1]))
    assert kv.max_length == 2 and kv.get_seq_length() == 2
    assert ours(input_ids=ids, attention_mask=mask, cache=None, use_cache=False).cache is None


def test_autocast_eval_forward_and_generate_and_gradients_through_a_cached_step(seed):
    _, ours = make_generation_pair()
    ids, mask = left_padded([[5, 6, 7], [8, 9]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ours(input_ids=ids, attention_mask=mask)  # eval mode builds a cache: in the autocast dtype
        tokens = ours.generate(ids, mask, max_new_tokens=4, pad_token_id=0, eos_token_id=None)
    assert out.cache.keys[0].dtype == torch.bfloat16 and tokens.shape == (2, 7)
    ours.train()
    first = ours(input_ids=ids, attention_mask=mask, use_cache=True)
    step = ours(input_ids=torch.tensor([[3], [4]]), cache=first.cache)
    step.logits.sum().backward()  # differentiable through the cached step
    assert ours.transformer.wte.weight.grad is not None and torch.isfinite(ours.transformer.wte.weight.grad).all()


def test_fused_decoding_layer_equals_the_module_path_and_gives_way_to_hooks(seed):
    import importlib
    gpt2_module = importlib.import_module("sslfast.models.gpt2.modeling")
    config = make_config("tiny")  # GPT-2's own activation (gelu_new): the fused path's
    model = models.GPT2LMHeadModel(config).eval()
    ids = torch.randint(0, config.vocab_size, (2, 9))
    assert not gpt2_module.fused_decode_allowed(models.GPT2LMHeadModel(make_config("wider")).eval().transformer,
                                                torch.randn(2, config.n_embd),
                                                (gpt2_module.GPT2Block, gpt2_module.GPT2Attention,
                                                 gpt2_module.GPT2MLP))  # exact GELU: the module path
    with torch.no_grad():
        x = torch.randn(2, config.n_embd)
        kinds = (gpt2_module.GPT2Block, gpt2_module.GPT2Attention, gpt2_module.GPT2MLP)
        assert gpt2_module.fused_decode_allowed(model.transformer, x, kinds)
        fused = model.generate(ids, max_new_tokens=6, do_sample=False, return_dict_in_generate=True,
                               output_logits=True)
        calls = []
        hook = model.transformer.h[1].mlp.register_forward_hook(lambda m, a, out: calls.append(1))
        assert not gpt2_module.fused_decode_allowed(model.transformer, x, kinds)
        unfused = model.generate(ids, max_new_tokens=6, do_sample=False, return_dict_in_generate=True,
                                 output_logits=True)
        hook.remove()
    assert len(calls) == 6  # the prompt and every decoding step called the hooked module
    assert torch.equal(fused.sequences, unfused.sequences)
    for a, b in zip(fused.logits[1:], unfused.logits[1:]):  # the decoding steps' logits
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
