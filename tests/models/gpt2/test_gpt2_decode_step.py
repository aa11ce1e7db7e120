"""GPT-2's one-call decoding step (``sslfast::gpt2_decode_step``): logits and hidden states against float64 within
the error of the same-dtype PyTorch model, the cache it extends, the module path it gives way to (adapters,
hooks), its errors, and its op registration."""
import pytest
import torch
import torch.nn as nn

transformers = pytest.importorskip("transformers")

import sslfast.models as models  # noqa: E402
from sslfast.models.gpt2 import decode as decode_module  # noqa: E402
from sslfast.models.gpt2 import modeling as gpt2_modeling  # noqa: E402
from tests.helpers import assert_rms_within_torch_error  # noqa: E402

pytestmark = pytest.mark.skipif(not decode_module.DECODE_STEP_AVAILABLE,
                                reason="the C++ extension with gpt2_decode_step is not built")

# (layers, width, heads, inner, batch, new tokens per row in the step): odd widths, several rows, s > 1
SHAPES = [(2, 80, 5, None, 1, 1), (3, 96, 3, 200, 2, 2), (2, 64, 4, None, 3, 1), (1, 40, 5, 52, 4, 1)]


def _model(layers, width, heads, inner, vocab=157):
    config = transformers.GPT2Config(vocab_size=vocab, n_positions=64, n_embd=width, n_layer=layers, n_head=heads,
                                     n_inner=inner, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    ours = models.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # weights of unit-ish scale: every part of the block matters to the output
        for name, p in ours.named_parameters():
            p.normal_(1.0 if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") else 0.0, 0.3)
    return ours


def _prompts(batch, vocab, longest=9):
    """Left-padded prompts of different lengths (rows of the cache filled to different lengths)."""
    lengths = torch.randint(1, longest + 1, (batch,))
    lengths[0] = longest
    mask = (torch.arange(longest)[None] >= longest - lengths[:, None]).long()
    return torch.randint(0, vocab, (batch, longest)) * mask, mask


def _per_row(model, rows, new, steps):
    """Each row's unpadded token list through a transformers model, for its last ``steps`` steps of ``new``
    tokens: the logits of each step's last token (steps · B, V), the final hidden states (steps · B · new, D), and
    per layer the keys and values (layers, steps · B · new, H, hd); step-major, then row, then token."""
    logits, hidden, keys, values = [], [], [], []
    for r in rows:
        out = model(input_ids=torch.tensor([r]), use_cache=True, output_hidden_states=True)
        tail = new * steps
        logits.append(out.logits[0, -tail:].view(steps, new, -1)[:, -1])  # (steps, V)
        hidden.append(out.hidden_states[-1][0, -tail:].view(steps, new, -1))  # (steps, new, D)
        layers = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
        keys.append(torch.stack([k[0, :, -tail:].transpose(0, 1).unflatten(0, (steps, new)) for k, _ in layers]))
        values.append(torch.stack([v[0, :, -tail:].transpose(0, 1).unflatten(0, (steps, new)) for _, v in layers]))
    return (torch.stack(logits, 1).flatten(0, 1), torch.stack(hidden, 1).flatten(0, 2),
            torch.stack(keys, 2).flatten(1, 3), torch.stack(values, 2).flatten(1, 3))


def _new_positions(store, before, new, steps):
    """(layers, steps · B · new, H, hd): the positions the steps wrote in each layer's cache, step-major."""
    return torch.stack([torch.cat([layer[b, before[b] + i * new:before[b] + (i + 1) * new] for i in range(steps)
                                   for b in range(len(before))]) for layer in store])


@pytest.mark.parametrize("shape", SHAPES, ids=[f"{s[0]}L-{s[1]}d-{s[2]}h-b{s[4]}-s{s[5]}" for s in SHAPES])
def test_steps_match_float64_within_the_torch_models_error_and_extend_the_cache(shape, seed):
    _check_steps(*shape)


@pytest.mark.parametrize("threads", [1, 3])
def test_any_thread_count_gives_the_same_accuracy(threads, seed):
    """Width 192: every projection's inner dimension is split between the threads (in 1, 3 or more parts; 3
    threads on a smaller machine still make a team of 3)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _check_steps(2, 192, 3, None, 2, 1)
    finally:
        torch.set_num_threads(before)


def _check_steps(layers, width, heads, inner, batch, new, steps=4):
    ours = _model(layers, width, heads, inner)
    config = ours.config
    ids, mask = _prompts(batch, config.vocab_size)
    step_ids = torch.randint(0, config.vocab_size, (batch, steps * new))
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(**{**config.to_dict(), "attn_implementation": "eager"}))
    missing, unexpected = hf.load_state_dict(ours.state_dict(), strict=False)
    assert not unexpected and all(k.endswith(("attn.bias", "attn.masked_bias")) for k in missing)  # buffers only
    hf64 = transformers.GPT2LMHeadModel(hf.config).double()
    hf64.load_state_dict(hf.state_dict())
    rows = [ids[b][mask[b].bool()].tolist() + step_ids[b].tolist() for b in range(batch)]
    with torch.no_grad():
        reference = _per_row(hf64.eval(), rows, new, steps)
        torch_path = _per_row(hf.eval(), rows, new, steps)
        cache, hidden_cache = (ours.transformer.new_cache(batch, ids.shape[1] + steps * new) for _ in range(2))
        for c in (cache, hidden_cache):
            ours.next_token_logits(ids, mask, c)  # the prompts, unpadded, into the cache
        before = cache.lengths.clone()
        logits, hidden = [], []
        with pytest.MonkeyPatch.context() as patch:  # the module path must not run: each step is one call
            patch.setattr(gpt2_modeling.GPT2Model, "_decode_step_by_modules", None)
            for chunk in step_ids.split(new, 1):
                logits.append(ours.transformer.decode_logits(chunk, cache, ours.lm_head))
                hidden.append(ours.transformer.decode_step(chunk, hidden_cache))
    assert logits[0].shape == (batch, config.vocab_size) and hidden[0].shape == (batch * new, width)
    assert_rms_within_torch_error(torch.cat(logits), torch_path[0], reference[0], what="logits")
    assert_rms_within_torch_error(torch.cat(hidden), torch_path[1], reference[1], what="final hidden states")
    # the hidden states: the same few-row head kernel on them gives the same logits, bit for bit
    last = hidden[-1].view(batch, new, -1)[:, -1].contiguous()
    head = torch.ops.sslfast.few_row_linear(last, ours.lm_head.weight, None, None, "none")
    torch.testing.assert_close(head, logits[-1], rtol=0, atol=0)
    for c in (cache, hidden_cache):  # the new keys and values, appended at each row's length
        assert torch.equal(c.lengths, before + steps * new) and c.max_length == int(before.max()) + steps * new
        keys, values = (_new_positions(store, before, new, steps) for store in (c.keys, c.values))
        assert_rms_within_torch_error(keys, torch_path[2], reference[2], what="keys")
        assert_rms_within_torch_error(values, torch_path[3], reference[3], what="values")


def test_generate_takes_the_one_call_step_and_gives_way_to_hooks_and_adapters(seed):
    ours = _model(2, 64, 4, None)
    ids = torch.randint(0, ours.config.vocab_size, (1, 7))
    kwargs = dict(max_new_tokens=5, do_sample=False, return_dict_in_generate=True, output_logits=True,
                  pad_token_id=0, eos_token_id=None)
    with torch.no_grad():
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(gpt2_modeling.GPT2Model, "_decode_step_by_modules", None)
            fused = ours.generate(ids, **kwargs)
        with pytest.MonkeyPatch.context() as patch:  # the same generate through the module path
            patch.setattr(decode_module, "DECODE_STEP_AVAILABLE", False)
            unfused = ours.generate(ids, **kwargs)
        assert torch.equal(fused.sequences, unfused.sequences)
        for a, b in zip(fused.logits, unfused.logits):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        shift = torch.randn(ours.config.vocab_size)
        for module, hook in ((ours.lm_head, lambda m, a, out: out + shift),
                             (ours.transformer.wte, lambda m, a, out: out * 0.5),
                             (ours.transformer.ln_f, lambda m, a, out: out.flip(-1))):
            calls = []
            handle = module.register_forward_hook(lambda m, a, out, hook=hook: (calls.append(1), hook(m, a, out))[1])
            hooked = ours.generate(ids, **kwargs)
            handle.remove()
            assert len(calls) == 5  # the prompt and each of the 4 later steps called the hooked module
            assert not torch.allclose(hooked.logits[-1], fused.logits[-1])
        # an adapter on the LM head (a module that is not a plain nn.Linear): called, not read
        plain_head = ours.lm_head
        ours.lm_head = _ScaledLinear(plain_head)
        adapted = ours.generate(ids, **kwargs)
        ours.lm_head = plain_head
    assert torch.equal(adapted.sequences, fused.sequences)  # doubling the logits keeps every argmax
    for a, f in zip(adapted.logits, fused.logits):
        torch.testing.assert_close(a, 2 * f, rtol=1e-5, atol=1e-5)


class _ScaledLinear(nn.Linear):
    """An nn.Linear subclass (as an adapter would be) that doubles its output."""

    def __init__(self, linear):
        nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias

    def forward(self, x):
        return 2 * super().forward(x)


def _op_arguments(model, cache, ids, head=True):
    tr = model.transformer
    weights = [w.detach() for block in tr.h for w in decode_module._block_weights(block)]
    eps = [1e-5] * (2 * len(tr.h) + 1)
    scales = [block.attn.scale for block in tr.h]
    return (ids, tr.wte.weight.detach(), tr.wpe.weight.detach(), weights, cache.keys, cache.values, cache.lengths, eps,
            scales, tr.ln_f.weight.detach(), tr.ln_f.bias.detach(), model.lm_head.weight.detach() if head else None,
            None)


def _filled(model, batch=2, prompt=5, capacity=8):
    cache = model.transformer.new_cache(batch, capacity)
    with torch.no_grad():
        model.next_token_logits(torch.randint(0, model.config.vocab_size, (batch, prompt)),
                                torch.ones(batch, prompt, dtype=torch.long), cache)
    return cache


def test_op_errors_name_what_is_wrong():
    model = _model(2, 32, 4, None)
    op = torch.ops.sslfast.gpt2_decode_step
    cache = _filled(model)
    stored = [t.clone() for t in cache.keys + cache.values]
    with pytest.raises(RuntimeError, match=r"input_ids must be in \[0, 157\), got 157"):
        op(*_op_arguments(model, cache, torch.tensor([[3], [157]])))
    with pytest.raises(RuntimeError, match="do not fit in a cache of 8"):
        op(*_op_arguments(model, cache, torch.randint(0, 157, (2, 4))))
    with pytest.raises(RuntimeError, match="block 1's mlp.c_fc.weight must be an fp32 CPU tensor"):
        arguments = list(_op_arguments(model, cache, torch.tensor([[3], [4]])))
        arguments[3] = list(arguments[3])
        arguments[3][12 + 8] = arguments[3][12 + 8].double()
        op(*arguments)
    assert torch.equal(cache.lengths, torch.tensor([5, 5], dtype=torch.int32))  # a failed call changes nothing
    assert all(torch.equal(a, b) for a, b in zip(cache.keys + cache.values, stored))
    strided = list(_op_arguments(model, cache, torch.tensor([[3], [4]])))  # a strided weight is read as it is
    reference_cache = _filled(model)
    reference_cache.keys = [k.copy_(c) for k, c in zip(reference_cache.keys, cache.keys)]
    reference_cache.values = [v.copy_(c) for v, c in zip(reference_cache.values, cache.values)]
    expected = op(*_op_arguments(model, reference_cache, torch.tensor([[3], [4]])))
    strided[1] = strided[1].t().contiguous().t()
    torch.testing.assert_close(op(*strided), expected, rtol=0, atol=0)


def test_op_registration_passes_opcheck():
    model = _model(2, 32, 4, None)
    for head in (True, False):
        cache = _filled(model)
        torch.library.opcheck(torch.ops.sslfast.gpt2_decode_step.default,
                              _op_arguments(model, cache, torch.randint(0, 157, (2, 1)), head=head))


def test_a_head_with_a_bias_is_added_in_the_call(seed):
    model = _model(2, 64, 4, None)
    model.lm_head = nn.Linear(64, model.config.vocab_size)  # untied, with a bias
    ids = torch.randint(0, model.config.vocab_size, (2, 1))
    logits_cache, hidden_cache = _filled(model), _filled(model)
    hidden_cache.keys = [k.copy_(c) for k, c in zip(hidden_cache.keys, logits_cache.keys)]
    hidden_cache.values = [v.copy_(c) for v, c in zip(hidden_cache.values, logits_cache.values)]
    with torch.no_grad(), pytest.MonkeyPatch.context() as patch:
        patch.setattr(gpt2_modeling.GPT2Model, "_decode_step_by_modules", None)
        logits = model.transformer.decode_logits(ids, logits_cache, model.lm_head)
        hidden = model.transformer.decode_step(ids, hidden_cache)
    head = model.lm_head
    expected = torch.ops.sslfast.few_row_linear(hidden, head.weight.detach(), head.bias.detach(), None, "none")
    torch.testing.assert_close(logits, expected, rtol=0, atol=0)
    assert not torch.allclose(logits, expected - head.bias.detach())


def _prune(model):
    model.transformer.h = model.transformer.h[:1]  # the cache still has a slot per configured layer


def _unaffine_norm(model):
    model.transformer.h[1].ln_2 = nn.LayerNorm(model.config.n_embd, elementwise_affine=False)


def _bf16_positions(model):
    model.transformer.wpe.weight.data = model.transformer.wpe.weight.data.bfloat16()


FALLBACKS = {
    "embedding dropout in training mode": lambda m: m.transformer.drop.train(),
    "block dropout in training mode": lambda m: m.transformer.h[0].mlp.dropout.train(),
    "a block removed": _prune,
    "a layer norm without affine parameters": _unaffine_norm,
    "bf16 position embeddings": _bf16_positions,
    "a non-contiguous weight": lambda m: setattr(m.transformer.h[0].mlp.c_fc, "weight", nn.Parameter(
        m.transformer.h[0].mlp.c_fc.weight.detach().t().contiguous().t())),
}


@pytest.mark.parametrize("change", list(FALLBACKS))
def test_what_the_call_cannot_read_as_the_modules_do_goes_to_the_modules(change, seed):
    model = _model(2, 64, 4, None)  # dropout probabilities are 0: training-mode dropout changes nothing here
    FALLBACKS[change](model)
    ids = torch.randint(0, model.config.vocab_size, (2, 9))
    calls = []
    by_modules = gpt2_modeling.GPT2Model._decode_step_by_modules
    with torch.no_grad(), pytest.MonkeyPatch.context() as patch:
        patch.setattr(gpt2_modeling.GPT2Model, "_decode_step_by_modules",
                      lambda self, *a: (calls.append(1), by_modules(self, *a))[1])
        cache = model.transformer.new_cache(2, 12)
        model.next_token_logits(ids[:, :6], torch.ones(2, 6, dtype=torch.long), cache)
        stepped = [model.next_token_logits(ids[:, i:i + 1], None, cache) for i in range(6, 9)]
        uncached = model(input_ids=ids).logits[:, 6:9]
    assert len(calls) == 3
    torch.testing.assert_close(torch.stack(stepped, 1), uncached.float(), rtol=1e-4, atol=1e-4)
