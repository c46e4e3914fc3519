// Number-format conversions in registers: e4m3fn -> f16 (with integer / f16 PTX for
// GPUs that have no cvt from e4m3, or with the sm_89+ cvt), f32 -> packed bf16 / f16.
#pragma once
#include "common/types.cuh"

namespace fp8 {

// Four e4m3fn bytes x = [b0 b1 b2 b3] (b0 the lowest) -> two f16x2 words, every value
// exact but scaled by 2^-8: first = {b0, b2}, second = {b1, b3} (first element in the low
// half). The caller multiplies its fp32 products by 2^16 to undo the scale.
//
// e4m3fn is S.EEEE.MMM with bias 7; f16 is S.EEEEE.MMMMMMMMMM with bias 15. Placing the
// 7 magnitude bits at f16 bits 13..7 keeps the mantissa and maps exponent E to E, i.e.
// the value times 2^(7-15) = 2^-8, subnormals included. e4m3fn has no Inf; S.1111.111 is
// NaN and would land on 1.875 (everything else is at most 448 * 2^-8 = 1.75).
__device__ __forceinline__ void e4m3x4_to_f16x2_scaled(u32 x, u32& first, u32& second) {
  // NOTE: prmt with the sign-replicate selector bit sign-extends each chosen byte to 16
  // bits, so one shift puts the sign at bit 15 (and a stray copy at bit 14, masked off).
  u32 e, o;
  asm("prmt.b32 %0, %1, 0, 0xA280;" : "=r"(e) : "r"(x));  // {sext(b0), sext(b2)}
  asm("prmt.b32 %0, %1, 0, 0xB391;" : "=r"(o) : "r"(x));  // {sext(b1), sext(b3)}
  e = (e << 7) & 0xBF80BF80u;
  o = (o << 7) & 0xBF80BF80u;
  // NOTE: NaN fix on the f16 pipe (the integer pipe is busy with the lines above):
  // |h| * 36864 overflows to Inf only for the NaN code (1.875 * 36864 > 65519, while
  // 1.75 * 36864 = 64512 is finite), and fma(Inf, 0, h) is NaN while fma(f, 0, h) == h
  // exactly for finite f.
  const u32 k = 0x78807880u;  // {36864, 36864}
  u32 t;
  asm("mul.rn.f16x2 %0, %1, %2;" : "=r"(t) : "r"(e), "r"(k));
  asm("fma.rn.f16x2 %0, %1, %2, %3;" : "=r"(e) : "r"(t), "r"(0u), "r"(e));
  asm("mul.rn.f16x2 %0, %1, %2;" : "=r"(t) : "r"(o), "r"(k));
  asm("fma.rn.f16x2 %0, %1, %2, %3;" : "=r"(o) : "r"(t), "r"(0u), "r"(o));
  first = e;
  second = o;
}

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
// Four e4m3fn bytes x = [b0 b1 b2 b3] -> first = {b0, b1}, second = {b2, b3}, exact
// (sm_89+ hardware cvt; NaN stays NaN).
__device__ __forceinline__ void e4m3x4_to_f16x2_cvt(u32 x, u32& first, u32& second) {
  asm("{\n"
      "  .reg .b16 lo, hi;\n"
      "  mov.b32 {lo, hi}, %2;\n"
      "  cvt.rn.f16x2.e4m3x2 %0, lo;\n"
      "  cvt.rn.f16x2.e4m3x2 %1, hi;\n"
      "}"
      : "=r"(first), "=r"(second)
      : "r"(x));
}
#endif

__device__ __forceinline__ u32 pack_bf16x2(float lo, float hi) {
  u32 packed;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(packed) : "f"(hi), "f"(lo));
  return packed;
}

__device__ __forceinline__ u32 pack_f16x2(float lo, float hi) {
  u32 packed;
  asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(packed) : "f"(hi), "f"(lo));
  return packed;
}

}  // namespace fp8
