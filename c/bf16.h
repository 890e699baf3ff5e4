/* bf16.h — bfloat16 conversions shared by every precision path: round to nearest even (the
 * rounding VCVTNEPS2BF16 uses), NaN kept a (quiet) NaN. Branch-free, so `omp simd` loops
 * vectorise them; subnormals are kept (the hardware flushes them, which no weight reaches). */
#ifndef LOOP_BF16_H
#define LOOP_BF16_H

#include <stdint.h>

static inline uint32_t f32_bits(float x) {
    union { float f; uint32_t u; } v = {x};
    return v.u;
}

static inline float bits_f32(uint32_t u) {
    union { uint32_t u; float f; } v = {u};
    return v.f;
}

/* the 16 bits of bf16(x), in the low half */
static inline uint32_t bf16_bits(float x) {
    uint32_t u = f32_bits(x);
    uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    uint32_t nan = (u >> 16) | 0x40u;
    return (u & 0x7FFFFFFFu) > 0x7F800000u ? nan : rounded;
}

/* bf16(x) as VCVTNEPS2BF16 and VCVTNE2PS2BF16 compute it, whatever MXCSR says: bf16_bits, but a
 * denormal x becomes a zero of its sign (so the largest denormals, which bf16_bits rounds up to
 * FLT_MIN, do not) */
static inline uint32_t bf16_bits_daz(float x) {
    uint32_t u = f32_bits(x);
    return (u & 0x7F800000u) == 0 ? (u >> 16) & 0x8000u : bf16_bits(x);
}

/* a packed pair for the native bf16 instructions (and their emulations): bf16(lo) in the low half,
 * bf16(hi) in the high half (VDPBF16PS's order in K), converted as the hardware converts */
static inline uint32_t bf16_pair(float lo, float hi) { return bf16_bits_daz(lo) | bf16_bits_daz(hi) << 16; }

/* x rounded to the nearest bf16, as an fp32 */
static inline float bf16_round(float x) { return bits_f32(bf16_bits(x) << 16); }

/* the fp32 value of the bf16 in the low (lo) or high (hi) half of a packed pair */
static inline float bf16_lo(uint32_t pair) { return bits_f32(pair << 16); }
static inline float bf16_hi(uint32_t pair) { return bits_f32(pair & 0xFFFF0000u); }

#endif
