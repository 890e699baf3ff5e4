/* gemm_pack_bf16.h — packing of bf16 GEMM panels for the native bf16 micro-kernels (gemm_bf16.c).
 *
 * Conversion happens while packing, which copies every panel anyway, so no bf16 copy of any
 * matrix is ever kept. K is interleaved in pairs, as VDPBF16PS and TDPBF16PS read it: one
 * uint32 holds bf16(x[k]) in its low half and bf16(x[k+1]) in its high half. K is zero-padded
 * to the kernel's .kpack (2 for AVX512-BF16, 32 for an AMX tile's 16 pairs). Layouts, for a
 * panel of mr rows (A) or nr columns (B) and P = kc_padded / 2 pairs:
 *   pairs (AVX512-BF16 A and B, AMX B):  panel[p][mr or nr]          (B: rows of an AMX B tile)
 *   AMX A:                               panel[p / 16][mr][p % 16]   (rows of 16-row A tiles)
 * Included once per target (ISA_FN names each copy). Where PACK_VCVTNE2PS2BF16 is defined (the native
 * copies, compiled for AVX512-BF16), full runs of 16 pairs are converted by VCVTNE2PS2BF16, 32 values
 * per instruction; bf16_pair converts the rest, bit for bit as the instruction does. */
#include "bf16.h"

/* A panels; `amx` selects the tile layout and 32-padding, else pairs and 2-padding */
static inline __attribute__((always_inline)) void ISA_FN(pack_a_pairs_body)(uint32_t *dst, const float *A, long lda,
                                                                             int trans, long i0, long k0, int m,
                                                                             int kc, int mr, const int amx) {
    const int kpack = amx ? 32 : 2, kcp = (kc + kpack - 1) / kpack * kpack, np = kcp / 2, full = kc / 2;
#define PAIR_AT(r, p) (amx ? (size_t)((p) / 16) * mr * 16 + (size_t)(r) * 16 + (p) % 16 : (size_t)(p) * mr + (r))
    for (int ip = 0; ip < m; ip += mr) {
        uint32_t *d = dst + (size_t)ip * np;
        const int rows = m - ip < mr ? m - ip : mr;
        if (!trans) {
            for (int r = 0; r < rows; r++) {
                const float *src = A + (size_t)(i0 + ip + r) * lda + k0;
                int p = 0;
#ifdef PACK_VCVTNE2PS2BF16
                /* AMX: 16 pairs of a row are 64 contiguous bytes of its tile row, in memory order */
                for (; amx && p + 16 <= full; p += 16) {
                    const __m512 lo = _mm512_loadu_ps(src + 2 * p), hi = _mm512_loadu_ps(src + 2 * p + 16);
                    _mm512_storeu_si512(d + PAIR_AT(r, p), (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
                }
#endif
                for (; p < full; p++) d[PAIR_AT(r, p)] = bf16_pair(src[2 * p], src[2 * p + 1]);
                for (int p = full; p < np; p++) d[PAIR_AT(r, p)] = 2 * p < kc ? bf16_pair(src[2 * p], 0.0f) : 0u;
            }
        } else {
            for (int p = 0; p < np; p++) {
                const float *s0 = 2 * p < kc ? A + (size_t)(k0 + 2 * p) * lda + i0 + ip : NULL;
                const float *s1 = 2 * p + 1 < kc ? A + (size_t)(k0 + 2 * p + 1) * lda + i0 + ip : NULL;
                for (int r = 0; r < rows; r++) d[PAIR_AT(r, p)] = bf16_pair(s0 ? s0[r] : 0.0f, s1 ? s1[r] : 0.0f);
            }
        }
        for (int r = rows; r < mr; r++)
            for (int p = 0; p < np; p++) d[PAIR_AT(r, p)] = 0u;
    }
#undef PAIR_AT
}

/* one B panel [p][nr], K padded to kpack */
static inline __attribute__((always_inline)) void ISA_FN(pack_b_pairs_body)(uint32_t *dst, const float *B, long ldb,
                                                                             int trans, long k0, long j0, int n,
                                                                             int kc, int nr, const int kpack) {
    const int np = (kc + kpack - 1) / kpack * kpack / 2;
    if (!trans) {
        for (int p = 0; p < np; p++) {
            uint32_t *dp = dst + (size_t)p * nr;
            if (2 * p >= kc) {
                for (int j = 0; j < nr; j++) dp[j] = 0u;
                continue;
            }
            const float *s0 = B + (size_t)(k0 + 2 * p) * ldb + j0;
            if (2 * p + 1 < kc) {
                const float *s1 = s0 + ldb;
                int j = 0;
#ifdef PACK_VCVTNE2PS2BF16
                /* 16 columns of two K rows: convert both, then interleave them into (lo, hi) pairs */
                const __m512i interleave = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
                                                            23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
                for (; j + 16 <= n; j += 16) {
                    const __m512i both = (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(s1 + j), _mm512_loadu_ps(s0 + j));
                    _mm512_storeu_si512(dp + j, _mm512_permutexvar_epi16(interleave, both));
                }
#endif
                for (; j < n; j++) dp[j] = bf16_pair(s0[j], s1[j]);
            } else {
                for (int j = 0; j < n; j++) dp[j] = bf16_pair(s0[j], 0.0f);
            }
            for (int j = n; j < nr; j++) dp[j] = 0u;
        }
    } else {
        const int full = kc / 2;
        for (int j = 0; j < n; j++) {
            const float *src = B + (size_t)(j0 + j) * ldb + k0;
            for (int p = 0; p < full; p++) dst[(size_t)p * nr + j] = bf16_pair(src[2 * p], src[2 * p + 1]);
            for (int p = full; p < np; p++) dst[(size_t)p * nr + j] = 2 * p < kc ? bf16_pair(src[2 * p], 0.0f) : 0u;
        }
        for (int j = n; j < nr; j++)
            for (int p = 0; p < np; p++) dst[(size_t)p * nr + j] = 0u;
    }
}

static __attribute__((unused)) void ISA_FN(pack_a_pairs)(void *dst, const float *A, long lda, int trans, long i0, long k0, int m, int kc,
                                 int mr) {
    ISA_FN(pack_a_pairs_body)((uint32_t *)dst, A, lda, trans, i0, k0, m, kc, mr, 0);
}
static __attribute__((unused)) void ISA_FN(pack_a_amx)(void *dst, const float *A, long lda, int trans, long i0, long k0, int m, int kc,
                               int mr) {
    ISA_FN(pack_a_pairs_body)((uint32_t *)dst, A, lda, trans, i0, k0, m, kc, mr, 1);
}
static __attribute__((unused)) void ISA_FN(pack_b_pairs)(void *dst, const float *B, long ldb, int trans, long k0, long j0, int n, int kc,
                                 int nr) {
    ISA_FN(pack_b_pairs_body)((uint32_t *)dst, B, ldb, trans, k0, j0, n, kc, nr, 2);
}
static __attribute__((unused)) void ISA_FN(pack_b_amx)(void *dst, const float *B, long ldb, int trans, long k0, long j0, int n, int kc,
                               int nr) {
    ISA_FN(pack_b_pairs_body)((uint32_t *)dst, B, ldb, trans, k0, j0, n, kc, nr, 32);
}
