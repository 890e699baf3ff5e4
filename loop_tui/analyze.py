"""Cache-fit breakdown of a config: every buffer a training step touches, its size, and the
smallest cache level of this machine it fits in.

The original note's table listed only activations; this one also lists the weights, their
gradients and AdamW moments, the logits and the GEMM's packed panels, because those are what
actually decide whether a step runs from cache."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import machine
from .config import Config
from .model.layout import (
    activation_count,
    head_chunk_rows,
    matmul_params,
    parameter_count,
    parameter_specs,
    training_flops_per_token,
)

LEVELS = ("L1d", "L2", "L3")
FLOPS_FORMULA = "6 * matmul_params + 6 * num_layers * d_model * (max_length + 1)"


@dataclass(frozen=True)
class Row:
    group: str  # weights | optimizer | activations (sequence) | activations (batch) | gemm | attention
    name: str
    shape: str
    bytes: int
    count: int = 1  # identical copies (e.g. one per layer)
    note: str = ""
    saved: bool = False  # memory the implementation avoids allocating (shown, not counted)

    def fits(self, caches: machine.Caches) -> str:
        if self.saved:
            return "saved"
        for lv in LEVELS:
            if self.bytes <= caches.size(lv):
                return lv
        return "DRAM"


def _fmt_shape(shape) -> str:
    return "×".join(str(s) for s in shape)


def blocking_for(k, caches: machine.Caches):
    """The GEMM blocking micro-kernel k (a kernels.GemmKernel) derives from these caches: c/gemm.c's
    blocking() and short_m_rows(), block sizes not fixed by set_gemm_blocking. Worked out here, so
    a what-if never touches the library's own cache sizes."""
    from .backend import c_library

    Blocking = c_library().Blocking

    l1d, l2, l3, eb = caches.size("L1d"), caches.size("L2"), caches.size("L3"), k.elem_bytes
    b_panel_budget = l1d // 2 if k.b_panel_in_l1 else l1d * 3 // 2
    kc = min(max(b_panel_budget // (k.nr * eb) // 64 * 64, 64), 4096 // eb)
    mstep = k.mr * 64 // math.gcd(k.mr, 64)
    mc = max(l2 // 2 // (kc * eb) // mstep * mstep, mstep)
    nc = min(max(l3 // 4 // (kc * eb) // 64 * 64, 64), 4096)
    short_m_rows = l2 * 3 // 4 // (kc * eb) // k.mr * k.mr
    return Blocking(k.mr, k.nr, mc, kc, nc, short_m_rows, k.stream_min_mib)


def gemm_blocking(caches: machine.Caches):
    """The blocking the kernels would use with these caches (None if the kernels are not built)."""
    from .backend import c_library

    try:
        kernels = c_library()
    except ImportError:
        return None
    return (
        blocking_for(kernels.gemm_kernel(), caches),
        kernels.isa(),
        kernels.get_num_threads(),
        blocking_for(kernels.gemm_kernel("bf16"), caches),
        kernels.bf16_path(),
    )


def rows(cfg: Config, caches: machine.Caches) -> list[Row]:
    d, f, T, B, V, NH = cfg.d_model, cfg.d_ff, cfg.max_length, cfg.batch_size, cfg.vocab_size, cfg.num_heads
    out: list[Row] = []
    seen: dict[str, Row] = {}
    # every layer has the same tensors: one layer's specs, counted num_layers times (a config of 10^8
    # layers is analyzed without building 10^9 specs)
    for s in parameter_specs(cfg.replace(num_layers=1)):
        key = s.name.split(".", 1)[-1]
        per_layer = "." in s.name
        count = cfg.num_layers if per_layer else 1
        seen[key] = Row("weights", f"layer.{key}" if per_layer else key, _fmt_shape(s.shape), s.nbytes, count=count)
    out += list(seen.values())
    pbytes = 4 * parameter_count(cfg)
    out += [
        Row("optimizer", "gradients (all weights)", f"{parameter_count(cfg):,}", pbytes),
        Row("optimizer", "AdamW m (all weights)", f"{parameter_count(cfg):,}", pbytes),
        Row("optimizer", "AdamW v (all weights)", f"{parameter_count(cfg):,}", pbytes),
    ]
    seq_rows = [
        ("residual stream", (T, d)),
        ("qkv", (T, 3 * d)),
        ("attention lse", (NH, T)),
        ("MLP hidden", (T, f)),
        ("logits", (T, V)),
    ]
    for name, shape in seq_rows:
        n = 4 * int(np.prod(shape))
        out.append(Row("activations (sequence)", name, _fmt_shape(shape), n))
    for name, shape in seq_rows:
        n = 4 * B * int(np.prod(shape))
        note = ""
        if name == "logits":
            chunk = head_chunk_rows(cfg, B * T)
            note = f"never whole: the LM head runs {chunk}-row chunks ({4 * chunk * V / 2**20:.0f} MiB)"
        if name == "attention lse":
            saved = 4 * B * NH * T * T * cfg.num_layers
            note = (
                f"flash style: the {B}×{NH}×{T}×{T} scores are never kept ({saved / 2**20:,.0f} MiB saved, all layers)"
            )
        out.append(Row("activations (batch)", name, f"{B}×" + _fmt_shape(shape), n, note=note))
    blk = gemm_blocking(caches)
    if blk:
        b, isa, threads = blk[:3]
        out += [
            Row("gemm", "B micro-panel (KC×NR)", f"{b.kc}×{b.nr}", 4 * b.kc * b.nr, note="aimed at L1d"),
            Row(
                "gemm",
                "packed A block (MC×KC)",
                f"{b.mc}×{b.kc}",
                4 * b.mc * b.kc,
                threads,
                "one per thread, aimed at L2",
            ),
            Row("gemm", "packed B panel (KC×NC)", f"{b.kc}×{b.nc}", 4 * b.kc * b.nc, note="shared, aimed at L3"),
        ]
        hs, bs = d // NH, attention_block(b.mr, b.nr)
        out += [
            Row(
                "attention",
                "packed Q, K, V of one head",
                f"3×{T}×{hs}",
                4 * 3 * T * hs,
                threads,
                "one head per thread",
            ),
            Row("attention", "score + probability blocks", f"2×{bs}×{bs}", 4 * 2 * bs * bs, threads, "aimed at L1d"),
        ]
    out.append(
        Row(
            "attention",
            "T×T probabilities, not kept",
            f"{B}×{NH}×{T}×{T}",
            4 * B * NH * T * T,
            cfg.num_layers,
            "flash style: backward recomputes them from the log-sum-exp",
            saved=True,
        )
    )
    return out


def attention_block(mr: int, nr: int) -> int:
    """The flash attention's block of queries and keys (c/ops_impl.h attn_geometry): the least
    common multiple of the micro-kernel's MR and NR, doubled until at least 48."""
    lcm = mr * nr // math.gcd(mr, nr)
    return lcm * max(1, -(-48 // lcm))


def training_memory(cfg: Config) -> dict[str, int]:
    """Bytes this program allocates for a training step (arenas), by kind: arithmetic on the
    config alone, cheap for any config (the trainer checks it before building anything)."""
    params = 4 * parameter_count(cfg)
    acts = 4 * activation_count(cfg, cfg.batch_size, cfg.max_length)
    return {
        "weights": params,
        "gradients": params,
        "adamw_moments": 2 * params,
        "activations": acts,
        "total": 4 * params + acts,
    }


def report(cfg: Config, caches: machine.Caches) -> dict:
    blk = gemm_blocking(caches)
    return {
        "config": cfg.name,
        "model": {
            k: getattr(cfg, k)
            for k in ("d_model", "num_heads", "num_layers", "d_ff", "batch_size", "max_length", "vocab_size")
        },
        "machine": {
            "cache_source": caches.source,
            "notes": list(caches.notes),
            "caches": [
                {
                    "name": lv.name,
                    "level": lv.level,
                    "type": lv.type,
                    "size": lv.size,
                    "line_size": lv.line_size,
                    "shared_cpu_list": lv.shared_cpu_list,
                    "instances": lv.instances,
                }
                for lv in caches.levels
            ],
        },
        "parameters": parameter_count(cfg),
        "matmul_parameters": matmul_params(cfg),
        "training_flops_per_token": training_flops_per_token(cfg),
        "flops_formula": FLOPS_FORMULA,
        "training_memory": training_memory(cfg),
        "gemm_blocking": None if not blk else {"isa": blk[1], "threads": blk[2], **blk[0].__dict__},
        "gemm_blocking_bf16": None if not blk else {"bf16_path": blk[4], "threads": blk[2], **blk[3].__dict__},
        "buffers": [
            {
                "group": r.group,
                "name": r.name,
                "shape": r.shape,
                "bytes": r.bytes,
                "count": r.count,
                "fits": r.fits(caches),
                "note": r.note,
            }
            for r in rows(cfg, caches)
        ],
        "original_note": note_figures(cfg),
    }


def note_figures(cfg: Config) -> dict:
    """The figures the original note computed, and the two it left out."""
    d, f, T, B, V = cfg.d_model, cfg.d_ff, cfg.max_length, cfg.batch_size, cfg.vocab_size
    return {
        "sequence_x_d_model": 4 * T * d,
        "sequence_x_d_ff": 4 * T * f,
        "batch_x_sequence_x_d_model": 4 * B * T * d,
        "left_out": {"token_embedding": 4 * V * d, "logits_per_batch": 4 * B * T * V},
    }


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}".replace(".0 ", " ")
        n /= 1024
    return f"{n} B"


def render(rep: dict):
    """A rich renderable of the report (tables and a summary)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    caches = Table(title="Machine caches (" + rep["machine"]["cache_source"] + ")", title_justify="left")
    for col in ("level", "type", "size", "instances", "shared by CPUs", "line"):
        caches.add_column(col)
    for c in rep["machine"]["caches"]:
        caches.add_row(
            c["name"],
            c["type"],
            human_bytes(c["size"]),
            str(c["instances"]),
            c["shared_cpu_list"],
            f"{c['line_size']} B",
        )
    buf = Table(title=f"What a training step of {rep['config']} touches", title_justify="left")
    for col, just in (
        ("group", "left"),
        ("buffer", "left"),
        ("shape", "left"),
        ("size", "right"),
        ("fits in", "left"),
        ("note", "left"),
    ):
        buf.add_column(col, justify=just)  # type: ignore[arg-type]
    colors = {"L1d": "green", "L2": "cyan", "L3": "yellow", "DRAM": "red", "saved": "dim"}
    for b in rep["buffers"]:
        count = f" ×{b['count']}" if b["count"] > 1 else ""
        buf.add_row(
            b["group"],
            b["name"] + count,
            b["shape"],
            human_bytes(b["bytes"]),
            Text(b["fits"], style=colors[b["fits"]]),
            b["note"],
        )
    mem = rep["training_memory"]
    g = rep["gemm_blocking"]
    n = rep["original_note"]
    lines = [
        f"parameters: {rep['parameters']:,}  (in GEMMs: {rep['matmul_parameters']:,})",
        f"training FLOPs per token: {rep['training_flops_per_token'] / 1e6:.1f} M  = {rep['flops_formula']}",
        "training memory: " + ", ".join(f"{k.replace('_', ' ')} {human_bytes(v)}" for k, v in mem.items()),
        (
            f"GEMM blocking ({g['isa']}, {g['threads']} threads): MR={g['mr']} NR={g['nr']} MC={g['mc']} "
            f"KC={g['kc']} NC={g['nc']}; M <= {g['short_m_rows']} splits N across threads"
            + (f"; C over {g['stream_min_mib']} MiB written past the cache" if g["stream_min_mib"] else "")
        )
        if g
        else "GEMM blocking: kernels not built",
        ("bf16 GEMMs ({bf16_path} path): MR={mr} NR={nr} MC={mc} KC={kc} NC={nc}".format(**rep["gemm_blocking_bf16"]))
        if rep.get("gemm_blocking_bf16")
        else "bf16 GEMMs: kernels not built",
        f"original note's figures: sequence×d_model {human_bytes(n['sequence_x_d_model'])}, sequence×d_ff "
        f"{human_bytes(n['sequence_x_d_ff'])}, batch×sequence×d_model {human_bytes(n['batch_x_sequence_x_d_model'])}",
        f"what it left out: the token embedding alone is {human_bytes(n['left_out']['token_embedding'])} and the "
        f"logits are {human_bytes(n['left_out']['logits_per_batch'])} per batch",
    ] + [f"note: {x}" for x in rep["machine"]["notes"]]
    return Group(caches, buf, Text("\n".join(lines)))
