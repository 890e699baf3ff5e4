/* runtime.h — instruction-set dispatch, threading and observability shared by every kernel.
 *
 * Public declarations here are also fed to CFFI's cdef (build_kernels.py strips the '#' lines),
 * so they use plain C types only. */
#ifndef LOOP_RUNTIME_H
#define LOOP_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

/* Instruction sets. generic (portable C) exists everywhere; avx2 and avx512 only in an x86-64
 * build, neon only in an aarch64 build. Only loop_isa_set() changes the active one. */
enum { LOOP_ISA_GENERIC = 0, LOOP_ISA_AVX2 = 1, LOOP_ISA_AVX512 = 2, LOOP_ISA_NEON = 3, LOOP_ISA_COUNT = 4 };
int loop_isa_supported(int isa);       /* built for this architecture and this CPU and OS run it */
int loop_isa_best(void);               /* best this CPU and OS support */
int loop_isa_get(void);                /* the one kernels use now */
int loop_isa_set(int isa);             /* 0 on success, -1 if this CPU lacks it */

/* bf16 GEMM paths. Native ones need the avx512 ISA active (a forced lower ISA falls back to
 * portable, so valgrind never meets them); the emulations are for tests and never chosen. */
enum { LOOP_BF16_PORTABLE = 0, LOOP_BF16_AVX512BF16 = 1, LOOP_BF16_AMX = 2, LOOP_BF16_EMU_AVX512BF16 = 3,
       LOOP_BF16_EMU_AMX = 4, LOOP_BF16_PATHS = 5 };
int loop_bf16_path_best(void);         /* AMX, else AVX512-BF16, else portable */
int loop_bf16_path_supported(int path);
int loop_bf16_path_get(void);          /* the path bf16 GEMMs take now */
int loop_bf16_path_set(int path);      /* 0 on success, -1 if this CPU lacks it */

/* Thread count for every parallel region (kept here, not in the OpenMP per-thread ICV,
 * so it holds whichever Python thread calls the kernels). */
void loop_set_num_threads(int n);
int loop_get_num_threads(void);

/* Observability: one slot per OpenMP thread number. busy_ns counts time inside kernel
 * work; barrier waits are excluded. os_tid is the Linux thread id (0 = never ran). */
int loop_thread_stats(int64_t *os_tid, uint64_t *busy_ns, int max_threads);

/* Per-kernel totals: calls, wall nanoseconds, floating-point operations (estimate per
 * call, exact for GEMM) and bytes moved (the minimum a call must read and write). */
int loop_kernel_count(void);
const char *loop_kernel_name(int id);
void loop_kernel_stats(uint64_t *calls, uint64_t *ns, double *flops, double *bytes);
void loop_stats_reset(void);

/* Scratch memory the kernels own (packing panels, reduction partials). grow_count rises
 * each time a buffer has to be (re)allocated: after warm-up a training step adds none. */
uint64_t loop_scratch_grow_count(void);
size_t loop_scratch_bytes(void);

/* Measured peak of a precision (0 fp32, 1 bf16): runs the GEMM micro-kernel's register-resident
 * loop (FMA, VDPBF16PS or TDPBF16PS) on every thread for about `seconds` and returns the
 * achieved GFLOP/s. */
double loop_measure_peak_gflops(int precision, double seconds);

#endif
