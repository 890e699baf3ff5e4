/* runtime.c — ISA selection, thread count, per-thread and per-kernel statistics, scratch. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/syscall.h>
#endif
#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#endif
#if defined(__APPLE__)
#include <pthread.h>
#include <sys/sysctl.h>
#endif
#include "internal.h"
#include "isa_variants.h"

int loop_isa_active = LOOP_ISA_GENERIC;
int loop_nthreads = 1;

#if defined(__aarch64__)
static int cpu_has_neon(void) {
#if defined(__linux__)
    return (getauxval(AT_HWCAP) & HWCAP_ASIMD) != 0;
#elif defined(__APPLE__)
    int v = 0;
    size_t n = sizeof v;
    return sysctlbyname("hw.optional.AdvSIMD", &v, &n, NULL, 0) == 0 ? v != 0 : 1;
#else
    return 1; /* Advanced SIMD is part of every ARMv8-A profile an OS runs on */
#endif
}
#endif

/* ---- dispatch: the op table of each ISA this build has, and the active ISA's ---- */
static const loop_isa_kernels *const isa_tables[LOOP_ISA_COUNT] = {
    [LOOP_ISA_GENERIC] = &loop_kernels_generic,
#if defined(__x86_64__)
    [LOOP_ISA_AVX2] = &loop_kernels_avx2,
    [LOOP_ISA_AVX512] = &loop_kernels_avx512,
#elif defined(__aarch64__)
    [LOOP_ISA_NEON] = &loop_kernels_neon,
#endif
};
LOOP_STATIC_ASSERT(sizeof isa_tables / sizeof isa_tables[0] == LOOP_ISA_COUNT, "one table slot per LOOP_ISA_* id");

const loop_isa_kernels *loop_kernels_active(void) { return isa_tables[loop_isa_active]; }

const loop_gemm_kernel *loop_gemm_kernel_active(int precision) {
    if (precision == LOOP_FP32) return loop_kernels_active()->gemm_fp32;
    switch (loop_bf16_path_get()) {
#if defined(__x86_64__)
    case LOOP_BF16_AVX512BF16: return &loop_gemm_avx512bf16;
    case LOOP_BF16_AMX: return &loop_gemm_amx;
#endif
    case LOOP_BF16_EMU_AVX512BF16: return &loop_gemm_emu_avx512bf16;
    case LOOP_BF16_EMU_AMX: return &loop_gemm_emu_amx;
    default: return loop_kernels_active()->gemm_bf16_portable;
    }
}

/* an ISA is supported when this build has its table and the CPU and OS run its instructions */
static int cpu_runs(int isa) {
    switch (isa) {
    case LOOP_ISA_GENERIC: return 1;
#if defined(__x86_64__)
    case LOOP_ISA_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case LOOP_ISA_AVX512:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
#elif defined(__aarch64__)
    case LOOP_ISA_NEON: return cpu_has_neon();
#endif
    default: return 0;
    }
}

int loop_isa_supported(int isa) { return isa >= 0 && isa < LOOP_ISA_COUNT && isa_tables[isa] && cpu_runs(isa); }

int loop_isa_best(void) {
    static const int preference[] = {LOOP_ISA_AVX512, LOOP_ISA_AVX2, LOOP_ISA_NEON};
    for (size_t i = 0; i < sizeof preference / sizeof preference[0]; i++)
        if (loop_isa_supported(preference[i])) return preference[i];
    return LOOP_ISA_GENERIC;
}

int loop_isa_get(void) { return loop_isa_active; }

int loop_isa_set(int isa) {
    if (!loop_isa_supported(isa)) return -1;
    loop_isa_active = isa;
    return 0;
}

static int bf16_path = LOOP_BF16_PORTABLE; /* as requested; loop_bf16_path_get() says what runs */

int loop_bf16_path_supported(int path) {
    switch (path) {
    case LOOP_BF16_PORTABLE: case LOOP_BF16_EMU_AVX512BF16: case LOOP_BF16_EMU_AMX: return 1;
    case LOOP_BF16_AVX512BF16: return loop_cpu_has_avx512bf16();
    case LOOP_BF16_AMX: return loop_amx_usable();
    default: return 0;
    }
}

int loop_bf16_path_best(void) {
    if (loop_bf16_path_supported(LOOP_BF16_AMX)) return LOOP_BF16_AMX;
    if (loop_bf16_path_supported(LOOP_BF16_AVX512BF16)) return LOOP_BF16_AVX512BF16;
    return LOOP_BF16_PORTABLE;
}

int loop_bf16_path_set(int path) {
    if (!loop_bf16_path_supported(path)) return -1;
    bf16_path = path;
    return 0;
}

int loop_bf16_path_get(void) {
    const int native = bf16_path == LOOP_BF16_AVX512BF16 || bf16_path == LOOP_BF16_AMX;
    return native && loop_isa_active != LOOP_ISA_AVX512 ? LOOP_BF16_PORTABLE : bf16_path;
}

void loop_set_num_threads(int n) {
    if (n < 1) n = 1;
    if (n > LOOP_MAX_THREADS) n = LOOP_MAX_THREADS;
    loop_nthreads = n;
}

int loop_get_num_threads(void) { return loop_nthreads; }

/* ---- per-thread busy time: one cache line per slot so threads never share a line ---- */
typedef struct {
    int64_t os_tid;
    uint64_t busy_ns;
    char pad[LOOP_ALIGN - 16];
} thread_slot;
static thread_slot slots[LOOP_MAX_THREADS] __attribute__((aligned(LOOP_ALIGN)));

/* the OS's id of the calling thread (Linux: what /proc/<pid>/task lists); never 0 */
static int64_t os_thread_id(int thread) {
#if defined(__linux__)
    (void)thread;
    return (int64_t)syscall(SYS_gettid);
#elif defined(__APPLE__)
    (void)thread;
    uint64_t tid = 0;
    pthread_threadid_np(NULL, &tid);
    return (int64_t)tid;
#else
    return thread + 1;
#endif
}

void loop_busy_add(int thread, uint64_t ns) {
    thread_slot *s = &slots[thread];
    if (s->os_tid == 0) s->os_tid = os_thread_id(thread);
    __atomic_store_n(&s->busy_ns, s->busy_ns + ns, __ATOMIC_RELAXED);
}

int loop_thread_stats(int64_t *os_tid, uint64_t *busy_ns, int max_threads) {
    int n = 0;
    for (int i = 0; i < LOOP_MAX_THREADS && i < max_threads; i++) {
        os_tid[i] = __atomic_load_n(&slots[i].os_tid, __ATOMIC_RELAXED);
        busy_ns[i] = __atomic_load_n(&slots[i].busy_ns, __ATOMIC_RELAXED);
        if (os_tid[i]) n = i + 1;
    }
    return n;
}

/* ---- per-kernel totals (written by the calling thread only) ---- */
static const char *const kernel_names[] = {
#define KSTAT(id, name) [id] = name,
#include "ops.def"
};
LOOP_STATIC_ASSERT(sizeof kernel_names / sizeof kernel_names[0] == K_COUNT, "a name for every K_* id of ops.def");
static uint64_t k_calls[K_COUNT], k_ns[K_COUNT];
static double k_flops[K_COUNT], k_bytes[K_COUNT];

void loop_kstat_add(int kernel, uint64_t ns, double flops, double bytes) {
    __atomic_store_n(&k_calls[kernel], k_calls[kernel] + 1, __ATOMIC_RELAXED);
    __atomic_store_n(&k_ns[kernel], k_ns[kernel] + ns, __ATOMIC_RELAXED);
    k_flops[kernel] += flops;
    k_bytes[kernel] += bytes;
}

int loop_kernel_count(void) { return K_COUNT; }
const char *loop_kernel_name(int id) { return (id >= 0 && id < K_COUNT) ? kernel_names[id] : "?"; }

void loop_kernel_stats(uint64_t *calls, uint64_t *ns, double *flops, double *bytes) {
    for (int i = 0; i < K_COUNT; i++) {
        calls[i] = __atomic_load_n(&k_calls[i], __ATOMIC_RELAXED);
        ns[i] = __atomic_load_n(&k_ns[i], __ATOMIC_RELAXED);
        flops[i] = k_flops[i];
        bytes[i] = k_bytes[i];
    }
}

void loop_stats_reset(void) {
    memset(k_calls, 0, sizeof k_calls);
    memset(k_ns, 0, sizeof k_ns);
    memset(k_flops, 0, sizeof k_flops);
    memset(k_bytes, 0, sizeof k_bytes);
    for (int i = 0; i < LOOP_MAX_THREADS; i++) slots[i].busy_ns = 0;
}

/* ---- scratch ---- */
#define SCRATCH_SLOTS (SCRATCH_PACK_A0 + LOOP_MAX_THREADS)
static float *scratch_ptr[SCRATCH_SLOTS];
static size_t scratch_cap[SCRATCH_SLOTS];
static uint64_t scratch_grows;

float *loop_scratch(int slot, size_t floats) {
    if (floats <= scratch_cap[slot]) return scratch_ptr[slot];
    free(scratch_ptr[slot]);
    size_t bytes = (floats * sizeof(float) + LOOP_ALIGN - 1) / LOOP_ALIGN * LOOP_ALIGN;
    scratch_ptr[slot] = aligned_alloc(LOOP_ALIGN, bytes);
    if (!scratch_ptr[slot]) abort(); /* out of memory: nothing sensible to return */
    scratch_cap[slot] = bytes / sizeof(float);
    __atomic_add_fetch(&scratch_grows, 1, __ATOMIC_RELAXED);
    return scratch_ptr[slot];
}

uint64_t loop_scratch_grow_count(void) { return __atomic_load_n(&scratch_grows, __ATOMIC_RELAXED); }

size_t loop_scratch_bytes(void) {
    size_t total = 0;
    for (int i = 0; i < SCRATCH_SLOTS; i++) total += scratch_cap[i] * sizeof(float);
    return total;
}
