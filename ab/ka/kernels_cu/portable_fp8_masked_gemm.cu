// Masked grouped FP8 GEMM on any sm_80+ GPU with warp-level mma.sync: the fallback
// family and the cross-check of the faster ones. Host half:
// cugroupgemm/families/portable.py.
//
// For each group g and row r < rows_valid = clamp(masked_m[g], 0, m), every c < n:
//   out[g, r, c] = sum_kb a_scale[g, r, kb] * b_scale[g, c / 128, kb]
//                         * sum_{k in kb} a[g, r, k] * b[g, c, k]
// a, b are e4m3fn bytes, k contiguous ("NT"). Each 128-wide k block is multiplied into
// fresh fp32 registers, then added as acc += partial * (sa * sb) in fp32: the scales are
// applied exactly and never enter the tensor core.
//
// Tensor cores (Fp8Path below): NATIVE_FP8_MMA = false converts e4m3 to f16 with integer
// ops (exact, see common/fp8.cuh) and issues mma.m16n8k16 f16: any sm_80+, and it builds
// for sm_89/sm_90 too so the sm_80 path can be tested there. NATIVE_FP8_MMA = true issues
// mma.m16n8k32 e4m3 where it is a real instruction (QMMA on sm_89, sm_120+); on
// sm_90..sm_11x, where ptxas only emulates it (sm_90a/sm_100a: two HMMA + four FADD per
// mma, and spills at BLOCK_M 128), it converts with the hardware cvt.rn.f16x2.e4m3x2
// instead and issues mma.m16n8k16 f16 into the same fp32 partials.
//
// Tiles: a CTA computes BLOCK_M x BLOCK_N (= 128) of one group. Its NUM_WARPS warps form a
// WARPS_M x WARPS_N grid (WarpGrid below); a warp owns WARP_M x WARP_N, i.e.
// WARP_M/16 x WARP_N/8 mma tiles. Warps whose rows all lie at or past rows_valid (or
// whose columns all lie at or past n) skip the math but still load and synchronise.
//
// Pipeline: STAGES (= 3) shared-memory stages, each one 128-byte k block of a (BLOCK_M
// rows) then of b (BLOCK_N rows), filled with 16-byte cp.async. A row is 8 chunks of 16
// bytes; chunk c of row r is stored at chunk c ^ (r % 8), so the 8 row addresses of each
// ldmatrix phase hit 8 different bank quads (no conflicts, no padding).
//
// Launch contract:
//   grid  = (ceil(n / BLOCK_N), ceil(m / BLOCK_M), num_groups)
//   block = (NUM_WARPS * 32, 1, 1)
//   dynamic shared memory = 3 * (BLOCK_M + BLOCK_N) * 128 bytes
//     (BLOCK_M 16: 55296, 32: 61440, 64: 73728, 128: 98304); above 48 KB the host must
//     raise cudaFuncAttributeMaxDynamicSharedMemorySize first.
//   k % 128 == 0, n % 16 == 0, m >= 1. a, b, a_stride_g/m, b_stride_g/n: multiples of
//   16 bytes. out: 16-byte aligned base, out_stride_m a multiple of 8 elements,
//   out_stride_g even. Scale strides are arbitrary. Rows >= rows_valid of a are never
//   read, rows >= n of b are never read, and nothing outside rows < rows_valid, c < n
//   of out is written.
#include "common/fp8.cuh"
#include "common/masked.cuh"
#include "common/mma.cuh"
#include "common/params.cuh"
#include "common/types.cuh"

namespace portable_gemm {

constexpr int BLOCK_K = SCALE_BLOCK;    // bytes of k per stage: one scale block
constexpr int ROW_BYTES = BLOCK_K;      // one smem row of a stage
constexpr int ROW_CHUNKS = ROW_BYTES / 16;
constexpr int STAGES = 3;
constexpr int MAX_DYNAMIC_SMEM = 99 * 1024;  // opt-in limit of sm_86 / sm_89
constexpr int MAX_WARP_TILE = 64 * 32;  // acc + partial: 2 * 64 * 32 / 32 = 128 registers

// How a k32 step of e4m3 fragments reaches the tensor core.
enum class Fp8Path { kQmma, kCvtF16, kIntF16 };

// The path NATIVE_FP8_MMA = true takes on the architecture being compiled.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && __CUDA_ARCH__ < 1200
constexpr Fp8Path NATIVE_PATH = Fp8Path::kCvtF16;
#else
constexpr Fp8Path NATIVE_PATH = Fp8Path::kQmma;
#endif

// e4m3 -> f16 for the two f16 paths: four bytes of one fragment register -> the two f16x2
// words "first" and "second" (each path pairs the bytes its own way; a and b agree).
template <Fp8Path PATH>
__device__ __forceinline__ void e4m3x4_to_f16x2(u32 x, u32& first, u32& second) {
  if constexpr (PATH == Fp8Path::kIntF16) {
    fp8::e4m3x4_to_f16x2_scaled(x, first, second);
  } else {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
    fp8::e4m3x4_to_f16x2_cvt(x, first, second);
#endif
  }
}

// The unit of dynamic shared memory; its alignment is what cp.async and ldmatrix need.
struct alignas(16) SmemChunk {
  u32 words[4];
};

// The warp grid: warp tiles of whole 16 x 16 mma footprints, with the fewest fragment
// loads per k step (WARP_M + WARP_N); ties go to more warps along m, so that more warps
// can skip rows at or past masked_m. 0 when no grid fits.
__host__ __device__ constexpr int pick_warps_m(int block_m, int block_n, int num_warps) {
  int best = 0;
  int best_cost = 1 << 30;
  for (int warps_m = 1; warps_m <= num_warps; warps_m *= 2) {
    const int warps_n = num_warps / warps_m;
    if (num_warps % warps_m != 0 || block_m % (16 * warps_m) != 0 ||
        block_n % (16 * warps_n) != 0)
      continue;
    const int cost = block_m / warps_m + block_n / warps_n;
    if (cost <= best_cost) {
      best = warps_m;
      best_cost = cost;
    }
  }
  return best;
}

template <int BLOCK_M, int BLOCK_N, int NUM_WARPS>
struct WarpGrid {
  static constexpr int WARPS_M = pick_warps_m(BLOCK_M, BLOCK_N, NUM_WARPS);
  static constexpr int WARPS_N = WARPS_M > 0 ? NUM_WARPS / WARPS_M : 1;
  static constexpr int WARP_M = WARPS_M > 0 ? BLOCK_M / WARPS_M : 16;
  static constexpr int WARP_N = BLOCK_N / WARPS_N;
  static constexpr int M_TILES = WARP_M / 16;  // m16 mma tiles per warp
  static constexpr int N_TILES = WARP_N / 8;   // n8 mma tiles per warp
};

// Copies `ROWS` rows x 128 bytes (rows [0, valid_rows) of `src`, zeros for the rest)
// into one swizzled smem tile. Thread t always handles chunk t % 8 of rows t / 8 + i *
// (THREADS / 8), so its swizzled chunk offset is fixed.
template <int ROWS, int THREADS>
__device__ __forceinline__ void load_tile(u32 smem_tile, const u8* src, i64 row_stride,
                                          i32 valid_rows, i32 tid) {
  constexpr int ROWS_PER_PASS = THREADS / ROW_CHUNKS;
  static_assert(ROWS_PER_PASS % 8 == 0,
                "a thread must keep one chunk column and one swizzle phase (row % 8)");
  constexpr int PASSES = (ROWS + ROWS_PER_PASS - 1) / ROWS_PER_PASS;
  const i32 chunk = tid % ROW_CHUNKS;
  const i32 row0 = tid / ROW_CHUNKS;
  const u32 dst0 = smem_tile + row0 * ROW_BYTES + ((chunk ^ (row0 % 8)) << 4);
  const u8* src0 = src + row0 * row_stride + chunk * 16;
#pragma unroll
  for (int pass = 0; pass < PASSES; ++pass) {
    const i32 row = row0 + pass * ROWS_PER_PASS;
    if (ROWS % ROWS_PER_PASS == 0 || row < ROWS) {
      const bool valid = row < valid_rows;
      // NOTE: a zero-filled chunk still names a mapped address (the tile's first row);
      // src-size 0 reads none of it.
      const u8* from = valid ? src0 + pass * ROWS_PER_PASS * row_stride : src;
      warp_mma::cp_async_16(dst0 + pass * ROWS_PER_PASS * ROW_BYTES, from, valid);
    }
  }
}

struct alignas(8) F32x2 {
  float x, y;
};

// Stores columns (c, c + 1) of one output row.
template <int OUT_KIND>
__device__ __forceinline__ void store_pair(void* out, i64 offset, float lo, float hi) {
  if constexpr (OUT_KIND == OUT_BF16) {
    reinterpret_cast<u32*>(static_cast<u16*>(out) + offset)[0] = fp8::pack_bf16x2(lo, hi);
  } else if constexpr (OUT_KIND == OUT_F16) {
    reinterpret_cast<u32*>(static_cast<u16*>(out) + offset)[0] = fp8::pack_f16x2(lo, hi);
  } else {
    reinterpret_cast<F32x2*>(static_cast<float*>(out) + offset)[0] = F32x2{lo, hi};
  }
}

}  // namespace portable_gemm

template <int BLOCK_M, int BLOCK_N, int NUM_WARPS, int OUT_KIND, bool NATIVE_FP8_MMA>
__global__ void __launch_bounds__(NUM_WARPS * 32)
    portable_fp8_masked_gemm(const MaskedGemmParams p) {
  using namespace portable_gemm;
  using Grid = WarpGrid<BLOCK_M, BLOCK_N, NUM_WARPS>;
  constexpr int THREADS = NUM_WARPS * 32;
  constexpr int M_TILES = Grid::M_TILES;
  constexpr int N_TILES = Grid::N_TILES;
  constexpr int A_TILE_BYTES = BLOCK_M * ROW_BYTES;
  constexpr int STAGE_BYTES = (BLOCK_M + BLOCK_N) * ROW_BYTES;
  constexpr Fp8Path PATH = NATIVE_FP8_MMA ? NATIVE_PATH : Fp8Path::kIntF16;
  // Undoes the integer conversion's 2^-8 on a and on b in an fp32 partial.
  constexpr float PARTIAL_UNSCALE = PATH == Fp8Path::kIntF16 ? 65536.0f : 1.0f;

  static_assert(BLOCK_N == SCALE_BLOCK,
                "BLOCK_N must be 128: one b_scale value per tile and k block");
  static_assert(BLOCK_M >= 16 && BLOCK_M <= 128 && BLOCK_M % 16 == 0,
                "BLOCK_M must be 16, 32, ..., 128 (whole m16 mma tiles)");
  static_assert(NUM_WARPS == 4 || NUM_WARPS == 8,
                "NUM_WARPS must be 4 or 8 (the configurations built and checked)");
  static_assert(Grid::WARPS_M > 0,
                "no warp grid splits BLOCK_M x BLOCK_N into 16 x 16 multiples; use fewer warps");
  static_assert(Grid::WARP_M * Grid::WARP_N <= MAX_WARP_TILE,
                "warp tile too large: accumulators plus per-k-block partials would spill; "
                "use more warps");
  static_assert(STAGES * STAGE_BYTES <= MAX_DYNAMIC_SMEM,
                "dynamic shared memory above 99 KB does not fit sm_86 / sm_89");
  static_assert(OUT_KIND == OUT_BF16 || OUT_KIND == OUT_F16 || OUT_KIND == OUT_F32,
                "OUT_KIND must be 0 (bf16), 1 (f16) or 2 (f32)");
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 890
  static_assert(!NATIVE_FP8_MMA,
                "the e4m3 mma.sync needs sm_89+: use NATIVE_FP8_MMA = false on sm_80/86/87");
#endif

  const i32 group = blockIdx.z;
  const i32 m0 = blockIdx.y * BLOCK_M;
  const i32 n0 = blockIdx.x * BLOCK_N;
  const i32 rows_valid = masked::rows_valid(p.masked_m, group, p.m);
  if (m0 >= rows_valid) return;  // uniform over the CTA, before any load or barrier

  extern __shared__ SmemChunk smem[];  // STAGES * STAGE_BYTES bytes
  const u32 smem_base = warp_mma::smem_u32(smem);

  const i32 tid = threadIdx.x;
  const i32 lane = tid % 32;
  const i32 warp = tid / 32;
  const i32 warp_m0 = (warp / Grid::WARPS_N) * Grid::WARP_M;  // within the CTA tile
  const i32 warp_n0 = (warp % Grid::WARPS_N) * Grid::WARP_N;
  const bool warp_active = m0 + warp_m0 < rows_valid && n0 + warp_n0 < p.n;

  // ---- loads: this CTA's a rows [m0, rows_valid) and b rows [n0, n) ----
  const i32 a_rows = rows_valid - m0;
  const i32 b_rows = p.n - n0;
  const u8* a_tile = p.a + group * p.a_stride_g + m0 * p.a_stride_m;
  const u8* b_tile = p.b + group * p.b_stride_g + n0 * p.b_stride_n;
  const i32 num_kb = p.k / BLOCK_K;
  auto load_stage = [&](i32 stage, i32 kb) {
    const u32 dst = smem_base + stage * STAGE_BYTES;
    load_tile<BLOCK_M, THREADS>(dst, a_tile + kb * BLOCK_K, p.a_stride_m, a_rows, tid);
    load_tile<BLOCK_N, THREADS>(dst + A_TILE_BYTES, b_tile + kb * BLOCK_K, p.b_stride_n,
                                b_rows, tid);
  };

  // ---- scales: rows warp_m0 + 16 i + lane / 4 (+ 8) of the tile, one b value ----
  const i32 row_in_tile = warp_m0 + lane / 4;
  const float* a_scale_row =
      p.a_scale + group * p.as_stride_g + (m0 + row_in_tile) * p.as_stride_m;
  const float* b_scale_tile =
      p.b_scale + group * p.bs_stride_g + blockIdx.x * p.bs_stride_n;

  // ---- ldmatrix addresses (stage 0, k step 0); see common/mma.cuh for the lane roles ----
  // a: matrices (rows 0-7, k 0-15), (rows 8-15, k 0-15), (rows 0-7, k 16-31),
  //    (rows 8-15, k 16-31) of an m16 x k32 tile = the e4m3 A fragment a0..a3.
  // b: matrices (n 0-7, k 0-15), (n 0-7, k 16-31), (n 8-15, k 0-15), (n 8-15, k 16-31)
  //    = the e4m3 B fragments (b0, b1) of two n8 tiles.
  // Rows in a matrix are consecutive and start at a multiple of 8, so row % 8 = lane % 8.
  const u32 a_lane_row = (warp_m0 + lane % 16) * ROW_BYTES;
  const u32 a_lane_chunk = (lane / 16) ^ (lane % 8);
  const u32 b_lane_row = A_TILE_BYTES + (warp_n0 + lane % 8 + (lane / 16) * 8) * ROW_BYTES;
  const u32 b_lane_chunk = ((lane / 8) % 2) ^ (lane % 8);

  float acc[M_TILES][N_TILES][4];
#pragma unroll
  for (int i = 0; i < M_TILES; ++i)
#pragma unroll
    for (int j = 0; j < N_TILES; ++j)
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[i][j][r] = 0.0f;

#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < num_kb) load_stage(s, s);
    warp_mma::cp_async_commit();  // NOTE: empty groups keep the wait count uniform
  }

  i32 read_stage = 0;
  i32 write_stage = STAGES - 1;
  for (i32 kb = 0; kb < num_kb; ++kb) {
    warp_mma::cp_async_wait<STAGES - 2>();  // this thread's copies of block kb landed
    __syncthreads();  // everyone's landed, and everyone finished reading block kb - 1
    if (kb + STAGES - 1 < num_kb) load_stage(write_stage, kb + STAGES - 1);
    warp_mma::cp_async_commit();
    write_stage = write_stage + 1 == STAGES ? 0 : write_stage + 1;

    if (warp_active) {
      // Scales first so their latency hides behind the mma work. Rows at or past
      // rows_valid (possibly past m) are not read; their results are never stored.
      float row_scale[M_TILES][2];
      const float sb = b_scale_tile[kb * p.bs_stride_k];
#pragma unroll
      for (int i = 0; i < M_TILES; ++i)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const i32 row = row_in_tile + 16 * i + 8 * h;
          row_scale[i][h] =
              m0 + row < rows_valid
                  ? a_scale_row[(16 * i + 8 * h) * p.as_stride_m + kb * p.as_stride_k]
                  : 0.0f;
        }

      float part[M_TILES][N_TILES][4];
#pragma unroll
      for (int i = 0; i < M_TILES; ++i)
#pragma unroll
        for (int j = 0; j < N_TILES; ++j)
#pragma unroll
          for (int r = 0; r < 4; ++r) part[i][j][r] = 0.0f;

      const u32 stage_base = smem_base + read_stage * STAGE_BYTES;
#pragma unroll
      for (int ks = 0; ks < BLOCK_K / 32; ++ks) {
        // Chunks 2 ks and 2 ks + 1 hold k [32 ks, 32 ks + 32).
        u32 a_frag[M_TILES][4];
#pragma unroll
        for (int i = 0; i < M_TILES; ++i)
          warp_mma::ldmatrix_x4(a_frag[i], stage_base + a_lane_row + i * 16 * ROW_BYTES +
                                               (((2 * ks) ^ a_lane_chunk) << 4));
        u32 b_frag[N_TILES][2];
#pragma unroll
        for (int j = 0; j < N_TILES; j += 2) {
          u32 r[4];
          warp_mma::ldmatrix_x4(r, stage_base + b_lane_row + j * 8 * ROW_BYTES +
                                       (((2 * ks) ^ b_lane_chunk) << 4));
          b_frag[j][0] = r[0];
          b_frag[j][1] = r[1];
          b_frag[j + 1][0] = r[2];
          b_frag[j + 1][1] = r[3];
        }

        if constexpr (PATH == Fp8Path::kQmma) {
#pragma unroll
          for (int i = 0; i < M_TILES; ++i)
#pragma unroll
            for (int j = 0; j < N_TILES; ++j)
              warp_mma::mma_m16n8k32_e4m3(part[i][j], a_frag[i], b_frag[j][0], b_frag[j][1]);
        } else {
          // NOTE: the k32 e4m3 fragments become two k16 f16 fragments under a k
          // permutation shared by a and b (the sum over k does not care). Lane (g, t)
          // holds k 4t..4t+3 in register 0/1 (a rows g / g+8) and k 16+4t.. in 2/3 (b:
          // column g, k 4t.. in register 0, k 16+4t.. in 1). The "first" f16x2 word of a
          // register plays f16 k {2t, 2t+1}, the "second" plays {2t+8, 2t+9}, in a and b
          // alike, which is exactly the f16 m16n8k16 fragment layout.
          u32 b_first[N_TILES][2], b_second[N_TILES][2];
#pragma unroll
          for (int j = 0; j < N_TILES; ++j)
#pragma unroll
            for (int h = 0; h < 2; ++h)
              e4m3x4_to_f16x2<PATH>(b_frag[j][h], b_first[j][h], b_second[j][h]);
#pragma unroll
          for (int i = 0; i < M_TILES; ++i) {
            u32 a_first[4], a_second[4];
#pragma unroll
            for (int r = 0; r < 4; ++r)
              e4m3x4_to_f16x2<PATH>(a_frag[i][r], a_first[r], a_second[r]);
#pragma unroll
            for (int j = 0; j < N_TILES; ++j) {
#pragma unroll
              for (int h = 0; h < 2; ++h)  // h = 0: k 0..15 of the step, 1: k 16..31
                warp_mma::mma_m16n8k16_f16(part[i][j], a_first[2 * h], a_first[2 * h + 1],
                                           a_second[2 * h], a_second[2 * h + 1],
                                           b_first[j][h], b_second[j][h]);
            }
          }
        }
      }

#pragma unroll
      for (int i = 0; i < M_TILES; ++i)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const float s = row_scale[i][h] * sb;
#pragma unroll
          for (int j = 0; j < N_TILES; ++j)
#pragma unroll
            for (int c = 0; c < 2; ++c) {
              // NOTE: undoing the integer path's 2^-16 on the partial first is exact and
              // gives the same rounding as the other paths' acc + partial * s.
              const float exact = part[i][j][2 * h + c] * PARTIAL_UNSCALE;
              acc[i][j][2 * h + c] = __fmaf_rn(exact, s, acc[i][j][2 * h + c]);
            }
        }
    }
    read_stage = read_stage + 1 == STAGES ? 0 : read_stage + 1;
  }

  if (!warp_active) return;
  // ---- epilogue: lane (g, t) holds rows g / g + 8, columns 2t, 2t + 1 of each tile ----
  const i32 col0 = n0 + warp_n0 + 2 * (lane % 4);
  const i64 out_group = group * p.out_stride_g;
#pragma unroll
  for (int i = 0; i < M_TILES; ++i)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const i32 row = m0 + row_in_tile + 16 * i + 8 * h;
      if (row >= rows_valid) continue;
      const i64 out_row = out_group + row * p.out_stride_m;
#pragma unroll
      for (int j = 0; j < N_TILES; ++j) {
        const i32 col = col0 + 8 * j;
        if (col < p.n)  // n % 16 == 0 and col is even, so col + 1 < n too
          store_pair<OUT_KIND>(p.out, out_row + col, acc[i][j][2 * h], acc[i][j][2 * h + 1]);
      }
    }
}
