"""The whole GPT-2: loss and every parameter gradient against references; memorisation; no
allocation inside a step."""

from __future__ import annotations

import dataclasses
import tracemalloc

import numpy as np
import pytest

from loop_tui import kernels as K
from loop_tui.config import Config, load_config
from loop_tui.kernels.backend import CBackend
from loop_tui.model.gpt import GPT
from loop_tui.model.layout import activation_count, activation_specs, parameter_count, parameter_specs

from . import reference as ref

TINY = Config(d_model=8, num_heads=2, num_layers=2, d_ff=16, batch_size=2, max_length=5, vocab_size=23, name="tiny")


def tiny_model(seed=0):
    m = GPT(TINY, CBackend())
    m.init_weights(seed)
    # larger-than-GPT-2 weights so every gradient is well above float32 noise; the padded rows of
    # wte (23 -> 64) get noise too, to show they never reach the loss or a gradient
    rng = np.random.default_rng(seed)
    for s in m.param_specs:
        m.params[s.name][...] += rng.standard_normal(s.shape).astype(np.float32) * 0.3
    return m


def test_parameter_count_matches_gpt2_formula():
    c = load_config("wiki_cache_optimized")
    d, f, L, V, T = c.d_model, c.d_ff, c.num_layers, c.vocab_size, c.max_length
    per_layer = 3 * d * d + 3 * d + d * d + d + d * f + f + f * d + d + 4 * d
    assert parameter_count(c) == V * d + T * d + L * per_layer + 2 * d


@pytest.mark.parametrize(
    "cfg",
    [load_config(n) for n in ("smoke", "default", "gpt2_small", "wiki_cache_optimized", "gpt2_finetune")]
    + [TINY, TINY.replace(vocab_size=50257, n_positions=1024, num_layers=3, batch_size=3, max_length=7)],
    ids=lambda c: c.name + str(c.vocab_size),
)
def test_closed_form_sizes_equal_the_sum_of_the_specs(cfg):
    """The memory check sizes a config by arithmetic (a huge one is refused before any spec is
    built); the arenas are built from the specs: the two must agree exactly."""
    assert parameter_count(cfg) == sum(s.size for s in parameter_specs(cfg))
    for batch, seq in ((cfg.batch_size, cfg.max_length), (1, 1), (5, 3)):
        assert activation_count(cfg, batch, seq) == sum(s.size for s in activation_specs(cfg, batch, seq))


def test_loss_and_every_gradient_match_float64_finite_differences(isa):
    m = tiny_model()
    rng = np.random.default_rng(1)
    x = rng.integers(0, TINY.vocab_size, (TINY.batch_size, TINY.max_length + 1)).astype(np.int32)
    tokens, targets = x[:, :-1], x[:, 1:]
    loss = m.forward_backward(tokens, targets)
    p64 = {s.name: m.params[s.name].astype(np.float64) for s in m.param_specs}
    f = lambda: ref.gpt_loss(p64, tokens, targets, TINY)
    assert loss == pytest.approx(f(), rel=1e-5)
    for s in parameter_specs(TINY):
        num = ref.numeric_grad(f, p64[s.name])
        got = m.grads[s.name]
        scale = max(np.abs(num).max(), 1e-3)
        np.testing.assert_allclose(got, num, rtol=1e-3, atol=2e-4 * scale, err_msg=s.name)


TINY_DROPOUT = dataclasses.replace(TINY, dropout=0.3)


def test_gradients_with_dropout_match_float64_finite_differences():
    """With dropout, the loss and every gradient are those of the float64 model under the same masks
    (the numpy Philox of tests/reference.py): backward draws forward's masks again, so a fixed
    step's loss is a plain function of the weights that finite differences can check."""
    m = GPT(TINY_DROPOUT, CBackend())
    m.params.flat[...] = tiny_model().params.flat
    rng = np.random.default_rng(1)
    x = rng.integers(0, TINY.vocab_size, (TINY.batch_size, TINY.max_length + 1)).astype(np.int32)
    tokens, targets = x[:, :-1], x[:, 1:]
    loss = m.forward_backward(tokens, targets, train_step=5)
    assert loss == m.loss(tokens, targets, train_step=5)  # the step's training forward, without backward
    p64 = {s.name: m.params[s.name].astype(np.float64) for s in m.param_specs}
    f = lambda: ref.gpt_loss(p64, tokens, targets, TINY_DROPOUT, dropout_step=5)
    assert loss == pytest.approx(f(), rel=1e-5)
    assert loss != pytest.approx(ref.gpt_loss(p64, tokens, targets, TINY), rel=1e-3)  # the masks matter
    for s in parameter_specs(TINY):
        num = ref.numeric_grad(f, p64[s.name])
        got = m.grads[s.name]
        scale = max(np.abs(num).max(), 1e-3)
        np.testing.assert_allclose(got, num, rtol=1e-3, atol=2e-4 * scale, err_msg=s.name)


def test_dropout_is_off_in_evaluation_and_sampling():
    """A model with dropout evaluates and samples exactly as the same weights without it; only a
    training step (forward_backward, or loss with its train_step) draws masks, one per step."""
    plain = tiny_model()
    m = GPT(TINY_DROPOUT, CBackend(), params=plain.params)
    rng = np.random.default_rng(2)
    x = rng.integers(0, TINY.vocab_size, (TINY.batch_size, TINY.max_length + 1)).astype(np.int32)
    tokens, targets = x[:, :-1], x[:, 1:]
    assert m.loss(tokens, targets) == plain.loss(tokens, targets)
    np.testing.assert_array_equal(m.token_losses(tokens, targets), plain.token_losses(tokens, targets))
    one, one_plain = (GPT(c, CBackend(), batch_size=1, params=plain.params) for c in (TINY_DROPOUT, TINY))
    np.testing.assert_array_equal(one.next_token_logits(x[0, :4]), one_plain.next_token_logits(x[0, :4]))
    trained = GPT(TINY_DROPOUT, CBackend())
    trained.params.flat[...] = plain.params.flat
    steps = [trained.forward_backward(tokens, targets, train_step=s) for s in (0, 1, 0)]
    assert steps[0] == steps[2] != steps[1] and steps[0] != plain.loss(tokens, targets)


def test_dropout_masks_of_a_split_batch_are_the_whole_batchs():
    """An MPI rank (or a micro-batch) starting at sequence k of the step's batch draws the masks the
    whole batch has there: split training sees the same dropout as one process."""
    whole = GPT(TINY_DROPOUT, CBackend())
    whole.params.flat[...] = tiny_model().params.flat
    half = GPT(TINY_DROPOUT, CBackend(), batch_size=1)
    half.params.flat[...] = whole.params.flat
    rng = np.random.default_rng(3)
    x = rng.integers(0, TINY.vocab_size, (TINY.batch_size, TINY.max_length + 1)).astype(np.int32)
    whole.forward_backward(x[:, :-1], x[:, 1:], train_step=7)
    for b in range(TINY.batch_size):
        half.forward_backward(x[b : b + 1, :-1], x[b : b + 1, 1:], train_step=7, first_sequence=b)
        np.testing.assert_allclose(half.acts["losses"], whole.acts["losses"].reshape(TINY.batch_size, -1)[b], 1e-6)
    half.forward_backward(x[1:2, :-1], x[1:2, 1:], train_step=7, first_sequence=0)
    assert not np.allclose(half.acts["losses"], whole.acts["losses"].reshape(TINY.batch_size, -1)[1], 1e-6)


def test_matches_pytorch_gpt2():
    torch = pytest.importorskip("torch")
    cfg = load_config("smoke")
    m = GPT(cfg, CBackend())
    m.init_weights(5)
    rng = np.random.default_rng(2)
    x = rng.integers(0, cfg.vocab_size, (cfg.batch_size, cfg.max_length + 1)).astype(np.int32)
    loss = m.forward_backward(x[:, :-1], x[:, 1:])

    P = {s.name: torch.tensor(m.params[s.name], dtype=torch.float64, requires_grad=True) for s in m.param_specs}
    F = torch.nn.functional
    tok = torch.tensor(x[:, :-1], dtype=torch.long)
    tgt = torch.tensor(x[:, 1:], dtype=torch.long)
    B, T = tok.shape
    d, nh = cfg.d_model, cfg.num_heads
    h_ = P["wte"][tok] + P["wpe"][:T]
    for l in range(cfg.num_layers):
        p = lambda n: P[f"h{l}.{n}"]
        a = F.layer_norm(h_, (d,), p("ln1_w"), p("ln1_b"), 1e-5)
        q, k, v = (a @ p("qkv_w") + p("qkv_b")).split(d, dim=-1)
        q, k, v = (t.view(B, T, nh, d // nh).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, d)
        h_ = h_ + y @ p("proj_w") + p("proj_b")
        a = F.layer_norm(h_, (d,), p("ln2_w"), p("ln2_b"), 1e-5)
        h_ = h_ + F.gelu(a @ p("fc_w") + p("fc_b"), approximate="tanh") @ p("fcproj_w") + p("fcproj_b")
    h_ = F.layer_norm(h_, (d,), P["lnf_w"], P["lnf_b"], 1e-5)
    tl = F.cross_entropy((h_ @ P["wte"].T).view(-1, cfg.vocab_size), tgt.reshape(-1))
    tl.backward()
    assert loss == pytest.approx(tl.item(), rel=1e-5)
    for name, t in P.items():
        want = t.grad.numpy()
        err = np.linalg.norm(m.grads[name] - want) / max(np.linalg.norm(want), 1e-12)
        assert err < 1e-4, f"{name}: relative gradient error {err:.2e}"


def test_overfits_one_batch():
    from loop_tui.data.corpus import builtin_corpus
    from loop_tui.data.tokens import prepare

    cfg = load_config("smoke")
    data = prepare(builtin_corpus(), cfg.vocab_size, cfg.val_fraction, cfg.max_length + 1)
    x = np.stack([data.train[i * 1000 : i * 1000 + cfg.max_length + 1] for i in range(cfg.batch_size)]).astype(np.int32)
    m = GPT(cfg, CBackend())
    m.init_weights(0)
    mom, var = np.zeros(m.params.size, np.float32), np.zeros(m.params.size, np.float32)
    for step in range(1, 301):
        loss = m.forward_backward(x[:, :-1], x[:, 1:])
        K.adamw(m.params.flat, m.grads.flat, mom, var, 3e-3, 0.9, 0.95, 1e-8, 0.0, step)
        if loss < 0.1:
            break
    assert loss < 0.1, f"one batch not memorised: loss {loss:.3f} after {step} steps"


def test_step_allocates_nothing_after_warmup():
    from loop_tui.train.trainer import Trainer

    cfg = load_config("smoke").replace(max_steps=10, eval_every=1000, sample_every=1000, checkpoint_every=1000)
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        t = Trainer(cfg, d)
        t.setup()
        t.train_step()
        t.train_step()
        allocs, grows = t.backend.allocations, K.scratch_grow_count()
        tracemalloc.start()
        for _ in range(3):
            t.train_step()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert t.backend.allocations == allocs
        assert K.scratch_grow_count() == grows
        activations = t.model.acts.size * 4
        assert peak < 256 * 1024 < activations, f"a step allocated {peak} bytes at peak"
        t.metrics_file.close()


def test_inference_view_shares_weights():
    cfg = load_config("smoke")
    m = GPT(cfg, CBackend())
    m.init_weights(0)
    inf = GPT(cfg, CBackend(), batch_size=1, params=m.params)
    assert inf.grads is None
    ctx = np.arange(5, dtype=np.int32)
    a = inf.next_token_logits(ctx)
    m.params["lnf_b"][...] += 1.0
    assert not np.allclose(a, inf.next_token_logits(ctx))


def test_every_tensor_starts_on_an_align_boundary():
    """gpt.ALIGN is bytes, as kernels.ALIGN is: every arena tensor starts on a multiple of it, so
    on the C backend (arenas from kernels.empty) each is cache-line aligned."""
    from loop_tui.model import gpt

    m = GPT(TINY, CBackend())
    assert gpt.ALIGN % K.ALIGN == 0
    for arena in (m.params, m.grads, m.acts):
        for name, off in arena.offsets.items():
            assert 4 * off % gpt.ALIGN == 0, name
            assert arena[name].ctypes.data % K.ALIGN == 0, name
