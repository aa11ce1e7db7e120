"""sslfast.models RoBERTa against transformers: outputs and every gradient with padding on either side,
positions, checkpoints, the in-place patch, the tokenizer kind and the pretraining runner."""
import copy
import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

import sslfast  # noqa: E402
import sslfast.models as models  # noqa: E402
from tests.helpers import assert_grads_match, assert_within_torch_error  # noqa: E402
from tests.models.bert.test_bert import labels_for as bert_labels_for  # noqa: E402

CLASSES = ["RobertaModel", "RobertaForMaskedLM", "RobertaForSequenceClassification",
           "RobertaForTokenClassification", "RobertaForQuestionAnswering", "RobertaForMultipleChoice"]
PAD = 1


def make_config(**extra):
    values = dict(vocab_size=97, hidden_size=48, num_hidden_layers=2, num_attention_heads=3, intermediate_size=80,
                  max_position_embeddings=40, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                  num_labels=3, layer_norm_eps=1e-5, type_vocab_size=1, attn_implementation="sdpa")
    values.update(extra)
    return transformers.RobertaConfig(**values)


def make_batch(config, side, b=4, s=17, choices=None):
    """A padded batch (padding id 1 on ``side``) with random lengths, one full row and one of length 1."""
    lengths = torch.randint(1, s + 1, (b,))
    lengths[0], lengths[-1] = s, 1
    columns = torch.arange(s)[None]
    real = columns < lengths[:, None] if side == "right" else columns >= s - lengths[:, None]
    ids = torch.randint(PAD + 1, config.vocab_size, (b, s)).masked_fill(~real, PAD)
    batch = dict(input_ids=ids, attention_mask=real.long())
    if choices:
        batch = {k: v.view(b // choices, choices, s) for k, v in batch.items()}
    return batch


def labels_for(name, config, batch):
    """BERT's labels for the same head (RoBERTa has no pre-training head)."""
    return bert_labels_for(name.replace("Roberta", "Bert"), config, batch)


def compare(hf_out, ours_out, exact_out, mask, keys):
    for key in keys:
        a, b, e = hf_out[key], ours_out[key], exact_out[key]
        pairs = zip(a, b, e) if isinstance(a, tuple) else [(a, b, e)]
        for x, y, z in pairs:
            assert x.shape == y.shape, (key, x.shape, y.shape)
            if x.dim() >= 2 and x.shape[:2] == mask.shape:  # padding positions are not computed by sslfast
                x, y, z = x[mask.bool()], y[mask.bool()], z[mask.bool()]
            assert_within_torch_error(y, x, z, what=key)


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("name", CLASSES)
def test_outputs_losses_and_gradients_match_transformers(name, side, seed):
    config = make_config(num_labels=2 if name == "RobertaForQuestionAnswering" else 3)
    hf = getattr(transformers, name)(config).train()  # dropout 0: a deterministic training step
    ours = getattr(models, name).from_pretrained(hf).train()
    batch = make_batch(config, side, choices=2 if name == "RobertaForMultipleChoice" else None)
    if name == "RobertaForQuestionAnswering":  # transformers scores padding in its softmax, sslfast masks it
        batch["attention_mask"] = torch.ones_like(batch["attention_mask"])
    extra = labels_for(name, config, batch)
    mask = batch["attention_mask"].reshape(-1, batch["attention_mask"].shape[-1])
    exact = copy.deepcopy(hf).double()
    exact_out = exact(**batch, **extra, output_hidden_states=True)
    hf_out = hf(**batch, **extra, output_hidden_states=True)
    ours_out = ours(**batch, **extra, output_hidden_states=True,
                    **({"return_logits": True} if name == "RobertaForMaskedLM" else {}))
    assert set(hf_out.keys()) - {"attentions", "past_key_values"} == set(ours_out.keys())
    compare(hf_out, ours_out, exact_out, mask, ours_out.keys())
    if "loss" not in hf_out:  # a random projection of the real tokens' outputs
        real = mask.bool()
        proj = torch.randn_like(hf_out.last_hidden_state[real].detach())
        for out, p in ((hf_out, proj), (ours_out, proj), (exact_out, proj.double())):
            (out.last_hidden_state[real] * p).sum().backward()
    else:
        for out in (hf_out, ours_out, exact_out):
            out.loss.backward()
    assert_grads_match(hf, ours, exact=exact)


def test_first_token_heads_compute_a_padding_position_0_as_transformers(seed):
    """A left-padded row's position 0 is padding: the classification head reads it, so it is computed there as
    transformers computes it (a query over the row's real tokens), and only for such heads."""
    config = make_config()
    hf = transformers.RobertaForSequenceClassification(config).eval()
    ours = models.RobertaForSequenceClassification.from_pretrained(hf)
    batch = make_batch(config, "left")
    padded_first = ~batch["attention_mask"][:, 0].bool()
    assert padded_first.any() and (~padded_first).any()
    a, b = hf(**batch, output_hidden_states=True), ours(**batch, output_hidden_states=True)
    torch.testing.assert_close(b.logits, a.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b.hidden_states[-1][padded_first, 0], a.hidden_states[-1][padded_first, 0],
                               rtol=1e-5, atol=1e-5)
    masked_lm = models.RobertaForMaskedLM(config).eval()  # no head reads position 0: padding is not computed
    out = masked_lm(**batch, output_hidden_states=True)
    assert (out.hidden_states[-1][padded_first, 0] == 0).all()


@pytest.mark.parametrize("packed", [False, True])
def test_positions_count_non_padding_tokens_as_transformers(packed, seed):
    from transformers.models.roberta.modeling_roberta import RobertaEmbeddings

    from sslfast.models.roberta import roberta_position_ids
    from sslfast.ops.token_layout import TokenLayout
    ids = torch.randint(0, 6, (3, 11))  # ids 1 (padding) anywhere, also inside sequences
    expected = RobertaEmbeddings.create_position_ids_from_input_ids(ids, PAD)
    if not packed:
        layout = TokenLayout.from_mask(None, 3, 11)
        got = roberta_position_ids(layout, ids, None, PAD, 40)
    else:  # the same rows as three packed sequences: the count restarts at each
        cu = torch.tensor([0, 11, 22, 33], dtype=torch.int32)
        layout = TokenLayout.from_cu_seqlens(cu, 11, (33,), ids.device)
        got = roberta_position_ids(layout, ids.reshape(-1), None, PAD, 40).view(3, 11)
    assert torch.equal(got, expected)
    embeds = torch.randn(3, 11, 8)
    layout = TokenLayout.from_mask(None, 3, 11)
    assert torch.equal(roberta_position_ids(layout, None, embeds, PAD, 40),
                       RobertaEmbeddings.create_position_ids_from_inputs_embeds(embeds, PAD))
    with pytest.raises(ValueError, match="needs 13 position rows"):
        roberta_position_ids(layout, ids, None, PAD, 12)


def test_packed_input_equals_the_padded_batch(seed):
    config = make_config()
    ours = models.RobertaModel(config).eval()
    batch = make_batch(config, "right")
    real = batch["attention_mask"].bool()
    lengths = real.sum(1)
    cu = torch.nn.functional.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)
    padded = ours(**batch).last_hidden_state[real]
    packed = ours(input_ids=batch["input_ids"][real], cu_seqlens=cu).last_hidden_state
    torch.testing.assert_close(packed, padded, rtol=1e-5, atol=1e-5)


def test_state_dict_checkpoints_and_tied_head(tmp_path, seed):
    config = make_config()
    for name in CLASSES:
        hf = getattr(transformers, name)(config)
        ours = getattr(models, name)(config)
        ours.load_state_dict(hf.state_dict(), strict=True)
        assert set(ours.state_dict()) == set(hf.state_dict()), name
    hf = transformers.RobertaForMaskedLM(config).eval()
    ours = models.RobertaForMaskedLM.from_pretrained(hf)
    assert ours.lm_head.decoder.weight is ours.roberta.embeddings.word_embeddings.weight
    assert ours.get_output_embeddings() is ours.lm_head.decoder
    ours.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "roberta"
    back = transformers.RobertaForMaskedLM.from_pretrained(tmp_path).eval()
    again = models.AutoModelForMaskedLM.from_pretrained(tmp_path)
    assert type(again) is models.RobertaForMaskedLM
    batch = make_batch(config, "left")
    real = batch["attention_mask"].bool()
    ref = hf(**batch).logits[real]
    for model in (ours, back, again):
        torch.testing.assert_close(model(**batch).logits[real], ref, rtol=1e-5, atol=1e-5)
    ours.resize_token_embeddings(101)
    assert ours.lm_head.bias.shape == (101,) and ours.lm_head.decoder.bias is ours.lm_head.bias


def test_errors_name_roberta(seed):
    config = make_config()
    ours = models.RobertaModel(config)
    batch = make_batch(config, "right", s=39)  # 39 tokens need 41 position rows of 40
    with pytest.raises(ValueError, match="needs 41 position rows"):
        ours(**batch)
    with pytest.raises(NotImplementedError, match="sslfast RoBERTa: output_attentions"):
        ours(**make_batch(config, "right"), output_attentions=True)


@pytest.mark.parametrize("name", ["RobertaForMaskedLM", "RobertaForSequenceClassification"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_patch_runs_transformers_roberta_unpadded(name, side, monkeypatch, seed):
    import sslfast.models.bert.modeling as bert_module
    calls = []
    real_attention = bert_module.varlen_attention
    monkeypatch.setattr(bert_module, "varlen_attention", lambda *a, **k: calls.append(1) or real_attention(*a, **k))
    config = make_config()
    hf = getattr(transformers, name)(config).eval()
    reference = copy.deepcopy(hf)
    assert sslfast.patch(hf) is hf
    batch = make_batch(config, side)
    extra = labels_for(name, config, batch)
    a, b = reference(**batch, **extra), hf(**batch, **extra)
    assert len(calls) == config.num_hidden_layers  # the unpadded path ran
    torch.testing.assert_close(b.loss, a.loss, rtol=1e-5, atol=1e-6)
    a.loss.backward()
    b.loss.backward()
    compared = 0
    for (n, p), q in zip(reference.named_parameters(), hf.parameters()):
        if p.grad is not None:
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-4 * p.grad.abs().max().item() + 1e-7,
                                       msg=n)
            compared += 1
    assert compared >= 20
    if name == "RobertaForMaskedLM":
        assert hf.train()(**batch, **extra).logits is None  # the fused loss: no N×V logits in a training step


def test_roberta_tokenizer_kind_round_trips_through_transformers(tmp_path):
    import sslfast.data as D
    tokenizer = D.train_tokenizer(D.default_corpus(), "roberta-bpe", vocab_size=600, cache=False)
    assert D.tokenizer_kind(tokenizer) == "roberta-bpe"
    special = D.special_tokens(tokenizer)
    assert (special.cls, special.pad, special.sep, special.unk, special.mask) == (0, 1, 2, 3, 4)
    pair = tokenizer.encode("A first sentence.", "And a second.")
    assert pair.tokens[0] == "<s>" and pair.tokens.count("</s>") == 3 and pair.tokens[-1] == "</s>"
    D.save_tokenizer(tokenizer, tmp_path)
    loaded = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert (loaded.bos_token, loaded.eos_token, loaded.pad_token, loaded.mask_token) == ("<s>", "</s>", "<pad>",
                                                                                       "<mask>")
    assert loaded("A first sentence.")["input_ids"] == tokenizer.encode("A first sentence.").ids


def test_pretrain_roberta_mlm_end_to_end(tmp_path):
    from sslfast.train import PretrainConfig, pretrain
    config = PretrainConfig(model="roberta", size="tiny", objective="mlm", max_steps=3, global_batch_size=4,
                            max_length=32, vocab_size=600, eval_every=0, save_every=0, out=str(tmp_path / "run"),
                            progress=False, plot=False)
    result = pretrain(config)
    final = tmp_path / "run" / "final"
    model = models.AutoModelForMaskedLM.from_pretrained(final)
    assert type(model) is models.RobertaForMaskedLM
    assert model.config.max_position_embeddings == 512 + PAD + 1 and model.config.pad_token_id == PAD
    hf = transformers.AutoModelForMaskedLM.from_pretrained(final).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(final)
    enc = tokenizer(["Pretraining runs on CPU.", "Short."], padding=True, return_tensors="pt")
    real = enc["attention_mask"].bool()
    torch.testing.assert_close(model(**enc).logits[real], hf(**enc).logits[real], rtol=1e-4, atol=1e-4)
    assert result is not None
    with pytest.raises(ValueError, match="objective"):
        PretrainConfig(model="roberta", objective="mlm+nsp", max_steps=1).validate()


def test_the_family_table_drives_the_runner_patch_and_auto_classes():
    from sslfast.models.families import FAMILIES, family_for_model_type
    from sslfast.models.patch import PATCHES
    from sslfast.train.config import DEFAULT_OBJECTIVE, MODELS, OBJECTIVES
    assert family_for_model_type("roberta") is FAMILIES["roberta"] and "roberta" in MODELS
    assert OBJECTIVES["roberta"] == ("mlm",) and DEFAULT_OBJECTIVE["roberta"] == "mlm"
    assert DEFAULT_OBJECTIVE["bert"] == "mlm+nsp" and OBJECTIVES["bert"] == ("mlm", "mlm+nsp", "mlm+sop")
    assert set(PATCHES) == {"bert", "roberta", "gpt2"}
    assert models.AutoModelForPreTraining.classes["roberta"] is models.RobertaForMaskedLM  # as transformers
    with pytest.raises(ValueError, match="no family for model_type None"):
        family_for_model_type(None)  # a config.json without model_type is no auto-encoder
