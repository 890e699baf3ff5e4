/* gemm.h — C[M,N] = op(A)[M,K] . op(B)[K,N] (+ bias[N]) (+ C), row-major float32.
 * op(X) is X or its transpose (trans_* = 1). lda/ldb/ldc are the row strides of A, B and C as
 * stored. accumulate = 1 adds to C instead of overwriting it. bias may be NULL. */
#ifndef LOOP_GEMM_H
#define LOOP_GEMM_H

void loop_gemm(int trans_a, int trans_b, int M, int N, int K, const float *A, long lda,
               const float *B, long ldb, float *C, long ldc, const float *bias, int accumulate);
/* The same with A and B rounded to bf16 (round to nearest even) and products summed in fp32:
 * on AVX512-BF16 or AMX where the CPU has them (runtime.h: loop_bf16_path_*), else on fp32 FMAs. */
void loop_gemm_bf16(int trans_a, int trans_b, int M, int N, int K, const float *A, long lda,
                    const float *B, long ldb, float *C, long ldc, const float *bias, int accumulate);

/* Cache sizes in bytes (the Python side reads them from sysfs). Block sizes follow from them
 * unless set explicitly (0 = derive). */
void loop_gemm_set_cache_sizes(long l1d, long l2, long l3);
void loop_gemm_set_blocking(int mc, int kc, int nc);
/* A C over this many MiB (default 32), with 64-byte aligned rows, written in one K block without
 * accumulate, is stored non-temporally (AVX-512); 0: never. For tuning and A/B timing. */
void loop_gemm_set_stream_min_mib(int mib);
/* For precision 0 (fp32) or 1 (bf16), out: mr, nr, mc, kc, nc of the micro-kernel in use,
 * short_m_rows (the largest M that takes the short-M path), stream_min_mib (the smallest C
 * written with streaming stores; 0 = never) */
void loop_gemm_get_blocking(int precision, int *out7);
/* For precision 0 (fp32) or 1 (bf16), out: the facts blocking() derives the block sizes from, of
 * the micro-kernel in use: mr, nr, kpack, elem_bytes, b_panel_in_l1, and stream_min_mib if the
 * kernel can stream (else 0); Python works out the blocking for other caches from them */
void loop_gemm_kernel_facts(int precision, int *out6);
/* the name of the micro-kernel GEMMs of that precision use now */
const char *loop_gemm_kernel_name(int precision);

#endif
