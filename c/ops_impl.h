/* ops_impl.h — bodies of every non-GEMM op (GEMM packing lives in gemm_pack.h).
 *
 * Included once per instruction set by kernels_<isa>.c after a `#pragma GCC target`, with
 * ISA_FN(name) giving each copy its own name; the compiler vectorises the `omp simd` loops for
 * that ISA; a file defining ISA_OWN_HOT_LOOPS supplies its own LayerNorm forward, GELU forward and
 * backward, cross-entropy and AdamW (kernels_neon.c). Everything is row-major float32. Shapes: B batch, T time, C channels, NH heads,
 * hs = C/NH head size, N = B*T rows, V vocabulary. */
#include <math.h>
#include <string.h>
#include "internal.h"
#include "isa_variants.h"

#define PAR_FOR _Pragma("omp for schedule(static) nowait")

/* Every op body here (or in the including file, under ISA_OWN_HOT_LOOPS) has ops.def's type. */
#define OP(name, params, args, stat, flops, bytes) static loop_##name##_fn ISA_FN(name);
#define OP_RETURNING(type, name, params, args, stat, flops, bytes) static loop_##name##_fn ISA_FN(name);
#include "ops.def"
/* this ISA's fp32 micro-kernel, defined by the including kernels_<isa>.c: attention's tiles */
static const loop_gemm_kernel ISA_FN(gemm_fp32);

/* exp for the softmaxes: Cephes' polynomial with range reduction by 2^n, written so that
 * `omp simd` loops vectorise it (libm's expf would run one lane at a time). |rel err| < 2e-7. */
static inline float fast_expf(float x) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    /* round to nearest by the 1.5 * 2^23 trick: no branch, so loops stay vectorisable */
    float nf = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    int n = (int)nf;
    float r = x - nf * 0.693359375f + nf * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float y = p * r * r + r + 1.0f;
    union { int32_t i; float f; } scale;
    scale.i = (n + 127) << 23;
    return y * scale.f;
}

static inline float fast_tanhf(float x) { return 1.0f - 2.0f / (fast_expf(2.0f * x) + 1.0f); }

#define GELU_S 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_C 0.044715f

/* ---- dropout masks: Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3",
 * SC 2011), counter-based, so an element's draw depends on its key and counter alone; loop_dropout_key
 * in ops.h says which counter each element gets ---- */
#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u
#define DROPOUT_BLOCK 2048 /* elements whose factors one call draws (a stack buffer per thread) */

static inline uint32_t dropout_threshold(const loop_dropout_key *key) {
    return (uint32_t)(key->p * 4294967296.0); /* kept when the word is >= this: probability 1 - p */
}

/* f[i] = 1/(1-p) where element e0 + i of the tensor is kept, else 0, for i < n <= DROPOUT_BLOCK.
 * The words are drawn four at a time (one Philox block per four consecutive g), into a buffer
 * the second loop reads at g's place, so the first loop vectorises over blocks. */
static inline void ISA_FN(dropout_factors)(float *f, const loop_dropout_key *key, uint64_t e0, int n) {
    const uint32_t thr = dropout_threshold(key), site = key->site, step = key->step;
    const uint32_t k0 = (uint32_t)key->seed, k1 = (uint32_t)(key->seed >> 32);
    const float keep = (float)(1.0 / (1.0 - key->p));
    const uint64_t first = key->offset + e0, g0 = first >> 2;
    const int blocks = (int)(((first + (uint64_t)n + 3) >> 2) - g0), shift = (int)(first & 3);
    uint32_t w[DROPOUT_BLOCK + 8];
    #pragma omp simd
    for (int b = 0; b < blocks; b++) {
        uint32_t c0 = (uint32_t)(g0 + b), c1 = (uint32_t)((g0 + b) >> 32), c2 = site, c3 = step;
        uint32_t r0 = k0, r1 = k1;
        for (int round = 0; round < 10; round++) {
            const uint64_t p0 = (uint64_t)PHILOX_M0 * c0, p1 = (uint64_t)PHILOX_M1 * c2;
            c0 = (uint32_t)(p1 >> 32) ^ c1 ^ r0;
            c1 = (uint32_t)p1;
            c2 = (uint32_t)(p0 >> 32) ^ c3 ^ r1;
            c3 = (uint32_t)p0;
            r0 += PHILOX_W0;
            r1 += PHILOX_W1;
        }
        w[4 * b] = c0;
        w[4 * b + 1] = c1;
        w[4 * b + 2] = c2;
        w[4 * b + 3] = c3;
    }
    #pragma omp simd
    for (int i = 0; i < n; i++) f[i] = w[shift + i] >= thr ? keep : 0.0f;
}

/* ---- encoder: out[B,T,C] = wte[tokens[b,t]] + wpe[t] ---- */
static void ISA_FN(encoder_forward)(float *out, const int32_t *tokens, const float *wte,
                                    const float *wpe, int B, int T, int C) {
    #pragma omp parallel num_threads(loop_nthreads)
    {
        BUSY_BEGIN;
        PAR_FOR
        for (long bt = 0; bt < (long)B * T; bt++) {
            const float *e = wte + (size_t)tokens[bt] * C, *p = wpe + (size_t)(bt % T) * C;
            float *o = out + (size_t)bt * C;
            #pragma omp simd
            for (int c = 0; c < C; c++) o[c] = e[c] + p[c];
        }
        BUSY_END;
    }
}

/* dwte[V,C] += scatter(dout), dwpe[T,C] += sum_b dout. Threads own column ranges, so the
 * scatter has no races and the summation order never depends on the thread count. */
static void ISA_FN(encoder_backward)(float *dwte, float *dwpe, const float *dout,
                                     const int32_t *tokens, int B, int T, int C) {
    const int block = 16;
    int nblocks = (C + block - 1) / block;
    #pragma omp parallel num_threads(loop_nthreads)
    {
        BUSY_BEGIN;
        PAR_FOR
        for (int cb = 0; cb < nblocks; cb++) {
            int c0 = cb * block, c1 = c0 + block < C ? c0 + block : C;
            for (long bt = 0; bt < (long)B * T; bt++) {
                const float *d = dout + (size_t)bt * C;
                float *e = dwte + (size_t)tokens[bt] * C, *p = dwpe + (size_t)(bt % T) * C;
                #pragma omp simd
                for (int c = c0; c < c1; c++) {
                    e[c] += d[c];
                    p[c] += d[c];
                }
            }
        }
        BUSY_END;
    }
}

/* ---- LayerNorm over C: out = (x - mean) * rstd * w + b; keeps mean[N], rstd[N] ---- */
#ifndef ISA_OWN_HOT_LOOPS /* kernels_neon.c has its own (ops_neon.h) */
static void ISA_FN(layernorm_forward)(float *out, float *mean, float *rstd, const float *inp,
                                      const float *weight, const float *bias, int N, int C) {
    #pragma omp parallel num_threads(loop_nthreads)
    {
        BUSY_BEGIN;
        PAR_FOR
        for (int n = 0; n < N; n++) {
            const float *x = inp + (size_t)n * C;
            float s = 0.0f;
            #pragma omp simd reduction(+ : s)
            for (int c = 0; c < C; c++) s += x[c];
            float m = s / C, v = 0.0f;
            #pragma omp simd reduction(+ : v)
            for (int c = 0; c < C; c++) v += (x[c] - m) * (x[c] - m);
            float r = 1.0f / sqrtf(v / C + 1e-5f);
            float *o = out + (size_t)n * C;
            #pragma omp simd
            for (int c = 0; c < C; c++) o[c] = (x[c] - m) * r * weight[c] + bias[c];
            mean[n] = m;
            rstd[n] = r;
        }
        BUSY_END;
    }
}
#endif

/* Sums partial[chunks][width] over chunks, in chunk order, into dst[width] (+=). */
static void ISA_FN(reduce_chunks)(float *dst, const float *partial, int chunks, int width) {
    #pragma omp parallel num_threads(loop_nthreads)
    {
        BUSY_BEGIN;
        PAR_FOR
        for (int c = 0; c < width; c++) {
            float s = 0.0f;
            for (int k = 0; k < chunks; k++) s += partial[(size_t)k * width + c];
            dst[c] += s;
        }
        BUSY_END;
    }
}

/* dinp[N,C] += LN backward; dweight[C], dbias[C] += their gradients (fixed-chunk reduction). */
static void ISA_FN(layernorm_backward)(float *dinp, float *dweight, float *dbias, const float *dout,
                                       const float *inp, const float *weight, const float *mean,
                                       const float *rstd, int N, int C) {
    int chunks = N < LOOP_REDUCE_CHUNKS ? N : LOOP_REDUCE_CHUNKS;
    float *partial = loop_scratch(SCRATCH_REDUCE, (size_t)chunks * 2 * C);
    #pragma omp parallel num_threads(loop_nthreads)
    {
        BUSY_BEGIN;
        PAR_FOR
        for (int k = 0; k < chunks; k++) {
            float *pw = partial + (size_t)k * 2 * C, *pb = pw + C;
            memset(pw, 0, sizeof(float) * 2 * C);
            int n0 = (int)((long)N * k / chunks), n1 = (int)((long)N * (k + 1) / chunks);
            for (int n = n0; n < n1; n++) {
                const float *x = inp + (size_t)n * C, *dy = dout + (size_t)n * C;
                float m = mean[n], r = rstd[n], dmean = 0.0f, dnorm_norm = 0.0f;
                #pragma omp simd reduction(+ : dmean, dnorm_norm)
                for (int c = 0; c < C; c++) {
                    float dnorm = dy[c] * weight[c];
                    dmean += dnorm;
                    dnorm_norm += dnorm * (x[c] - m) * r;
                }
                dmean /= C;
                dnorm_norm /= C;
                float *dx = dinp + (size_t)n * C;
                #pragma omp simd
                for (int c = 0; c < C; c++) {
                    float norm = (x[c] - m) * r;
                    dx[c] += (dy[c] * weight[c] - dmean - norm * dnorm_norm) * r;
                    pw[c] += dy[c] * norm;
                    pb[c] += dy[c];
                }
            }
        }
        BUSY_END;
    }
    /* columns of (dweight, dbias) are adjacent in each partial row: reduce both in one pass */
    #pragma omp parallel num_threads(loop_nthreads)
    {
        BUSY_BEGIN;
        PAR_FOR
        for (int c = 0; c < 2 * C; c++) {
            float s = 0.0f;
            for (int k = 0; k < chunks; k++) s += partial[(size_t)k * 2 * C + c];
            if (c < C) dweight[c] += s;
            else dbias[c - C] += s;
        }
        BUSY_END;
    }
}

/* dbias[C] += column sums of dout[N,C]; with a dropout key, of dropout(dout) instead, which is
 * also written to dmasked (the pass that masks the gradient sums it too) */
static void ISA_FN(bias_backward_masked)(float *dbias, float *dmasked, const float *dout, int N, int C,
                                         const loop_dropout_key *key) {
    int chunks = N < LOOP_REDUCE_CHUNKS ? N : LOOP_REDUCE_CHUNKS;
    float *partial = loop_scratch(SCRATCH_REDUCE, (size_t)chunks * C);
    #pragma omp parallel num_threads(loop_nthreads)
    {
        BUSY_BEGIN;
        float f[DROPOUT_BLOCK];
        PAR_FOR
        for (int k = 0; k < chunks; k++) {
            float *p = partial + (size_t)k * C;
            memset(p, 0, sizeof(float) * C);
            int n0 = (int)((long)N * k / chunks), n1 = (int)((long)N * (k + 1) / chunks);
            for (int n = n0; n < n1; n++) {
                const float *dy = dout + (size_t)n * C;
                if (!key) {
                    #pragma omp simd
                    for (int c = 0; c < C; c++) p[c] += dy[c];
                    continue;
                }
                float *dm = dmasked + (size_t)n * C;
                for (int c0 = 0; c0 < C; c0 += DROPOUT_BLOCK) {
                    const int w = C - c0 < DROPOUT_BLOCK ? C - c0 : DROPOUT_BLOCK;
                    ISA_FN(dropout_factors)(f, key, (uint64_t)n * C + c0, w);
                    #pragma omp simd
                    for (int c = 0; c < w; c++) {
                        const float g = dy[c0 + c] * f[c];
                        dm[c0 + c] = g;
                        p[c0 + c] += g;
                    }
                }
            }
        }
        BUSY_END;
    }
    ISA_FN(reduce_chunks)(dbias, partial, chunks, C);
}

static void ISA_FN(bias_backward)(float *dbias, const float *dout, int N, int C) {
    ISA_FN(bias_backward_masked)(dbias, NULL, dout, N, C, NULL);
}

static void ISA_FN(dropout_bias_backward)(float *dmasked, float *dbias, const float *dout, int N, int C,
                                          const loop_dropout_key *key) {
    ISA_FN(bias_backward_masked)(dbias, dmasked, dout, N, C, key);
}

/* ---- MLP activation: pre[N,C] += bias (if any); out = gelu_tanh(pre) ---- */
#ifndef ISA_OWN_HOT_LOOPS /* kernels_neon.c has its own (ops_neon.h) */
static void ISA_FN(bias_gelu_forward)(float *pre, float *out, const float *bias, int N, int C) {
    #pragma omp parallel num_threads(loop_nthreads)
    {
        BUSY_BEGIN;
        PAR_FOR
        for (int n = 0; n < N; n++) {
            float *p = pre + (size_t)n * C, *o = out + (size_t)n * C;
            #pragma omp simd
            for (int c = 0; c < C; c++) {
                float x = bias ? p[c] + bias[c] : p[c];
                p[c] = x;
                o[c] = 0.5f * x * (1.0f + fast_tanhf(GELU_S * (x + GELU_C * x * x * x)));
            }
        }
        BUSY_END;
    }
}
#endif

/* dinp[n] = dout[n] * gelu'(pre[n]); dinp may alias dout */
#ifndef ISA_OWN_HOT_LOOPS /* kernels_neon.c has its own (ops_neon.h) */
static void ISA_FN(gelu_backward)(float *dinp, const float *pre, const float *dout, size_t n) {
    const size_t block = 4096;
    long nblocks = (long)((n + block - 1) / block);
    #pragma omp parallel num_threads(loop_nthreads)
    {
        BUSY_BEGIN;
        PAR_FOR
        for (long b = 0; b < nblocks; b++) {
            size_t i0 = (size_t)b * block, i1 = i0 + block < n ? i0 + block : n;
            #pragma omp simd
            for (size_t i = i0; i < i1; i++) {
                float x = pre[i];
                float u = GELU_S * (x + GELU_C * x * x * x);
                float th = fast_tanhf(u);
                float sech2 = 1.0f - th * th;
                float d = 0.5f * (1.0f + th) + 0.5f * x * sech2 * GELU_S * (1.0f + 3.0f * GELU_C * x * x);
                dinp[i] = dout[i] * d;
            }
        }
        BUSY_END;
    }
}
#endif

/* ---- causal self-attention, flash style, from packed qkv[B,T,3C] (q | k | v, heads contiguous) ----
 * out[B,T,C]; lse[B,NH,T] = log-sum-exp of each query's scaled scores: all backward needs to
 * recompute the probabilities, so a layer keeps O(T) floats per (b, h) instead of the T x T matrix.
 *
 * Each (b, h) belongs to one thread, which packs its Q, K and V once into the GEMM micro-kernel's
 * panel layouts and walks square blocks of BS queries x BS keys, skipping blocks above the
 * diagonal: S = Q K^T and O += P V (backward: dP = dO V^T, dV += P^T dO, dQ += dS K,
 * dK += dS^T Q) are all micro-kernel tiles, MR x NR at a time, on the micro-kernel of the
 * requested precision: fp32, or bf16 (inputs, P and dS rounded to bf16 while packing, on AMX,
 * AVX512-BF16 or the portable path). The softmax, the log-sum-exp, the running sums O, dQ, dK,
 * dV and the rescaling between blocks stay fp32 plain vectorised C. P and dS go through the
 * kernel's own pack_a (panel layouts differ: fp32 [k][mr], bf16 pairs, AMX tiles).
 * Every sum runs in a fixed order on one thread: bit-identical results for any thread count.
 *
 * Panels are addressed in bytes: r rows (or columns) over K entries take r * kpad(K) * eb bytes,
 * kpad rounding K up to the kernel's .kpack. BS is a multiple of .kpack, so a block of rows
 * packed with K = its rows fits the BS-row slot it starts at. */

typedef struct {
    const loop_gemm_kernel *g;
    int BS, mr, nr, hs, hsk, hsp, T, Tp, nblk, C3, eb;
} attn_geom;

static attn_geom ISA_FN(attn_geometry)(int T, int C, int NH, int precision) {
    attn_geom a;
    /* the bf16 GEMM path is a run-time setting (runtime.c); fp32 tiles on this ISA's own micro-kernel */
    a.g = precision == LOOP_BF16 ? loop_gemm_kernel_active(LOOP_BF16) : &ISA_FN(gemm_fp32);
    a.mr = a.g->mr;
    a.nr = a.g->nr;
    a.eb = a.g->elem_bytes;
    int l = a.mr;
    while (l % a.nr || l % a.g->kpack) l += a.mr; /* whole row panels, column panels and K packs */
    a.BS = l;
    while (a.BS < 48) a.BS += l;
    a.hs = C / NH;
    a.hsk = (a.hs + a.g->kpack - 1) / a.g->kpack * a.g->kpack; /* K = hs, padded */
    a.hsp = (a.hs + a.nr - 1) / a.nr * a.nr;                   /* hs columns in whole NR panels */
    a.T = T;
    a.nblk = (T + a.BS - 1) / a.BS;
    a.Tp = a.nblk * a.BS;
    a.C3 = 3 * C;
    return a;
}

static inline int ISA_FN(attn_kpad)(const attn_geom *a, int k) { return (k + a->g->kpack - 1) / a->g->kpack * a->g->kpack; }

/* rows [r0, r0+n) of X (row stride ld, hs columns) -> A panels, K = hs, at row r0's place */
static inline void ISA_FN(attn_pack_rows)(const attn_geom *a, char *base, const float *X, long ld, int r0, int n) {
    a->g->pack_a(base + (size_t)r0 * a->hsk * a->eb, X, ld, 0, r0, 0, n, a->hs, a->mr);
}
/* X rows as the columns of B^T (S = Q K^T: B[i][key] = K[key][i]): one panel per nr rows, K = hs */
static inline void ISA_FN(attn_pack_cols)(const attn_geom *a, char *base, const float *X, long ld) {
    for (int j0 = 0; j0 < a->T; j0 += a->nr) {
        int n = a->T - j0 < a->nr ? a->T - j0 : a->nr;
        a->g->pack_b(base + (size_t)j0 * a->hsk * a->eb, X, ld, 1, 0, j0, n, a->hs, a->nr);
    }
}
/* X rows [r0, r0+n) as B (K = those rows, columns = the hs channels in panels of nr), at the
 * block's slot of BS rows */
static inline void ISA_FN(attn_pack_block)(const attn_geom *a, char *base, const float *X, long ld, int r0, int n) {
    char *dst = base + (size_t)r0 * a->hsp * a->eb;
    const size_t panel = (size_t)ISA_FN(attn_kpad)(a, n) * a->nr * a->eb;
    for (int cp = 0; cp * a->nr < a->hs; cp++) {
        int w = a->hs - cp * a->nr < a->nr ? a->hs - cp * a->nr : a->nr;
        a->g->pack_b(dst + cp * panel, X, ld, 0, r0, cp * a->nr, w, n, a->nr);
    }
}

/* C[rows, cols] (+)= A panels (rows in mr panels over K = kc) x B panels (nr columns each over
 * K = kc); rows and cols are padded to whole panels, which C has room for */
static inline void ISA_FN(attn_tiles)(const attn_geom *a, int rows, int cols, int kc, const char *A, const char *B,
                                      float *C, long ldc, int accumulate) {
    const int kcp = ISA_FN(attn_kpad)(a, kc);
    const size_t step = (size_t)kcp * a->eb;
    for (int ip = 0; ip < rows; ip += a->mr)
        for (int jp = 0; jp < cols; jp += a->nr)
            a->g->ukernel(kcp, A + ip * step, B + jp * step, C + (size_t)ip * ldc + jp, ldc, accumulate);
}

#define ATTN_ALIGN(n) (((size_t)(n) + 15) / 16 * 16)
/* floats of scratch that hold `bytes` bytes of panels, 64-byte aligned */
#define ATTN_FLOATS(bytes) ATTN_ALIGN(((size_t)(bytes) + 3) / 4)

static void ISA_FN(attention_forward)(float *out, float *lse, const float *qkv, int B, int T, int C, int NH,
                                      int precision) {
    const attn_geom a = ISA_FN(attn_geometry)(T, C, NH, precision);
    const int BS = a.BS, hs = a.hs, hsp = a.hsp, mr = a.mr, C3 = a.C3, eb = a.eb;
    const float scale = 1.0f / sqrtf((float)hs);
    const size_t nQ = ATTN_FLOATS((size_t)a.Tp * a.hsk * eb), nK = nQ, nV = ATTN_FLOATS((size_t)a.Tp * hsp * eb),
                 nS = ATTN_ALIGN((size_t)BS * BS), nO = ATTN_ALIGN((size_t)BS * hsp);
    const size_t per_thread = nQ + nK + nV + 2 * nS + nO + 2 * ATTN_ALIGN(BS);
    float *scratch = loop_scratch(SCRATCH_ATTN, (size_t)loop_nthreads * per_thread);
    #pragma omp parallel num_threads(loop_nthreads)
    {
        BUSY_BEGIN;
        if (a.g->thread_begin) a.g->thread_begin();
        float *Qf = scratch + (size_t)omp_get_thread_num() * per_thread, *Kf = Qf + nQ, *Vf = Kf + nK, *S = Vf + nV,
              *Pf = S + nS, *O = Pf + nS, *m = O + nO, *l = m + ATTN_ALIGN(BS);
        char *Qa = (char *)Qf, *Kb = (char *)Kf, *Vb = (char *)Vf, *Pa = (char *)Pf;
        PAR_FOR
        for (int bh = 0; bh < B * NH; bh++) {
            const int b = bh / NH, h = bh % NH;
            const float *q = qkv + (size_t)b * T * C3 + h * hs, *k = q + C, *v = q + 2 * C;
            ISA_FN(attn_pack_cols)(&a, Kb, k, C3);
            for (int kb = 0; kb < a.nblk; kb++) {
                const int k0 = kb * BS, nk = T - k0 < BS ? T - k0 : BS;
                ISA_FN(attn_pack_rows)(&a, Qa, q, C3, k0, nk);
                ISA_FN(attn_pack_block)(&a, Vb, v, C3, k0, nk);
            }
            for (int qb = 0; qb < a.nblk; qb++) {
                const int q0 = qb * BS, nq = T - q0 < BS ? T - q0 : BS, nqp = (nq + mr - 1) / mr * mr;
                memset(O, 0, sizeof(float) * (size_t)nqp * hsp);
                for (int r = 0; r < nq; r++) m[r] = -INFINITY, l[r] = 0.0f;
                for (int kb = 0; kb <= qb; kb++) {
                    const int k0 = kb * BS, nk = T - k0 < BS ? T - k0 : BS;
                    ISA_FN(attn_tiles)(&a, nq, nk, hs, Qa + (size_t)q0 * a.hsk * eb, Kb + (size_t)k0 * a.hsk * eb, S,
                                       BS, 0);
                    for (int r = 0; r < nq; r++) { /* S's row r becomes P's (unnormalised), masked */
                        const int valid = kb < qb ? nk : q0 + r - k0 + 1;
                        float *s = S + (size_t)r * BS, mx = m[r];
                        #pragma omp simd reduction(max : mx)
                        for (int j = 0; j < valid; j++) mx = s[j] * scale > mx ? s[j] * scale : mx;
                        const float alpha = m[r] == -INFINITY ? 0.0f : fast_expf(m[r] - mx);
                        float sum = 0.0f;
                        #pragma omp simd reduction(+ : sum)
                        for (int j = 0; j < valid; j++) {
                            s[j] = fast_expf(s[j] * scale - mx);
                            sum += s[j];
                        }
                        for (int j = valid; j < nk; j++) s[j] = 0.0f;
                        m[r] = mx;
                        l[r] = l[r] * alpha + sum;
                        float *o = O + (size_t)r * hsp;
                        #pragma omp simd
                        for (int i = 0; i < hsp; i++) o[i] *= alpha;
                    }
                    a.g->pack_a(Pa, S, BS, 0, 0, 0, nq, nk, mr);
                    ISA_FN(attn_tiles)(&a, nq, hsp, nk, Pa, Vb + (size_t)k0 * hsp * eb, O, hsp, 1);
                }
                for (int r = 0; r < nq; r++) {
                    float *dst = out + ((size_t)b * T + q0 + r) * C + h * hs;
                    const float inv = 1.0f / l[r], *o = O + (size_t)r * hsp;
                    #pragma omp simd
                    for (int i = 0; i < hs; i++) dst[i] = o[i] * inv;
                    lse[(size_t)bh * T + q0 + r] = m[r] + logf(l[r]);
                }
            }
        }
        if (a.g->thread_end) a.g->thread_end();
        BUSY_END;
    }
}

/* dqkv[B,T,3C] = gradient of attention_forward given dout[B,T,C] (overwritten, not added), from
 * qkv, the forward's out and lse. With P = exp(S * scale - lse) recomputed per block and
 * D = rowsum(dO * O): dV += P^T dO, dP = dO V^T, dS = P * (dP - D) * scale, dQ += dS K,
 * dK += dS^T Q. Key blocks outside, query blocks from the diagonal down inside. */
static void ISA_FN(attention_backward)(float *dqkv, const float *dout, const float *qkv, const float *out,
                                       const float *lse, int B, int T, int C, int NH, int precision) {
    const attn_geom a = ISA_FN(attn_geometry)(T, C, NH, precision);
    const int BS = a.BS, hs = a.hs, hsp = a.hsp, mr = a.mr, C3 = a.C3, eb = a.eb;
    const float scale = 1.0f / sqrtf((float)hs);
    const size_t nA = ATTN_FLOATS((size_t)a.Tp * a.hsk * eb), nB = ATTN_FLOATS((size_t)a.Tp * hsp * eb),
                 nF = ATTN_ALIGN((size_t)a.Tp * hsp), nS = ATTN_ALIGN((size_t)BS * BS);
    /* A panels: Q, dO; B panels: K^T, V^T (K = hs), dO, K, Q (K = rows); fp32 sums dQ, dK, dV;
     * blocks S, dP and the packed P^T, dS, dS^T; D */
    const size_t per_thread = 4 * nA + 3 * nB + 3 * nF + 5 * nS + ATTN_ALIGN(a.Tp);
    float *scratch = loop_scratch(SCRATCH_ATTN, (size_t)loop_nthreads * per_thread);
    #pragma omp parallel num_threads(loop_nthreads)
    {
        BUSY_BEGIN;
        if (a.g->thread_begin) a.g->thread_begin();
        float *base = scratch + (size_t)omp_get_thread_num() * per_thread;
        char *Qa = (char *)base, *dOa = Qa + 4 * nA, *KbT = dOa + 4 * nA, *VbT = KbT + 4 * nA,
             *dOb = VbT + 4 * nA, *Kb = dOb + 4 * nB, *Qb = Kb + 4 * nB;
        float *dQ = base + 4 * nA + 3 * nB, *dK = dQ + nF, *dV = dK + nF, *S = dV + nF, *dP = S + nS;
        char *PTa = (char *)(dP + nS), *dSa = PTa + 4 * nS, *dSTa = dSa + 4 * nS;
        float *D = (float *)(dSTa + 4 * nS);
        PAR_FOR
        for (int bh = 0; bh < B * NH; bh++) {
            const int b = bh / NH, h = bh % NH;
            const float *q = qkv + (size_t)b * T * C3 + h * hs, *k = q + C, *v = q + 2 * C;
            const float *dy = dout + (size_t)b * T * C + h * hs, *o = out + (size_t)b * T * C + h * hs;
            const float *L = lse + (size_t)bh * T;
            ISA_FN(attn_pack_cols)(&a, KbT, k, C3);
            ISA_FN(attn_pack_cols)(&a, VbT, v, C3);
            for (int blk = 0; blk < a.nblk; blk++) {
                const int r0 = blk * BS, n = T - r0 < BS ? T - r0 : BS;
                ISA_FN(attn_pack_rows)(&a, Qa, q, C3, r0, n);
                ISA_FN(attn_pack_rows)(&a, dOa, dy, C, r0, n);
                ISA_FN(attn_pack_block)(&a, dOb, dy, C, r0, n);
                ISA_FN(attn_pack_block)(&a, Kb, k, C3, r0, n);
                ISA_FN(attn_pack_block)(&a, Qb, q, C3, r0, n);
            }
            for (int t = 0; t < T; t++) {
                const float *dyt = dy + (size_t)t * C, *ot = o + (size_t)t * C;
                float d = 0.0f;
                #pragma omp simd reduction(+ : d)
                for (int i = 0; i < hs; i++) d += dyt[i] * ot[i];
                D[t] = d;
            }
            memset(dQ, 0, sizeof(float) * 3 * nF); /* dQ, dK, dV */
            for (int kb = 0; kb < a.nblk; kb++) {
                const int k0 = kb * BS, nk = T - k0 < BS ? T - k0 : BS;
                for (int qb = kb; qb < a.nblk; qb++) {
                    const int q0 = qb * BS, nq = T - q0 < BS ? T - q0 : BS;
                    const size_t qa = (size_t)q0 * a.hsk * eb, ka = (size_t)k0 * a.hsk * eb;
                    ISA_FN(attn_tiles)(&a, nq, nk, hs, Qa + qa, KbT + ka, S, BS, 0);
                    ISA_FN(attn_tiles)(&a, nq, nk, hs, dOa + qa, VbT + ka, dP, BS, 0);
                    for (int r = 0; r < nq; r++) { /* S's row becomes P's, dP's becomes dS's */
                        const int valid = qb > kb ? nk : q0 + r - k0 + 1;
                        float *s = S + (size_t)r * BS, *dp = dP + (size_t)r * BS;
                        const float Lr = L[q0 + r], Dr = D[q0 + r];
                        #pragma omp simd
                        for (int j = 0; j < nk; j++) {
                            const float p = j < valid ? fast_expf(s[j] * scale - Lr) : 0.0f;
                            s[j] = p;
                            dp[j] = p * (dp[j] - Dr) * scale;
                        }
                    }
                    a.g->pack_a(PTa, S, BS, 1, 0, 0, nk, nq, mr);  /* P^T: rows = keys, K = queries */
                    a.g->pack_a(dSa, dP, BS, 0, 0, 0, nq, nk, mr); /* dS: rows = queries, K = keys */
                    a.g->pack_a(dSTa, dP, BS, 1, 0, 0, nk, nq, mr);
                    ISA_FN(attn_tiles)(&a, nk, hsp, nq, PTa, dOb + (size_t)q0 * hsp * eb, dV + (size_t)k0 * hsp, hsp, 1);
                    ISA_FN(attn_tiles)(&a, nq, hsp, nk, dSa, Kb + (size_t)k0 * hsp * eb, dQ + (size_t)q0 * hsp, hsp, 1);
                    ISA_FN(attn_tiles)(&a, nk, hsp, nq, dSTa, Qb + (size_t)q0 * hsp * eb, dK + (size_t)k0 * hsp, hsp, 1);
                }
            }
            float *dbase = dqkv + (size_t)b * T * C3 + h * hs;
            for (int t = 0; t < T; t++) {
                float *row = dbase + (size_t)t * C3;
                memcpy(row, dQ + (size_t)t * hsp, sizeof(float) * hs);
                memcpy(row + C, dK + (size_t)t * hsp, sizeof(float) * hs);
                memcpy(row + 2 * C, dV + (size_t)t * hsp, sizeof(float) * hs);
            }
        }
        if (a.g->thread_end) a.g->thread_end();
        BUSY_END;
    }
}

/* ---- out[n] = a[n] + b[n] ---- */
static void ISA_FN(residual_forward)(float *out, const float *a, const float *b, size_t n) {
    const size_t block = 8192;
    long nblocks = (long)((n + block - 1) / block);
    #pragma omp parallel num_threads(loop_nthreads)
    {
        BUSY_BEGIN;
        PAR_FOR
        for (long k = 0; k < nblocks; k++) {
            size_t i0 = (size_t)k * block, i1 = i0 + block < n ? i0 + block : n;
            #pragma omp simd
            for (size_t i = i0; i < i1; i++) out[i] = a[i] + b[i];
        }
        BUSY_END;
    }
}

/* ---- out[n] = (a[n] if a else 0) + dropout(b[n]) ---- */
static void ISA_FN(residual_dropout)(float *out, const float *a, const float *b, size_t n,
                                     const loop_dropout_key *key) {
    long nblocks = (long)((n + DROPOUT_BLOCK - 1) / DROPOUT_BLOCK);
    #pragma omp parallel num_threads(loop_nthreads)
    {
        BUSY_BEGIN;
        float f[DROPOUT_BLOCK];
        PAR_FOR
        for (long k = 0; k < nblocks; k++) {
            const size_t i0 = (size_t)k * DROPOUT_BLOCK;
            const int w = n - i0 < DROPOUT_BLOCK ? (int)(n - i0) : DROPOUT_BLOCK;
            ISA_FN(dropout_factors)(f, key, i0, w);
            float *o = out + i0;
            const float *x = b + i0;
            if (a) {
                const float *y = a + i0;
                #pragma omp simd
                for (int i = 0; i < w; i++) o[i] = y[i] + x[i] * f[i];
            } else {
                #pragma omp simd
                for (int i = 0; i < w; i++) o[i] = x[i] * f[i];
            }
        }
        BUSY_END;
    }
}

static void ISA_FN(dropout)(float *out, const float *inp, size_t n, const loop_dropout_key *key) {
    ISA_FN(residual_dropout)(out, NULL, inp, n, key);
}

/* ---- decoding one token at a time (the KV cache): GEMV-shaped kernels ----
 * gemv:   y[N] = x[K] . W[K,N] (+ bias[N]), W stored (in, out) like every weight here. Threads own
 *         disjoint blocks of columns and sweep the rows of W four at a time, so W is read once,
 *         sequentially, and each y[j] is summed in the same order for any thread count.
 * gemv_t: y[N] = W[N,K] . x[K], W stored (out, in): the tied LM head (rows of wte).
 * attention_decode: one query per head against the cached keys and values of positions 0..n-1,
 *         q[NH*hs] -> out[NH*hs]; kc, vc are [NH, cap, hs] (each head's rows contiguous). */
#define GEMV_BLOCK 256
static void ISA_FN(gemv)(float *y, const float *x, const float *W, const float *bias, int K, int N) {
    const int nblocks = (N + GEMV_BLOCK - 1) / GEMV_BLOCK;
    #pragma omp parallel num_threads(loop_nthreads)
    {
        BUSY_BEGIN;
        PAR_FOR
        for (int blk = 0; blk < nblocks; blk++) {
            const int j0 = blk * GEMV_BLOCK, nj = N - j0 < GEMV_BLOCK ? N - j0 : GEMV_BLOCK;
            float acc[GEMV_BLOCK];
            #pragma omp simd
            for (int j = 0; j < nj; j++) acc[j] = bias ? bias[j0 + j] : 0.0f;
            int k = 0;
            for (; k + 4 <= K; k += 4) {
                const float x0 = x[k], x1 = x[k + 1], x2 = x[k + 2], x3 = x[k + 3];
                const float *w0 = W + (size_t)k * N + j0, *w1 = w0 + N, *w2 = w1 + N, *w3 = w2 + N;
                #pragma omp simd
                for (int j = 0; j < nj; j++) acc[j] += x0 * w0[j] + x1 * w1[j] + x2 * w2[j] + x3 * w3[j];
            }
            for (; k < K; k++) {
                const float xk = x[k], *wk = W + (size_t)k * N + j0;
                #pragma omp simd
                for (int j = 0; j < nj; j++) acc[j] += xk * wk[j];
            }
            #pragma omp simd
            for (int j = 0; j < nj; j++) y[j0 + j] = acc[j];
        }
        BUSY_END;
    }
}

static void ISA_FN(gemv_t)(float *y, const float *x, const float *W, int K, int N) {
    #pragma omp parallel num_threads(loop_nthreads)
    {
        BUSY_BEGIN;
        PAR_FOR
        for (int n = 0; n < N; n++) {
            const float *w = W + (size_t)n * K;
            float sum = 0.0f;
            #pragma omp simd reduction(+ : sum)
            for (int k = 0; k < K; k++) sum += w[k] * x[k];
            y[n] = sum;
        }
        BUSY_END;
    }
}

static void ISA_FN(attention_decode)(float *out, const float *q, const float *kc, const float *vc, int NH,
                                     int hs, int n, int cap) {
    const float scale = 1.0f / sqrtf((float)hs);
    float *scratch = loop_scratch(SCRATCH_ATTN, (size_t)loop_nthreads * cap);
    #pragma omp parallel num_threads(loop_nthreads)
    {
        BUSY_BEGIN;
        float *s = scratch + (size_t)omp_get_thread_num() * cap;
        PAR_FOR
        for (int h = 0; h < NH; h++) {
            const float *qh = q + (size_t)h * hs, *k = kc + (size_t)h * cap * hs, *v = vc + (size_t)h * cap * hs;
            float maxv = -INFINITY;
            for (int t = 0; t < n; t++) {
                const float *kt = k + (size_t)t * hs;
                float dot = 0.0f;
                #pragma omp simd reduction(+ : dot)
                for (int i = 0; i < hs; i++) dot += qh[i] * kt[i];
                s[t] = dot * scale;
                maxv = s[t] > maxv ? s[t] : maxv;
            }
            float sum = 0.0f;
            for (int t = 0; t < n; t++) {
                s[t] = fast_expf(s[t] - maxv);
                sum += s[t];
            }
            const float inv = 1.0f / sum;
            float *o = out + (size_t)h * hs;
            #pragma omp simd
            for (int i = 0; i < hs; i++) o[i] = 0.0f;
            for (int t = 0; t < n; t++) {
                const float a = s[t] * inv, *vt = v + (size_t)t * hs;
                #pragma omp simd
                for (int i = 0; i < hs; i++) o[i] += a * vt[i];
            }
        }
        BUSY_END;
    }
}

/* ---- fused softmax + cross-entropy over V, row by row ----
 * losses[n] = logsumexp(logits[n, :V]) - logits[n, targets[n]]; rows are Vp >= V floats apart
 * (the vocabulary padded to a multiple of 64, as llm.c pads GPT-2's 50257 to 50304), and the
 * padded columns never count. With write_grad, logits[n] is overwritten by
 * d(grad_scale * loss)/dlogits = grad_scale * (softmax - onehot), zero in the padded columns:
 * the probabilities exist only in that one buffer, one row at a time in cache. */
#ifndef ISA_OWN_HOT_LOOPS /* kernels_neon.c has its own (ops_neon.h) */
static void ISA_FN(crossentropy)(float *logits, float *losses, const int32_t *targets, int N, int V, int Vp,
                                 float grad_scale, int write_grad) {
    #pragma omp parallel num_threads(loop_nthreads)
    {
        BUSY_BEGIN;
        PAR_FOR
        for (int n = 0; n < N; n++) {
            float *x = logits + (size_t)n * Vp;
            float maxv = -INFINITY;
            #pragma omp simd reduction(max : maxv)
            for (int j = 0; j < V; j++) maxv = x[j] > maxv ? x[j] : maxv;
            float target_logit = x[targets[n]];
            float sum = 0.0f;
            if (write_grad) {
                #pragma omp simd reduction(+ : sum)
                for (int j = 0; j < V; j++) {
                    float e = fast_expf(x[j] - maxv);
                    x[j] = e;
                    sum += e;
                }
                float s = grad_scale / sum;
                #pragma omp simd
                for (int j = 0; j < V; j++) x[j] *= s;
                for (int j = V; j < Vp; j++) x[j] = 0.0f;
                x[targets[n]] -= grad_scale;
            } else {
                #pragma omp simd reduction(+ : sum)
                for (int j = 0; j < V; j++) sum += fast_expf(x[j] - maxv);
            }
            losses[n] = logf(sum) + maxv - target_logit;
        }
        BUSY_END;
    }
}
#endif

/* ---- AdamW over one flat buffer (decoupled weight decay, bias correction) ----
 * grad_scale folds gradient clipping in; bias_corr1 = 1 - beta1^t, bias_corr2 = 1 - beta2^t. */
#ifndef ISA_OWN_HOT_LOOPS /* kernels_neon.c has its own (ops_neon.h) */
static void ISA_FN(adamw)(float *param, const float *grad, float *m, float *v, size_t n, float lr,
                          float beta1, float beta2, float eps, float weight_decay, float bias_corr1,
                          float bias_corr2, float grad_scale) {
    const size_t block = 8192;
    long nblocks = (long)((n + block - 1) / block);
    const float ib1 = 1.0f / bias_corr1, ib2 = 1.0f / bias_corr2;
    #pragma omp parallel num_threads(loop_nthreads)
    {
        BUSY_BEGIN;
        PAR_FOR
        for (long k = 0; k < nblocks; k++) {
            size_t i0 = (size_t)k * block, i1 = i0 + block < n ? i0 + block : n;
            #pragma omp simd
            for (size_t i = i0; i < i1; i++) {
                float g = grad[i] * grad_scale;
                float mi = beta1 * m[i] + (1.0f - beta1) * g;
                float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
                m[i] = mi;
                v[i] = vi;
                float update = (mi * ib1) / (sqrtf(vi * ib2) + eps);
                param[i] -= lr * (update + weight_decay * param[i]);
            }
        }
        BUSY_END;
    }
}
#endif

/* sum of squares in double over fixed chunks (thread-count independent) */
static double ISA_FN(sum_squares)(const float *x, size_t n) {
    double partial[LOOP_REDUCE_CHUNKS];
    int chunks = n < LOOP_REDUCE_CHUNKS ? (int)n : LOOP_REDUCE_CHUNKS;
    #pragma omp parallel num_threads(loop_nthreads)
    {
        BUSY_BEGIN;
        PAR_FOR
        for (int k = 0; k < chunks; k++) {
            size_t i0 = n * k / chunks, i1 = n * (k + 1) / chunks;
            double s = 0.0;
            #pragma omp simd reduction(+ : s)
            for (size_t i = i0; i < i1; i++) s += (double)x[i] * x[i];
            partial[k] = s;
        }
        BUSY_END;
    }
    double total = 0.0;
    for (int k = 0; k < chunks; k++) total += partial[k];
    return total;
}

static void ISA_FN(scale)(float *x, float s, size_t n) {
    #pragma omp simd
    for (size_t i = 0; i < n; i++) x[i] *= s;
}
