/* kernels.cl — loop_tui's OpenCL backend: every op of the C backend, OpenCL C 1.2 (PoCL runs it).
 * Buffers are passed as (pointer, offset in elements) so views need no sub-buffers. Row-major
 * float32 throughout; shapes as in c/ops.h. No atomics: every output element has one writer, so
 * results are deterministic. */

#ifndef TILE
#define TILE 16
#endif

/* Every GEMM variant takes the same arguments (the host passes one list to whichever it picks):
 * C[M,N] = op(A) op(B) (+ bias) (+ C); each buffer comes with its element offset (views). */
#define GEMM_PARAMS                                                                                \
    const int M, const int N, const int K,                                                         \
    __global const float *A, const ulong a_off, const int lda, const int ta,                       \
    __global const float *B, const ulong b_off, const int ldb, const int tb,                       \
    __global float *C, const ulong c_off, const int ldc,                                           \
    __global const float *bias, const ulong bias_off, const int has_bias, const int accumulate
#define GEMM_APPLY_OFFSETS A += a_off; B += b_off; C += c_off; bias += bias_off

/* C[M,N] = op(A) op(B) (+ bias) (+ C). One TILE x TILE work-group per TILE x TILE block of C;
 * the local tiles are sized by the same TILE the group is launched with (reqd_work_group_size),
 * so an 8x8 group fills its whole 8x8 tile: the original project's kernel hard-coded 16x16 tiles
 * under 8x8 groups and read local memory nobody wrote. */
__kernel __attribute__((reqd_work_group_size(TILE, TILE, 1)))
void gemm_tiled(GEMM_PARAMS) {
    GEMM_APPLY_OFFSETS;
    const int lr = get_local_id(1), lc = get_local_id(0);
    const int row = get_group_id(1) * TILE + lr, col = get_group_id(0) * TILE + lc;
    __local float As[TILE][TILE];
    __local float Bs[TILE][TILE + 1];
    float acc = 0.0f;
    for (int k0 = 0; k0 < K; k0 += TILE) {
        const int ka = k0 + lc, kb = k0 + lr;
        As[lr][lc] = (row < M && ka < K) ? (ta ? A[(size_t)ka * lda + row] : A[(size_t)row * lda + ka]) : 0.0f;
        Bs[lr][lc] = (kb < K && col < N) ? (tb ? B[(size_t)col * ldb + kb] : B[(size_t)kb * ldb + col]) : 0.0f;
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int k = 0; k < TILE; k++) acc += As[lr][k] * Bs[k][lc];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (row < M && col < N) {
        float v = acc;
        if (has_bias) v += bias[col];
        if (accumulate) v += C[(size_t)row * ldc + col];
        C[(size_t)row * ldc + col] = v;
    }
}

/* Register-blocked variant: a 16x16 group computes a 64x64 block, each item a 4x4 micro-tile
 * (16 FMAs per 8 local loads instead of 1 per 2). */
#define RB 64
#define RB_K 16
__kernel __attribute__((reqd_work_group_size(16, 16, 1)))
void gemm_rb4(GEMM_PARAMS) {
    GEMM_APPLY_OFFSETS;
    const int tx = get_local_id(0), ty = get_local_id(1), tid = ty * 16 + tx;
    const int row0 = get_group_id(1) * RB, col0 = get_group_id(0) * RB;
    __local float As[RB_K][RB + 1];
    __local float Bs[RB_K][RB + 1];
    float acc[4][4];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;
    for (int k0 = 0; k0 < K; k0 += RB_K) {
        for (int i = 0; i < 4; i++) {
            const int e = tid + i * 256;
            const int m = ta ? e % RB : e / RB_K, ka = ta ? e / RB : e % RB_K;
            const int gm = row0 + m, gk = k0 + ka;
            As[ka][m] = (gm < M && gk < K) ? (ta ? A[(size_t)gk * lda + gm] : A[(size_t)gm * lda + gk]) : 0.0f;
            const int n = tb ? e / RB_K : e % RB, kb = tb ? e % RB_K : e / RB;
            const int gn = col0 + n, gkb = k0 + kb;
            Bs[kb][n] = (gkb < K && gn < N) ? (tb ? B[(size_t)gn * ldb + gkb] : B[(size_t)gkb * ldb + gn]) : 0.0f;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int k = 0; k < RB_K; k++) {
            float a[4], b[4];
            for (int i = 0; i < 4; i++) a[i] = As[k][ty + 16 * i];
            for (int j = 0; j < 4; j++) b[j] = Bs[k][tx + 16 * j];
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 4; j++) acc[i][j] = fma(a[i], b[j], acc[i][j]);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    for (int i = 0; i < 4; i++) {
        const int row = row0 + ty + 16 * i;
        if (row >= M) continue;
        for (int j = 0; j < 4; j++) {
            const int col = col0 + tx + 16 * j;
            if (col >= N) continue;
            float v = acc[i][j];
            if (has_bias) v += bias[col];
            if (accumulate) v += C[(size_t)row * ldc + col];
            C[(size_t)row * ldc + col] = v;
        }
    }
}

/* ---- encoder ---- */
__kernel void encoder_forward(__global float *out, const ulong o_off, __global const int *tok, const ulong t_off,
                              __global const float *wte, const ulong e_off, __global const float *wpe, const ulong p_off,
                              const int T, const int C) {
    out += o_off; tok += t_off; wte += e_off; wpe += p_off;
    const int bt = get_global_id(1), c = get_global_id(0);
    if (c >= C) return;
    out[(size_t)bt * C + c] = wte[(size_t)tok[bt] * C + c] + wpe[(size_t)(bt % T) * C + c];
}

/* one item per column: scatter without atomics, in token order */
__kernel void encoder_backward(__global float *dwte, const ulong e_off, __global float *dwpe, const ulong p_off,
                               __global const float *dout, const ulong d_off, __global const int *tok, const ulong t_off,
                               const int BT, const int T, const int C) {
    dwte += e_off; dwpe += p_off; dout += d_off; tok += t_off;
    const int c = get_global_id(0);
    if (c >= C) return;
    for (int bt = 0; bt < BT; bt++) {
        const float d = dout[(size_t)bt * C + c];
        dwte[(size_t)tok[bt] * C + c] += d;
        dwpe[(size_t)(bt % T) * C + c] += d;
    }
}

/* ---- LayerNorm: one item per row ---- */
__kernel void layernorm_forward(__global float *out, const ulong o_off, __global float *mean, const ulong m_off,
                                __global float *rstd, const ulong r_off, __global const float *inp, const ulong i_off,
                                __global const float *w, const ulong w_off, __global const float *b, const ulong b_off,
                                const int N, const int C) {
    out += o_off; mean += m_off; rstd += r_off; inp += i_off; w += w_off; b += b_off;
    const int n = get_global_id(0);
    if (n >= N) return;
    __global const float *x = inp + (size_t)n * C;
    float s = 0.0f;
    for (int c = 0; c < C; c++) s += x[c];
    const float m = s / C;
    float v = 0.0f;
    for (int c = 0; c < C; c++) v += (x[c] - m) * (x[c] - m);
    const float r = rsqrt(v / C + 1e-5f);
    for (int c = 0; c < C; c++) out[(size_t)n * C + c] = (x[c] - m) * r * w[c] + b[c];
    mean[n] = m;
    rstd[n] = r;
}

__kernel void layernorm_backward_input(__global float *dinp, const ulong di_off, __global const float *dout, const ulong d_off,
                                       __global const float *inp, const ulong i_off, __global const float *w, const ulong w_off,
                                       __global const float *mean, const ulong m_off, __global const float *rstd, const ulong r_off,
                                       const int N, const int C) {
    dinp += di_off; dout += d_off; inp += i_off; w += w_off; mean += m_off; rstd += r_off;
    const int n = get_global_id(0);
    if (n >= N) return;
    __global const float *x = inp + (size_t)n * C, *dy = dout + (size_t)n * C;
    const float m = mean[n], r = rstd[n];
    float dmean = 0.0f, dnn = 0.0f;
    for (int c = 0; c < C; c++) {
        const float dn = dy[c] * w[c];
        dmean += dn;
        dnn += dn * (x[c] - m) * r;
    }
    dmean /= C;
    dnn /= C;
    for (int c = 0; c < C; c++) {
        const float norm = (x[c] - m) * r;
        dinp[(size_t)n * C + c] += (dy[c] * w[c] - dmean - norm * dnn) * r;
    }
}

/* one item per column: dweight[c] += sum_n dout*norm, dbias[c] += sum_n dout */
__kernel void layernorm_backward_params(__global float *dw, const ulong dw_off, __global float *db, const ulong db_off,
                                        __global const float *dout, const ulong d_off, __global const float *inp, const ulong i_off,
                                        __global const float *mean, const ulong m_off, __global const float *rstd, const ulong r_off,
                                        const int N, const int C) {
    dw += dw_off; db += db_off; dout += d_off; inp += i_off; mean += m_off; rstd += r_off;
    const int c = get_global_id(0);
    if (c >= C) return;
    float sw = 0.0f, sb = 0.0f;
    for (int n = 0; n < N; n++) {
        const float dy = dout[(size_t)n * C + c];
        sw += dy * (inp[(size_t)n * C + c] - mean[n]) * rstd[n];
        sb += dy;
    }
    dw[c] += sw;
    db[c] += sb;
}

__kernel void bias_backward(__global float *db, const ulong db_off, __global const float *dout, const ulong d_off,
                            const int N, const int C) {
    db += db_off; dout += d_off;
    const int c = get_global_id(0);
    if (c >= C) return;
    float s = 0.0f;
    for (int n = 0; n < N; n++) s += dout[(size_t)n * C + c];
    db[c] += s;
}

/* ---- GELU (tanh) ---- */
#define GELU_S 0.7978845608028654f
__kernel void bias_gelu_forward(__global float *pre, const ulong p_off, __global float *out, const ulong o_off,
                                __global const float *bias, const ulong b_off, const int has_bias, const int C, const ulong n) {
    pre += p_off; out += o_off; bias += b_off;
    const size_t i = get_global_id(0);
    if (i >= n) return;
    const float x = has_bias ? pre[i] + bias[i % C] : pre[i];
    pre[i] = x;
    out[i] = 0.5f * x * (1.0f + tanh(GELU_S * (x + 0.044715f * x * x * x)));
}

__kernel void gelu_backward(__global float *dinp, const ulong di_off, __global const float *pre, const ulong p_off,
                            __global const float *dout, const ulong d_off, const ulong n) {
    dinp += di_off; pre += p_off; dout += d_off;
    const size_t i = get_global_id(0);
    if (i >= n) return;
    const float x = pre[i];
    const float th = tanh(GELU_S * (x + 0.044715f * x * x * x));
    const float d = 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * GELU_S * (1.0f + 3.0f * 0.044715f * x * x);
    dinp[i] = dout[i] * d;
}

__kernel void residual_forward(__global float *out, const ulong o_off, __global const float *a, const ulong a_off,
                               __global const float *b, const ulong b_off, const ulong n) {
    out += o_off; a += a_off; b += b_off;
    const size_t i = get_global_id(0);
    if (i < n) out[i] = a[i] + b[i];
}

/* ---- dropout: the masks of c/ops.h (loop_dropout_key), bit for bit. Element g of a tensor (g = offset
 * + index) is kept when word g % 4 of Philox4x32-10 with counter (g / 4 low, g / 4 high, site, step) and
 * key (seed low, seed high) is >= thr; kept elements are multiplied by scale (the host computes thr and
 * scale as the C kernels do) ---- */
#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u
uint4 philox4x32_10(uint4 c, uint k0, uint k1) {
    for (int r = 0; r < 10; r++) {
        const uint hi0 = mul_hi(PHILOX_M0, c.x), lo0 = PHILOX_M0 * c.x;
        const uint hi1 = mul_hi(PHILOX_M1, c.z), lo1 = PHILOX_M1 * c.z;
        c = (uint4)(hi1 ^ c.y ^ k0, lo1, hi0 ^ c.w ^ k1, lo0);
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    return c;
}

/* out[i] = (has_a ? a[i] : 0) + dropout(b[i]), i < n; one item per Philox block of four elements */
__kernel void residual_dropout(__global float *out, const ulong o_off, __global const float *a, const ulong a_off,
                               const int has_a, __global const float *b, const ulong b_off, const ulong n,
                               const uint thr, const float scale, const uint k0, const uint k1, const uint step,
                               const uint site, const ulong offset) {
    out += o_off; a += a_off; b += b_off;
    const ulong blk = (offset >> 2) + get_global_id(0);
    if (blk * 4 >= offset + n) return;
    const uint4 w = philox4x32_10((uint4)((uint)blk, (uint)(blk >> 32), site, step), k0, k1);
    const uint words[4] = {w.x, w.y, w.z, w.w};
    for (int j = 0; j < 4; j++) {
        const ulong g = blk * 4 + j;
        if (g < offset || g >= offset + n) continue;
        const size_t i = g - offset;
        const float dropped = b[i] * (words[j] >= thr ? scale : 0.0f);
        out[i] = has_a ? a[i] + dropped : dropped;
    }
}

/* ---- causal attention, one item per (b, h, t) query row; lse[b,h,t] = log-sum-exp of the row's
 * scaled scores replaces the T x T probabilities (flash style): backward recomputes them ---- */
#define ATTN_MAX_HS 256
__kernel void attention_forward(__global float *out, const ulong o_off, __global float *lse, const ulong l_off,
                                __global const float *qkv, const ulong q_off, const int T, const int C, const int NH) {
    out += o_off; lse += l_off; qkv += q_off;
    const int t = get_global_id(0), bh = get_global_id(1);
    if (t >= T) return;
    const int b = bh / NH, h = bh % NH, hs = C / NH, C3 = 3 * C;
    const float scale = rsqrt((float)hs);
    __global const float *base = qkv + (size_t)b * T * C3 + h * hs;
    __global const float *q = base + (size_t)t * C3;
    float acc[ATTN_MAX_HS];
    for (int i = 0; i < hs; i++) acc[i] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    for (int t2 = 0; t2 <= t; t2++) {  /* online softmax: rescale the running sums when the max grows */
        __global const float *k = base + (size_t)t2 * C3 + C, *v = base + (size_t)t2 * C3 + 2 * C;
        float s = 0.0f;
        for (int i = 0; i < hs; i++) s += q[i] * k[i];
        s *= scale;
        const float mn = fmax(m, s), alpha = exp(m - mn), p = exp(s - mn);
        l = l * alpha + p;
        for (int i = 0; i < hs; i++) acc[i] = acc[i] * alpha + p * v[i];
        m = mn;
    }
    __global float *o = out + ((size_t)b * T + t) * C + h * hs;
    for (int i = 0; i < hs; i++) o[i] = acc[i] / l;
    lse[(size_t)bh * T + t] = m + log(l);
}

/* D[b,h,t] = dout_t . out_t: the softmax-backward row term */
__kernel void attention_backward_rowsum(__global float *D, const ulong D_off, __global const float *dout, const ulong d_off,
                                        __global const float *out, const ulong o_off, const int T, const int C, const int NH) {
    D += D_off; dout += d_off; out += o_off;
    const int t = get_global_id(0), bh = get_global_id(1);
    if (t >= T) return;
    const int b = bh / NH, h = bh % NH, hs = C / NH;
    __global const float *dy = dout + ((size_t)b * T + t) * C + h * hs, *o = out + ((size_t)b * T + t) * C + h * hs;
    float s = 0.0f;
    for (int i = 0; i < hs; i++) s += dy[i] * o[i];
    D[(size_t)bh * T + t] = s;
}

/* dq for query row t (item per (b,h,t)); dk, dv for key row t (same item, over later queries);
 * probabilities a = exp(q . k * scale - lse) recomputed */
__kernel void attention_backward(__global float *dqkv, const ulong dq_off, __global const float *D, const ulong D_off,
                                 __global const float *dout, const ulong d_off, __global const float *qkv, const ulong q_off,
                                 __global const float *lse, const ulong l_off, const int T, const int C, const int NH) {
    dqkv += dq_off; D += D_off; dout += d_off; qkv += q_off; lse += l_off;
    const int t = get_global_id(0), bh = get_global_id(1);
    if (t >= T) return;
    const int b = bh / NH, h = bh % NH, hs = C / NH, C3 = 3 * C;
    const float scale = rsqrt((float)hs);
    __global const float *base = qkv + (size_t)b * T * C3 + h * hs;
    __global float *dbase = dqkv + (size_t)b * T * C3 + h * hs;
    __global const float *dy = dout + ((size_t)b * T + t) * C + h * hs;
    __global const float *q = base + (size_t)t * C3;
    const float Dt = D[(size_t)bh * T + t], Lt = lse[(size_t)bh * T + t];
    __global float *dq = dbase + (size_t)t * C3;
    for (int i = 0; i < hs; i++) dq[i] = 0.0f;
    for (int t2 = 0; t2 <= t; t2++) {  /* dq_t = scale * sum_t2 dpre[t,t2] k_t2 */
        __global const float *v = base + (size_t)t2 * C3 + 2 * C, *k = base + (size_t)t2 * C3 + C;
        float d = 0.0f, s = 0.0f;
        for (int i = 0; i < hs; i++) { d += dy[i] * v[i]; s += q[i] * k[i]; }
        const float dpre = exp(s * scale - Lt) * (d - Dt) * scale;
        for (int i = 0; i < hs; i++) dq[i] += dpre * k[i];
    }
    /* this item also owns key/value row t: dk_t, dv_t over queries t3 >= t */
    __global float *dk = dbase + (size_t)t * C3 + C, *dv = dbase + (size_t)t * C3 + 2 * C;
    __global const float *v = base + (size_t)t * C3 + 2 * C, *kt = base + (size_t)t * C3 + C;
    for (int i = 0; i < hs; i++) { dk[i] = 0.0f; dv[i] = 0.0f; }
    for (int t3 = t; t3 < T; t3++) {
        __global const float *dy3 = dout + ((size_t)b * T + t3) * C + h * hs;
        __global const float *q3 = base + (size_t)t3 * C3;
        float d = 0.0f, s = 0.0f;
        for (int i = 0; i < hs; i++) { d += dy3[i] * v[i]; s += q3[i] * kt[i]; }
        const float a = exp(s * scale - lse[(size_t)bh * T + t3]);
        const float dpre = a * (d - D[(size_t)bh * T + t3]) * scale;
        for (int i = 0; i < hs; i++) {
            dk[i] += dpre * q3[i];
            dv[i] += a * dy3[i];
        }
    }
}

/* ---- fused softmax + cross-entropy: one item per row; rows Vp apart, columns [V, Vp) are padding ---- */
__kernel void crossentropy(__global float *logits, const ulong l_off, __global float *losses, const ulong s_off,
                           __global const int *targets, const ulong t_off, const int N, const int V, const int Vp,
                           const float grad_scale, const int write_grad) {
    logits += l_off; losses += s_off; targets += t_off;
    const int n = get_global_id(0);
    if (n >= N) return;
    __global float *x = logits + (size_t)n * Vp;
    float maxv = -INFINITY;
    for (int j = 0; j < V; j++) maxv = fmax(maxv, x[j]);
    const int tgt = targets[n];
    const float tl = x[tgt];
    float sum = 0.0f;
    for (int j = 0; j < V; j++) sum += exp(x[j] - maxv);
    losses[n] = log(sum) + maxv - tl;
    if (write_grad) {
        const float s = grad_scale / sum;
        for (int j = 0; j < V; j++) x[j] = exp(x[j] - maxv) * s;
        for (int j = V; j < Vp; j++) x[j] = 0.0f;
        x[tgt] -= grad_scale;
    }
}

/* ---- optimizer ---- */
__kernel void adamw(__global float *p, const ulong p_off, __global const float *g, const ulong g_off,
                    __global float *m, const ulong m_off, __global float *v, const ulong v_off, const ulong n,
                    const float lr, const float b1, const float b2, const float eps, const float wd,
                    const float bc1, const float bc2, const float gscale) {
    p += p_off; g += g_off; m += m_off; v += v_off;
    const size_t i = get_global_id(0);
    if (i >= n) return;
    const float gi = g[i] * gscale;
    const float mi = b1 * m[i] + (1.0f - b1) * gi, vi = b2 * v[i] + (1.0f - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] -= lr * ((mi / bc1) / (sqrt(vi / bc2) + eps) + wd * p[i]);
}

/* partial[k] = sum of x^2 over chunk k of `chunks` equal chunks (thread-count independent) */
__kernel void sum_squares(__global float *partial, __global const float *x, const ulong x_off, const ulong n,
                          const int chunks) {
    x += x_off;
    const int k = get_global_id(0);
    if (k >= chunks) return;
    const size_t i0 = n * k / chunks, i1 = n * (k + 1) / chunks;
    float s = 0.0f;
    for (size_t i = i0; i < i1; i++) s += x[i] * x[i];
    partial[k] = s;
}

__kernel void fill_zero(__global float *x, const ulong x_off, const ulong n) {
    const size_t i = get_global_id(0);
    if (i < n) x[x_off + i] = 0.0f;
}

/* Barrier-free variant for CPU devices: item (x, y) computes C[4y .. 4y+3][x] straight from global
 * memory. PoCL packs neighbouring items into SIMD lanes, so B's row loads become vector loads and
 * A's loads broadcasts; without barriers it needs no per-item context switching. */
#define A_AT(i, k) (ta ? A[(size_t)(k) * lda + (i)] : A[(size_t)(i) * lda + (k)])
__kernel void gemm_direct4(GEMM_PARAMS) {
    GEMM_APPLY_OFFSETS;
    const int col = get_global_id(0), r0 = get_global_id(1) * 4;
    const int cc = col < N ? col : N - 1;  /* clamped reads keep every lane busy; writes are guarded */
    const int r1 = min(r0 + 1, M - 1), r2 = min(r0 + 2, M - 1), r3 = min(r0 + 3, M - 1), rr0 = min(r0, M - 1);
    float c0 = 0.0f, c1 = 0.0f, c2 = 0.0f, c3 = 0.0f;
    for (int k = 0; k < K; k++) {
        const float b = tb ? B[(size_t)cc * ldb + k] : B[(size_t)k * ldb + cc];
        c0 = fma(A_AT(rr0, k), b, c0);
        c1 = fma(A_AT(r1, k), b, c1);
        c2 = fma(A_AT(r2, k), b, c2);
        c3 = fma(A_AT(r3, k), b, c3);
    }
    if (col >= N) return;
    const float add = has_bias ? bias[col] : 0.0f;
    float acc[4] = {c0, c1, c2, c3};
    for (int i = 0; i < 4; i++) {
        const int row = r0 + i;
        if (row >= M) break;
        float v = acc[i] + add;
        if (accumulate) v += C[(size_t)row * ldc + col];
        C[(size_t)row * ldc + col] = v;
    }
}
