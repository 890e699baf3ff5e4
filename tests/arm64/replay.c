/* replay.c — runs the kernel cases of make_cases.py against the C library, on every ISA this CPU
 * has, with 1 and 2 threads; `make test-arm64` cross-builds it for aarch64 and runs it under
 * qemu-aarch64. A case passes when every checked output is within numpy's allclose rule of its
 * float64 reference (|got - want| <= atol + rtol |want|, NaN never) and the two thread counts
 * agree bit for bit. Prints one line per failure and a summary; exit status 1 on any failure.
 *
 *     replay CASE_DIR [ISA ...]      (ISA ids of runtime.h; default: every one loop_isa_supported) */
#ifndef _DEFAULT_SOURCE
#define _DEFAULT_SOURCE /* scandir, posix_memalign */
#endif
#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "gemm.h"
#include "ops.h"
#include "runtime.h"

#define MAX_ARRAYS 64

typedef struct {
    char name[64];
    char kind; /* f float32, d float64, i int32 */
    size_t count;
    void *data;     /* as read from the file */
    void *work;     /* the copy an op runs on (64-byte aligned) */
} array;

typedef struct {
    char op[64], label[256], file[512];
    int n;
    array a[MAX_ARRAYS];
} test_case;

static size_t elem_size(char kind) { return kind == 'd' ? 8 : 4; }

static int read_exact(FILE *f, void *dst, size_t n) { return fread(dst, 1, n, f) == n; }

static int read_text(FILE *f, char *dst, size_t cap) {
    uint16_t len;
    if (!read_exact(f, &len, 2) || len >= cap || !read_exact(f, dst, len)) return 0;
    dst[len] = 0;
    return 1;
}

static int load_case(const char *path, test_case *tc) {
    FILE *f = fopen(path, "rb");
    char magic[8];
    uint32_t n;
    memset(tc, 0, sizeof *tc);
    snprintf(tc->file, sizeof tc->file, "%s", path);
    int ok = f && read_exact(f, magic, 8) && memcmp(magic, "LOOPCASE", 8) == 0 && read_text(f, tc->op, sizeof tc->op) &&
             read_text(f, tc->label, sizeof tc->label) && read_exact(f, &n, 4) && n <= MAX_ARRAYS;
    for (uint32_t i = 0; ok && i < n; i++) {
        array *a = &tc->a[i];
        uint64_t count;
        ok = read_text(f, a->name, sizeof a->name) && read_exact(f, &a->kind, 1) && read_exact(f, &count, 8);
        if (!ok) break;
        a->count = (size_t)count;
        size_t bytes = a->count * elem_size(a->kind);
        a->data = malloc(bytes ? bytes : 1);
        ok = a->data && posix_memalign(&a->work, 64, bytes ? bytes : 1) == 0 && read_exact(f, a->data, bytes);
        tc->n = (int)i + 1;
    }
    if (f) fclose(f);
    return ok;
}

static void free_case(test_case *tc) {
    for (int i = 0; i < tc->n; i++) free(tc->a[i].data), free(tc->a[i].work);
}

static array *find(test_case *tc, const char *name) {
    for (int i = 0; i < tc->n; i++)
        if (strcmp(tc->a[i].name, name) == 0) return &tc->a[i];
    return NULL;
}

static const char *g_missing; /* the first array an op asked for that its case lacks */

static void *buf(test_case *tc, const char *name, int optional) {
    array *a = find(tc, name);
    if (!a && !optional && !g_missing) g_missing = name;
    return a ? a->work : NULL;
}

#define F(name) ((float *)buf(tc, name, 0))
#define OPT_F(name) ((float *)buf(tc, name, 1))
#define I32(name) ((int32_t *)buf(tc, name, 0))
#define INT(name) (I32(name) ? I32(name)[0] : 0)

/* Runs the op on the case's working copies; 0 if the op is unknown or an array is missing. */
static int run_named_op(test_case *tc) {
    const char *op = tc->op;
    g_missing = NULL;
    if (strcmp(op, "gemm") == 0 || strcmp(op, "gemm_bf16") == 0) {
        const int ta = INT("ta"), tb = INT("tb"), M = INT("M"), N = INT("N"), K = INT("K");
        const int32_t *blk = I32("blocking");
        if (g_missing) return 0;
        loop_gemm_set_blocking(blk[0], blk[1], blk[2]);
        const long lda = ta ? M : K, ldb = tb ? K : N;
        if (op[4] == '_') {
            loop_gemm_bf16(ta, tb, M, N, K, F("A"), lda, F("B"), ldb, F("C"), N, OPT_F("bias"), INT("accumulate"));
        } else {
            loop_gemm(ta, tb, M, N, K, F("A"), lda, F("B"), ldb, F("C"), N, OPT_F("bias"), INT("accumulate"));
        }
        loop_gemm_set_blocking(0, 0, 0);
    } else if (strcmp(op, "layernorm_fwd") == 0) {
        loop_layernorm_forward(F("out"), F("mean"), F("rstd"), F("inp"), F("weight"), F("bias"), INT("N"), INT("C"));
    } else if (strcmp(op, "layernorm_bwd") == 0) {
        loop_layernorm_backward(F("dinp"), F("dweight"), F("dbias"), F("dout"), F("inp"), F("weight"), F("mean"),
                                F("rstd"), INT("N"), INT("C"));
    } else if (strcmp(op, "bias_gelu_fwd") == 0) {
        loop_bias_gelu_forward(F("pre"), F("out"), OPT_F("bias"), INT("N"), INT("C"));
    } else if (strcmp(op, "gelu_bwd") == 0) {
        loop_gelu_backward(F("dinp"), F("pre"), F("dout"), (size_t)INT("n"));
    } else if (strcmp(op, "crossentropy") == 0) {
        loop_crossentropy(F("logits"), F("losses"), I32("targets"), INT("N"), INT("V"), INT("Vp"), F("grad_scale")[0],
                          INT("write_grad"));
    } else if (strcmp(op, "attention_fwd") == 0) {
        loop_attention_forward(F("out"), F("lse"), F("qkv"), INT("B"), INT("T"), INT("C"), INT("NH"), INT("precision"));
    } else if (strcmp(op, "attention_bwd") == 0) {
        loop_attention_backward(F("dqkv"), F("dout"), F("qkv"), F("out"), F("lse"), INT("B"), INT("T"), INT("C"),
                                INT("NH"), INT("precision"));
    } else if (strcmp(op, "encoder_fwd") == 0) {
        loop_encoder_forward(F("out"), I32("tokens"), F("wte"), F("wpe"), INT("B"), INT("T"), INT("C"));
    } else if (strcmp(op, "encoder_bwd") == 0) {
        loop_encoder_backward(F("dwte"), F("dwpe"), F("dout"), I32("tokens"), INT("B"), INT("T"), INT("C"));
    } else if (strcmp(op, "residual_fwd") == 0) {
        loop_residual_forward(F("out"), F("a"), F("b"), (size_t)INT("n"));
    } else if (strcmp(op, "dropout") == 0 || strcmp(op, "residual_dropout") == 0 || strcmp(op, "dropout_bias_bwd") == 0) {
        const double *p = buf(tc, "key_p", 0);
        const uint32_t *k = buf(tc, "key_u32", 0);
        if (g_missing) return 0;
        const loop_dropout_key key = {.p = p[0], .seed = k[0] | (uint64_t)k[1] << 32, .offset = k[2] | (uint64_t)k[3] << 32,
                                      .step = k[4], .site = k[5]};
        if (strcmp(op, "dropout") == 0) loop_dropout(F("out"), F("inp"), (size_t)INT("n"), &key);
        else if (strcmp(op, "residual_dropout") == 0) loop_residual_dropout(F("out"), F("a"), F("b"), (size_t)INT("n"), &key);
        else loop_dropout_bias_backward(F("dmasked"), F("dbias"), F("dout"), INT("N"), INT("C"), &key);
    } else if (strcmp(op, "bias_bwd") == 0) {
        loop_bias_backward(F("dbias"), F("dout"), INT("N"), INT("C"));
    } else if (strcmp(op, "adamw") == 0) {
        const float *h = F("hyper");
        if (g_missing) return 0;
        loop_adamw(F("param"), F("grad"), F("m"), F("v"), (size_t)INT("n"), h[0], h[1], h[2], h[3], h[4], h[5], h[6],
                   h[7]);
    } else if (strcmp(op, "sum_squares") == 0) {
        double *result = buf(tc, "result", 0);
        if (g_missing) return 0;
        *result = loop_sum_squares(F("x"), (size_t)INT("n"));
    } else if (strcmp(op, "scale") == 0) {
        loop_scale(F("x"), F("s")[0], (size_t)INT("n"));
    } else if (strcmp(op, "gemv") == 0) {
        loop_gemv(F("y"), F("x"), F("W"), OPT_F("bias"), INT("K"), INT("N"));
    } else if (strcmp(op, "gemv_t") == 0) {
        loop_gemv_t(F("y"), F("x"), F("W"), INT("K"), INT("N"));
    } else if (strcmp(op, "attention_decode") == 0) {
        loop_attention_decode(F("out"), F("q"), F("kc"), F("vc"), INT("NH"), INT("hs"), INT("n"), INT("cap"));
    } else {
        return 0;
    }
    return g_missing == NULL;
}

/* the op under the case's bf16 GEMM path, if it names one (portable otherwise) */
static int run_op(test_case *tc) {
    const int32_t *path = buf(tc, "bf16_path", 1);
    if (path) loop_bf16_path_set(path[0]);
    const int ok = run_named_op(tc);
    loop_bf16_path_set(LOOP_BF16_PORTABLE);
    return ok;
}

static void reset_work(test_case *tc) {
    for (int i = 0; i < tc->n; i++) memcpy(tc->a[i].work, tc->a[i].data, tc->a[i].count * elem_size(tc->a[i].kind));
}

static double value(const array *a, size_t i, const void *base) {
    switch (a->kind) {
    case 'f': return ((const float *)base)[i];
    case 'd': return ((const double *)base)[i];
    default: return ((const int32_t *)base)[i];
    }
}

/* checks every `want:X` of the case against X's working copy; prints the worst element of a miss */
static int check_outputs(test_case *tc, const char *isa, int threads) {
    int ok = 1;
    for (int i = 0; i < tc->n; i++) {
        const array *want = &tc->a[i];
        if (strncmp(want->name, "want:", 5) != 0) continue;
        const char *name = want->name + 5;
        char tol_name[80];
        snprintf(tol_name, sizeof tol_name, "tol:%s", name);
        const array *got = find(tc, name), *tol = find(tc, tol_name);
        if (!got || !tol || got->count != want->count) {
            printf("FAIL %s [%s]: output %s missing or of the wrong size\n", tc->file, tc->op, name);
            return 0;
        }
        const double rtol = ((double *)tol->data)[0], atol = ((double *)tol->data)[1];
        double worst = 0;
        size_t at = 0;
        int bad = 0;
        for (size_t k = 0; k < got->count; k++) {
            const double g = value(got, k, got->work), w = ((double *)want->data)[k];
            const double excess = isnan(g) || isinf(g) != isinf(w) ? INFINITY : fabs(g - w) - (atol + rtol * fabs(w));
            if (excess > 0 && (!bad || excess > worst)) worst = excess, at = k, bad = 1;
        }
        if (bad) {
            printf("FAIL %s [%s %s] isa=%s threads=%d: %s[%zu] = %.8g, want %.8g (rtol %g, atol %g)\n", tc->file,
                   tc->op, tc->label, isa, threads, name, at, value(got, at, got->work), ((double *)want->data)[at],
                   rtol, atol);
            ok = 0;
        }
    }
    return ok;
}

static const char *isa_name(int isa) {
    static const char *names[] = {"generic", "avx2", "avx512", "neon"};
    return isa >= 0 && isa < LOOP_ISA_COUNT ? names[isa] : "?";
}

static int by_name(const struct dirent **a, const struct dirent **b) { return strcmp((*a)->d_name, (*b)->d_name); }
static int is_case(const struct dirent *e) {
    size_t n = strlen(e->d_name);
    return n > 5 && strcmp(e->d_name + n - 5, ".case") == 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: replay CASE_DIR [ISA_ID ...]\n");
        return 2;
    }
    int isas[LOOP_ISA_COUNT], nisa = 0;
    for (int i = 2; i < argc; i++) isas[nisa++] = atoi(argv[i]);
    if (!nisa)
        for (int isa = 0; isa < LOOP_ISA_COUNT; isa++)
            if (loop_isa_supported(isa)) isas[nisa++] = isa;
    struct dirent **files;
    int nfiles = scandir(argv[1], &files, is_case, by_name);
    if (nfiles <= 0) {
        fprintf(stderr, "replay: no .case files in %s\n", argv[1]);
        return 2;
    }
    int failures = 0, runs = 0;
    for (int v = 0; v < nisa; v++) {
        if (loop_isa_set(isas[v]) != 0) {
            printf("FAIL isa %s: this CPU cannot run it\n", isa_name(isas[v]));
            failures++;
            continue;
        }
        int isa_failures = 0;
        for (int fi = 0; fi < nfiles; fi++) {
            char path[512];
            snprintf(path, sizeof path, "%s/%s", argv[1], files[fi]->d_name);
            test_case tc;
            if (!load_case(path, &tc)) {
                printf("FAIL %s: unreadable case file\n", path);
                isa_failures++;
                free_case(&tc);
                continue;
            }
            /* outputs of the 1-thread run, to compare the 2-thread run's with bit for bit */
            void *one[MAX_ARRAYS] = {0};
            for (int threads = 1; threads <= 2; threads++) {
                loop_set_num_threads(threads);
                reset_work(&tc);
                if (!run_op(&tc)) {
                    printf("FAIL %s: op %s unknown or array %s missing\n", path, tc.op, g_missing ? g_missing : "-");
                    isa_failures++;
                    break;
                }
                runs++;
                if (!check_outputs(&tc, isa_name(isas[v]), threads)) {
                    isa_failures++;
                    break;
                }
                for (int i = 0; i < tc.n; i++) {
                    const size_t bytes = tc.a[i].count * elem_size(tc.a[i].kind);
                    if (threads == 1) {
                        one[i] = malloc(bytes ? bytes : 1);
                        memcpy(one[i], tc.a[i].work, bytes);
                    } else if (memcmp(one[i], tc.a[i].work, bytes) != 0) {
                        printf("FAIL %s [%s %s] isa=%s: %s differs between 1 and 2 threads\n", path, tc.op, tc.label,
                               isa_name(isas[v]), tc.a[i].name);
                        isa_failures++;
                        break;
                    }
                }
            }
            for (int i = 0; i < MAX_ARRAYS; i++) free(one[i]);
            free_case(&tc);
        }
        printf("replay: isa %s (GEMM micro-kernel %s, bf16 portable %s): %d cases, %s\n", isa_name(isas[v]),
               loop_gemm_kernel_name(0), loop_gemm_kernel_name(1), nfiles, isa_failures ? "FAILED" : "all passed");
        failures += isa_failures;
    }
    for (int fi = 0; fi < nfiles; fi++) free(files[fi]);
    free(files);
    printf("replay: %d runs, %d failures\n", runs, failures);
    return failures ? 1 : 0;
}
