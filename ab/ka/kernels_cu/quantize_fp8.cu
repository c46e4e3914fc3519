// FP8 (e4m3fn) quantizers that produce the GEMM's inputs: per-token (1x128 blocks along
// the columns, for `a`) and per-block (128x128 blocks, for `b`). Host half:
// cugroupgemm/quantize.py; ground truth: cugroupgemm/reference.py, which these kernels
// match bit for bit (codes and scales).
//
// Arithmetic, per block of the input:
//   amax  = max |x| in float32 (fmaxf: NaN elements are ignored; out-of-range elements
//           of a partial edge block count as 0)
//   s     = max(amax, 1e-4f) / 448.0f             (IEEE division, round to nearest even)
//   POW2_SCALE: s = smallest power of two >= s     (bit rule: if the mantissa is not zero,
//           clear it and add one to the exponent; Inf stays Inf)
//   q     = e4m3(x / s)                            (__fdiv_rn, or the bit-identical
//           x * (1/s) when s is a power of two; then a software round-to-nearest-even
//           with saturation, the same code on every architecture)
// NaN rule: a NaN element does not affect its block's scale and quantises to 0x7F (NaN
// codes never carry a sign); a block of only NaNs gets the 1e-4 floor's scale. An Inf
// element makes the block's scale Inf: its finite neighbours quantise to +-0 and the Inf
// itself to 0x7F (Inf/Inf is NaN). Zeros and underflows keep their sign (0x80).
//
// Launch contract (no dynamic shared memory, no state between launches; any stream):
//   per_token_cast_to_fp8: block = (32 * W, 1, 1) for any W in 1..32 (the host uses W = 8);
//     grid = (ceil(groups * rows * (cols / 128) / W), 1, 1), or fewer: the kernel loops
//     (grid-stride) over its (group, row, 128-column block) work items, one warp per item.
//     Requires cols % 128 == 0 (the host checks). Scales: contiguous (groups, rows, cols/128).
//   per_block_cast_to_fp8: block = (256, 1, 1) exactly (anything else traps);
//     grid = (ceil(cols / 128), ceil(rows / 128), groups), one CTA per 128x128 block, so
//     ceil(rows / 128) and groups must each be <= 65535. 32 bytes of static shared memory.
//     Any rows and cols. Scales: contiguous (groups, ceil(rows/128), ceil(cols/128)).
//   Both: q is contiguous (groups, rows, cols); x is read through x_stride_{g,r,c} (in
//   elements, any non-negative values, 64-bit offsets). x_stride_c == 1 with an aligned
//   row takes 16-byte (f32) or 8-byte (bf16/f16) vector loads and 4-byte stores.
#include "common/types.cuh"

// Mirrored by cugroupgemm/quantize.py (QuantParams, ctypes): pointers and i64 first, then
// i32, so the layout is the same under every ABI. Change both together.
struct QuantParams {
  const void* x;                            // input elements of InKind
  u8* q;                                    // output e4m3 bytes, contiguous (G, rows, cols)
  float* scale;                             // output scales, contiguous
  i64 x_stride_g, x_stride_r, x_stride_c;   // input strides in elements (non-negative)
  i32 groups, rows, cols;
};

constexpr float E4M3_MAX_F = 448.0f;
constexpr float AMAX_FLOOR = 1e-4f;

// ---------------------------------------------------------------------------------------
// Scalar helpers: __host__ __device__ so that a host build can test them bit for bit.

__host__ __device__ inline u32 qf_float_bits(float x) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(x);
#else
  u32 u;
  __builtin_memcpy(&u, &x, sizeof(u));
  return u;
#endif
}

__host__ __device__ inline float qf_bits_float(u32 u) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(u);
#else
  float x;
  __builtin_memcpy(&x, &u, sizeof(x));
  return x;
#endif
}

// IEEE single-precision division, round to nearest even, whatever the fast-math flags.
__host__ __device__ inline float qf_div_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

// IEEE single-precision addition, round to nearest even, never fused or reassociated.
__host__ __device__ inline float qf_add_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

// IEEE single-precision multiplication, round to nearest even, never fused.
__host__ __device__ inline float qf_mul_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

// max with fmaxf's NaN rule: a NaN operand loses to a number.
__host__ __device__ inline float qf_fmax(float a, float b) {
  if (a != a) return b;
  if (b != b) return a;
  return a > b ? a : b;
}

// fp32 -> e4m3fn, round to nearest even, saturating finite (cvt.rn.satfinite semantics):
// |x| >= 448 (Inf included) -> +-448 (0x7E | sign), NaN -> 0x7F, signed zeros kept.
// Branch-free apart from selects; bit-identical to reference.float32_to_fp8_e4m3.
__host__ __device__ inline u8 f32_to_e4m3_satfinite(float x) {
  const u32 bits = qf_float_bits(x);
  const u32 sign = (bits >> 24) & 0x80u;
  const u32 mag = bits & 0x7fffffffu;
  // Normal e4m3 range, 2^-6 <= |x| < 448: round the float32 mantissa to 3 bits in place
  // (add half an ulp of the target minus one, plus the kept lsb: ties go to even; a carry
  // bumps the exponent, which is the next code), then rebias the exponent 127 -> 7.
  const u32 normal = (mag + 0x7ffffu + ((mag >> 20) & 1u) - (120u << 23)) >> 20;
  // Below 2^-6 the e4m3 values are the multiples of 2^-9 (subnormals; 8 * 2^-9 = 2^-6 is
  // code 8, the smallest normal, so the encoding is continuous). Adding 2^14, whose
  // float32 ulp is 2^-9, rounds |x| to a multiple of 2^-9 with IEEE round-to-nearest-even
  // in one addition; the code is then the difference of the bit patterns (0..8).
  const float big = qf_add_rn(qf_bits_float(mag), 16384.0f);
  const u32 subnormal = qf_float_bits(big) - 0x46800000u;
  u32 code = mag < 0x3c800000u ? subnormal : normal;
  code = mag >= 0x43e00000u ? 0x7eu : code;               // >= 448 = 1.75 * 2^8, Inf
  code |= sign;
  return u8(mag > 0x7f800000u ? 0x7fu : code);            // NaN, sign dropped
}

// Scale of a block from its amax (amax >= 0 or NaN; NaN acts as 0 through the floor).
template <bool POW2_SCALE>
__host__ __device__ inline float quant_scale(float amax) {
  float s = qf_div_rn(qf_fmax(amax, AMAX_FLOOR), E4M3_MAX_F);
  if (POW2_SCALE) {
    u32 b = qf_float_bits(s);
    if (b & 0x7fffffu) b = (b & 0xff800000u) + 0x800000u;  // next power of two up
    s = qf_bits_float(b);
  }
  return s;
}

// ---------------------------------------------------------------------------------------
// Input element access.

template <class T>
struct alignas(4 * sizeof(T)) QVec4 {
  T v[4];
};

template <int IN_KIND> struct QElem;

template <> struct QElem<IN_F32> {
  using T = float;
  __host__ __device__ static float to_f32(float v) { return v; }
};

template <> struct QElem<IN_BF16> {
  using T = u16;
  __host__ __device__ static float to_f32(u16 b) { return qf_bits_float(u32(b) << 16); }
};

template <> struct QElem<IN_F16> {
  using T = u16;
  __host__ __device__ static float to_f32(u16 b) {
#ifdef __CUDA_ARCH__
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(b));
    return f;
#else  // host builds (tests): the same exact widening with integer operations
    const u32 sign = u32(b & 0x8000u) << 16;
    u32 exponent = (b >> 10) & 0x1fu, mantissa = b & 0x3ffu;
    if (exponent == 0x1fu) return qf_bits_float(sign | 0x7f800000u | (mantissa << 13));
    if (exponent == 0) {
      if (mantissa == 0) return qf_bits_float(sign);
      exponent = 1;
      while (!(mantissa & 0x400u)) { mantissa <<= 1; --exponent; }
      mantissa &= 0x3ffu;
    }
    return qf_bits_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
#endif
  }
};

// Loads the `valid` (0..4) elements src[j * stride_c] as float; the rest are 0.
template <int IN_KIND>
__device__ inline void qf_load4(const typename QElem<IN_KIND>::T* src, i64 stride_c, int valid,
                                float (&out)[4]) {
  using E = QElem<IN_KIND>;
  using T = typename E::T;
  const bool vec = valid == 4 && stride_c == 1 &&
                   (reinterpret_cast<u64>(src) % sizeof(QVec4<T>)) == 0;
  if (vec) {
    const QVec4<T> w = *reinterpret_cast<const QVec4<T>*>(src);
#pragma unroll
    for (int j = 0; j < 4; ++j) out[j] = E::to_f32(w.v[j]);
  } else {
#pragma unroll
    for (int j = 0; j < 4; ++j) out[j] = j < valid ? E::to_f32(src[j * stride_c]) : 0.0f;
  }
}

// x / s as the reference computes it (float32 IEEE division). With a power-of-two scale,
// multiplying by 1/s is the same operation: 1/s is exact (s lies in [2^-22, 2^119] or is
// Inf, so 1/s is a normal power of two or 0), and x * 2^e and x / 2^-e are both the exact
// product rounded once, subnormal results, signed zeros, Inf*0 = Inf/Inf = NaN included.
template <bool POW2_SCALE>
struct QDivider {
  float s, inv;
  __host__ __device__ explicit QDivider(float scale)
      : s(scale), inv(POW2_SCALE ? qf_div_rn(1.0f, scale) : 0.0f) {}
  __host__ __device__ float operator()(float v) const {
    return POW2_SCALE ? qf_mul_rn(v, inv) : qf_div_rn(v, s);
  }
};

// Quantises v / s and stores the first `valid` codes at dst (one 4-byte store if possible).
template <bool POW2_SCALE>
__device__ inline void qf_store4(u8* dst, const float (&v)[4], const QDivider<POW2_SCALE>& div,
                                 int valid) {
  u32 packed = 0;
#pragma unroll
  for (int j = 0; j < 4; ++j) packed |= u32(f32_to_e4m3_satfinite(div(v[j]))) << (8 * j);
  if (valid == 4 && (reinterpret_cast<u64>(dst) & 3u) == 0) {
    *reinterpret_cast<u32*>(dst) = packed;
  } else {
#pragma unroll
    for (int j = 0; j < 4; ++j)
      if (j < valid) dst[j] = u8(packed >> (8 * j));
  }
}

__device__ inline float qf_warp_max(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1)
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// ---------------------------------------------------------------------------------------
// Per-token: one warp per (group, row, 128-column block); lane l owns columns 4l..4l+3.

template <int IN_KIND, bool POW2_SCALE>
__global__ void __launch_bounds__(1024) per_token_cast_to_fp8(const QuantParams p) {
  using T = typename QElem<IN_KIND>::T;
  const T* __restrict__ x = static_cast<const T*>(p.x);
  const int lane = threadIdx.x & 31;
  const i64 warps_per_block = blockDim.x >> 5;
  const i64 col_blocks = p.cols / SCALE_BLOCK;
  const i64 total = i64(p.groups) * p.rows * col_blocks;
  for (i64 item = i64(blockIdx.x) * warps_per_block + (threadIdx.x >> 5); item < total;
       item += i64(gridDim.x) * warps_per_block) {
    const i64 block = item % col_blocks;
    const i64 group_row = item / col_blocks;
    const i64 row = group_row % p.rows;
    const i64 group = group_row / p.rows;
    const i64 col = block * SCALE_BLOCK + lane * 4;
    const T* src = x + group * p.x_stride_g + row * p.x_stride_r + col * p.x_stride_c;
    float v[4];
    qf_load4<IN_KIND>(src, p.x_stride_c, 4, v);
    float amax = 0.0f;
#pragma unroll
    for (int j = 0; j < 4; ++j) amax = fmaxf(amax, fabsf(v[j]));
    amax = qf_warp_max(amax);
    const float s = quant_scale<POW2_SCALE>(amax);
    // q is contiguous (G, rows, cols) with cols = col_blocks * 128, so this block's first
    // byte is at item * 128; the scales are laid out in item order.
    qf_store4(p.q + item * SCALE_BLOCK + lane * 4, v, QDivider<POW2_SCALE>(s), 4);
    if (lane == 0) p.scale[item] = s;
  }
}

// ---------------------------------------------------------------------------------------
// Per-block: one CTA of 8 warps per 128x128 block. Warp w owns rows w, w+8, ..., w+120 of
// the block, lane l columns 4l..4l+3, so each warp reads whole 128-column row segments;
// the block's 64 values per thread stay in registers between the amax and the store.

constexpr int PB_THREADS = 256;
constexpr int PB_WARPS = PB_THREADS / 32;
constexpr int PB_ROWS_PER_WARP = SCALE_BLOCK / PB_WARPS;

template <int IN_KIND, bool POW2_SCALE>
__global__ void __launch_bounds__(PB_THREADS) per_block_cast_to_fp8(const QuantParams p) {
  using T = typename QElem<IN_KIND>::T;
  __shared__ float warp_amax[PB_WARPS];
  if (blockDim.x != PB_THREADS) __trap();  // launch contract broken: fail loudly
  const i64 row_blocks = (i64(p.rows) + SCALE_BLOCK - 1) / SCALE_BLOCK;
  const i64 col_blocks = (i64(p.cols) + SCALE_BLOCK - 1) / SCALE_BLOCK;
  const i64 group = blockIdx.z;
  const i64 row_block = blockIdx.y;
  const i64 col_block = blockIdx.x;
  if (group >= p.groups || row_block >= row_blocks || col_block >= col_blocks) return;

  const T* __restrict__ x = static_cast<const T*>(p.x);
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const i64 col = col_block * SCALE_BLOCK + lane * 4;
  const i64 cols_left = i64(p.cols) - col;
  const int valid_c = cols_left >= 4 ? 4 : (cols_left > 0 ? int(cols_left) : 0);
  const T* base = x + group * p.x_stride_g + col * p.x_stride_c;

  float v[PB_ROWS_PER_WARP][4];
  float amax = 0.0f;
#pragma unroll
  for (int i = 0; i < PB_ROWS_PER_WARP; ++i) {
    const i64 row = row_block * SCALE_BLOCK + warp + i * PB_WARPS;
    const int valid = row < p.rows ? valid_c : 0;
    if (valid > 0) {
      qf_load4<IN_KIND>(base + row * p.x_stride_r, p.x_stride_c, valid, v[i]);
    } else {
#pragma unroll
      for (int j = 0; j < 4; ++j) v[i][j] = 0.0f;
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) amax = fmaxf(amax, fabsf(v[i][j]));
  }
  amax = qf_warp_max(amax);
  if (lane == 0) warp_amax[warp] = amax;
  __syncthreads();
  amax = warp_amax[0];
#pragma unroll
  for (int w = 1; w < PB_WARPS; ++w) amax = fmaxf(amax, warp_amax[w]);
  const float s = quant_scale<POW2_SCALE>(amax);
  if (threadIdx.x == 0) p.scale[(group * row_blocks + row_block) * col_blocks + col_block] = s;
  const QDivider<POW2_SCALE> div(s);

#pragma unroll
  for (int i = 0; i < PB_ROWS_PER_WARP; ++i) {
    const i64 row = row_block * SCALE_BLOCK + warp + i * PB_WARPS;
    if (row < p.rows && valid_c > 0)
      qf_store4(p.q + (group * p.rows + row) * p.cols + col, v[i], div, valid_c);
  }
}
