"""`loop analyze`: the figures of all three seed configs against hand-computed values."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest

from loop_tui import analyze, machine
from loop_tui.config import load_config

KiB, MiB = 1024, 1024**2


def buffers(rep):
    return {(b["group"], b["name"]): b for b in rep["buffers"]}


def test_cache_optimized_reproduces_the_note():
    rep = analyze.report(load_config("wiki_cache_optimized"), machine.detect_caches("L1=48K,L2=512K,L3=8M"))
    b = buffers(rep)
    assert b[("activations (sequence)", "residual stream")]["bytes"] == 192 * KiB
    assert b[("activations (sequence)", "MLP hidden")]["bytes"] == 768 * KiB
    assert b[("activations (batch)", "residual stream")]["bytes"] == 6 * MiB
    assert b[("weights", "wte")]["bytes"] == 16000 * 384 * 4  # 23.4 MiB
    assert b[("activations (batch)", "logits")]["bytes"] == 32 * 128 * 16000 * 4  # 250 MiB
    # on the note's laptop (8 MiB L3) neither the embedding nor the logits fit any cache
    assert b[("weights", "wte")]["fits"] == "DRAM"
    assert b[("activations (batch)", "logits")]["fits"] == "DRAM"
    assert b[("activations (sequence)", "residual stream")]["fits"] == "L2"
    assert b[("activations (sequence)", "MLP hidden")]["fits"] == "L3"


@pytest.mark.parametrize(
    "name,params,flops",
    [
        # params = V d + T d + L (12 d^2 + 13 d) + 2 d
        # (qkv 3d^2+3d, proj d^2+d, fc d f + f, fcproj f d + d, 2 LN 4d; f = 4d)
        (
            "wiki_gpu_optimized",
            16000 * 512 + 256 * 512 + 6 * (12 * 512**2 + 13 * 512) + 2 * 512,
            6 * (6 * 12 * 512**2 + 16000 * 512) + 6 * 6 * 512 * 257,
        ),
        (
            "wiki_cache_optimized",
            16000 * 384 + 128 * 384 + 4 * (12 * 384**2 + 13 * 384) + 2 * 384,
            6 * (4 * 12 * 384**2 + 16000 * 384) + 6 * 4 * 384 * 129,
        ),
        (
            "wiki_performance_tuned",
            16000 * 320 + 96 * 320 + 5 * (12 * 320**2 + 13 * 320) + 2 * 320,
            6 * (5 * 12 * 320**2 + 16000 * 320) + 6 * 5 * 320 * 97,
        ),
    ],
)
def test_totals(name, params, flops):
    cfg = load_config(name)
    rep = analyze.report(cfg, machine.detect_caches())
    assert rep["parameters"] == params
    assert rep["training_flops_per_token"] == flops
    mem = rep["training_memory"]
    assert mem["weights"] >= 4 * params and mem["total"] == 4 * mem["weights"] + mem["activations"]
    b = buffers(rep)
    T, d, B, NH = cfg.max_length, cfg.d_model, cfg.batch_size, cfg.num_heads
    assert b[("activations (sequence)", "attention lse")]["bytes"] == 4 * NH * T
    assert "never kept" in b[("activations (batch)", "attention lse")]["note"]
    assert b[("attention", "packed Q, K, V of one head")]["bytes"] == 4 * 3 * T * (d // NH)
    saved = b[("attention", "T×T probabilities, not kept")]
    assert saved["fits"] == "saved" and saved["bytes"] == 4 * B * NH * T * T and saved["count"] == cfg.num_layers
    assert b[("activations (batch)", "qkv")]["bytes"] == 4 * B * T * 3 * d
    assert b[("weights", "layer.fc_w")]["count"] == cfg.num_layers
    assert b[("optimizer", "AdamW m (all weights)")]["bytes"] == 4 * params
    g = rep["gemm_blocking"]
    assert b[("gemm", "packed A block (MC×KC)")]["bytes"] == 4 * g["mc"] * g["kc"]
    # the short-M path keeps the packed A (M x KC) within 3/4 of L2
    l2 = machine.detect_caches().size("L2")
    assert g["short_m_rows"] % g["mr"] == 0 and 0 < 4 * g["short_m_rows"] * g["kc"] <= 0.75 * l2


def test_json_cli_is_stable_and_integer_bytes():
    r = subprocess.run(
        [sys.executable, "-m", "loop_tui", "analyze", "wiki_cache_optimized", "--json"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    rep = orjson.loads(r.stdout)
    assert all(isinstance(b["bytes"], int) for b in rep["buffers"])
    assert {c["name"] for c in rep["machine"]["caches"]} == {"L1d", "L2", "L3"}
    r2 = subprocess.run(
        [sys.executable, "-m", "loop_tui", "analyze", "wiki_cache_optimized", "--json"], capture_output=True, text=True
    )
    assert r.stdout == r2.stdout


def test_table_cli_shows_what_the_note_left_out():
    r = subprocess.run(
        [sys.executable, "-m", "loop_tui", "analyze", "wiki_cache_optimized", "--cache", "L3=8M"],
        capture_output=True,
        text=True,
        env={"COLUMNS": "160", "PATH": ""},
    )
    assert r.returncode == 0, r.stderr
    assert "23.4 MiB" in r.stdout and "250 MiB" in r.stdout and "192 KiB" in r.stdout and "768 KiB" in r.stdout


CACHES = [  # small, a 2-core VM, a Xeon core, a Zen 4 core, large
    "L1=16K,L2=256K,L3=2M",
    "L1=32K,L2=1M,L3=32M",
    "L1=48K,L2=2M,L3=105M",
    "L1=32K,L2=1M,L3=16M",
    "L1=128K,L2=8M,L3=512M",
]


def test_what_if_blocking_is_the_libraries_without_touching_it(isa):
    """analyze works the blocking out from the micro-kernel's facts; for any caches it equals what
    the C library derives once given those caches, and the library's own blocking never moves."""
    from loop_tui import kernels as K
    from loop_tui.analyze import blocking_for

    path_before = K.bf16_path()
    try:
        for path in K.available_bf16_paths():
            K.set_bf16_path(path)
            for precision in ("fp32", "bf16"):
                own = K.gemm_blocking(precision)
                for sizes in CACHES:
                    caches = machine.detect_caches(sizes)
                    ours = blocking_for(K.gemm_kernel(precision), caches)
                    assert K.gemm_blocking(precision) == own  # computing it changed nothing
                    K.configure_caches(caches)
                    try:
                        assert ours == K.gemm_blocking(precision), (path, precision, caches)
                    finally:
                        K.configure_caches(machine.detect_caches())
    finally:
        K.set_bf16_path(path_before)


def test_a_config_of_a_hundred_million_layers_is_analyzed_by_arithmetic(tmp_path):
    """`loop analyze` built every parameter spec, one list entry per tensor of every layer: 10^8
    layers needed tens of GB (the OOM killer). Under a 4 GiB address-space limit it now answers."""
    import json
    import os
    import resource
    import subprocess
    import sys

    cfg = tmp_path / "huge.json"
    cfg.write_text(
        json.dumps({"d_model": 64, "num_heads": 4, "num_layers": 100_000_000, "d_ff": 256, "batch_size": 8,
                    "max_length": 32, "vocab_size": 512, "name": "huge"})
    )  # fmt: skip

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    p = subprocess.run(
        [sys.executable, "-m", "loop_tui", "analyze", str(cfg), "--json"],
        capture_output=True, text=True, timeout=120, preexec_fn=limit, env={**os.environ},
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    rep = json.loads(p.stdout)
    per_layer = 4 * 64 * 64 + 2 * 64 * 256 + 9 * 64 + 256
    assert rep["parameters"] == (512 + 32) * 64 + 100_000_000 * per_layer + 2 * 64
    assert rep["training_memory"]["weights"] == 4 * rep["parameters"]
    layer_rows = [b for b in rep["buffers"] if b["name"].startswith("layer.")]
    assert len(layer_rows) == 12 and all(b["count"] == 100_000_000 for b in layer_rows)
