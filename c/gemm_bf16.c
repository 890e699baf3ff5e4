/* gemm_bf16.c — the native bf16 GEMM micro-kernels and their exact C emulations.
 *
 *   avx512bf16  12x32, VDPBF16PS (AMD Zen 4+, Intel Cooper Lake, Sapphire Rapids+): per k pair,
 *               2 B loads, 12 broadcasts of an A pair, 24 dot products into zmm accumulators
 *   amx         32x32, TDPBF16PS (Intel Sapphire Rapids+): 4 C tiles of 16x16 fp32, 2 A tiles
 *               (16 rows x 16 k pairs) and 2 B tiles (16 k pairs x 16 columns) per 32 k
 *   emu-*       the same packing and the same products and sums in plain C, one lane at a
 *               time, as Intel's pseudocode for each instruction states them: slow, but they
 *               run the native paths' packing and driver code on any CPU, so tests cover it,
 *               and they predict the native results bit for bit (tests/test_bf16.py compares
 *               them wherever the native path runs)
 *
 * Products of two bf16 are exact in fp32 (8 x 8 significant bits), so each of the
 * instructions' `acc += a*b` steps rounds once, as an FMA would, and always as if MXCSR had DAZ
 * and FTZ set: denormal inputs (the bf16 operands and the fp32 accumulator) count as zeros of
 * their sign, and a result that is tiny after rounding becomes a zero of its sign, whatever MXCSR
 * says. The emulations do the same (fma_daz_ftz). Inputs are rounded while packing
 * (gemm_pack_bf16.h); everything outside the GEMM stays fp32.
 *
 * AMX needs the tile state granted by the kernel (arch_prctl) before the first tile instruction;
 * loop_amx_usable() asks once and the AMX path is only offered when the answer is yes. The tile
 * configuration belongs to the thread, and another library on the same thread (oneDNN under
 * torch.matmul) loads its own and releases the tiles when it is done: so each GEMM loads ours
 * on every thread it runs on and releases the tiles before it returns (.thread_begin and
 * .thread_end), as oneDNN's brgemm kernels do; nothing is cached between calls. */
#define _GNU_SOURCE
#include <math.h>
#include <string.h>
#include <unistd.h>
#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#endif
#include "bf16.h"
#include "internal.h"
#include "isa_variants.h"

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

/* the native kernels exist only in an x86-64 build; the emulations everywhere */
#if defined(__x86_64__)
int loop_cpu_has_avx512bf16(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512bf16");
}

int loop_amx_usable(void) {
    static int usable = -1;
    if (usable < 0) {
        __builtin_cpu_init();
        /* CPUID leaf 7 EDX: AMX-BF16 bit 22, AMX-TILE bit 24 (Clang's __builtin_cpu_supports knows neither) */
        unsigned eax, ebx, ecx, edx;
        const int amx = __get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) && (edx >> 22 & 1) && (edx >> 24 & 1);
        usable = loop_cpu_has_avx512bf16() && amx &&
                 syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
    }
    return usable;
}
#else
int loop_cpu_has_avx512bf16(void) { return 0; }
int loop_amx_usable(void) { return 0; }
#endif

/* C tile (+)= acc[MR][NR], as the AVX512-BF16 kernel's stores do (a plain fp32 add) */
static inline void store_tile(float *c, long ldc, const float *acc, int mr, int nr, int accumulate) {
    for (int i = 0; i < mr; i++) {
        float *ci = c + (long)i * ldc;
        const float *ai = acc + (long)i * nr;
        if (accumulate == 1)
            for (int j = 0; j < nr; j++) ci[j] += ai[j];
        else
            for (int j = 0; j < nr; j++) ci[j] = ai[j];
    }
}

/* ================================================================ native: AVX512-BF16 */
#if defined(__x86_64__)
#if defined(__clang__) /* see kernels_avx2.c */
#pragma clang attribute push(__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx512bf16,avx2,fma"))), \
                             apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx512bf16,avx2,fma")
#endif
#include "avx512_tile.h"
#define ISA_FN(name) name##_avx512bf16
#define PACK_VCVTNE2PS2BF16
#include "gemm_pack_bf16.h"

static void ukernel_avx512bf16(int kc, const void *a_, const void *b_, float *restrict c, long ldc,
                               int accumulate) {
    const uint32_t *restrict a = a_;
    const __m512i *restrict b = b_;
    TILE12X32_PREFETCH()
#define ROW_INIT(i) __m512 c##i##0 = _mm512_setzero_ps(), c##i##1 = _mm512_setzero_ps();
    ROW_INIT(0) ROW_INIT(1) ROW_INIT(2) ROW_INIT(3) ROW_INIT(4) ROW_INIT(5)
    ROW_INIT(6) ROW_INIT(7) ROW_INIT(8) ROW_INIT(9) ROW_INIT(10) ROW_INIT(11)
    for (int p = 0; p < kc / 2; p++) {
        const __m512bh b0 = (__m512bh)_mm512_load_si512(b), b1 = (__m512bh)_mm512_load_si512(b + 1);
#define ROW_DOT(i)                                                                                 \
    {                                                                                              \
        const __m512bh ai = (__m512bh)_mm512_set1_epi32((int)a[i]);                                \
        c##i##0 = _mm512_dpbf16_ps(c##i##0, ai, b0);                                               \
        c##i##1 = _mm512_dpbf16_ps(c##i##1, ai, b1);                                               \
    }
        ROW_DOT(0) ROW_DOT(1) ROW_DOT(2) ROW_DOT(3) ROW_DOT(4) ROW_DOT(5)
        ROW_DOT(6) ROW_DOT(7) ROW_DOT(8) ROW_DOT(9) ROW_DOT(10) ROW_DOT(11)
        a += 12;
        b += 2;
    }
    TILE12X32_STORE()
}

/* 12 independent VDPBF16PS chains on registers: 16 lanes x 2 products x 2 FLOPs each */
static double peak_avx512bf16(long iters) {
    __m512 x[12];
    const __m512bh one = (__m512bh)_mm512_set1_epi32(0x3F803F80);  /* (1.0, 1.0) */
    const __m512bh tiny = (__m512bh)_mm512_set1_epi32(0x35803580); /* (2^-20, 2^-20) */
    for (int i = 0; i < 12; i++) x[i] = _mm512_set1_ps((float)i);
    for (long it = 0; it < iters; it++)
        for (int i = 0; i < 12; i++) x[i] = _mm512_dpbf16_ps(x[i], one, tiny);
    __m512 s = x[0];
    for (int i = 1; i < 12; i++) s = _mm512_add_ps(s, x[i]);
    volatile float sink = _mm512_reduce_add_ps(s);
    (void)sink;
    return (double)iters * 12 * 16 * 4;
}
#undef ISA_FN
#undef PACK_VCVTNE2PS2BF16
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

/* ================================================================ native: AMX-BF16 */
#if defined(__clang__)
#pragma clang attribute push(                                                                      \
    __attribute__((target("amx-tile,amx-bf16,avx512f,avx512vl,avx512bw,avx512dq,avx512bf16,avx2,fma"))),    \
    apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("amx-tile,amx-bf16,avx512f,avx512vl,avx512bw,avx512dq,avx512bf16,avx2,fma")
#endif
#define ISA_FN(name) name##_amx
#define PACK_VCVTNE2PS2BF16
#include "gemm_pack_bf16.h"

typedef struct {
    uint8_t palette_id, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_tilecfg;

/* every tile 16 rows x 64 bytes; loaded on each GEMM thread at entry (see the top of the file) */
static void amx_thread_begin(void) {
    amx_tilecfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette_id = 1;
    for (int t = 0; t < 8; t++) {
        cfg.colsb[t] = 64;
        cfg.rows[t] = 16;
    }
    _tile_loadconfig(&cfg);
}

static void amx_thread_end(void) { _tile_release(); }

/* tiles: 0..3 C (rows 0-15/16-31 x cols 0-15/16-31), 4..5 A (rows 0-15, 16-31), 6..7 B (cols
 * 0-15, 16-31): each A and B tile feeds two TDPBF16PS, the most reuse 8 tiles allow. C is loaded
 * from and stored straight to C (ldc floats apart), so C itself is the accumulator: no stack
 * tile, no scalar pass. */
static void ukernel_amx(int kc, const void *a_, const void *b_, float *restrict c, long ldc, int accumulate) {
    const char *a = a_, *b = b_;
    const long row_bytes = ldc * (long)sizeof(float);
    if (accumulate) {
        _tile_loadd(0, c, row_bytes);
        _tile_loadd(1, c + 16, row_bytes);
        _tile_loadd(2, c + 16 * ldc, row_bytes);
        _tile_loadd(3, c + 16 * ldc + 16, row_bytes);
    } else {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
    }
    for (int k = 0; k < kc; k += 32) {
        _tile_loadd(4, a, 64);           /* A rows 0-15: 16 pairs each */
        _tile_loadd(6, b, 128);          /* B pairs 0-15 x columns 0-15 (a panel row is 32 pairs) */
        _tile_loadd(7, b + 64, 128);     /* columns 16-31 */
        _tile_loadd(5, a + 16 * 64, 64); /* A rows 16-31 */
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
        a += 32 * 64;
        b += 16 * 128;
    }
    _tile_stored(0, c, row_bytes);
    _tile_stored(1, c + 16, row_bytes);
    _tile_stored(2, c + 16 * ldc, row_bytes);
    _tile_stored(3, c + 16 * ldc + 16, row_bytes);
}

/* 4 independent TDPBF16PS chains: 16 x 16 outputs x 16 pairs x 2 products x 2 FLOPs each */
static double peak_amx(long iters) {
    static const uint32_t ones[16 * 16] __attribute__((aligned(64))) = {0};
    amx_thread_begin();
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    _tile_loadd(4, ones, 64);
    _tile_loadd(5, ones, 64);
    _tile_loadd(6, ones, 64);
    _tile_loadd(7, ones, 64);
    for (long it = 0; it < iters; it++) {
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    float sink[16 * 16] __attribute__((aligned(64)));
    _tile_stored(0, sink, 64);
    amx_thread_end();
    volatile float keep = sink[0];
    (void)keep;
    return (double)iters * 4 * 16 * 16 * 32 * 2;
}
#undef ISA_FN
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif /* __x86_64__ */

/* ================================================================ emulations (plain C) */
#undef PACK_VCVTNE2PS2BF16
#define ISA_FN(name) name##_emu
#include "gemm_pack_bf16.h"

/* x, or a zero of its sign if x is denormal (DAZ) */
static inline float daz(float x) { return fabsf(x) < 0x1p-126f ? copysignf(0.0f, x) : x; }

/* acc + a*b rounded once to fp32 (round to nearest even), as one step of VDPBF16PS or
 * TDPBF16PS does: DAZ on all three inputs, and FTZ on the result with x86's rule, which detects a
 * tiny result after rounding to 24 bits with an unbounded exponent (so a sum just below FLT_MIN
 * that rounds up to it is kept, one that does not is flushed even where the denormal grid would
 * round it to FLT_MIN). In double, a*b (two 8-bit significands) is exact and so is its sum with
 * acc whenever the result is near FLT_MIN; scaling by 2^64 moves the 24-bit rounding into the
 * normal range. */
static inline float fma_daz_ftz(float acc, float a, float b) {
    acc = daz(acc);
    a = daz(a);
    b = daz(b);
    const double exact = (double)acc + (double)a * (double)b;
    if (exact != 0.0 && fabsf((float)(exact * 0x1p64)) < 0x1p-62f) return exact < 0 ? -0.0f : 0.0f;
    return fmaf(a, b, acc);
}

/* VDPBF16PS per Intel's pseudocode: acc += a.hi * b.hi, then acc += a.lo * b.lo, from zeroed
 * registers; the tile is then added to C with an ordinary fp32 add (TILE12X32_STORE) */
static void ukernel_emu_avx512bf16(int kc, const void *a_, const void *b_, float *restrict c, long ldc,
                                   int accumulate) {
    const uint32_t *a = a_, *b = b_;
    float acc[12 * 32];
    memset(acc, 0, sizeof acc);
    for (int p = 0; p < kc / 2; p++, a += 12, b += 32)
        for (int i = 0; i < 12; i++)
            for (int j = 0; j < 32; j++) {
                float *t = &acc[i * 32 + j];
                *t = fma_daz_ftz(*t, bf16_hi(a[i]), bf16_hi(b[j]));
                *t = fma_daz_ftz(*t, bf16_lo(a[i]), bf16_lo(b[j]));
            }
    store_tile(c, ldc, acc, 12, 32, accumulate);
}

/* TDPBF16PS per Intel's pseudocode: for each k pair, acc += a.lo * b.lo, then acc += a.hi * b.hi,
 * with C itself as the accumulator (loaded when accumulating, else zero) as ukernel_amx does */
static void ukernel_emu_amx(int kc, const void *a_, const void *b_, float *restrict c, long ldc, int accumulate) {
    const uint32_t *a = a_, *b = b_;
    float acc[32 * 32];
    for (int i = 0; i < 32; i++)
        for (int j = 0; j < 32; j++) acc[i * 32 + j] = accumulate ? c[(long)i * ldc + j] : 0.0f;
    for (int k = 0; k < kc; k += 32, a += 32 * 16, b += 16 * 32)
        for (int i = 0; i < 32; i++)
            for (int p = 0; p < 16; p++) {
                const uint32_t ap = a[i * 16 + p];
                for (int j = 0; j < 32; j++) {
                    float *t = &acc[i * 32 + j];
                    *t = fma_daz_ftz(*t, bf16_lo(ap), bf16_lo(b[p * 32 + j]));
                    *t = fma_daz_ftz(*t, bf16_hi(ap), bf16_hi(b[p * 32 + j]));
                }
            }
    store_tile(c, ldc, acc, 32, 32, 0);
}

static double peak_emu(long iters) {
    float x[8];
    for (int i = 0; i < 8; i++) x[i] = (float)i;
    for (long it = 0; it < iters; it++)
        for (int i = 0; i < 8; i++) x[i] = x[i] * 0.9999999f + 1e-7f;
    volatile float sink = x[0] + x[7];
    (void)sink;
    return (double)iters * 8 * 2;
}
#undef ISA_FN

#if defined(__x86_64__)
const loop_gemm_kernel loop_gemm_avx512bf16 = {
    .name = "avx512bf16", .precision = LOOP_BF16, .mr = 12, .nr = 32, .kpack = 2, .elem_bytes = 2,
    .can_stream = 1, .ukernel = ukernel_avx512bf16, .pack_a = pack_a_pairs_avx512bf16,
    .pack_b = pack_b_pairs_avx512bf16, .peak = peak_avx512bf16};
const loop_gemm_kernel loop_gemm_amx = {
    .name = "amx", .precision = LOOP_BF16, .mr = 32, .nr = 32, .kpack = 32, .elem_bytes = 2, .can_stream = 0,
    .b_panel_in_l1 = 1,
    .ukernel = ukernel_amx, .pack_a = pack_a_amx_amx, .pack_b = pack_b_amx_amx, .peak = peak_amx,
    .thread_begin = amx_thread_begin, .thread_end = amx_thread_end};
#endif
const loop_gemm_kernel loop_gemm_emu_avx512bf16 = {
    .name = "emu-avx512bf16", .precision = LOOP_BF16, .mr = 12, .nr = 32, .kpack = 2, .elem_bytes = 2,
    .can_stream = 0, .ukernel = ukernel_emu_avx512bf16, .pack_a = pack_a_pairs_emu, .pack_b = pack_b_pairs_emu,
    .peak = peak_emu};
const loop_gemm_kernel loop_gemm_emu_amx = {
    .name = "emu-amx", .precision = LOOP_BF16, .mr = 32, .nr = 32, .kpack = 32, .elem_bytes = 2, .can_stream = 0,
    .b_panel_in_l1 = 1,
    .ukernel = ukernel_emu_amx, .pack_a = pack_a_amx_emu, .pack_b = pack_b_amx_emu, .peak = peak_emu};
