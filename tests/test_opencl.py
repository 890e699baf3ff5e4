"""The OpenCL backend on PoCL (or whatever device is chosen): every kernel against numpy and the
C backend, the 8x8/16x16 tile switch, and whole training steps against the C backend."""

from __future__ import annotations

import numpy as np
import pytest

cl = pytest.importorskip("pyopencl")

from loop_tui.backend import DropoutKey  # noqa: E402
from loop_tui.config import load_config  # noqa: E402
from loop_tui.kernels.backend import CBackend  # noqa: E402
from loop_tui.opencl.device import NoOpenCL, all_devices  # noqa: E402

if not all_devices():
    pytest.skip("no OpenCL platform (pip install 'pyopencl[pocl]')", allow_module_level=True)

from loop_tui.opencl.backend import OpenCLBackend, gemm_tile  # noqa: E402

from . import reference as ref  # noqa: E402

RNG = np.random.default_rng(0)


@pytest.fixture(scope="module")
def be():
    return OpenCLBackend()


def dev(be, x):
    return be.cla.to_device(be.queue, np.ascontiguousarray(x))


def rand(*s, scale=1.0):
    return (RNG.standard_normal(s) * scale).astype(np.float32)


def test_tile_switch_follows_the_note():
    assert gemm_tile(255, 255) == 8
    assert gemm_tile(256, 10) == 16 and gemm_tile(10, 256) == 16 and gemm_tile(300, 300) == 16


SIZES = [1, 7, 100, 255, 256, 300]


@pytest.mark.parametrize("variant", ["tiled8", "tiled16", "rb4", "direct4", None])
@pytest.mark.parametrize("ta,tb", [(0, 0), (0, 1), (1, 0), (1, 1)])
def test_gemm_against_numpy(be, variant, ta, tb):
    for M, N, K in [(7, 100, 17), (255, 255, 33), (256, 7, 300), (300, 256, 1), (1, 300, 65), (100, 1, 129)]:
        a = rand(K, M) if ta else rand(M, K)
        b = rand(N, K) if tb else rand(K, N)
        bias, c0 = rand(N), rand(M, N)
        out = dev(be, c0)
        be.matmul(
            dev(be, a),
            dev(be, b),
            out=out,
            transpose_a=bool(ta),
            transpose_b=bool(tb),
            bias=dev(be, bias),
            accumulate=True,
            variant=variant,
        )
        want = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b).astype(np.float64) + bias + c0
        np.testing.assert_allclose(out.get(), want, rtol=1e-4, atol=1e-4 * np.sqrt(K), err_msg=f"{M}x{N}x{K} {variant}")


def test_gemm_on_views_with_offsets(be):
    """Arena views start at offsets inside one buffer; every kernel honours them."""
    flat = be.zeros(4096)
    a = be.view(flat, 64, (20, 30))
    b = be.view(flat, 1024, (30, 10))
    out = be.view(flat, 2048, (20, 10))
    ha, hb = rand(20, 30), rand(30, 10)
    be.write(a, ha)
    be.write(b, hb)
    be.matmul(a, b, out=out)
    np.testing.assert_allclose(out.get(), ha @ hb, rtol=1e-5, atol=1e-5)
    assert np.all(be.to_numpy(flat)[:64] == 0) and np.all(be.to_numpy(flat)[2048 + 200 :] == 0)


def test_gemm_bad_shapes_raise_like_the_c_backend(be):
    a, b = dev(be, rand(3, 4)), dev(be, rand(5, 6))
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(5, 6\)"):
        be.matmul(a, b)
    with pytest.raises(ValueError, match="needs out"):
        be.matmul(dev(be, rand(3, 4)), dev(be, rand(4, 6)), accumulate=True)


def test_the_original_8x8_launch_of_a_16x16_kernel_is_refused(be):
    """The note's kernel hard-coded 16x16 local tiles and was launched with 8x8 groups, reading local
    memory nobody wrote. Here the tile is compiled in and required, so that launch cannot happen."""
    M = N = K = 32
    a, b = dev(be, rand(M, K)), dev(be, rand(K, N))
    out = be.cla.empty(be.queue, (M, N), np.float32)
    args = [
        np.int32(M),
        np.int32(N),
        np.int32(K),
        *be._a(a),
        np.int32(K),
        np.int32(0),
        *be._a(b),
        np.int32(N),
        np.int32(0),
        *be._a(out),
        np.int32(N),
        *be._a(be.dummy),
        np.int32(0),
        np.int32(0),
    ]
    with pytest.raises(cl.Error):
        be.k16.gemm_tiled(be.queue, (32, 32), (8, 8), *args).wait()
    # and the 8x8 kernel with 8x8 groups fills its whole 8x8 tile: exact on a non-multiple shape
    be.matmul(a, b, out=out, variant="tiled8")
    np.testing.assert_allclose(out.get(), a.get() @ b.get(), rtol=1e-5, atol=1e-4)


def compare_op(be, name, host_args, device_args, outputs, rtol=1e-5, atol=1e-6):
    """Run op `name` on both backends; outputs: indices of the args to compare."""
    c = CBackend()
    getattr(c, name)(*host_args)
    getattr(be, name)(*device_args)
    for i in outputs:
        np.testing.assert_allclose(device_args[i].get(), host_args[i], rtol=rtol, atol=atol, err_msg=f"{name} arg {i}")


def both(*arrays):
    return [a.copy() for a in arrays]


@pytest.mark.parametrize("B,T,C,NH", [(1, 1, 8, 2), (2, 17, 24, 3), (1, 65, 64, 4)])
def test_attention_forward_and_backward(be, B, T, C, NH):
    qkv, dout = rand(B, T, 3 * C), rand(B, T, C)
    out, lse = np.empty((B, T, C), np.float32), np.empty((B, NH, T), np.float32)
    d_out, d_lse = dev(be, out), dev(be, lse)
    compare_op(be, "attention_forward", [out, lse, qkv, NH], [d_out, d_lse, dev(be, qkv), NH], [0, 1], atol=1e-5)
    want, _ = ref.attention(qkv.astype(np.float64), NH)
    np.testing.assert_allclose(d_out.get(), want, rtol=1e-4, atol=1e-5)
    dq = np.empty_like(qkv)
    compare_op(
        be,
        "attention_backward",
        [dq, dout, qkv, out, lse, NH],
        [dev(be, dq), dev(be, dout), dev(be, qkv), d_out, d_lse, NH],
        [0],
        rtol=1e-4,
        atol=1e-5,
    )


@pytest.mark.parametrize("N,C", [(1, 3), (17, 64), (130, 383)])
def test_row_ops(be, N, C):
    x, w, b, dy = rand(N, C) + 0.5, rand(C), rand(C), rand(N, C)
    out, mean, rstd = np.empty_like(x), np.empty(N, np.float32), np.empty(N, np.float32)
    d = [dev(be, v) for v in (out, mean, rstd, x, w, b)]
    compare_op(be, "layernorm_forward", [out, mean, rstd, x, w, b], d, [0, 1, 2], rtol=1e-4, atol=1e-5)
    dx, dw, db = rand(N, C), rand(C), rand(C)
    compare_op(
        be,
        "layernorm_backward",
        [*both(dx, dw, db), dy, x, w, mean, rstd],
        [dev(be, dx), dev(be, dw), dev(be, db), dev(be, dy), d[3], d[4], d[1], d[2]],
        [0, 1, 2],
        rtol=1e-4,
        atol=1e-4,
    )
    pre, hid, bias = rand(N, C, scale=3), np.empty((N, C), np.float32), rand(C)
    compare_op(be, "bias_gelu_forward", [pre.copy(), hid, bias], [dev(be, pre), dev(be, hid), dev(be, bias)], [0, 1])
    g = np.empty_like(pre)
    compare_op(be, "gelu_backward", [g, pre, dy], [dev(be, g), dev(be, pre), dev(be, dy)], [0], rtol=1e-4, atol=1e-4)
    o = np.empty_like(x)
    compare_op(be, "residual_forward", [o, x, dy], [dev(be, o), dev(be, x), dev(be, dy)], [0])
    compare_op(be, "bias_backward", [db.copy(), dy], [dev(be, db), dev(be, dy)], [0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "key", [DropoutKey(0.1, 1337, 0, 0), DropoutKey(0.5, 2**40 + 5, 77, 9, offset=2**34 + 3)], ids=str
)
def test_dropout_ops_draw_the_c_masks(be, key):
    """Philox on the device gives the C kernels' masks bit for bit (and the numpy reference's)."""
    a, b = rand(5003), rand(5003) + 10  # no zero in b: out == 0 means dropped
    o = np.empty_like(a)
    d_o = dev(be, o)
    compare_op(be, "dropout", [o, b, key], [d_o, dev(be, b), key], [0])
    keep = ref.dropout_keep(b.size, key.p, key.seed, key.step, key.site, key.offset)
    np.testing.assert_array_equal(d_o.get() != 0, keep)
    compare_op(be, "residual_dropout", [o, a, b, key], [dev(be, o), dev(be, a), dev(be, b), key], [0])
    dy, dm, db = rand(37, 129), np.empty((37, 129), np.float32), rand(129)
    compare_op(
        be,
        "dropout_bias_backward",
        [dm, db.copy(), dy, key],
        [dev(be, dm), dev(be, db), dev(be, dy), key],
        [0, 1],
        rtol=1e-5,
        atol=1e-5,
    )


def test_embedding_crossentropy_adamw_norm(be):
    V, C, B, T = 300, 17, 2, 9
    wte, wpe, tok = rand(V, C), rand(T, C), RNG.integers(0, V, (B, T)).astype(np.int32)
    out = np.empty((B, T, C), np.float32)
    compare_op(
        be, "encoder_forward", [out, tok, wte, wpe], [dev(be, out), dev(be, tok), dev(be, wte), dev(be, wpe)], [0]
    )
    dwte, dwpe, dy = rand(V, C), rand(T, C), rand(B, T, C)
    compare_op(
        be,
        "encoder_backward",
        [dwte.copy(), dwpe.copy(), dy, tok],
        [dev(be, dwte), dev(be, dwpe), dev(be, dy), dev(be, tok)],
        [0, 1],
        atol=1e-5,
    )
    logits, tg, losses = rand(7, V, scale=3), RNG.integers(0, V, 7).astype(np.int32), np.empty(7, np.float32)
    compare_op(
        be,
        "crossentropy",
        [logits.copy(), tg, losses, 0.25, True],
        [dev(be, logits), dev(be, tg), dev(be, losses), 0.25, True],
        [0, 2],
        rtol=1e-4,
        atol=1e-6,
    )
    p, g, m, v = rand(5000), rand(5000), rand(5000) * 0.1, np.abs(rand(5000)) * 0.01
    compare_op(
        be,
        "adamw",
        [*both(p), g, *both(m, v), 1e-3, 0.9, 0.95, 1e-8, 0.1, 3, 0.5],
        [dev(be, p), dev(be, g), dev(be, m), dev(be, v), 1e-3, 0.9, 0.95, 1e-8, 0.1, 3, 0.5],
        [0, 2, 3],
        atol=1e-6,
    )
    x = rand(100_003)
    assert be.sum_squares(dev(be, x)) == pytest.approx(float((x.astype(np.float64) ** 2).sum()), rel=1e-5)


def test_what_each_backend_tells_the_layers_above(be):
    """Threads, capabilities and the decoder come from the backend: the C backend has kernel
    threads, a measured peak and a KV-cache decoder; the OpenCL device has none of them (no host
    thread runs its kernels, no peak is measured for it, generation re-runs the window)."""
    from loop_tui.kernels.decode import Decoder
    from loop_tui.model.gpt import GPT

    cfg = load_config("smoke")
    c = CBackend()
    c.matmul(rand(64, 64), rand(64, 64))
    assert len(c.thread_stats()) == c.threads and (c.peak_gflops("fp32") or 0) > 0
    assert isinstance(c.decoder(GPT(cfg, c, batch_size=1)), Decoder)
    assert be.thread_stats() == [] and be.peak_gflops("fp32") is None and not be.native_bf16
    assert be.decoder(GPT(cfg, be, batch_size=1)) is None


def test_twenty_smoke_steps_match_the_c_backend(tmp_path):
    from loop_tui.train.trainer import Trainer

    losses = {}
    for backend in ("c", "opencl"):
        cfg = load_config("smoke").replace(
            backend=backend, eval_every=1000, sample_every=1000, checkpoint_every=1000, max_steps=20
        )
        t = Trainer(cfg, tmp_path / backend)
        t.setup()
        losses[backend] = [t.train_step().loss for _ in range(20)]
        t.metrics_file.close()
    np.testing.assert_allclose(losses["opencl"], losses["c"], rtol=1e-3)
    assert losses["c"][-1] < losses["c"][0]


def test_smoke_steps_with_dropout_match_the_c_backend(tmp_path):
    """Training with dropout: the device draws the C kernels' masks, so the losses agree as without."""
    from loop_tui.train.trainer import Trainer

    losses = {}
    for backend in ("c", "opencl"):
        cfg = load_config("smoke").replace(
            backend=backend, eval_every=1000, sample_every=1000, checkpoint_every=1000, max_steps=6, dropout=0.2
        )
        t = Trainer(cfg, tmp_path / backend)
        t.setup()
        losses[backend] = [t.train_step().loss for _ in range(6)]
        t.metrics_file.close()
    np.testing.assert_allclose(losses["opencl"], losses["c"], rtol=1e-4)


def test_kernel_profiling_feeds_the_table(be):
    be.reset_stats()
    a, b = dev(be, rand(64, 64)), dev(be, rand(64, 64))
    be.matmul(a, b)
    be.to_numpy(a)
    stats = {s.name: s for s in be.kernel_stats()}
    assert stats["gemm"].calls == 1 and stats["gemm"].ns > 0 and stats["gemm"].flops == 2 * 64**3


@pytest.mark.parametrize("dropout", [0.0, 0.1], ids=["no_dropout", "dropout"])
def test_a_step_counts_the_same_costs_as_the_c_backend(be, dropout):
    """Both backends count an op's FLOPs and bytes from loop_tui/ops_table.py (the C library by its
    own counters, which tests/test_op_costs.py holds to the table), under the same names."""
    from loop_tui.kernels import kernel_stats, reset_stats
    from loop_tui.model.gpt import GPT

    cfg = load_config("smoke").replace(dropout=dropout)
    x = RNG.integers(0, cfg.vocab_size, (cfg.batch_size, cfg.max_length + 1)).astype(np.int32)
    counted = {}
    for name, backend, reset, stats in (
        ("c", CBackend(), reset_stats, kernel_stats),
        ("opencl", be, be.reset_stats, be.kernel_stats),
    ):
        m = GPT(cfg, backend)
        m.init_weights(3)
        reset()
        m.forward_backward(x[:, :-1], x[:, 1:], train_step=2)
        be.to_numpy(be.dummy)  # collects the OpenCL events
        counted[name] = {s.name: (s.calls, s.flops, s.bytes) for s in stats() if s.calls}
    assert counted["opencl"] == counted["c"]


def test_unknown_device_is_a_clear_error():
    with pytest.raises(NoOpenCL, match="no OpenCL device matches"):
        OpenCLBackend("no-such-device-xyz")


def test_gradient_accumulation_on_the_device_is_the_update_of_the_big_batch(tmp_path):
    from loop_tui.train.trainer import Trainer

    trainers = []
    for batch, accumulate in ((8, 1), (2, 4)):
        cfg = load_config("smoke").replace(
            backend="opencl", batch_size=batch, grad_accum_steps=accumulate, dropout=0.2, adam_eps=1e-3,
            eval_every=1000, sample_every=1000, checkpoint_every=1000,
        )  # fmt: skip
        t = Trainer(cfg, tmp_path / str(batch))
        t.setup()
        trainers.append(t)
    big, accumulated = trainers
    for _ in range(3):
        assert accumulated.train_step().loss == pytest.approx(big.train_step().loss, abs=1e-5)
    want = big.model.export_params()
    for name, value in accumulated.model.export_params().items():
        np.testing.assert_allclose(value, want[name], rtol=0, atol=1e-5, err_msg=name)
    for t in trainers:
        t.close()
