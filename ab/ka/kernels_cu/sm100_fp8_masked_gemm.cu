// Masked grouped FP8 GEMM for Blackwell (sm_100a; sm_100f for the other 10.x parts): TMA
// + tcgen05.mma (kind::f8f6f4) into tensor memory + mbarrier pipelines, warp specialised,
// persistent over the same masked tile schedule as the Hopper kernel. Host half:
// cugroupgemm/families/sm100.py. Descriptors, TMEM layout and barrier protocol:
// docs/sm100.md.
// NOTE: this kernel has never run on hardware (no Blackwell GPU was reachable). It is
// compiled and disassembled in CI, and the library compares it with the portable kernel
// on first use on a real GPU (cugroupgemm/selfcheck.py).
//
// For each group g and row r < clamp(masked_m[g], 0, m):
//   out[g, r, c] = sum_kb a_scale[g, r, kb] * b_scale[g, c / 128, kb]
//                         * sum_{k in kb} a[g, r, k] * b[g, c, k]
// Each 128-wide k block is multiplied into its own tensor-memory buffer (the block's first
// MMA overwrites it: nothing accumulates across k blocks in the tensor core), then loaded
// into registers and promoted there in fp32: acc += partial * (sa * sb). The scales stay
// exact.
//
// Tile: 128 rows (UMMA M; row i of the tile is TMEM lane i) x 128 columns (UMMA N; one
// b-scale block). 256 threads:
//   warp 0     TMA producer: one thread loads the a and b k blocks of each tile.
//   warp 1     MMA issuer: one thread issues 4 MMAs (K = 32 each) per k block.
//   warp 2     allocates the tensor memory first and frees it last.
//   warp 3     idle.
//   warps 4-7  promotion + epilogue: warp 4 + q owns rows 32q..32q+31, the TMEM lanes that
//              a warp with warp id % 4 == q may access (PTX ISA 9.7.16.8.1).
// Barriers (each a ring position with its own phase bit):
//   full[s]       a, b of stage s landed   1 arrival + TMA bytes   producer -> MMA
//   empty[s]      MMAs on stage s done     tcgen05.commit          MMA -> producer
//   acc_full[j]   partial buffer j written tcgen05.commit          MMA -> epilogue
//   acc_empty[j]  partial buffer j read    one arrival per warp    epilogue -> MMA
#include "common/params.cuh"
#include "common/scheduler.cuh"
#include "common/sm100_ptx.cuh"
#include "common/sm90_ptx.cuh"
#include "common/types.cuh"

namespace sm100_gemm {

constexpr int BLOCK_M = 128;  // UMMA M: one TMEM lane per row
constexpr int BLOCK_N = 128;  // UMMA N: one b-scale block, 128 fp32 TMEM columns
constexpr int BLOCK_K = 128;  // elements = bytes: one swizzle span, one scale block
constexpr int K_STEP = 32;    // k of one fp8 tcgen05.mma
constexpr int THREADS = 256;
constexpr int PRODUCER_WARP = 0;
constexpr int MMA_WARP = 1;
constexpr int ALLOC_WARP = 2;
constexpr int FIRST_EPILOGUE_WARP = 4;
constexpr int EPILOGUE_WARPS = 4;
constexpr int TMEM_COLUMNS = 512;  // the whole tensor memory: one CTA per SM (see smem)
constexpr int ACC_STAGES = TMEM_COLUMNS / BLOCK_N;  // partial buffers in flight
constexpr int LD_COLUMNS = 32;                      // columns per tcgen05.ld (x32)
constexpr int SMEM_ALIGN = 1024;  // a 128-byte swizzle atom is 8 rows x 128 bytes
constexpr u32 IDESC = sm100::instr_desc_e4m3_f32(BLOCK_M, BLOCK_N);

static_assert(FIRST_EPILOGUE_WARP % 4 == 0, "epilogue warp q must see TMEM lanes 32q..32q+31");
static_assert((FIRST_EPILOGUE_WARP + EPILOGUE_WARPS) * 32 == THREADS, "warp roles fill the CTA");
static_assert(BLOCK_M == 32 * EPILOGUE_WARPS, "one TMEM lane (row) per epilogue thread");
static_assert(BLOCK_N % 16 == 0 && BLOCK_N >= 16 && BLOCK_N <= 256, "UMMA N for M = 128");
static_assert(TMEM_COLUMNS >= 32 && TMEM_COLUMNS <= 512 &&
                  (TMEM_COLUMNS & (TMEM_COLUMNS - 1)) == 0,
              "tcgen05.alloc takes a power of two in [32, 512] columns");
static_assert(ACC_STAGES >= 2, "promote k block kb while the tensor core runs kb + 1");
static_assert(IDESC == 0x08200010u, "E4M3 x E4M3 -> F32, K-major, M128 N128 (docs/sm100.md)");

// Shared-memory layout; cugroupgemm/families/sm100.py (smem_bytes) mirrors it.
template <int STAGES>
struct Layout {
  static constexpr int A_TILE = BLOCK_M * BLOCK_K;
  static constexpr int B_TILE = BLOCK_N * BLOCK_K;
  static constexpr int STAGE_BYTES = A_TILE + B_TILE;
  static constexpr int A_OFFSET = 0;
  static constexpr int B_OFFSET = STAGES * A_TILE;
  static constexpr int BAR_OFFSET = B_OFFSET + STAGES * B_TILE;
  static constexpr int TMEM_SLOT_OFFSET = BAR_OFFSET + (2 * STAGES + 2 * ACC_STAGES) * 8;
  // + 16: the TMEM address slot; + SMEM_ALIGN: the window is aligned up inside the kernel.
  static constexpr int BYTES = TMEM_SLOT_OFFSET + 16 + SMEM_ALIGN;
  static_assert(A_TILE % SMEM_ALIGN == 0 && B_TILE % SMEM_ALIGN == 0,
                "every tile starts on the 1024-byte swizzle period (descriptor base offset 0)");
};

// One row's 128 columns from registers to global memory, 16 bytes per store; `columns`
// (n - n0, a multiple of 16) cuts the tile at n.
template <int OUT_KIND>
__device__ __forceinline__ void store_row(void* out, i64 offset, const float (&acc)[BLOCK_N],
                                          int columns) {
  if constexpr (OUT_KIND == OUT_F32) {
    float* row = static_cast<float*>(out) + offset;
#pragma unroll
    for (int c = 0; c < BLOCK_N; c += 4) {
      if (c < columns) sm100::st_global_v4_f32(row + c, acc[c], acc[c + 1], acc[c + 2], acc[c + 3]);
    }
  } else {
    u16* row = static_cast<u16*>(out) + offset;
#pragma unroll
    for (int c = 0; c < BLOCK_N; c += 8) {
      if (c < columns) {
        u32 packed[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          packed[i] = OUT_KIND == OUT_BF16 ? sm90::pack_bf16x2(acc[c + 2 * i], acc[c + 2 * i + 1])
                                           : sm90::pack_f16x2(acc[c + 2 * i], acc[c + 2 * i + 1]);
        }
        sm100::st_global_v4_b32(row + c, packed[0], packed[1], packed[2], packed[3]);
      }
    }
  }
}

}  // namespace sm100_gemm

template <int STAGES, int OUT_KIND>
__global__ void __launch_bounds__(sm100_gemm::THREADS, 1)
    sm100_fp8_masked_gemm(const MaskedGemmParams p, const __grid_constant__ TmaMap tma_a,
                          const __grid_constant__ TmaMap tma_b) {
  using namespace sm100_gemm;
  using L = Layout<STAGES>;
  using Scheduler = MaskedTileScheduler<BLOCK_M, BLOCK_N>;

  extern __shared__ __align__(16) u8 smem_raw[];  // aligned up to 1024 below
  const u32 raw_address = sm90::smem_u32(smem_raw);
  u8* smem = smem_raw + ((SMEM_ALIGN - (raw_address & (SMEM_ALIGN - 1))) & (SMEM_ALIGN - 1));
  u64* full = reinterpret_cast<u64*>(smem + L::BAR_OFFSET);
  u64* empty = full + STAGES;
  u64* acc_full = empty + STAGES;
  u64* acc_empty = acc_full + ACC_STAGES;
  u32* tmem_slot = reinterpret_cast<u32*>(smem + L::TMEM_SLOT_OFFSET);

  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;

  if (threadIdx.x == 0) {
    for (int s = 0; s < STAGES; ++s) {
      sm90::mbar_init(&full[s], 1);
      sm90::mbar_init(&empty[s], 1);
    }
    for (int j = 0; j < ACC_STAGES; ++j) {
      sm90::mbar_init(&acc_full[j], 1);
      sm90::mbar_init(&acc_empty[j], EPILOGUE_WARPS);
    }
    sm90::mbar_init_fence();
  }
  if (warp == ALLOC_WARP) {
    sm100::tmem_alloc(tmem_slot, TMEM_COLUMNS);
    sm100::tmem_relinquish_alloc_permit();
  }
  // The barriers and the allocated address become visible to every role.
  sm100::fence_before_thread_sync();
  __syncthreads();
  sm100::fence_after_thread_sync();
  const u32 tmem_base = *tmem_slot;
  const int k_blocks = p.k / BLOCK_K;

  if (warp == PRODUCER_WARP) {
    if (lane == 0) {
      sm90::tma_prefetch_descriptor(&tma_a);
      sm90::tma_prefetch_descriptor(&tma_b);
      Scheduler scheduler(p.masked_m, p.num_groups, p.m, p.n);
      MaskedTile tile;
      int stage = 0;
      u32 phase = 0;
      while (scheduler.next_tile(tile)) {
        for (int kb = 0; kb < k_blocks; ++kb) {
          sm90::mbar_wait(&empty[stage], phase ^ 1);
          sm90::mbar_arrive_expect_tx(&full[stage], L::STAGE_BYTES);
          sm90::tma_load_3d(smem + L::A_OFFSET + stage * L::A_TILE, &tma_a, &full[stage],
                            kb * BLOCK_K, tile.m0, tile.group);
          sm90::tma_load_3d(smem + L::B_OFFSET + stage * L::B_TILE, &tma_b, &full[stage],
                            kb * BLOCK_K, tile.n0, tile.group);
          if (++stage == STAGES) {
            stage = 0;
            phase ^= 1;
          }
        }
      }
    }
    __syncwarp();
  } else if (warp == MMA_WARP) {
    if (lane == 0) {
      const u32 a_base = sm90::smem_u32(smem + L::A_OFFSET);
      const u32 b_base = sm90::smem_u32(smem + L::B_OFFSET);
      Scheduler scheduler(p.masked_m, p.num_groups, p.m, p.n);
      MaskedTile tile;
      int stage = 0, acc = 0;
      u32 phase = 0, acc_phase = 0;
      while (scheduler.next_tile(tile)) {
        for (int kb = 0; kb < k_blocks; ++kb) {
          sm90::mbar_wait(&acc_empty[acc], acc_phase ^ 1);  // the epilogue read buffer acc
          sm90::mbar_wait(&full[stage], phase);             // TMA filled stage
          sm100::fence_after_thread_sync();
          const u64 desc_a = sm100::smem_desc_k_major_sw128(a_base + stage * L::A_TILE);
          const u64 desc_b = sm100::smem_desc_k_major_sw128(b_base + stage * L::B_TILE);
          const u32 d_tmem = tmem_base + acc * BLOCK_N;
#pragma unroll
          for (int ks = 0; ks < BLOCK_K / K_STEP; ++ks) {
            // +32 bytes of k per step inside the swizzle atom: +2 in the address field.
            sm100::mma_f8f6f4(d_tmem, desc_a + 2 * ks, desc_b + 2 * ks, IDESC, ks > 0);
          }
          sm100::commit(&empty[stage]);   // stage may be refilled once these MMAs are done
          sm100::commit(&acc_full[acc]);  // and buffer acc then holds k block kb's partial
          if (++stage == STAGES) {
            stage = 0;
            phase ^= 1;
          }
          if (++acc == ACC_STAGES) {
            acc = 0;
            acc_phase ^= 1;
          }
        }
      }
    }
    __syncwarp();
  } else if (warp >= FIRST_EPILOGUE_WARP) {
    const int quarter = warp % 4;
    const int row_in_tile = quarter * 32 + lane;
    const u32 lane_base = sm100::tmem_address(tmem_base, quarter * 32, 0);
    float acc_regs[BLOCK_N];
    Scheduler scheduler(p.masked_m, p.num_groups, p.m, p.n);
    MaskedTile tile;
    int acc = 0;
    u32 acc_phase = 0;
    while (scheduler.next_tile(tile)) {
      const int row = tile.m0 + row_in_tile;
      const bool valid = row < tile.rows_valid;
      const float* sa =
          p.a_scale + tile.group * p.as_stride_g + static_cast<i64>(row) * p.as_stride_m;
      const float* sb = p.b_scale + tile.group * p.bs_stride_g +
                        static_cast<i64>(tile.n0 / BLOCK_N) * p.bs_stride_n;
#pragma unroll
      for (int i = 0; i < BLOCK_N; ++i) acc_regs[i] = 0.0f;

      for (int kb = 0; kb < k_blocks; ++kb) {
        // Scales first: their latency hides behind the barrier wait.
        const float scale_a = valid ? sm90::ld_global_f32(sa + kb * p.as_stride_k) : 0.0f;
        const float scale = scale_a * sm90::ld_global_f32(sb + kb * p.bs_stride_k);
        sm90::mbar_wait(&acc_full[acc], acc_phase);
        sm100::fence_after_thread_sync();
#pragma unroll
        for (int c = 0; c < BLOCK_N; c += LD_COLUMNS) {
          float part[LD_COLUMNS];
          sm100::tmem_ld_32x32b_x32(lane_base + acc * BLOCK_N + c, part);
          sm100::tmem_wait_ld();
#pragma unroll
          for (int i = 0; i < LD_COLUMNS; ++i) sm90::fence_operand(part[i]);
#pragma unroll
          for (int i = 0; i < LD_COLUMNS; ++i) acc_regs[c + i] += part[i] * scale;
        }
        // Buffer acc is read: hand it back to the MMA thread.
        sm100::fence_before_thread_sync();
        __syncwarp();
        if (lane == 0) sm90::mbar_arrive(&acc_empty[acc]);
        if (++acc == ACC_STAGES) {
          acc = 0;
          acc_phase ^= 1;
        }
      }

      // Epilogue straight from registers: rows below rows_valid, columns below n.
      if (valid) {
        const i64 offset =
            tile.group * p.out_stride_g + static_cast<i64>(row) * p.out_stride_m + tile.n0;
        store_row<OUT_KIND>(p.out, offset, acc_regs, p.n - tile.n0);
      }
    }
  }

  // Teardown: the epilogue waited for the last partial, which the MMA thread's final commit
  // signalled after all of its MMAs, so no role touches the tensor memory any more.
  sm100::fence_before_thread_sync();
  __syncthreads();
  if (warp == ALLOC_WARP) {
    sm100::fence_after_thread_sync();
    sm100::tmem_dealloc(tmem_base, TMEM_COLUMNS);
  }
}
