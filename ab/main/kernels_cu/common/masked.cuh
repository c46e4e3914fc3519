// Masked-row helper shared by the GEMM kernels: how many rows of a group are live.
#pragma once
#include "common/types.cuh"

namespace masked {

// clamp(masked_m[g], 0, m): rows at or past it are neither read nor written, so a bad
// masked_m value can never reach memory outside the group.
__device__ __forceinline__ i32 rows_valid(const i32* masked_m, i32 group, i32 m) {
  const i32 rows = masked_m[group];
  return rows < 0 ? 0 : (rows > m ? m : rows);
}

}  // namespace masked
