/* avx512_tile.h — the 12x32 fp32 C tile's prefetch and stores, shared by the AVX-512 fp32 and the
 * AVX512-BF16 micro-kernels (both keep C in 24 zmm accumulators c<row>0, c<row>1). Include inside
 * a function compiled for AVX-512, with `c`, `ldc` and `accumulate` in scope. */
/* fetch the C tile (12 rows x 2 lines) now, so its misses overlap the k loop instead of
 * stalling the stores at the end (BLIS does the same) */
#define TILE12X32_PREFETCH()                                                                       \
    for (int i_ = 0; i_ < 12 && accumulate != LOOP_STORE_STREAM; i_++) {                          \
        _mm_prefetch((const char *)(c + (long)i_ * ldc), _MM_HINT_T0);                             \
        _mm_prefetch((const char *)(c + (long)i_ * ldc + 16), _MM_HINT_T0);                        \
    }
#define TILE_ROW_STREAM(i)                                                                         \
    _mm512_stream_ps(c + (long)(i) * ldc, c##i##0);                                                \
    _mm512_stream_ps(c + (long)(i) * ldc + 16, c##i##1);
#define TILE_ROW_STORE(i)                                                                          \
    {                                                                                              \
        float *ci = c + (long)(i) * ldc;                                                           \
        if (accumulate) {                                                                          \
            c##i##0 = _mm512_add_ps(c##i##0, _mm512_loadu_ps(ci));                                 \
            c##i##1 = _mm512_add_ps(c##i##1, _mm512_loadu_ps(ci + 16));                            \
        }                                                                                          \
        _mm512_storeu_ps(ci, c##i##0);                                                             \
        _mm512_storeu_ps(ci + 16, c##i##1);                                                        \
    }
/* C (+)= the tile, or C = the tile with non-temporal stores (an aligned, write-once C) */
#define TILE12X32_STORE()                                                                          \
    if (accumulate == LOOP_STORE_STREAM) {                                                         \
        TILE_ROW_STREAM(0) TILE_ROW_STREAM(1) TILE_ROW_STREAM(2) TILE_ROW_STREAM(3)                \
        TILE_ROW_STREAM(4) TILE_ROW_STREAM(5) TILE_ROW_STREAM(6) TILE_ROW_STREAM(7)                \
        TILE_ROW_STREAM(8) TILE_ROW_STREAM(9) TILE_ROW_STREAM(10) TILE_ROW_STREAM(11)              \
    } else {                                                                                       \
        TILE_ROW_STORE(0) TILE_ROW_STORE(1) TILE_ROW_STORE(2) TILE_ROW_STORE(3)                    \
        TILE_ROW_STORE(4) TILE_ROW_STORE(5) TILE_ROW_STORE(6) TILE_ROW_STORE(7)                    \
        TILE_ROW_STORE(8) TILE_ROW_STORE(9) TILE_ROW_STORE(10) TILE_ROW_STORE(11)                  \
    }
