/* ops_impl.h — bodies of every non-GEMM op (GEMM packing lives in gemm_pack.h).
 *
 * Included once per instruction set by kernels_<isa>.c after a `#pragma GCC target`, with
 * ISA_FN(name) giving each copy its own name; the compiler vectorises the `omp simd` loops for
 * that ISA. Everything is row-major float32. Shapes: B batch, T time, C channels, NH heads,
 * hs = C/NH head size, N = B*T rows, V vocabulary. */
#include <math.h>
#include <string.h>
#include "internal.h"
#include "isa_variants.h"

#define PAR_FOR _Pragma("omp for schedule(static) nowait")

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

/* dbias[C] += column sums of dout[N,C] */
static void ISA_FN(bias_backward)(float *dbias, const float *dout, int N, int C) {
    int chunks = N < LOOP_REDUCE_CHUNKS ? N : LOOP_REDUCE_CHUNKS;
    float *partial = loop_scratch(SCRATCH_REDUCE, (size_t)chunks * C);
    #pragma omp parallel num_threads(loop_nthreads)
    {
        BUSY_BEGIN;
        PAR_FOR
        for (int k = 0; k < chunks; k++) {
            float *p = partial + (size_t)k * C;
            memset(p, 0, sizeof(float) * C);
            int n0 = (int)((long)N * k / chunks), n1 = (int)((long)N * (k + 1) / chunks);
            for (int n = n0; n < n1; n++) {
                const float *dy = dout + (size_t)n * C;
                #pragma omp simd
                for (int c = 0; c < C; c++) p[c] += dy[c];
            }
        }
        BUSY_END;
    }
    ISA_FN(reduce_chunks)(dbias, partial, chunks, C);
}

/* ---- MLP activation: pre[N,C] += bias (if any); out = gelu_tanh(pre) ---- */
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

/* dinp[n] = dout[n] * gelu'(pre[n]); dinp may alias dout */
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

/* ---- causal self-attention from packed qkv[B,T,3C] (q | k | v, heads contiguous in each) ----
 * out[B,T,C]; att[B,NH,T,T] keeps the softmax probabilities (zeros above the diagonal) for the
 * backward pass: B*NH*T*T floats per layer. Each (b, h) first copies its keys (and, backward,
 * values) transposed into per-thread scratch, so the q.k scores for all earlier positions are one
 * loop vectorised over positions instead of a horizontal sum per pair. */

/* dst[i*T + t2] = x[t2][i] for the head slice x (row stride C3), t2 < T, i < hs */
static inline void ISA_FN(transpose_head)(float *dst, const float *x, int T, int hs, int C3) {
    for (int t2 = 0; t2 < T; t2++) {
        const float *row = x + (size_t)t2 * C3;
        for (int i = 0; i < hs; i++) dst[(size_t)i * T + t2] = row[i];
    }
}

/* s[t2] = scale * sum_i w[i] * xT[i][t2] for t2 <= t */
static inline void ISA_FN(scores)(float *s, const float *w, const float *xT, int t, int T, int hs, float scale) {
    const int n = t + 1;
    #pragma omp simd
    for (int t2 = 0; t2 < n; t2++) s[t2] = 0.0f;
    int i = 0;
    for (; i + 4 <= hs; i += 4) {
        const float w0 = w[i], w1 = w[i + 1], w2 = w[i + 2], w3 = w[i + 3];
        const float *x0 = xT + (size_t)i * T, *x1 = x0 + T, *x2 = x1 + T, *x3 = x2 + T;
        #pragma omp simd
        for (int t2 = 0; t2 < n; t2++) s[t2] += w0 * x0[t2] + w1 * x1[t2] + w2 * x2[t2] + w3 * x3[t2];
    }
    for (; i < hs; i++) {
        const float wi = w[i], *xi = xT + (size_t)i * T;
        #pragma omp simd
        for (int t2 = 0; t2 < n; t2++) s[t2] += wi * xi[t2];
    }
    #pragma omp simd
    for (int t2 = 0; t2 < n; t2++) s[t2] *= scale;
}

static void ISA_FN(attention_forward)(float *out, float *att, const float *qkv, int B, int T, int C,
                                      int NH) {
    const int hs = C / NH, C3 = 3 * C;
    const float scale = 1.0f / sqrtf((float)hs);
    float *scratch = loop_scratch(SCRATCH_ATTN, (size_t)loop_nthreads * 2 * T * hs);
    #pragma omp parallel num_threads(loop_nthreads)
    {
        BUSY_BEGIN;
        float *kT = scratch + (size_t)omp_get_thread_num() * 2 * T * hs;
        PAR_FOR
        for (int bh = 0; bh < B * NH; bh++) {
            int b = bh / NH, h = bh % NH;
            const float *base = qkv + (size_t)b * T * C3 + h * hs;
            ISA_FN(transpose_head)(kT, base + C, T, hs, C3);
            for (int t = 0; t < T; t++) {
                float *arow = att + ((size_t)bh * T + t) * T;
                ISA_FN(scores)(arow, base + (size_t)t * C3, kT, t, T, hs, scale);
                float maxv = -INFINITY;
                #pragma omp simd reduction(max : maxv)
                for (int t2 = 0; t2 <= t; t2++) maxv = arow[t2] > maxv ? arow[t2] : maxv;
                float sum = 0.0f;
                #pragma omp simd reduction(+ : sum)
                for (int t2 = 0; t2 <= t; t2++) {
                    float e = fast_expf(arow[t2] - maxv);
                    arow[t2] = e;
                    sum += e;
                }
                float inv = 1.0f / sum;
                #pragma omp simd
                for (int t2 = 0; t2 <= t; t2++) arow[t2] *= inv;
                for (int t2 = t + 1; t2 < T; t2++) arow[t2] = 0.0f;
                float *o = out + ((size_t)b * T + t) * C + h * hs;
                #pragma omp simd
                for (int i = 0; i < hs; i++) o[i] = 0.0f;
                for (int t2 = 0; t2 <= t; t2++) {
                    const float *v = base + (size_t)t2 * C3 + 2 * C;
                    float a = arow[t2];
                    #pragma omp simd
                    for (int i = 0; i < hs; i++) o[i] += a * v[i];
                }
            }
        }
        BUSY_END;
    }
}

/* dqkv[B,T,3C] = gradient of attention_forward given dout[B,T,C] (overwritten, not added).
 * Pass 1, per query row t: dP[t][t2] = att * (dy_t . v_t2 - sum att * dy_t . v) * scale and
 * dq_t = sum_t2 dP[t][t2] k_t2. Pass 2, per key row t2: dk_t2 = sum_t dP[t][t2] q_t and
 * dv_t2 = sum_t att[t][t2] dy_t, accumulated locally and written once. dP is per-thread scratch. */
static void ISA_FN(attention_backward)(float *dqkv, const float *dout, const float *qkv,
                                       const float *att, int B, int T, int C, int NH) {
    const int hs = C / NH, C3 = 3 * C;
    const float scale = 1.0f / sqrtf((float)hs);
    const size_t per_thread = (size_t)T * hs + (size_t)T * T + 2 * (size_t)hs;
    float *scratch = loop_scratch(SCRATCH_ATTN, (size_t)loop_nthreads * per_thread);
    #pragma omp parallel num_threads(loop_nthreads)
    {
        BUSY_BEGIN;
        float *vT = scratch + (size_t)omp_get_thread_num() * per_thread;
        float *dP = vT + (size_t)T * hs, *dk = dP + (size_t)T * T, *dv = dk + hs;
        PAR_FOR
        for (int bh = 0; bh < B * NH; bh++) {
            int b = bh / NH, h = bh % NH;
            const float *base = qkv + (size_t)b * T * C3 + h * hs;
            const float *dbase_out = dout + (size_t)b * T * C + h * hs;
            float *dbase = dqkv + (size_t)b * T * C3 + h * hs;
            ISA_FN(transpose_head)(vT, base + 2 * C, T, hs, C3);
            for (int t = 0; t < T; t++) { /* pass 1: softmax gradient rows and dq */
                const float *arow = att + ((size_t)bh * T + t) * T;
                const float *dy = dbase_out + (size_t)t * C;
                float *drow = dP + (size_t)t * T;
                ISA_FN(scores)(drow, dy, vT, t, T, hs, 1.0f); /* dy . v_t2 */
                float dot = 0.0f;
                #pragma omp simd reduction(+ : dot)
                for (int t2 = 0; t2 <= t; t2++) dot += arow[t2] * drow[t2];
                #pragma omp simd
                for (int t2 = 0; t2 <= t; t2++) drow[t2] = arow[t2] * (drow[t2] - dot) * scale;
                float *dq = dbase + (size_t)t * C3;
                #pragma omp simd
                for (int i = 0; i < hs; i++) dq[i] = 0.0f;
                for (int t2 = 0; t2 <= t; t2++) {
                    const float *k = base + (size_t)t2 * C3 + C;
                    const float d = drow[t2];
                    #pragma omp simd
                    for (int i = 0; i < hs; i++) dq[i] += d * k[i];
                }
            }
            for (int t2 = 0; t2 < T; t2++) { /* pass 2: dk and dv of key row t2 */
                #pragma omp simd
                for (int i = 0; i < hs; i++) dk[i] = dv[i] = 0.0f;
                for (int t = t2; t < T; t++) {
                    const float d = dP[(size_t)t * T + t2], a = att[((size_t)bh * T + t) * T + t2];
                    const float *q = base + (size_t)t * C3, *dy = dbase_out + (size_t)t * C;
                    #pragma omp simd
                    for (int i = 0; i < hs; i++) {
                        dk[i] += d * q[i];
                        dv[i] += a * dy[i];
                    }
                }
                memcpy(dbase + (size_t)t2 * C3 + C, dk, sizeof(float) * hs);
                memcpy(dbase + (size_t)t2 * C3 + 2 * C, dv, sizeof(float) * hs);
            }
        }
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

/* ---- AdamW over one flat buffer (decoupled weight decay, bias correction) ----
 * grad_scale folds gradient clipping in; bias_corr1 = 1 - beta1^t, bias_corr2 = 1 - beta2^t. */
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
