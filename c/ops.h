/* ops.h — the transformer's non-GEMM ops, forward and backward. Row-major float32; shapes in
 * each comment (B batch, T time, C channels, NH heads, N rows = B*T, V vocabulary). Backward
 * ops add (+=) into parameter gradients and, where a residual stream meets them, into dinp. */
#ifndef LOOP_OPS_H
#define LOOP_OPS_H

#include <stddef.h>
#include <stdint.h>

/* out[B,T,C] = wte[tokens[B,T]] + wpe[T] */
void loop_encoder_forward(float *out, const int32_t *tokens, const float *wte, const float *wpe, int B, int T, int C);
/* dwte[V,C] += scatter dout[B,T,C]; dwpe[T,C] += sum over B */
void loop_encoder_backward(float *dwte, float *dwpe, const float *dout, const int32_t *tokens, int B, int T, int C);
/* out[N,C] = LN(inp[N,C]) * weight[C] + bias[C]; mean[N], rstd[N] kept for backward */
void loop_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight, const float *bias, int N, int C);
/* dinp[N,C] +=, dweight[C] +=, dbias[C] += */
void loop_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp, const float *weight, const float *mean, const float *rstd, int N, int C);
/* pre[N,C] += bias[C] (bias may be NULL); out[N,C] = gelu_tanh(pre) */
void loop_bias_gelu_forward(float *pre, float *out, const float *bias, int N, int C);
/* dinp[n] = dout[n] * gelu_tanh'(pre[n]); dinp may be dout */
void loop_gelu_backward(float *dinp, const float *pre, const float *dout, size_t n);
/* out[B,T,C] = causal softmax(q k^T / sqrt(hs)) v per head, from qkv[B,T,3C]; lse[B,NH,T] the
 * log-sum-exp per query; precision 0 (fp32) or 1 (the block products on the bf16 GEMM path) */
void loop_attention_forward(float *out, float *lse, const float *qkv, int B, int T, int C, int NH, int precision);
/* dqkv[B,T,3C] = (overwritten) gradient from dout[B,T,C]; precision as forward */
void loop_attention_backward(float *dqkv, const float *dout, const float *qkv, const float *out, const float *lse, int B, int T, int C, int NH, int precision);
/* out[n] = a[n] + b[n] */
void loop_residual_forward(float *out, const float *a, const float *b, size_t n);
/* Dropout (training only) of one tensor in one step, inverted: element e of the tensor is kept with
 * probability 1 - p and scaled by 1/(1 - p), else zeroed. Whether it is kept is word (g mod 4) of
 * Philox4x32-10 with key (seed low, seed high) and counter (g / 4 low, g / 4 high, site, step), where
 * g = offset + e: a pure function of those numbers, so any thread count, a resumed run and backward
 * (which draws the mask again instead of storing it) all see the same mask. Kept when the word is
 * >= floor(p * 2^32); the scale is 1/(1 - p) in double, rounded to float. */
typedef struct {
    double p;        /* drop probability, 0 <= p < 1 */
    uint64_t seed;   /* the run's seed */
    uint64_t offset; /* g of the tensor's first element (its rows before it in the global batch x width) */
    uint32_t step;   /* the training step */
    uint32_t site;   /* which tensor: 0 embeddings, 2l + 1 layer l's attention output, 2l + 2 its MLP output */
} loop_dropout_key;
/* out[n] = dropout(inp[n]); out may be inp */
void loop_dropout(float *out, const float *inp, size_t n, const loop_dropout_key *key);
/* out[n] = a[n] + dropout(b[n]): the residual add of a dropped-out branch */
void loop_residual_dropout(float *out, const float *a, const float *b, size_t n, const loop_dropout_key *key);
/* dmasked[N,C] = dropout(dout[N,C]) (the branch's gradient through its mask); dbias[C] += its column sums */
void loop_dropout_bias_backward(float *dmasked, float *dbias, const float *dout, int N, int C, const loop_dropout_key *key);
/* dbias[C] += column sums of dout[N,C] */
void loop_bias_backward(float *dbias, const float *dout, int N, int C);
/* losses[N] = cross-entropy of softmax(logits[N,V]) at targets[N]; with write_grad, logits is
 * overwritten by grad_scale * (softmax - onehot) */
void loop_crossentropy(float *logits, float *losses, const int32_t *targets, int N, int V, int Vp, float grad_scale, int write_grad);
/* decoding with a KV cache: y[N] = x[K].W[K,N] (+bias); y[N] = W[N,K].x[K] (the tied head);
 * one query per head q[NH*hs] against cached kc, vc [NH, cap, hs], positions 0..n-1 -> out[NH*hs] */
void loop_gemv(float *y, const float *x, const float *W, const float *bias, int K, int N);
void loop_gemv_t(float *y, const float *x, const float *W, int K, int N);
void loop_attention_decode(float *out, const float *q, const float *kc, const float *vc, int NH, int hs, int n, int cap);
/* one AdamW step over n floats; grad_scale applies clipping; bias_corr_i = 1 - beta_i^t */
void loop_adamw(float *param, const float *grad, float *m, float *v, size_t n, float lr, float beta1, float beta2, float eps, float weight_decay, float bias_corr1, float bias_corr2, float grad_scale);
/* sum of x[n]^2 in double, independent of the thread count */
double loop_sum_squares(const float *x, size_t n);
/* x[n] *= s */
void loop_scale(float *x, float s, size_t n);

#endif
