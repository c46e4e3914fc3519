// Blackwell (sm_100a / sm_100f) building blocks as inline PTX: tensor memory (TMEM)
// allocation and loads, tcgen05.mma kind::f8f6f4 with its shared-memory and instruction
// descriptors, tcgen05.commit to an mbarrier. mbarriers and TMA loads are the Hopper
// wrappers (common/sm90_ptx.cuh): the same PTX on sm_100. Every field below is traced
// to its PTX ISA section in docs/sm100.md. No toolkit header: only our own typedefs.
#pragma once
#include "common/sm90_ptx.cuh"
#include "common/types.cuh"

namespace sm100 {

// ---- descriptors ---------------------------------------------------------------------

// Instruction descriptor of tcgen05.mma kind::f8f6f4 (PTX ISA 9.7.16.4.2, Table 42):
//   bits  0-3   sparsity / saturate: 0 (dense)
//   bits  4-5   D format: 1 = F32
//   bits  7-9   A format: 0 = E4M3        bits 10-12  B format: 0 = E4M3
//   bits 13-14  negate A / B: 0           bits 15-16  transpose A / B: 0 = K-major
//   bits 17-22  N >> 3                    bits 24-28  M >> 4
__host__ __device__ constexpr u32 instr_desc_e4m3_f32(int m, int n) {
  return (1u << 4) | (static_cast<u32>(n >> 3) << 17) | (static_cast<u32>(m >> 4) << 24);
}
// Values derived by hand from Table 42 (docs/sm100.md), independently of the encoder.
static_assert(instr_desc_e4m3_f32(128, 128) == 0x08200010u, "idesc M128 N128");
static_assert(instr_desc_e4m3_f32(128, 256) == 0x08400010u, "idesc M128 N256");
static_assert(instr_desc_e4m3_f32(64, 128) == 0x04200010u, "idesc M64 N128");

// Shared-memory descriptor (PTX ISA 9.7.16.4.1, Table 40) of a K-major operand tile that
// TMA wrote with the 128-byte swizzle: rows of 128 bytes, 8-row (1024-byte) atoms stacked
// along M/N, the tile 1024-byte aligned.
//   bits  0-13  start address >> 4
//   bits 16-29  leading byte offset >> 4: unused for swizzled K-major ("assumed 1")
//   bits 32-45  stride byte offset >> 4: 1024 bytes between 8-row groups
//   bits 46-48  fixed 0b001 (new against Hopper's wgmma descriptor)
//   bits 49-51  base offset: 0, the tiles start on the 1024-byte swizzle period
//   bit  52     leading-offset mode: 0 (relative)
//   bits 61-63  swizzle: 2 = 128-byte swizzle
__host__ __device__ constexpr u64 smem_desc_k_major_sw128(u32 smem_address) {
  return static_cast<u64>((smem_address & 0x3FFFF) >> 4) | (static_cast<u64>(1) << 16) |
         (static_cast<u64>(1024 >> 4) << 32) | (static_cast<u64>(1) << 46) |
         (static_cast<u64>(2) << 61);
}
static_assert(smem_desc_k_major_sw128(0) == 0x4000404000010000ull, "sw128 descriptor, high word");
static_assert(smem_desc_k_major_sw128(0x12400) == 0x4000404000011240ull, "start address field");

// ---- tensor memory -------------------------------------------------------------------

// TMEM address: lane in bits 31-16, column in bits 15-0 (PTX ISA, tcgen05
// chapter, Tensor Memory addressing).
__device__ __forceinline__ u32 tmem_address(u32 base, u32 lane, u32 column) {
  return base + (lane << 16) + column;
}

// Whole warp: allocates `columns` (a power of two in [32, 512]) columns of all 128 lanes
// and writes the base address to `slot` in shared memory. Blocks until they are free.
__device__ __forceinline__ void tmem_alloc(u32* slot, u32 columns) {
  asm volatile("tcgen05.alloc.cta_group::1.sync.aligned.shared::cta.b32 [%0], %1;" ::"r"(
                   sm90::smem_u32(slot)),
               "r"(columns)
               : "memory");
}

// Whole warp: this CTA allocates no more, so a waiting CTA on the SM may proceed.
__device__ __forceinline__ void tmem_relinquish_alloc_permit() {
  asm volatile("tcgen05.relinquish_alloc_permit.cta_group::1.sync.aligned;" ::: "memory");
}

// Whole warp (the one that allocated): frees the columns before the CTA exits.
__device__ __forceinline__ void tmem_dealloc(u32 base, u32 columns) {
  asm volatile("tcgen05.dealloc.cta_group::1.sync.aligned.b32 %0, %1;" ::"r"(base), "r"(columns)
               : "memory");
}

// Order tcgen05 operations before / after a thread synchronisation (mbarrier or bar.sync).
__device__ __forceinline__ void fence_before_thread_sync() {
  asm volatile("tcgen05.fence::before_thread_sync;" ::: "memory");
}

__device__ __forceinline__ void fence_after_thread_sync() {
  asm volatile("tcgen05.fence::after_thread_sync;" ::: "memory");
}

// Whole warp: thread t receives lane (address lane + t), columns column..column+31 in
// v[0..31] (shape 32x32b, PTX ISA 9.7.16.2.3.1.1). Valid only after tmem_wait_ld.
__device__ __forceinline__ void tmem_ld_32x32b_x32(u32 address, float (&v)[32]) {
  asm volatile(
      "tcgen05.ld.sync.aligned.32x32b.x32.b32 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, [%32];"
      : "=f"(v[0]), "=f"(v[1]), "=f"(v[2]), "=f"(v[3]), "=f"(v[4]), "=f"(v[5]), "=f"(v[6]),
        "=f"(v[7]), "=f"(v[8]), "=f"(v[9]), "=f"(v[10]), "=f"(v[11]), "=f"(v[12]),
        "=f"(v[13]), "=f"(v[14]), "=f"(v[15]), "=f"(v[16]), "=f"(v[17]), "=f"(v[18]),
        "=f"(v[19]), "=f"(v[20]), "=f"(v[21]), "=f"(v[22]), "=f"(v[23]), "=f"(v[24]),
        "=f"(v[25]), "=f"(v[26]), "=f"(v[27]), "=f"(v[28]), "=f"(v[29]), "=f"(v[30]),
        "=f"(v[31])
      : "r"(address)
      : "memory");
}

// Waits for this thread's outstanding tcgen05.ld. NOTE: the compiler does not know the
// loaded registers depend on it; callers pass them through sm90::fence_operand after.
__device__ __forceinline__ void tmem_wait_ld() {
  asm volatile("tcgen05.wait::ld.sync.aligned;" ::: "memory");
}

// ---- MMA -----------------------------------------------------------------------------

// One thread: D[tmem] (+)= A(smem) * B(smem)^T, e4m3 x e4m3 -> f32, K = 32 per call.
// accumulate == 0 overwrites D (enable-input-d false).
__device__ __forceinline__ void mma_f8f6f4(u32 d_tmem, u64 desc_a, u64 desc_b, u32 idesc,
                                           u32 accumulate) {
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %4, 0;\n"
      "tcgen05.mma.cta_group::1.kind::f8f6f4 [%0], %1, %2, %3, p;\n"
      "}\n" ::"r"(d_tmem),
      "l"(desc_a), "l"(desc_b), "r"(idesc), "r"(accumulate)
      : "memory");
}

// One thread: `bar` receives one arrival once every tcgen05.mma this thread issued so far
// has completed (implies tcgen05.fence::before_thread_sync).
__device__ __forceinline__ void commit(u64* bar) {
  asm volatile(
      "tcgen05.commit.cta_group::1.mbarrier::arrive::one.shared::cluster.b64 [%0];" ::"r"(
          sm90::smem_u32(bar))
      : "memory");
}

// ---- plain global stores -------------------------------------------------------------

__device__ __forceinline__ void st_global_v4_b32(void* pointer, u32 x, u32 y, u32 z, u32 w) {
  asm volatile("st.global.v4.b32 [%0], {%1, %2, %3, %4};" ::"l"(pointer), "r"(x), "r"(y), "r"(z),
               "r"(w)
               : "memory");
}

__device__ __forceinline__ void st_global_v4_f32(void* pointer, float x, float y, float z,
                                                 float w) {
  asm volatile("st.global.v4.f32 [%0], {%1, %2, %3, %4};" ::"l"(pointer), "f"(x), "f"(y), "f"(z),
               "f"(w)
               : "memory");
}

}  // namespace sm100
