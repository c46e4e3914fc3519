// The one plain struct that crosses the host/kernel boundary of every GEMM family.
// cugroupgemm/launch.py (GemmParams) mirrors it field by field: change both together.
#pragma once
#include "common/types.cuh"

struct MaskedGemmParams {
  const u8* a;             // (G, m, k) e4m3 bytes, k contiguous
  const u8* b;             // (G, n, k) e4m3 bytes, k contiguous
  const float* a_scale;    // (G, m, k/128)
  const float* b_scale;    // (G, ceil(n/128), k/128)
  const i32* masked_m;     // (G,), clamped to [0, m] by the kernels
  void* out;               // (G, m, n) of the output kind, n contiguous
  i64 a_stride_g, a_stride_m;                  // in elements (= bytes)
  i64 b_stride_g, b_stride_n;                  // in elements (= bytes)
  i64 as_stride_g, as_stride_m, as_stride_k;   // in elements
  i64 bs_stride_g, bs_stride_n, bs_stride_k;   // in elements
  i64 out_stride_g, out_stride_m;              // in elements
  i32 num_groups, m, n, k;
};
