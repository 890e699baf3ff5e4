"""Generation: the decoding kernels against float64, the KV cache against the uncached path
(same tokens for the same seed, greedy and sampled, also past the window), sampling options."""

from __future__ import annotations

import numpy as np
import pytest

from loop_tui import cli
from loop_tui import kernels as K
from loop_tui.config import from_dict
from loop_tui.kernels.backend import CBackend
from loop_tui.kernels.decode import Decoder
from loop_tui.model.gpt import GPT
from loop_tui.train.sample import generate, pick, window_start

from . import reference as ref
from .corpora import train_bpe

CFG = from_dict(
    {
        "d_model": 48,
        "num_heads": 3,
        "num_layers": 2,
        "d_ff": 96,
        "batch_size": 1,
        "max_length": 24,
        "vocab_size": 300,
    },  # fmt: skip
    "gen",
)


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe(300)


def model(seed=0) -> GPT:
    m = GPT(CFG, CBackend(), batch_size=1)
    m.init_weights(seed)
    rng = np.random.default_rng(seed)
    for s in m.param_specs:  # far from init, so the logits are spread and sampling is not trivial
        m.params[s.name][...] += rng.standard_normal(s.shape).astype(np.float32) * 0.2
    return m


@pytest.mark.parametrize("K_, N", [(1, 1), (7, 300), (64, 257), (129, 1000)])
def test_gemv_kernels_match_float64(isa, K_, N):
    rng = np.random.default_rng(K_ * N)
    x, W, b = (rng.standard_normal(s).astype(np.float32) for s in ((K_,), (K_, N), (N,)))
    y = np.zeros(N, np.float32)
    K.gemv(y, x, W, b)
    np.testing.assert_allclose(y, x.astype(np.float64) @ W + b, rtol=1e-5, atol=1e-5)
    K.gemv(y, x, W)
    np.testing.assert_allclose(y, x.astype(np.float64) @ W, rtol=1e-5, atol=1e-5)
    Wt = np.ascontiguousarray(W.T)
    K.gemv_t(y, x, Wt)
    np.testing.assert_allclose(y, Wt.astype(np.float64) @ x, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n", [1, 7, 64, 129])
def test_attention_decode_matches_the_last_row_of_causal_attention(isa, n):
    NH, hs, cap = 3, 16, 130
    rng = np.random.default_rng(n)
    qkv = rng.standard_normal((1, n, 3 * NH * hs)).astype(np.float32)
    want, _ = ref.attention(qkv.astype(np.float64), NH)
    d = NH * hs
    kc, vc = np.zeros((NH, cap, hs), np.float32), np.zeros((NH, cap, hs), np.float32)
    kc[:, :n] = qkv[0, :, d : 2 * d].reshape(n, NH, hs).transpose(1, 0, 2)
    vc[:, :n] = qkv[0, :, 2 * d :].reshape(n, NH, hs).transpose(1, 0, 2)
    out = np.zeros(d, np.float32)
    K.attention_decode(out, qkv[0, -1, :d].copy(), kc, vc, n)
    np.testing.assert_allclose(out, want[0, -1], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="n must be"):
        K.attention_decode(out, qkv[0, -1, :d].copy(), kc, vc, cap + 1)


def test_decoding_is_bit_identical_for_1_and_2_threads():
    m = model()
    outs = []
    for threads in (1, 2):
        K.set_num_threads(threads)
        try:
            dec = Decoder(m)
            logits = [dec.prefill(np.array([1, 2, 3], np.int32))]
            logits += [dec.step(t) for t in (4, 5, 6)]
            outs.append(np.stack(logits))
        finally:
            K.set_num_threads(2)
    np.testing.assert_array_equal(outs[0], outs[1])


def test_cached_step_matches_a_full_forward():
    m = model()
    dec = Decoder(m)
    seq = np.random.default_rng(1).integers(0, 300, 20).astype(np.int32)
    dec.prefill(seq[:5])
    for n in range(6, 21):
        got = dec.step(int(seq[n - 1]))
        want = m.next_token_logits(seq[:n])
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize("temperature,top_k,top_p", [(0.0, 40, 1.0), (1.0, 0, 1.0), (0.9, 20, 0.8)])
def test_cached_and_uncached_give_the_same_tokens(tokenizer, temperature, top_k, top_p):
    m = model(2)
    runs = [
        generate(m, tokenizer, "The value", 60, temperature, top_k, np.random.default_rng(7), top_p=top_p, cached=c)
        for c in (True, False)
    ]  # 60 tokens: the window (24) slides twice
    assert runs[0] == runs[1] and len(tokenizer.encode(runs[0]).ids) > 30


def test_window_slides_by_half():
    assert window_start(0, 24, 24) == 0
    assert window_start(0, 25, 24) == 13
    assert window_start(13, 37, 24) == 13 and window_start(13, 38, 24) == 26
    assert window_start(0, 3, 1) == 2


def test_streamed_pieces_make_the_text_and_long_prompts_keep_their_end(tokenizer):
    m = model(3)
    pieces, notes = [], []
    prompt = "word " * 40
    text = generate(m, tokenizer, prompt, 15, 1.0, 0, np.random.default_rng(0), on_text=pieces.append,
                    on_note=notes.append)  # fmt: skip
    assert "".join(pieces) == text and len(pieces) > 1
    assert len(notes) == 1 and "keeping the last 24" in notes[0]


def test_top_k_and_top_p_restrict_the_draw():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    draws = lambda **kw: {pick(logits, 1.0, rng=np.random.default_rng(s), **kw) for s in range(300)}
    assert draws(top_k=0, top_p=1.0) == {0, 1, 2, 3}
    assert draws(top_k=2, top_p=1.0) == {0, 1}
    assert draws(top_k=0, top_p=0.79) == {0, 1}  # 0.5 + 0.3 reaches 0.79
    assert draws(top_k=0, top_p=0.81) == {0, 1, 2}
    assert draws(top_k=0, top_p=0.1) == {0}
    assert pick(logits, 0.0, 0, 1.0, np.random.default_rng(0)) == 0


@pytest.mark.parametrize(
    "args,message",
    [
        (["--top-p", "0"], "--top-p must be in (0, 1]"),
        (["--top-p", "1.5"], "--top-p must be in (0, 1]"),
        (["--top-k", "-1"], "--top-k must be 0"),
        (["--temperature", "-1"], "--temperature must be 0"),
        (["--temperature", "nan"], "--temperature must be 0"),
        (["--tokens", "0"], "--tokens must be positive"),
    ],
)
def test_bad_sampling_options_are_one_line_errors(tmp_path, capsys, args, message):
    code = cli.main(["generate", str(tmp_path), *args])
    err = capsys.readouterr().err
    assert code == 2 and err.count("loop: error:") == 1 and message in err and "Traceback" not in err
