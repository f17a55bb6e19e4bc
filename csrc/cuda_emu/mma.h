/* mma.h of alexnet_c's CUDA emulator: the part of CUDA's warp matrix API (nvcuda::wmma)
 * that csrc/cuda uses, TF32 m16n16k8 tiles with float accumulators, for the CPU.
 *
 * Why it can stand in for the tensor cores: the API leaves a fragment's layout across
 * the warp unspecified, so correct code only loads, stores, fills and multiplies whole
 * fragments and applies elementwise operations to x[]. Here x[i] of lane l is element
 * 32 i + (l - i) mod 32 of the tile in row-major order: deliberately not the plain
 * order, so that code assuming a lane holds the tile positions it reads back itself
 * (an epilogue that reads a stored tile without __syncwarp first) gets another
 * lane's data, stale or unwritten, as it would on a GPU.
 *
 * What it checks that a GPU does not (there the result is only wrong or undefined):
 * - every operation but fill_fragment is a warp collective: the full warp, and the
 *   same pointer, leading dimension and layout in every lane;
 * - pointers 32-byte aligned and ldm a multiple of 4 floats, as the API requires;
 * - mma_sync's A and B elements rounded to TF32 (__float_to_tf32): a tensor core
 *   would silently use only their top 19 bits.
 * Products and sums are float FMAs in k order. The hardware's order and rounding
 * inside a tile are unspecified (and differ between GPUs), which TF32's tolerance in
 * the tests allows for.
 * Not seen: each collective here is also a barrier of the warp (a GPU promises no
 * such ordering), so a missing __syncwarp between reading a tile and the next store
 * over it (a write-after-read race) goes unnoticed; racecheck on a GPU sees it.
 */
#ifndef ALEXNET_C_CUDA_EMU_MMA_H
#define ALEXNET_C_CUDA_EMU_MMA_H

#include "cuda_runtime.h"

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
namespace precision {
struct tf32 {};
}
enum layout_t { mem_row_major, mem_col_major };

namespace emu {

template <int ROWS, int COLS>
struct tile {
    static constexpr int rows = ROWS, cols = COLS;
    static constexpr int num_elements = ROWS * COLS / warpSize;
    float x[num_elements];
};

inline int lane(void) {
    const uint3 t = threadIdx, d = blockDim;
    return (int)((t.x + d.x * (t.y + d.y * t.z)) % warpSize);
}

inline bool is_tf32(float v) { return (acn_emu::as_bits(v) & 0x1fffu) == 0; }

/* One barrier for the warp; faults unless every lane passed the same arguments. */
inline void check_collective(const void *p, unsigned ldm, int layout, const char *what) {
    struct Call {
        const void *p;
        unsigned ldm;
        int layout;
    };
    const Call mine{p, ldm, layout};
    const auto *all = static_cast<const unsigned char *>(acn_emu::warp_share(&mine, sizeof mine, what));
    for (int l = 0; l < warpSize; ++l) {
        Call theirs;
        memcpy(&theirs, all + l * acn_emu::kWarpShareBytes, sizeof theirs);
        if (theirs.p != p || theirs.ldm != ldm || theirs.layout != layout)
            acn_emu::warp_fault("wmma: the lanes of a warp passed different pointers, leading "
                                "dimensions or layouts to one collective call");
    }
    if ((uintptr_t)p % 32)
        acn_emu::warp_fault("wmma: a fragment's memory must be 32-byte (256-bit) aligned");
    if (ldm % 4)
        acn_emu::warp_fault("wmma: the leading dimension of a float tile must be a multiple of 4");
}

/* Element e of a row-major tile sits in lane owner(e), at x[e / 32]. */
inline int owner(int e) { return (e % warpSize + e / warpSize) % warpSize; }

template <class Tile, class Access>
inline void for_own_elements(Tile &t, Access access) {
    const int l = lane();
    for (int i = 0; i < Tile::num_elements; ++i) {
        const int e = warpSize * i + (l - i + warpSize * Tile::num_elements) % warpSize;
        access(t.x[i], e / Tile::cols, e % Tile::cols);
    }
}

}  // namespace emu

template <class Use, int M, int N, int K, class T, class Layout = void>
class fragment;   /* only the shapes below exist */

template <class L>
class fragment<matrix_a, 16, 16, 8, precision::tf32, L> : public emu::tile<16, 8> {};
template <class L>
class fragment<matrix_b, 16, 16, 8, precision::tf32, L> : public emu::tile<8, 16> {};
template <>
class fragment<accumulator, 16, 16, 8, float> : public emu::tile<16, 16> {};

/* cvt.rna.tf32.f32: to nearest, ties away from zero, keeping 10 mantissa bits. */
inline float __float_to_tf32(float v) {
    uint32_t u = acn_emu::as_bits(v);
    if ((u & 0x7f800000u) == 0x7f800000u) {
        if (u & 0x007fffffu) u |= 0x00400000u;   /* a NaN stays a (quiet) NaN */
    } else {
        u += 0x1000u;                              /* may carry into the exponent: inf */
    }
    return acn_emu::bits_as<float>(u & 0xffffe000u);
}

template <class Use, class L>
inline void load_matrix_sync(fragment<Use, 16, 16, 8, precision::tf32, L> &f, const float *p,
                             unsigned ldm) {
    static_assert(std::is_same<L, row_major>::value || std::is_same<L, col_major>::value,
                  "a matrix_a / matrix_b fragment is row_major or col_major");
    constexpr bool row = std::is_same<L, row_major>::value;
    emu::check_collective(p, ldm, row ? 0 : 1, "load_matrix_sync");
    emu::for_own_elements(f, [&](float &x, int r, int c) { x = row ? p[(size_t)r * ldm + c] : p[(size_t)c * ldm + r]; });
}

inline void load_matrix_sync(fragment<accumulator, 16, 16, 8, float> &f, const float *p, unsigned ldm,
                             layout_t layout) {
    emu::check_collective(p, ldm, (int)layout, "load_matrix_sync");
    const bool row = layout == mem_row_major;
    emu::for_own_elements(f, [&](float &x, int r, int c) { x = row ? p[(size_t)r * ldm + c] : p[(size_t)c * ldm + r]; });
}

inline void store_matrix_sync(float *p, const fragment<accumulator, 16, 16, 8, float> &f, unsigned ldm,
                              layout_t layout) {
    emu::check_collective(p, ldm, (int)layout, "store_matrix_sync");
    const bool row = layout == mem_row_major;
    emu::for_own_elements(f, [&](const float &x, int r, int c) {
        (row ? p[(size_t)r * ldm + c] : p[(size_t)c * ldm + r]) = x;
    });
}

template <class Frag>
inline void fill_fragment(Frag &f, float v) {
    for (float &x : f.x) x = v;
}

/* d = a b + c for the warp's 16x16 tile. Every lane publishes its pieces of a, b, c
 * (copied by warp_share, so d may be c) and computes its own elements of d. */
template <class LA, class LB>
inline void mma_sync(fragment<accumulator, 16, 16, 8, float> &d,
                     const fragment<matrix_a, 16, 16, 8, precision::tf32, LA> &a,
                     const fragment<matrix_b, 16, 16, 8, precision::tf32, LB> &b,
                     const fragment<accumulator, 16, 16, 8, float> &c) {
    using A = emu::tile<16, 8>;
    using B = emu::tile<8, 16>;
    using C = emu::tile<16, 16>;
    struct Pieces {
        float a[A::num_elements], b[B::num_elements], c[C::num_elements];
    } mine;
    for (int i = 0; i < A::num_elements; ++i) {
        if (!emu::is_tf32(a.x[i]) || !emu::is_tf32(b.x[i]))
            acn_emu::warp_fault("mma_sync: a TF32 operand was not rounded with __float_to_tf32 "
                                "(the tensor cores would use only its top 19 bits)");
        mine.a[i] = a.x[i];
        mine.b[i] = b.x[i];
    }
    memcpy(mine.c, c.x, sizeof mine.c);
    static_assert(sizeof(Pieces) <= acn_emu::kWarpShareBytes, "a lane's pieces fit warp_share");
    const auto *all = static_cast<const unsigned char *>(acn_emu::warp_share(&mine, sizeof mine, "mma_sync"));
    auto of = [&](int l) { return reinterpret_cast<const Pieces *>(all + l * acn_emu::kWarpShareBytes); };
    auto a_at = [&](int r, int k) { const int e = r * A::cols + k; return of(emu::owner(e))->a[e / warpSize]; };
    auto b_at = [&](int k, int n) { const int e = k * B::cols + n; return of(emu::owner(e))->b[e / warpSize]; };
    emu::for_own_elements(d, [&](float &x, int r, int n) {
        const int e = r * C::cols + n;
        float acc = of(emu::owner(e))->c[e / warpSize];
        for (int k = 0; k < A::cols; ++k) acc = fmaf(a_at(r, k), b_at(k, n), acc);
        x = acc;
    });
}

}  // namespace wmma
}  // namespace nvcuda

#endif
