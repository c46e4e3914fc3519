// Hopper (sm_90a) building blocks as inline PTX: mbarriers, TMA loads, wgmma fp8 with
// shared-memory descriptors, setmaxnreg. No toolkit header: only our own typedefs.
#pragma once
#include "common/types.cuh"

// A CUtensorMap as the kernel sees it: 128 opaque bytes, 64-byte aligned, passed by
// value as a `const __grid_constant__` parameter (cugroupgemm/tma.py encodes it).
struct alignas(64) TmaMap {
  u64 opaque[16];
};

namespace sm90 {

__device__ __forceinline__ u32 smem_u32(const void* pointer) {
  return static_cast<u32>(__cvta_generic_to_shared(pointer));
}

// ---- mbarrier ------------------------------------------------------------------------

__device__ __forceinline__ void mbar_init(u64* bar, u32 count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_u32(bar)), "r"(count)
               : "memory");
}

// Makes the initialised barriers visible to the async proxy (the TMA unit) as well.
__device__ __forceinline__ void mbar_init_fence() {
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}

__device__ __forceinline__ void mbar_arrive_expect_tx(u64* bar, u32 bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_u32(bar)),
               "r"(bytes)
               : "memory");
}

__device__ __forceinline__ void mbar_arrive(u64* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_u32(bar)) : "memory");
}

// Spins until the phase of parity `parity` has completed.
__device__ __forceinline__ void mbar_wait(u64* bar, u32 parity) {
  asm volatile(
      "{\n"
      "  .reg .pred done;\n"
      "WAIT_%=:\n"
      "  mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "  @!done bra WAIT_%=;\n"
      "}\n" ::"r"(smem_u32(bar)),
      "r"(parity)
      : "memory");
}

// Whether the phase of parity `parity` has completed, without waiting.
__device__ __forceinline__ bool mbar_test(u64* bar, u32 parity) {
  u32 done;
  asm volatile(
      "{\n"
      "  .reg .pred p;\n"
      "  mbarrier.test_wait.parity.shared::cta.b64 p, [%1], %2;\n"
      "  selp.u32 %0, 1, 0, p;\n"
      "}\n"
      : "=r"(done)
      : "r"(smem_u32(bar)), "r"(parity)
      : "memory");
  return done != 0;
}

// Arrives on the barrier at `bar`'s offset in the shared memory of CTA `rank` of the
// cluster (this CTA's own when rank is its rank). CTA-scope release (the default), as
// the stage's reads are already complete: .release.cluster compiles to MEMBAR.ALL.GPU,
// which cost about 1 us per k block (measured on the H200, 2026-12-02).
__device__ __forceinline__ void mbar_arrive_cluster(u64* bar, u32 rank) {
  asm volatile(
      "{\n"
      "  .reg .b32 remote;\n"
      "  mapa.shared::cluster.u32 remote, %0, %1;\n"
      "  mbarrier.arrive.shared::cluster.b64 _, [remote];\n"
      "}\n" ::"r"(smem_u32(bar)),
      "r"(rank)
      : "memory");
}

// ---- clusters --------------------------------------------------------------------------

__device__ __forceinline__ u32 cluster_ctarank() {
  u32 rank;
  asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(rank));
  return rank;
}

__device__ __forceinline__ u32 cluster_id_x() {
  u32 id;
  asm volatile("mov.u32 %0, %%clusterid.x;" : "=r"(id));
  return id;
}

__device__ __forceinline__ u32 cluster_count_x() {
  u32 count;
  asm volatile("mov.u32 %0, %%nclusterid.x;" : "=r"(count));
  return count;
}

// Every thread of every CTA of the cluster (that has not exited) meets here; memory
// operations before it are visible to the cluster after it.
__device__ __forceinline__ void cluster_sync() {
  asm volatile(
      "barrier.cluster.arrive.release;\n"
      "barrier.cluster.wait.acquire;\n" ::
          : "memory");
}

// ---- named barriers (0 is __syncthreads) -----------------------------------------------

__device__ __forceinline__ void named_barrier_sync(u32 id, u32 threads) {
  asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(threads) : "memory");
}

__device__ __forceinline__ void named_barrier_arrive(u32 id, u32 threads) {
  asm volatile("bar.arrive %0, %1;" ::"r"(id), "r"(threads) : "memory");
}

// ---- TMA -----------------------------------------------------------------------------

__device__ __forceinline__ void tma_prefetch_descriptor(const TmaMap* map) {
  asm volatile("prefetch.tensormap [%0];" ::"l"(reinterpret_cast<u64>(map)) : "memory");
}

// 3-D tiled load of one box into shared memory, completing `bytes` on `bar`.
__device__ __forceinline__ void tma_load_3d(void* dst, const TmaMap* map, u64* bar, i32 c0,
                                            i32 c1, i32 c2) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%2, %3, %4}], [%5];" ::"r"(smem_u32(dst)),
      "l"(reinterpret_cast<u64>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(smem_u32(bar))
      : "memory");
}

// The same, written at dst's offset into the shared memory of every CTA of the cluster
// in `cta_mask`, completing its bytes on the barrier at bar's offset in each of them.
__device__ __forceinline__ void tma_load_3d_multicast(void* dst, const TmaMap* map, u64* bar,
                                                      i32 c0, i32 c1, i32 c2, u16 cta_mask) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes"
      ".multicast::cluster [%0], [%1, {%2, %3, %4}], [%5], %6;" ::"r"(smem_u32(dst)),
      "l"(reinterpret_cast<u64>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(smem_u32(bar)),
      "h"(cta_mask)
      : "memory");
}

// ---- setmaxnreg ----------------------------------------------------------------------

template <u32 REGS>
__device__ __forceinline__ void regs_dealloc() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(REGS));
}

template <u32 REGS>
__device__ __forceinline__ void regs_alloc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(REGS));
}

// ---- wgmma ---------------------------------------------------------------------------

// Shared-memory matrix descriptor for a K-major operand tile written by TMA with the
// 128-byte swizzle: rows of 128 bytes, 8-row (1024-byte) swizzle atoms stacked along M/N.
//   bits  0-13  start address >> 4
//   bits 16-29  leading-dimension byte offset >> 4 (unused for swizzled K-major; 1)
//   bits 32-45  stride-dimension byte offset >> 4 (1024 B between 8-row groups: 64)
//   bits 49-51  base offset (0: every tile starts 1024-byte aligned)
//   bits 62-63  layout type (1 = 128-byte swizzle)
// Kept as two 32-bit words: only the low one varies (stage, k step), and 32-bit adds
// there spare the main loop 64-bit carries and moves.
__device__ __forceinline__ u32 smem_desc_lo(u32 smem_address) {
  return ((smem_address & 0x3FFFF) >> 4) | (1u << 16);
}
constexpr u32 SMEM_DESC_HI_SW128 = (1024 >> 4) | (1u << 30);

__device__ __forceinline__ void wgmma_fence() {
  asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
}

__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
}

template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
}

// Keeps the compiler from moving accesses of `reg` across wgmma fences and waits.
__device__ __forceinline__ void fence_operand(float& reg) {
  asm volatile("" : "+f"(reg)::"memory");
}

// d (+)= A(64x32, smem) * B(Nx32, smem)^T, fp8 e4m3 in, fp32 accumulate; d holds N / 2
// registers per thread; the descriptors are given by their low words (smem_desc_lo).
// accumulate == 0 overwrites d (scale-d = 0). The operand lists are spelled in chunks
// of 8 registers (16 columns).
#define SM90_D8(i) "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), \
                   "+f"(d[i + 4]), "+f"(d[i + 5]), "+f"(d[i + 6]), "+f"(d[i + 7])
#define SM90_R8(a, b, c, d, e, f, g, h) "%" #a ", %" #b ", %" #c ", %" #d ", %" #e ", %" #f \
                                        ", %" #g ", %" #h
#define SM90_R64 SM90_R8(0, 1, 2, 3, 4, 5, 6, 7) ", " SM90_R8(8, 9, 10, 11, 12, 13, 14, 15) \
    ", " SM90_R8(16, 17, 18, 19, 20, 21, 22, 23) ", " SM90_R8(24, 25, 26, 27, 28, 29, 30, 31)
#define SM90_R128 SM90_R64 ", " SM90_R8(32, 33, 34, 35, 36, 37, 38, 39) \
    ", " SM90_R8(40, 41, 42, 43, 44, 45, 46, 47) ", " SM90_R8(48, 49, 50, 51, 52, 53, 54, 55) \
    ", " SM90_R8(56, 57, 58, 59, 60, 61, 62, 63)
#define SM90_O64 SM90_D8(0), SM90_D8(8), SM90_D8(16), SM90_D8(24)
#define SM90_O128 SM90_O64, SM90_D8(32), SM90_D8(40), SM90_D8(48), SM90_D8(56)
// ACC, A, B, HI: operand numbers after the N / 2 accumulators.
#define SM90_WGMMA_E4M3(N, ACC, A, B, HI)                                                 \
  asm volatile("{\n.reg .pred p;\n.reg .b64 da, db;\nsetp.ne.b32 p, %" #ACC ", 0;\n"    \
               "mov.b64 da, {%" #A ", %" #HI "};\nmov.b64 db, {%" #B ", %" #HI "};\n"      \
               "wgmma.mma_async.sync.aligned.m64n" #N "k32.f32.e4m3.e4m3 {" SM90_R##N    \
               "}, da, db, p, 1, 1;\n}\n"                                                 \
               : SM90_O##N                                                               \
               : "r"(accumulate), "r"(desc_a_lo), "r"(desc_b_lo), "r"(SMEM_DESC_HI_SW128))

template <int N>
__device__ __forceinline__ void wgmma_m64k32_e4m3(float (&d)[N / 2], u32 desc_a_lo,
                                                  u32 desc_b_lo, u32 accumulate) {
  static_assert(N == 64 || N == 128, "wgmma N: 64 or 128");
  if constexpr (N == 64) SM90_WGMMA_E4M3(64, 32, 33, 34, 35);
  else SM90_WGMMA_E4M3(128, 64, 65, 66, 67);
}

// ---- cp.async: small global -> shared copies tracked by an mbarrier --------------------

// 4 bytes, cached in L1 (.ca: the only cache mode that takes 4-byte copies).
__device__ __forceinline__ void cp_async_4(void* dst, const void* src) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(smem_u32(dst)),
               "l"(reinterpret_cast<u64>(src))
               : "memory");
}

// One arrival on `bar` once every cp.async this thread issued before has landed; .noinc:
// the barrier's expected count already includes this arrival.
__device__ __forceinline__ void cp_async_mbar_arrive_noinc(u64* bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];" ::"r"(smem_u32(bar))
               : "memory");
}

__device__ __forceinline__ void cp_async_wait_all() {
  asm volatile("cp.async.wait_all;" ::: "memory");
}

// ---- plain global accesses -----------------------------------------------------------

__device__ __forceinline__ float ld_global_f32(const float* pointer) {
  float value;
  asm("ld.global.nc.f32 %0, [%1];" : "=f"(value) : "l"(pointer));
  return value;
}

__device__ __forceinline__ i32 ld_global_i32(const i32* pointer) {
  i32 value;
  asm("ld.global.nc.s32 %0, [%1];" : "=r"(value) : "l"(pointer));
  return value;
}

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

__device__ __forceinline__ void st_global_v4_b32(void* pointer, const u32 (&words)[4]) {
  asm volatile("st.global.v4.b32 [%0], {%1, %2, %3, %4};" ::"l"(pointer), "r"(words[0]),
               "r"(words[1]), "r"(words[2]), "r"(words[3])
               : "memory");
}

__device__ __forceinline__ void st_global_v2_f32(void* pointer, float x, float y) {
  asm volatile("st.global.v2.f32 [%0], {%1, %2};" ::"l"(pointer), "f"(x), "f"(y) : "memory");
}

}  // namespace sm90
