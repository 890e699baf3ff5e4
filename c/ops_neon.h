/* ops_neon.h — NEON intrinsics versions of the hot non-GEMM loops (LayerNorm forward, GELU
 * forward and backward, softmax + cross-entropy, AdamW), included by kernels_neon.c after
 * ops_impl.h, which leaves these five out under ISA_OWN_HOT_LOOPS. Same parallel split, same
 * formulas and the same exp polynomial as ops_impl.h, four lanes at a time with a scalar tail; every sum runs in a fixed order on one thread, so results do
 * not depend on the thread count. */
#include <arm_neon.h>

/* fast_expf of ops_impl.h on four lanes; vrndnq rounds to nearest even, as its 1.5 * 2^23 trick does */
static inline float32x4_t expq_neon(float32x4_t x) {
    x = vminq_f32(vmaxq_f32(x, vdupq_n_f32(-87.0f)), vdupq_n_f32(88.0f));
    const float32x4_t nf = vrndnq_f32(vmulq_f32(x, vdupq_n_f32(1.44269504088896341f)));
    float32x4_t r = vfmsq_f32(x, nf, vdupq_n_f32(0.693359375f));
    r = vfmaq_f32(r, nf, vdupq_n_f32(2.12194440e-4f));
    float32x4_t p = vdupq_n_f32(1.9875691500e-4f);
    p = vfmaq_f32(vdupq_n_f32(1.3981999507e-3f), p, r);
    p = vfmaq_f32(vdupq_n_f32(8.3334519073e-3f), p, r);
    p = vfmaq_f32(vdupq_n_f32(4.1665795894e-2f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.6666665459e-1f), p, r);
    p = vfmaq_f32(vdupq_n_f32(5.0000001201e-1f), p, r);
    const float32x4_t y = vfmaq_f32(vaddq_f32(r, vdupq_n_f32(1.0f)), vmulq_f32(p, r), r);
    const int32x4_t scale = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(nf), vdupq_n_s32(127)), 23);
    return vmulq_f32(y, vreinterpretq_f32_s32(scale));
}

static inline float32x4_t tanhq_neon(float32x4_t x) {
    const float32x4_t one = vdupq_n_f32(1.0f);
    return vsubq_f32(one, vdivq_f32(vdupq_n_f32(2.0f), vaddq_f32(expq_neon(vaddq_f32(x, x)), one)));
}

static void ISA_FN(layernorm_forward)(float *out, float *mean, float *rstd, const float *inp,
                                          const float *weight, const float *bias, int N, int C) {
    #pragma omp parallel num_threads(loop_nthreads)
    {
        BUSY_BEGIN;
        PAR_FOR
        for (int n = 0; n < N; n++) {
            const float *x = inp + (size_t)n * C;
            float32x4_t s4 = vdupq_n_f32(0.0f);
            int c = 0;
            for (; c + 4 <= C; c += 4) s4 = vaddq_f32(s4, vld1q_f32(x + c));
            float s = vaddvq_f32(s4);
            for (; c < C; c++) s += x[c];
            const float m = s / C;
            const float32x4_t m4 = vdupq_n_f32(m);
            float32x4_t v4 = vdupq_n_f32(0.0f);
            for (c = 0; c + 4 <= C; c += 4) {
                const float32x4_t d = vsubq_f32(vld1q_f32(x + c), m4);
                v4 = vfmaq_f32(v4, d, d);
            }
            float v = vaddvq_f32(v4);
            for (; c < C; c++) v += (x[c] - m) * (x[c] - m);
            const float r = 1.0f / sqrtf(v / C + 1e-5f);
            const float32x4_t r4 = vdupq_n_f32(r);
            float *o = out + (size_t)n * C;
            for (c = 0; c + 4 <= C; c += 4) {
                const float32x4_t xhat = vmulq_f32(vsubq_f32(vld1q_f32(x + c), m4), r4);
                vst1q_f32(o + c, vfmaq_f32(vld1q_f32(bias + c), xhat, vld1q_f32(weight + c)));
            }
            for (; c < C; c++) o[c] = (x[c] - m) * r * weight[c] + bias[c];
            mean[n] = m;
            rstd[n] = r;
        }
        BUSY_END;
    }
}

static inline float32x4_t gelu_inner_neon(float32x4_t x) { /* sqrt(2/pi) * (x + 0.044715 x^3) */
    const float32x4_t x3 = vmulq_f32(vmulq_f32(x, x), x);
    return vmulq_f32(vdupq_n_f32(GELU_S), vfmaq_f32(x, vdupq_n_f32(GELU_C), x3));
}

static void ISA_FN(bias_gelu_forward)(float *pre, float *out, const float *bias, int N, int C) {
    #pragma omp parallel num_threads(loop_nthreads)
    {
        BUSY_BEGIN;
        PAR_FOR
        for (int n = 0; n < N; n++) {
            float *p = pre + (size_t)n * C, *o = out + (size_t)n * C;
            int c = 0;
            for (; c + 4 <= C; c += 4) {
                float32x4_t x = vld1q_f32(p + c);
                if (bias) x = vaddq_f32(x, vld1q_f32(bias + c));
                vst1q_f32(p + c, x);
                const float32x4_t half_x = vmulq_f32(vdupq_n_f32(0.5f), x);
                vst1q_f32(o + c, vfmaq_f32(half_x, half_x, tanhq_neon(gelu_inner_neon(x))));
            }
            for (; c < C; c++) {
                float x = bias ? p[c] + bias[c] : p[c];
                p[c] = x;
                o[c] = 0.5f * x * (1.0f + fast_tanhf(GELU_S * (x + GELU_C * x * x * x)));
            }
        }
        BUSY_END;
    }
}

static void ISA_FN(gelu_backward)(float *dinp, const float *pre, const float *dout, size_t n) {
    const size_t block = 4096;
    long nblocks = (long)((n + block - 1) / block);
    #pragma omp parallel num_threads(loop_nthreads)
    {
        BUSY_BEGIN;
        PAR_FOR
        for (long b = 0; b < nblocks; b++) {
            size_t i = (size_t)b * block, i1 = i + block < n ? i + block : n;
            const float32x4_t half = vdupq_n_f32(0.5f), one = vdupq_n_f32(1.0f);
            for (; i + 4 <= i1; i += 4) {
                const float32x4_t x = vld1q_f32(pre + i), th = tanhq_neon(gelu_inner_neon(x));
                const float32x4_t sech2 = vfmsq_f32(one, th, th);
                /* 0.5 (1 + th) + 0.5 x sech2 sqrt(2/pi) (1 + 3 * 0.044715 x^2) */
                const float32x4_t slope = vfmaq_f32(one, vdupq_n_f32(3.0f * GELU_C), vmulq_f32(x, x));
                const float32x4_t right = vmulq_f32(vmulq_f32(vmulq_f32(half, x), sech2),
                                                    vmulq_f32(vdupq_n_f32(GELU_S), slope));
                const float32x4_t d = vfmaq_f32(right, half, vaddq_f32(one, th));
                vst1q_f32(dinp + i, vmulq_f32(vld1q_f32(dout + i), d));
            }
            for (; i < i1; i++) {
                float x = pre[i];
                float th = fast_tanhf(GELU_S * (x + GELU_C * x * x * x));
                float sech2 = 1.0f - th * th;
                float d = 0.5f * (1.0f + th) + 0.5f * x * sech2 * GELU_S * (1.0f + 3.0f * GELU_C * x * x);
                dinp[i] = dout[i] * d;
            }
        }
        BUSY_END;
    }
}

static void ISA_FN(crossentropy)(float *logits, float *losses, const int32_t *targets, int N, int V, int Vp,
                                     float grad_scale, int write_grad) {
    #pragma omp parallel num_threads(loop_nthreads)
    {
        BUSY_BEGIN;
        PAR_FOR
        for (int n = 0; n < N; n++) {
            float *x = logits + (size_t)n * Vp;
            float32x4_t max4 = vdupq_n_f32(-INFINITY);
            int j = 0;
            for (; j + 4 <= V; j += 4) max4 = vmaxq_f32(max4, vld1q_f32(x + j));
            float maxv = vmaxvq_f32(max4);
            for (; j < V; j++) maxv = x[j] > maxv ? x[j] : maxv;
            const float target_logit = x[targets[n]];
            const float32x4_t m4 = vdupq_n_f32(maxv);
            float32x4_t sum4 = vdupq_n_f32(0.0f);
            for (j = 0; j + 4 <= V; j += 4) {
                const float32x4_t e = expq_neon(vsubq_f32(vld1q_f32(x + j), m4));
                if (write_grad) vst1q_f32(x + j, e);
                sum4 = vaddq_f32(sum4, e);
            }
            float sum = vaddvq_f32(sum4);
            for (; j < V; j++) {
                const float e = fast_expf(x[j] - maxv);
                if (write_grad) x[j] = e;
                sum += e;
            }
            if (write_grad) {
                const float s = grad_scale / sum;
                const float32x4_t s4 = vdupq_n_f32(s);
                for (j = 0; j + 4 <= V; j += 4) vst1q_f32(x + j, vmulq_f32(vld1q_f32(x + j), s4));
                for (; j < V; j++) x[j] *= s;
                for (j = V; j < Vp; j++) x[j] = 0.0f;
                x[targets[n]] -= grad_scale;
            }
            losses[n] = logf(sum) + maxv - target_logit;
        }
        BUSY_END;
    }
}

static void ISA_FN(adamw)(float *param, const float *grad, float *m, float *v, size_t n, float lr, float beta1,
                              float beta2, float eps, float weight_decay, float bias_corr1, float bias_corr2,
                              float grad_scale) {
    const size_t block = 8192;
    long nblocks = (long)((n + block - 1) / block);
    const float ib1 = 1.0f / bias_corr1, ib2 = 1.0f / bias_corr2;
    #pragma omp parallel num_threads(loop_nthreads)
    {
        BUSY_BEGIN;
        PAR_FOR
        for (long k = 0; k < nblocks; k++) {
            size_t i = (size_t)k * block, i1 = i + block < n ? i + block : n;
            const float32x4_t b1 = vdupq_n_f32(beta1), b2 = vdupq_n_f32(beta2), nb1 = vdupq_n_f32(1.0f - beta1),
                              nb2 = vdupq_n_f32(1.0f - beta2), gs = vdupq_n_f32(grad_scale), ib1v = vdupq_n_f32(ib1),
                              ib2v = vdupq_n_f32(ib2), epsv = vdupq_n_f32(eps), lrv = vdupq_n_f32(lr),
                              wd = vdupq_n_f32(weight_decay);
            for (; i + 4 <= i1; i += 4) {
                const float32x4_t g = vmulq_f32(vld1q_f32(grad + i), gs);
                const float32x4_t mi = vfmaq_f32(vmulq_f32(nb1, g), b1, vld1q_f32(m + i));
                const float32x4_t vi = vfmaq_f32(vmulq_f32(vmulq_f32(nb2, g), g), b2, vld1q_f32(v + i));
                vst1q_f32(m + i, mi);
                vst1q_f32(v + i, vi);
                const float32x4_t update =
                    vdivq_f32(vmulq_f32(mi, ib1v), vaddq_f32(vsqrtq_f32(vmulq_f32(vi, ib2v)), epsv));
                const float32x4_t p = vld1q_f32(param + i);
                vst1q_f32(param + i, vfmsq_f32(p, lrv, vfmaq_f32(update, wd, p)));
            }
            for (; i < i1; i++) {
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
