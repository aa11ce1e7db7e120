"""PEFT as a client: adapters on sslfast's models (and on transformers models patched by sslfast) give the loss,
logits and every trainable gradient of the same adapters on transformers' models with the same weights. A fused
path never reads the weights of a module that an adapter, hook or subclass has changed."""
import copy
import warnings

import pytest
import torch

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

import sslfast  # noqa: E402
import sslfast.models as models  # noqa: E402

BERT = dict(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, max_position_embeddings=64, num_labels=3)
GPT2 = dict(vocab_size=97, n_positions=64, n_embd=32, n_layer=2, n_head=4, resid_pdrop=0.0, embd_pdrop=0.0,
            attn_pdrop=0.0, pad_token_id=0)


def _configs(family):
    if family == "bert":
        return {
            "lora q,v": peft.LoraConfig(target_modules=["query", "value"], init_lora_weights=False,
                                        lora_dropout=0.0),
            "lora q,k,v,dense": peft.LoraConfig(target_modules=["query", "key", "value", "dense"],
                                                init_lora_weights=False, lora_dropout=0.0),
            "lora all-linear": peft.LoraConfig(target_modules="all-linear", init_lora_weights=False,
                                               lora_dropout=0.0),
            "dora q,v": peft.LoraConfig(target_modules=["query", "value"], use_dora=True, init_lora_weights=False,
                                        lora_dropout=0.0),
            "ia3 k,v,mlp": peft.IA3Config(target_modules=["key", "value", "output.dense"],
                                          feedforward_modules=["output.dense"], init_ia3_weights=False),
        }
    return {
        "lora c_attn,c_proj,c_fc": peft.LoraConfig(target_modules=["c_attn", "c_proj", "c_fc"],
                                                   init_lora_weights=False, lora_dropout=0.0, fan_in_fan_out=True),
        "lora all-linear": peft.LoraConfig(target_modules="all-linear", init_lora_weights=False, lora_dropout=0.0,
                                           fan_in_fan_out=True),
        "dora c_attn": peft.LoraConfig(target_modules=["c_attn"], use_dora=True, init_lora_weights=False,
                                       lora_dropout=0.0, fan_in_fan_out=True),
        "ia3 c_attn,c_fc": peft.IA3Config(target_modules=["c_attn", "c_fc"], feedforward_modules=["c_fc"],
                                          init_ia3_weights=False, fan_in_fan_out=True),
    }


def _pair(family, head, patched=False):
    """(transformers model, sslfast model or patched transformers model), same weights, eval-free (train mode)."""
    torch.manual_seed(0)
    if family == "bert":
        hf = getattr(transformers, head)(transformers.BertConfig(**BERT))
        ours = copy.deepcopy(hf) if patched else getattr(models, head).from_pretrained(hf)
    else:
        hf = getattr(transformers, head)(transformers.GPT2Config(**GPT2))
        ours = copy.deepcopy(hf) if patched else getattr(models, head).from_pretrained(hf)
    if patched:
        sslfast.patch(ours)
    return hf, ours


def _batch(family, head):
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(5, 97, (3, 11), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0  # right padding
    ids = ids * mask
    if head.endswith("SequenceClassification"):
        labels = torch.tensor([0, 2, 1])
    else:
        labels = torch.where((torch.rand(ids.shape, generator=g) < 0.4) & mask.bool(), ids,
                             torch.full_like(ids, -100))
        labels[:, 1] = ids[:, 1]
    return dict(input_ids=ids, attention_mask=mask, labels=labels)


def _adapted(hf, ours, config):
    """The same adapter (non-zero weights) on both models."""
    torch.manual_seed(1)
    hf_peft = peft.get_peft_model(hf, copy.deepcopy(config))
    ours_config = copy.deepcopy(config)
    if ours_config.target_modules == "all-linear" and hasattr(ours, "lm_head") \
            and not isinstance(ours, transformers.PreTrainedModel):
        # PEFT leaves the output layer out of "all-linear" only for transformers' PreTrainedModel subclasses:
        # with sslfast's classes say it (a difference the README lists)
        ours_config.exclude_modules = ["lm_head"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours_peft = peft.get_peft_model(ours, ours_config)
    missing, unexpected = ours_peft.load_state_dict(hf_peft.state_dict(), strict=False)
    assert not unexpected and not [k for k in missing if "lora" in k or "ia3" in k], (missing, unexpected)
    return hf_peft, ours_peft


def _trainable_grads(model):
    return {n: p.grad for n, p in model.named_parameters() if p.requires_grad}


def _assert_same_step(hf_peft, ours_peft, batch, *, at_least):
    for model in (hf_peft, ours_peft):
        model.zero_grad(set_to_none=True)
    hf_out, ours_out = hf_peft(**batch), ours_peft(**batch)
    torch.testing.assert_close(ours_out.loss, hf_out.loss, rtol=1e-5, atol=1e-6)
    hf_out.loss.backward()
    ours_out.loss.backward()
    hf_grads, ours_grads = _trainable_grads(hf_peft), _trainable_grads(ours_peft)
    assert hf_grads.keys() == ours_grads.keys()
    compared = 0
    for name, ref in hf_grads.items():
        if ref is None:
            assert ours_grads[name] is None or not ours_grads[name].any(), name
            continue
        assert ours_grads[name] is not None, f"{name}: no gradient (the adapter was bypassed)"
        scale = ref.abs().max().item()
        assert scale > 0, name
        torch.testing.assert_close(ours_grads[name], ref, rtol=1e-4, atol=1e-4 * scale + 1e-7, msg=name)
        compared += 1
    assert compared >= at_least, f"only {compared} adapter gradients compared"
    # eval mode returns logits as transformers does
    hf_peft.eval(), ours_peft.eval()
    with torch.no_grad():
        hf_logits = hf_peft(**{k: v for k, v in batch.items() if k != "labels"}).logits
        ours_logits = ours_peft(**{k: v for k, v in batch.items() if k != "labels"}).logits
    real = batch["attention_mask"].bool()
    if hf_logits.dim() == 3:
        hf_logits, ours_logits = hf_logits[real], ours_logits[real]
    torch.testing.assert_close(ours_logits, hf_logits, rtol=1e-4, atol=1e-5)
    hf_peft.train(), ours_peft.train()


CASES = [("bert", "BertForSequenceClassification", name) for name in _configs("bert")] + \
        [("bert", "BertForMaskedLM", "lora q,v")] + \
        [("gpt2", "GPT2LMHeadModel", name) for name in _configs("gpt2")]


@pytest.mark.parametrize("family, head, method", CASES, ids=[f"{f}-{h}-{m}" for f, h, m in CASES])
def test_adapters_train_as_on_transformers(family, head, method):
    hf, ours = _pair(family, head)
    hf_peft, ours_peft = _adapted(hf, ours, _configs(family)[method])
    _assert_same_step(hf_peft, ours_peft, _batch(family, head), at_least=4)  # 2 layers × ≥ 2 adapted modules


@pytest.mark.parametrize("family, head", [("bert", "BertForMaskedLM"), ("gpt2", "GPT2LMHeadModel")])
def test_adapters_on_a_patched_transformers_model(family, head):
    hf, patched = _pair(family, head, patched=True)
    method = "lora q,v" if family == "bert" else "lora c_attn,c_proj,c_fc"
    hf_peft, ours_peft = _adapted(hf, patched, _configs(family)[method])
    _assert_same_step(hf_peft, ours_peft, _batch(family, head), at_least=4)


def test_a_training_step_updates_exactly_what_it_updates_on_transformers():
    hf, ours = _pair("bert", "BertForSequenceClassification")
    hf_peft, ours_peft = _adapted(hf, ours, _configs("bert")["lora q,v"])
    batch = _batch("bert", "BertForSequenceClassification")
    changed = {}
    for name, model in (("hf", hf_peft), ("ours", ours_peft)):
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        model(**batch).loss.backward()
        opt.step()
        changed[name] = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed["hf"] == changed["ours"] and any("lora_A" in n for n in changed["ours"])
    assert all("lora" in n or "classifier" in n for n in changed["ours"]), changed["ours"]


def test_merge_and_unload_and_adapter_checkpoints(tmp_path):
    hf, ours = _pair("gpt2", "GPT2LMHeadModel")
    hf_peft, ours_peft = _adapted(hf, ours, _configs("gpt2")["lora c_attn,c_proj,c_fc"])
    batch = _batch("gpt2", "GPT2LMHeadModel")
    ours_peft.eval()
    with torch.no_grad():
        adapted = ours_peft(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    ours_peft.save_pretrained(str(tmp_path / "adapter"))
    _, fresh = _pair("gpt2", "GPT2LMHeadModel")
    reloaded = peft.PeftModel.from_pretrained(fresh, str(tmp_path / "adapter")).eval()
    merged = copy.deepcopy(ours_peft).merge_and_unload()
    assert type(merged) is models.GPT2LMHeadModel and not any("lora" in n for n, _ in merged.named_parameters())
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        for other in (reloaded, merged.eval()):
            logits = other(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            torch.testing.assert_close(logits[real], adapted[real], rtol=1e-4, atol=1e-5)


def test_a_hook_or_parametrization_is_honoured_and_warned_about_once(monkeypatch):
    from sslfast.models._common import fast_path
    monkeypatch.setattr(fast_path, "_warned", set())  # what earlier tests were warned about does not count
    hf, ours = _pair("bert", "BertForMaskedLM")
    batch = _batch("bert", "BertForMaskedLM")
    for model in (hf, ours):  # a hook that changes one projection's output, on both models
        model.bert.encoder.layer[0].attention.self.query.register_forward_hook(lambda m, a, out: out * 1.5)
        model.cls.predictions.decoder.register_forward_hook(lambda m, a, out: out - 0.25 * out.mean(-1, True))
    with pytest.warns(RuntimeWarning, match="calls query instead of reading its weights: it has forward hooks"):
        ours_loss = ours(**batch).loss
    torch.testing.assert_close(ours_loss, hf(**batch).loss, rtol=1e-5, atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per path and reason, not on every call
        ours(**batch)
    hf, ours = _pair("bert", "BertForSequenceClassification")
    from torch.nn.utils import parametrize

    class Doubled(torch.nn.Module):
        def forward(self, w):
            return 2 * w
    for model in (hf, ours):
        parametrize.register_parametrization(model.bert.encoder.layer[1].attention.self.value, "weight", Doubled())
    batch = _batch("bert", "BertForSequenceClassification")
    with pytest.warns(RuntimeWarning, match="calls value instead"):
        torch.testing.assert_close(ours(**batch).loss, hf(**batch).loss, rtol=1e-5, atol=1e-6)


def test_plain_modules_keep_the_fused_paths():
    from sslfast.models._common.fast_path import is_plain
    _, ours = _pair("gpt2", "GPT2LMHeadModel")
    block = ours.transformer.h[0]
    assert is_plain(block.attn.c_attn) and is_plain(ours.lm_head)
    assert isinstance(block.attn.c_attn, transformers.pytorch_utils.Conv1D)  # PEFT recognises it
    _, bert = _pair("bert", "BertForMaskedLM")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fast path given up on a plain model
        bert(**_batch("bert", "BertForMaskedLM")).loss.backward()


@pytest.mark.slow
def test_the_plainness_check_holds_under_torch_compile():
    # compiled once on the plain model, then an adapter is added: the compiled model must see it (recompiling)
    hf, ours = _pair("bert", "BertForSequenceClassification")
    batch = _batch("bert", "BertForSequenceClassification")
    compiled = torch.compile(ours)
    torch.testing.assert_close(compiled(**batch).loss, hf(**batch).loss, rtol=1e-5, atol=1e-6)
    hf_peft, ours_peft = _adapted(hf, ours, _configs("bert")["lora q,v"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss = compiled(**batch).loss  # the same compiled wrapper, now over LoRA layers
    torch.testing.assert_close(loss, hf_peft(**batch).loss, rtol=1e-5, atol=1e-6)
