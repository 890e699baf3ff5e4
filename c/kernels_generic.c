/* kernels_generic.c — portable C build of every kernel (x86-64 baseline SSE2 after
 * auto-vectorisation): a 4x16 micro-kernel the compiler vectorises, and the ops of ops_impl.h. */
#define ISA_FN(name) name##_generic
#include "ops_impl.h"

static void ukernel_generic(int kc, const float *restrict a, const float *restrict b,
                            float *restrict c, long ldc, int accumulate) {
    float acc[4][16];
    memset(acc, 0, sizeof acc);
    for (int k = 0; k < kc; k++) {
        for (int i = 0; i < 4; i++) {
            float ai = a[i];
            #pragma omp simd
            for (int j = 0; j < 16; j++) acc[i][j] += ai * b[j];
        }
        a += 4;
        b += 16;
    }
    for (int i = 0; i < 4; i++) {
        float *ci = c + (long)i * ldc;
        for (int j = 0; j < 16; j++) ci[j] = accumulate ? ci[j] + acc[i][j] : acc[i][j];
    }
}

double fma_peak_generic(long iters) {
    float x[8][4];
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 4; j++) x[i][j] = (float)(i + j);
    for (long it = 0; it < iters; it++)
        for (int i = 0; i < 8; i++)
            #pragma omp simd
            for (int j = 0; j < 4; j++) x[i][j] = x[i][j] * 0.9999999f + 1e-7f;
    volatile float sink = x[0][0] + x[7][3];
    (void)sink;
    return (double)iters * 8 * 4 * 2;
}

ISA_KERNEL_TABLE(loop_kernels_generic, 4, 16, ukernel_generic, fma_peak_generic);
