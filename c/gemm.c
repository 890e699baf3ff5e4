/* gemm.c — BLIS-structured GEMM driver: pack, block for the caches, call the micro-kernel.
 *
 *   for pc in K step KC
 *     for jc in N step NC          B panel  KC x NC  lives in L3, shared by all threads
 *       pack B(pc:pc+KC, jc:jc+NC)                    (threads split the NR-wide panels)
 *       for ic in M step MC        A block  MC x KC  lives in L2, one per thread
 *         pack A(ic:ic+MC, pc:pc+KC)                   (once per pc when N > NC: reused per jc)
 *         for jr in NC step NR     B micro-panel KC x NR stays in L1 across the ir loop
 *           for ir in MC step MR
 *             micro-kernel C(ic+ir, jc+jr) (+)= A_panel . B_panel
 *
 * KC is sized so a B micro-panel is 1.5x L1d (half of L1d for AMX, whose B tiles must come from
 * L1 at the unit's rate): deeper panels amortise the C tile's loads and
 * stores, and the panel streams from L2 well enough (measured with benchmarks/gemm_table.py:
 * K=512 forward GEMMs went from 288 to 333 GFLOP/s against KC sized to L1d alone); MC so an A block fills half of L2, NC so
 * a B panel fills a quarter of L3 (capped at 4096); KC and NC are multiples of 64 (the
 * original note's 64-block tiling; NC of lcm(NR, 64)), MC a multiple of lcm(MR, 64); each call then evens KC out over
 * its K (a multiple of 16) so no block is a thin sliver. Threads split the ic loop,
 * with MC shrunk so every thread gets an equal share. Two special cases: a short M (packed A
 * fits in L2) splits N instead (gemm_short_m), and a large write-once C is stored
 * non-temporally. The K order of every sum is fixed by KC alone, so results do not depend on
 * the thread count or the path.
 *
 * Precision is a property of the micro-kernel (isa_variants.h): fp32, or bf16 with the inputs
 * rounded while packing. Panels are addressed in bytes: a panel of r rows and kc K entries holds
 * r * round_up(kc, kpack) elements of elem_bytes each; bf16 panels are half as large, so their
 * KC, MC and NC come out twice as large for the same caches. */
#include <stdint.h>
#include <string.h>
#include "gemm.h"
#include "internal.h"
#include "isa_variants.h"

static long cache_l1d = 32 * 1024, cache_l2 = 1024 * 1024, cache_l3 = 8 * 1024 * 1024;
static int fixed_mc, fixed_kc, fixed_nc;
/* a C this large cannot stay in cache until it is read again, so write it past the cache */
static int stream_min_mib = 32;

void loop_gemm_set_stream_min_mib(int mib) { stream_min_mib = mib; }

void loop_gemm_set_cache_sizes(long l1d, long l2, long l3) {
    if (l1d > 0) cache_l1d = l1d;
    if (l2 > 0) cache_l2 = l2;
    if (l3 > 0) cache_l3 = l3;
}

void loop_gemm_set_blocking(int mc, int kc, int nc) {
    fixed_mc = mc > 0 ? mc : 0;
    fixed_kc = kc > 0 ? kc : 0;
    fixed_nc = nc > 0 ? nc : 0;
}

static long round_down(long x, long m) { return x / m * m; }
static long round_up(long x, long m) { return (x + m - 1) / m * m; }
static long gcd(long a, long b) { return b ? gcd(b, a % b) : a; }

/* The block-size rules of every micro-kernel and precision (BLIS's context): from the caches and
 * the kernel's MR, NR and packed element size alone. */
static void blocking(const loop_gemm_kernel *gk, int *mc, int *kc, int *nc) {
    const long eb = gk->elem_bytes;
    const long b_panel_budget = gk->b_panel_in_l1 ? cache_l1d / 2 : cache_l1d * 3 / 2;
    long k = round_down(b_panel_budget / (gk->nr * eb), 64);
    k = k < 64 ? 64 : (k > 4096 / eb ? 4096 / eb : k);
    long mstep = gk->mr * 64 / gcd(gk->mr, 64);
    long m = round_down(cache_l2 / 2 / (k * eb), mstep);
    m = m < mstep ? mstep : m;
    long nstep = gk->nr * 64 / gcd(gk->nr, 64); /* whole NR panels (NEON's NR is 12) */
    long n = round_down(cache_l3 / 4 / (k * eb), nstep);
    n = n < nstep ? nstep : (n > 4096 ? round_down(4096, nstep) : n);
    *kc = fixed_kc ? fixed_kc : (int)k;
    *mc = fixed_mc ? (int)round_up(fixed_mc, gk->mr) : (int)m;
    *nc = fixed_nc ? (int)round_up(fixed_nc, gk->nr) : (int)n;
}

/* short M: the whole packed A (M x KC) stays in L2 with room for B panels streaming through
 * (an explicitly set MC caps it instead, so tests can force either path) */
static long short_m_rows(const loop_gemm_kernel *gk, int MC, int KC) {
    return fixed_mc ? MC : cache_l2 * 3 / 4 / (KC * (long)gk->elem_bytes);
}

/* bytes of a packed panel of `rows` rows (A) or columns (B) over kc K entries */
static size_t panel_bytes(const loop_gemm_kernel *gk, long rows, int kc) {
    return (size_t)rows * (size_t)round_up(kc, gk->kpack) * (size_t)gk->elem_bytes;
}

static float *scratch_bytes(int slot, size_t bytes) { return loop_scratch(slot, (bytes + 3) / 4); }

void loop_gemm_get_blocking(int precision, int *out7) {
    const loop_gemm_kernel *gk = loop_gemm_kernel_active(precision);
    out7[0] = gk->mr;
    out7[1] = gk->nr;
    blocking(gk, &out7[2], &out7[3], &out7[4]);
    out7[5] = (int)(short_m_rows(gk, out7[2], out7[3]) / gk->mr * gk->mr);
    out7[6] = gk->can_stream ? stream_min_mib : 0;
}

void loop_gemm_kernel_facts(int precision, int *out6) {
    const loop_gemm_kernel *gk = loop_gemm_kernel_active(precision);
    out6[0] = gk->mr;
    out6[1] = gk->nr;
    out6[2] = gk->kpack;
    out6[3] = gk->elem_bytes;
    out6[4] = gk->b_panel_in_l1;
    out6[5] = gk->can_stream ? stream_min_mib : 0;
}

const char *loop_gemm_kernel_name(int precision) { return loop_gemm_kernel_active(precision)->name; }

/* C rows get bias (overwrite or add) so the main loop can always accumulate. */
static void apply_bias(float *C, long ldc, const float *bias, int M, int N, int accumulate) {
    #pragma omp parallel num_threads(loop_nthreads)
    {
        BUSY_BEGIN;
        #pragma omp for schedule(static) nowait
        for (int i = 0; i < M; i++) {
            float *c = C + (size_t)i * ldc;
            if (accumulate)
                for (int j = 0; j < N; j++) c[j] += bias[j];
            else
                memcpy(c, bias, sizeof(float) * N);
        }
        BUSY_END;
    }
}

/* One MR x NR tile of C (+)= a_panel . b_panel; a partial tile goes through `edge`, a full one
 * is stored by the micro-kernel itself (streaming past the cache when `stream`). */
static inline void micro_tile(const loop_gemm_kernel *gk, int kc, const char *a, const char *b, float *c,
                              long ldc, int mrcur, int ncur, int acc, int stream, float *edge) {
    const int MR = gk->mr, NR = gk->nr, kcp = (int)round_up(kc, gk->kpack);
    if (mrcur == MR && ncur == NR) {
        gk->ukernel(kcp, a, b, c, ldc, stream ? LOOP_STORE_STREAM : acc);
        return;
    }
    gk->ukernel(kcp, a, b, edge, NR, 0);
    for (int i = 0; i < mrcur; i++)
        for (int j = 0; j < ncur; j++)
            c[(size_t)i * ldc + j] = acc ? c[(size_t)i * ldc + j] + edge[i * NR + j] : edge[i * NR + j];
}

/* Short, wide C (the weight gradients d x 3d, d x 4d with d <= ~680): an M split would give each
 * thread a sliver of rows and make every thread read B panels the other one packed. Instead
 * the threads pack all of A together (double-buffered, so one barrier per K block), then split
 * the NR panels of N: each packs its B micro-panel and runs it against the whole A block while
 * the panel is still in cache, as OpenBLAS does. (Packing 4 panels per pass, to read longer
 * stretches of B's rows, measured within noise of this.) Same K blocks, same micro-kernel and the same
 * order per element as the general path, so the results are bit-identical to it. */
static void gemm_short_m(const loop_gemm_kernel *gk, int trans_a, int trans_b, int M, int N, int K, int KC,
                         const float *A, long lda, const float *B, long ldb, float *C, long ldc, int accumulate) {
    const int MR = gk->mr, NR = gk->nr, nth = loop_nthreads;
    const int mpanels = (M + MR - 1) / MR, npanels = (N + NR - 1) / NR;
    const size_t ablock = panel_bytes(gk, (long)mpanels * MR, KC), bpanel = panel_bytes(gk, NR, KC);
    char *apack = (char *)scratch_bytes(SCRATCH_PACK_A0, 2 * ablock);
    char *bpanels = (char *)scratch_bytes(SCRATCH_PACK_B, (size_t)nth * bpanel);
    #pragma omp parallel num_threads(nth)
    {
        float edge[LOOP_MAX_MR * LOOP_MAX_NR] __attribute__((aligned(LOOP_ALIGN)));
        char *bp = bpanels + (size_t)omp_get_thread_num() * bpanel;
        if (gk->thread_begin) gk->thread_begin();
        for (int pc = 0, step = 0; pc < K; pc += KC, step++) {
            const int kc = K - pc < KC ? K - pc : KC;
            const int acc = accumulate || pc > 0;
            char *ap = apack + (step & 1) * ablock;
            {
                BUSY_BEGIN; /* one contiguous run of panels per thread: transposed A is read row by row */
                const int t = omp_get_thread_num();
                const int i0 = mpanels * t / nth * MR, i1 = mpanels * (t + 1) / nth * MR;
                if (i1 > i0) gk->pack_a(ap + panel_bytes(gk, i0, kc), A, lda, trans_a, i0, pc, (i1 < M ? i1 : M) - i0, kc, MR);
                BUSY_END;
            }
            #pragma omp barrier
            {
                BUSY_BEGIN;
                #pragma omp for schedule(static) nowait
                for (int p = 0; p < npanels; p++) {
                    const int jr = p * NR, ncur = N - jr < NR ? N - jr : NR;
                    gk->pack_b(bp, B, ldb, trans_b, pc, jr, ncur, kc, NR);
                    for (int ir = 0; ir < M; ir += MR)
                        micro_tile(gk, kc, ap + panel_bytes(gk, ir, kc), bp, C + (size_t)ir * ldc + jr, ldc,
                                   M - ir < MR ? M - ir : MR, ncur, acc, 0, edge);
                }
                BUSY_END;
            }
        }
        if (gk->thread_end) gk->thread_end();
    }
}

static void gemm(const loop_gemm_kernel *gk, int trans_a, int trans_b, int M, int N, int K, const float *A,
                 long lda, const float *B, long ldb, float *C, long ldc, const float *bias, int accumulate) {
    const int MR = gk->mr, NR = gk->nr;
    int MC, KC, NC;
    blocking(gk, &MC, &KC, &NC);
    if (bias) {
        apply_bias(C, ldc, bias, M, N, accumulate);
        accumulate = 1;
    }
    /* even K blocks (K=512 with KC=384 -> 2 x 256, not 384 + a 128 sliver); depends on K alone */
    {
        const int kblocks = (K + KC - 1) / KC;
        const int even = (int)round_up((K + kblocks - 1) / kblocks, gk->kpack > 16 ? gk->kpack : 16);
        KC = even < KC ? even : KC;
    }
    const int nth = loop_nthreads;
    if (round_up(M, MR) <= short_m_rows(gk, MC, KC) && N >= 2 * nth * NR) {
        gemm_short_m(gk, trans_a, trans_b, M, N, K, KC, A, lda, B, ldb, C, ldc, accumulate);
        return;
    }
    /* equal M blocks, a multiple of the thread count, each a multiple of MR */
    long mpanels = (M + MR - 1) / MR;
    long mblocks = round_up((M + MC - 1) / MC, nth);
    if (mblocks > mpanels) mblocks = mpanels;
    const int mc = (int)round_up((M + mblocks - 1) / mblocks, MR);
    mblocks = (M + mc - 1) / mc;
    const int nc_max = N < NC ? (int)round_up(N, NR) : NC;
    /* Wide C (N > NC, e.g. the LM head): each thread packs its A blocks once per K block and
     * reuses them for every NC block, instead of packing them again per NC block. */
    const int reuse_a = N > NC;
    /* A C too big for the cache, written once (one K block, no accumulate), 64-byte aligned rows:
     * store it non-temporally, so no line is first read from memory only to be overwritten.
     * Only micro-kernels with .can_stream implement LOOP_STORE_STREAM. */
    const int stream = stream_min_mib > 0 && !accumulate && K <= KC &&
                       (double)M * N * sizeof(float) > stream_min_mib * 1048576.0 &&
                       gk->can_stream && ((uintptr_t)C % LOOP_ALIGN) == 0 && (ldc * sizeof(float)) % LOOP_ALIGN == 0;
    const long my_blocks = reuse_a ? (mblocks + nth - 1) / nth : 1;
    char *bpack = (char *)scratch_bytes(SCRATCH_PACK_B, panel_bytes(gk, nc_max, KC));
    char *apack[LOOP_MAX_THREADS];
    for (int t = 0; t < nth; t++) apack[t] = (char *)scratch_bytes(SCRATCH_PACK_A0 + t, panel_bytes(gk, (long)my_blocks * mc, KC));

    #pragma omp parallel num_threads(nth)
    {
        char *ap_base = apack[omp_get_thread_num()];
        float edge[LOOP_MAX_MR * LOOP_MAX_NR] __attribute__((aligned(LOOP_ALIGN)));
        if (gk->thread_begin) gk->thread_begin();
        for (int pc = 0; pc < K; pc += KC) {
            const int kc = K - pc < KC ? K - pc : KC;
            const int acc = accumulate || pc > 0;
            for (int jc = 0; jc < N; jc += NC) {
                const int nc = N - jc < NC ? N - jc : NC;
                const int npanels = (nc + NR - 1) / NR;
                {
                    BUSY_BEGIN;
                    #pragma omp for schedule(static) nowait
                    for (int p = 0; p < npanels; p++) {
                        int n = nc - p * NR < NR ? nc - p * NR : NR;
                        gk->pack_b(bpack + panel_bytes(gk, (long)p * NR, kc), B, ldb, trans_b, pc, jc + p * NR, n, kc, NR);
                    }
                    BUSY_END;
                }
                #pragma omp barrier
                {
                    BUSY_BEGIN;
                    long mine = 0; /* static schedule: the same blocks reach this thread for every jc */
                    #pragma omp for schedule(static) nowait
                    for (long ib = 0; ib < mblocks; ib++) {
                        const int ic = (int)ib * mc, mcur = M - ic < mc ? M - ic : mc;
                        char *ap = ap_base + (reuse_a ? panel_bytes(gk, mine * mc, kc) : 0);
                        mine++;
                        if (!reuse_a || jc == 0) gk->pack_a(ap, A, lda, trans_a, ic, pc, mcur, kc, MR);
                        for (int p = 0; p < npanels; p++) {
                            const int jr = p * NR, ncur = nc - jr < NR ? nc - jr : NR;
                            const char *bp = bpack + panel_bytes(gk, (long)p * NR, kc);
                            for (int ir = 0; ir < mcur; ir += MR) {
                                const int mrcur = mcur - ir < MR ? mcur - ir : MR;
                                micro_tile(gk, kc, ap + panel_bytes(gk, ir, kc), bp, C + (size_t)(ic + ir) * ldc + jc + jr,
                                           ldc, mrcur, ncur, acc, stream, edge);
                            }
                        }
                    }
                    if (stream) loop_store_fence(); /* streaming stores are weakly ordered */
                    BUSY_END;
                }
                #pragma omp barrier
            }
        }
        if (gk->thread_end) gk->thread_end();
    }
}

/* A and B read once, C written (and read first when accumulating), the bias (N floats) read */
#define GEMM_BYTES(acc, bias) (4.0 * ((double)M * K + (double)K * N + ((acc) ? 2.0 : 1.0) * M * N + ((bias) ? N : 0)))

void loop_gemm(int trans_a, int trans_b, int M, int N, int K, const float *A, long lda,
               const float *B, long ldb, float *C, long ldc, const float *bias, int accumulate) {
    KSTAT_BEGIN;
    gemm(loop_gemm_kernel_active(LOOP_FP32), trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc, bias, accumulate);
    KSTAT_END(K_GEMM, 2.0 * M * N * K, GEMM_BYTES(accumulate, bias));
}

void loop_gemm_bf16(int trans_a, int trans_b, int M, int N, int K, const float *A, long lda,
                    const float *B, long ldb, float *C, long ldc, const float *bias, int accumulate) {
    KSTAT_BEGIN;
    gemm(loop_gemm_kernel_active(LOOP_BF16), trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc, bias, accumulate);
    KSTAT_END(K_GEMM_BF16, 2.0 * M * N * K, GEMM_BYTES(accumulate, bias));
}

/* The measured peak of a precision (runtime.h): the active micro-kernel's register-resident loop
 * on every thread. */
double loop_measure_peak_gflops(int precision, double seconds) {
    double (*peak)(long) = loop_gemm_kernel_active(precision == LOOP_BF16 ? LOOP_BF16 : LOOP_FP32)->peak;
    long iters = 1 << 16;
    double flops_per_thread = 0, elapsed = 0;
    for (;;) {
        uint64_t t0 = loop_now_ns();
        double f = 0;
        #pragma omp parallel num_threads(loop_nthreads) reduction(+ : f)
        f += peak(iters);
        elapsed = (double)(loop_now_ns() - t0) * 1e-9;
        flops_per_thread = f;
        if (elapsed >= seconds) break;
        iters *= (elapsed < seconds / 8) ? 8 : 2;
    }
    return flops_per_thread / elapsed * 1e-9;
}
