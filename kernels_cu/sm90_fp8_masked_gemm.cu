// Masked grouped FP8 GEMM for Hopper (sm_90a): TMA + wgmma + mbarrier pipeline, warp
// specialised, persistent over a masked tile schedule. Host half:
// cugroupgemm/families/sm90.py (configs, smem budget) and cugroupgemm/tma.py (maps).
//
// For each group g and row r < clamp(masked_m[g], 0, m):
//   out[g, r, c] = sum_kb a_scale[g, r, kb] * b_scale[g, c / 128, kb]
//                         * sum_{k in kb} a[g, r, k] * b[g, c, k]
// Each PROMOTE_K-wide slice of k (128 or 64: one scale block or half of one) is
// multiplied into its own fresh fp32 wgmma registers, all slices of a k block in flight
// together; the slices are summed in fp32 and added into the fp32 accumulators as
// acc += block * (sa * sb): the scales are applied exactly, and the tensor core's fp8
// accumulation (which keeps fewer bits than fp32) never spans more than one slice.
//
// Roles: warpgroup 0 is the producer of PIPES independent pipelines (1 or 2), each with
// its own ring of STAGES stages and its own share of the tile list: in warp 2q one thread
// issues pipeline q's TMA loads, warp 2q + 1 copies its scales (cp.async); spare warps
// retire. The consumer warpgroups (NUM_CONSUMER_WG / PIPES per pipeline) each own 64 rows
// of the tile and issue wgmma (one m64nBLOCK_Nk32 instruction per 32 of k; m64n64k32 for
// a half tile of SPLIT_TAIL's last round).
// Two pipelines of one warpgroup each work on different tiles, so one warpgroup's fp32
// promotion overlaps the other's wgmma; two warpgroups sharing a tile would wait on the
// same stages in lockstep, so they take turns issuing (ping-pong, named barriers 1, 2),
// as two pipelines do with TURNS (free-running, they drift into issuing together).
// Stage s of the ring holds one 128-byte-wide k block of a (BLOCK_M rows) and of b
// (BLOCK_N rows), 128-byte swizzled by TMA, and that k block's scales: a_scale of the
// tile's BLOCK_M rows, then the tile's b_scale. full[s] (1 TMA arrival + transaction
// bytes, 32 cp.async arrivals) says the stage is loaded; empty[s] (one arrival per
// consumer warp of its pipeline) says it was read.
// Tiles: each role walks the static schedule (common/scheduler.cuh) on its own, or with
// DYNAMIC a pipeline's TMA thread claims each tile after its first from a counter in
// global memory and passes its ticket to the pipeline's scale warp and consumers through
// a ring in shared memory (common/tickets.cuh).
#include "common/params.cuh"
#include "common/scheduler.cuh"
#include "common/sm90_ptx.cuh"
#include "common/tickets.cuh"
#include "common/types.cuh"

namespace sm90_gemm {

constexpr int BLOCK_K = 128;  // elements = bytes: one swizzle span, one scale block
constexpr int WG_ROWS = 64;   // rows of one wgmma (and of one consumer warpgroup)
constexpr int K_STEP = 32;    // k of one fp8 wgmma
constexpr int SMEM_ALIGN = 1024;  // a 128-byte swizzle atom is 8 rows x 128 bytes

// Shared-memory layout; cugroupgemm/families/sm90.py (Sm90Config.smem_bytes) mirrors it.
template <int BLOCK_M, int BLOCK_N, int STAGES>
struct Layout {
  static constexpr int A_TILE = BLOCK_M * BLOCK_K;
  static constexpr int B_TILE = BLOCK_N * BLOCK_K;
  static constexpr int STAGE_BYTES = A_TILE + B_TILE;
  static constexpr int A_OFFSET = 0;
  static constexpr int B_OFFSET = STAGES * A_TILE;
  static constexpr int BAR_OFFSET = B_OFFSET + STAGES * B_TILE;
  // Per stage: BLOCK_M a scales then one b scale, rounded up to 16 bytes.
  static constexpr int SCALE_SLOT = ((BLOCK_M + 1) * 4 + 15) / 16 * 16;
  static constexpr int SCALE_OFFSET = BAR_OFFSET + 2 * STAGES * 8;
  // DYNAMIC's ticket rings (common/tickets.cuh), one slot per stage: two mbarriers and
  // a ticket each.
  static constexpr int TICKET_BAR_OFFSET = SCALE_OFFSET + STAGES * SCALE_SLOT;
  static constexpr int TICKET_OFFSET = TICKET_BAR_OFFSET + 2 * STAGES * 8;
  static constexpr int BYTES = TICKET_OFFSET + STAGES * 8;
  static_assert(A_TILE % SMEM_ALIGN == 0 && B_TILE % SMEM_ALIGN == 0, "tiles keep alignment");
};

// A column count as a type: the argument that picks multiply_tile's instance.
template <int N>
struct Width {
  static constexpr int VALUE = N;
};

// Two results of a 16-bit output kind as one word, the lower column in the low half.
template <int OUT_KIND>
__device__ __forceinline__ u32 pack_pair(float lo, float hi) {
  if constexpr (OUT_KIND == OUT_BF16) {
    return sm90::pack_bf16x2(lo, hi);
  } else {
    return sm90::pack_f16x2(lo, hi);
  }
}

// Lane q of each quad of lanes holds row q of a 4 x 4 matrix of words in x; afterwards
// it holds column q (x[p] is the word lane p held in x[q]). The off-diagonal 2 x 2
// blocks are swapped between lanes q and q ^ 2, then each block is transposed between
// lanes q and q ^ 1: four shuffles.
__device__ __forceinline__ void transpose_quad(u32 (&x)[4], int quad_lane) {
  const bool upper = quad_lane & 2;
  u32 low = __shfl_xor_sync(0xffffffff, upper ? x[0] : x[2], 2);
  u32 high = __shfl_xor_sync(0xffffffff, upper ? x[1] : x[3], 2);
  // (Selects, not an index computed at run time, which would put x in local memory.)
  x[0] = upper ? low : x[0];
  x[1] = upper ? high : x[1];
  x[2] = upper ? x[2] : low;
  x[3] = upper ? x[3] : high;
  const bool odd = quad_lane & 1;
  low = __shfl_xor_sync(0xffffffff, odd ? x[0] : x[1], 1);
  high = __shfl_xor_sync(0xffffffff, odd ? x[2] : x[3], 1);
  x[0] = odd ? low : x[0];
  x[1] = odd ? x[1] : low;
  x[2] = odd ? high : x[2];
  x[3] = odd ? x[3] : high;
}

// One step along pipeline `pipe`'s ring, its stages pipe * STAGES onwards: the next
// stage, and the phase flipped where the ring wraps.
template <int STAGES>
__device__ __forceinline__ void ring_step(int pipe, int& stage, u32& phase) {
  const bool wraps = stage + 1 == (pipe + 1) * STAGES;
  phase = wraps ? phase ^ 1 : phase;
  stage = wraps ? pipe * STAGES : stage + 1;
}

// The next tile of a role that reads its pipeline's tickets (the scale warp, the
// consumers): the static walk's, or with DYNAMIC the one the pipeline's claimer published.
template <bool DYNAMIC, class Scheduler, class Ring>
__device__ __forceinline__ bool read_next_tile(Scheduler& scheduler, Ring& ring,
                                               MaskedTile& tile) {
  if constexpr (DYNAMIC) {
    return scheduler.tile_at(ring.take(), tile);
  } else {
    return scheduler.next_tile(tile);
  }
}

// The kernel's body; CLUSTER CTAs (1 or 2) of a cluster share each tile of CLUSTER x
// BLOCK_M rows: CTA r of the cluster takes rows r * BLOCK_M onwards and loads r's share
// of the tile's b rows into every CTA of the cluster (TMA multicast), so b is read from
// L2 once per CLUSTER x BLOCK_M rows. A stage is then refilled only once the consumers of
// every CTA of the cluster released it.
template <int BLOCK_M, int BLOCK_N, int STAGES, int NUM_CONSUMER_WG, int PROMOTE_K,
          int OUT_KIND, int PIPES, bool TURNS, bool SPLIT_TAIL, bool DYNAMIC, int CLUSTER>
__device__ __forceinline__ void masked_gemm(const MaskedGemmParams& p, const TmaMap& tma_a,
                                            const TmaMap& tma_b, u64* tile_counter) {
  using L = Layout<BLOCK_M, BLOCK_N, STAGES * PIPES>;
  constexpr int PIPE_WG = NUM_CONSUMER_WG / PIPES;  // consumer warpgroups per pipeline
  static_assert(PIPES >= 1 && PIPES <= 2 && NUM_CONSUMER_WG % PIPES == 0,
                "one or two pipelines (two producer warps each), consumers split evenly");
  static_assert(BLOCK_M == WG_ROWS * PIPE_WG && NUM_CONSUMER_WG <= 3,
                "one consumer warpgroup per 64 rows, at most 3");
  static_assert(BLOCK_N == 64 || BLOCK_N == 128, "BLOCK_N: 64 or 128 (inside one b-scale block)");
  static_assert(PROMOTE_K == 64 || PROMOTE_K == 128, "PROMOTE_K: 64 or 128");
  static_assert(CLUSTER == 1 || CLUSTER == 2, "CLUSTER: one CTA or a pair");
  static_assert(L::B_TILE / CLUSTER % SMEM_ALIGN == 0, "each CTA's share of b keeps alignment");
  static_assert(!SPLIT_TAIL || (BLOCK_N == 128 && CLUSTER == 1),
                "SPLIT_TAIL: half tiles of 64 columns, without clusters");
  static_assert(!DYNAMIC || (CLUSTER == 1 && !TURNS),
                "DYNAMIC: tiles claimed per CTA pipeline, whose turns are not counted");
  constexpr int SLICES = BLOCK_K / PROMOTE_K;
  constexpr int STEPS_PER_SLICE = PROMOTE_K / K_STEP;
  // Registers after setmaxnreg (multiples of 8). setmaxnreg.inc only takes registers the
  // CTA already holds, so the split must fit what the launch gave it: THREADS times the
  // per-thread count __launch_bounds__ allows (a multiple of 8, at most 255). Asking
  // for more blocks the consumers forever.
  constexpr u32 THREADS = (NUM_CONSUMER_WG + 1) * 128;
  constexpr u32 LAUNCH_REGS = (65536 / THREADS / 8 * 8) > 248 ? 248 : (65536 / THREADS / 8 * 8);
  constexpr u32 PRODUCER_REGS = 56;
  constexpr u32 CONSUMER_SHARE = (LAUNCH_REGS * THREADS / 128 - PRODUCER_REGS) / NUM_CONSUMER_WG;
  constexpr u32 CONSUMER_REGS = (CONSUMER_SHARE > 240 ? 240 : CONSUMER_SHARE) / 8 * 8;
  static_assert(PRODUCER_REGS * 128 + CONSUMER_REGS * 128 * NUM_CONSUMER_WG <= LAUNCH_REGS * THREADS,
                "the register split must fit the launch allocation");
  constexpr u32 SCALE_LANES = 32;  // a pipeline's scale warp: one arrival per lane

  // The dynamic window starts 1024-byte aligned (the launch adds no static shared memory).
  extern __shared__ __align__(SMEM_ALIGN) u8 smem[];
  u64* full = reinterpret_cast<u64*>(smem + L::BAR_OFFSET);
  u64* empty = full + STAGES * PIPES;
  float* scales = reinterpret_cast<float*>(smem + L::SCALE_OFFSET);
  constexpr int SLOT_FLOATS = L::SCALE_SLOT / 4;
  u64* ticket_full = reinterpret_cast<u64*>(smem + L::TICKET_BAR_OFFSET);
  u64* ticket_empty = ticket_full + STAGES * PIPES;
  i64* tickets = reinterpret_cast<i64*>(smem + L::TICKET_OFFSET);
  constexpr u32 TICKET_READERS = 1 + PIPE_WG * 4;  // the scale warp, the consumer warps

  if (threadIdx.x == 0) {
    for (int s = 0; s < STAGES * PIPES; ++s) {
      sm90::mbar_init(&full[s], 1 + SCALE_LANES);
      sm90::mbar_init(&empty[s], PIPE_WG * 4 * CLUSTER);  // every consumer warp of the cluster
      if constexpr (DYNAMIC) {
        sm90::mbar_init(&ticket_full[s], 1);
        sm90::mbar_init(&ticket_empty[s], TICKET_READERS);
      }
    }
    sm90::mbar_init_fence();
  }
  // With a cluster, the peer's barriers must be initialised before anything signals them.
  if constexpr (CLUSTER > 1) {
    sm90::cluster_sync();
  } else {
    __syncthreads();
  }
  // The tile sequence is the cluster's; this CTA's rows start rank * BLOCK_M into a tile.
  const u32 rank = CLUSTER > 1 ? sm90::cluster_ctarank() : 0;
  using Scheduler = MaskedTileScheduler<BLOCK_M * CLUSTER, BLOCK_N, SPLIT_TAIL>;
  auto scheduler_of = [&](int pipe) {
    if constexpr (CLUSTER > 1) {
      return Scheduler(p.masked_m, p.num_groups, p.m, p.n, pipe, PIPES, sm90::cluster_id_x(),
                       sm90::cluster_count_x());
    } else {
      return Scheduler(p.masked_m, p.num_groups, p.m, p.n, pipe, PIPES);
    }
  };
  // DYNAMIC: pipeline q's ticket ring (its slots follow its stages).
  auto ticket_ring_of = [&](int pipe) {
    return TicketRing<STAGES>{tickets + pipe * STAGES, ticket_full + pipe * STAGES,
                              ticket_empty + pipe * STAGES};
  };

  // Broadcast from lane 0 so the compiler sees a warp-uniform value: branches on it are
  // not divergent, and wgmma inside them is not serialised (ptxas warning C7518).
  const int warp = __shfl_sync(0xffffffff, static_cast<int>(threadIdx.x / 32), 0);
  const int warpgroup = warp / 4;
  const int lane = threadIdx.x % 32;

  if (warpgroup == 0) {
    // ---------------- producer ----------------
    if constexpr (NUM_CONSUMER_WG > 1) sm90::regs_dealloc<PRODUCER_REGS>();
    // Warps 2q and 2q + 1 feed pipeline q: its ring is stages q * STAGES onwards.
    const int pipe = warp / 2;
    if (pipe >= PIPES) return;
    // Each role divides k itself: held across the role split, the quotient spilled in the
    // producer's 56 registers.
    const int k_blocks = p.k / BLOCK_K;
    Scheduler scheduler = scheduler_of(pipe);
    MaskedTile tile;
    int stage = pipe * STAGES;
    u32 phase = 0;
    auto ring = ticket_ring_of(pipe);
    if (warp % 2 == 0) {  // one thread: the operand tiles (and DYNAMIC's claims)
      // Only here: a lane-dependent exit before the split would make ptxas treat the
      // scale warp's loop as divergent too (vector registers, a loop around its arrival).
      if (lane != 0) return;
      sm90::tma_prefetch_descriptor(&tma_a);
      sm90::tma_prefetch_descriptor(&tma_b);
      const TicketCounter counter{tile_counter, scheduler.step};
      i64 ticket = scheduler.next;  // the first round's, as the static walk's
      auto take_tile = [&] {
        if constexpr (DYNAMIC) {
          ring.publish(ticket);
          return scheduler.tile_at(ticket, tile);
        } else {
          return scheduler.next_tile(tile);
        }
      };
      while (take_tile()) {
        for (int kb = 0; kb < k_blocks; ++kb) {
          sm90::mbar_wait(&empty[stage], phase ^ 1);
          sm90::mbar_arrive_expect_tx(&full[stage], L::STAGE_BYTES);
          sm90::tma_load_3d(smem + L::A_OFFSET + stage * L::A_TILE, &tma_a, &full[stage],
                            kb * BLOCK_K, tile.m0 + rank * BLOCK_M, tile.group);
          u8* b_stage = smem + L::B_OFFSET + stage * L::B_TILE;
          if constexpr (CLUSTER == 1) {
            sm90::tma_load_3d(b_stage, &tma_b, &full[stage], kb * BLOCK_K, tile.n0, tile.group);
          } else {  // this CTA's share of the b rows, into both CTAs (tma_b's box: the share)
            constexpr int SHARE = BLOCK_N / CLUSTER;
            sm90::tma_load_3d_multicast(b_stage + rank * SHARE * BLOCK_K, &tma_b, &full[stage],
                                        kb * BLOCK_K, tile.n0 + rank * SHARE, tile.group,
                                        (1u << CLUSTER) - 1);
          }
          ring_step<STAGES>(pipe, stage, phase);
        }
        // Claimed once this tile's loads are issued: the consumers are then a ring of
        // stages behind, time enough for the atomic's round trip.
        if constexpr (DYNAMIC) ticket = counter.claim();
      }
      if constexpr (DYNAMIC) {
        if (ticket >= counter.first_round) counter.finish(ticket, scheduler.tickets_end());
      }
    } else {  // the scales, asynchronously, so the warp runs ahead as TMA does
      while (read_next_tile<DYNAMIC>(scheduler, ring, tile)) {
        // Rows at or past masked_m (never stored) read the last valid row's scales
        // instead: a caller may leave the unused rows' scales unwritten.
        const float* a_rows = p.a_scale + tile.group * p.as_stride_g;
        const float* b_col = p.b_scale + tile.group * p.bs_stride_g +
                             static_cast<i64>(tile.n0 / SCALE_BLOCK) * p.bs_stride_n;
        for (int kb = 0; kb < k_blocks; ++kb) {
          sm90::mbar_wait(&empty[stage], phase ^ 1);
          float* slot = scales + stage * SLOT_FLOATS;
          for (int t = lane; t < BLOCK_M; t += 32) {
            const int row = min(static_cast<int>(tile.m0 + rank * BLOCK_M) + t,
                                tile.rows_valid - 1);
            sm90::cp_async_4(slot + t, a_rows + static_cast<i64>(row) * p.as_stride_m +
                                           static_cast<i64>(kb) * p.as_stride_k);
          }
          if (lane == 0) sm90::cp_async_4(slot + BLOCK_M, b_col + kb * p.bs_stride_k);
          sm90::cp_async_mbar_arrive_noinc(&full[stage]);
          ring_step<STAGES>(pipe, stage, phase);
        }
      }
      sm90::cp_async_wait_all();
    }
    return;
  }

  // ---------------- consumers ----------------
  if constexpr (NUM_CONSUMER_WG > 1) sm90::regs_alloc<CONSUMER_REGS>();
  const int pipe = (warpgroup - 1) / PIPE_WG;
  const int consumer = (warpgroup - 1) % PIPE_WG;  // within the pipeline
  const int k_blocks = p.k / BLOCK_K;
  const int t = threadIdx.x % 128;
  // wgmma accumulator layout: register 4j+{0,1} is (row, 8j + col2 + {0,1}),
  // register 4j+{2,3} is (row + 8, same columns).
  const int row_in_tile = consumer * WG_ROWS + (t / 32) * 16 + lane / 4;
  const int col2 = 2 * (lane % 4);
  const u32 a_base = sm90::smem_u32(smem + L::A_OFFSET) + consumer * WG_ROWS * BLOCK_K;
  const u32 b_base = sm90::smem_u32(smem + L::B_OFFSET);

  Scheduler scheduler = scheduler_of(pipe);
  MaskedTile tile;
  auto ring = ticket_ring_of(pipe);
  int stage = pipe * STAGES;  // ring position of the k block in flight
  u32 phase = 0;
  // Ping-pong between two consumer warpgroups, of one tile (always) or of the two
  // pipelines (TURNS): each issues a k block's wgmma only after the other issued its
  // previous one (named barriers 1 and 2), so the tensor core alternates between them
  // and one's promotion overlaps the other's wgmma. (Two warpgroups sharing a tile would
  // otherwise wait on the same stages in lockstep; two pipelines drift into issuing
  // together and promoting together while the tensor core idles: docs/performance.md,
  // log items 22-23.)
  static_assert(!TURNS || (PIPES == 2 && PIPE_WG == 1), "TURNS: two one-warpgroup pipelines");
  constexpr bool PING_PONG = PIPE_WG == 2 || TURNS;
  const int turn = PIPE_WG == 2 ? consumer : pipe;  // this warpgroup's place in the turns
  auto wait_turn = [&] {
    if constexpr (PING_PONG) sm90::named_barrier_sync(1 + turn, 256);
  };
  auto pass_turn = [&] {
    if constexpr (PING_PONG) sm90::named_barrier_arrive(2 - turn, 256);
  };
  // Hands a read stage back to the producers of every CTA of the cluster.
  auto release = [&](int s) {
    __syncwarp();
    if (lane == 0) {
      sm90::mbar_arrive(&empty[s]);
      if constexpr (CLUSTER > 1) sm90::mbar_arrive_cluster(&empty[s], rank ^ 1);
    }
  };
  // What this warpgroup does with a tile, decided once per tile and broadcast from lane
  // 0: the compiler then sees every branch on it as warp-uniform, keeps the k loop's
  // control, ring position and wgmma descriptors in uniform registers (a loop entered
  // under a branch it cannot prove uniform cost 8-19 %: docs/performance.md, items 38,
  // 39) and does not serialise the wgmma under it (ptxas warning C7518).
  enum Work : int { SKIP, WHOLE_TILE, FIRST_HALF, SECOND_HALF };  // halves: tile.half 1, 2
  if (turn == 1) pass_turn();  // warpgroup 0 goes first
  while (read_next_tile<DYNAMIC>(scheduler, ring, tile)) {
    const int m0 = tile.m0 + rank * BLOCK_M;  // this CTA's first row of the tile
    const bool has_rows = m0 + consumer * WG_ROWS < tile.rows_valid;
    const int lane_work = !has_rows ? SKIP : SPLIT_TAIL ? WHOLE_TILE + tile.half : WHOLE_TILE;
    const Work work = static_cast<Work>(__shfl_sync(0xffffffff, lane_work, 0));
    if (work == SKIP) {  // no valid row here: only keep the ring in step
      for (int kb = 0; kb < k_blocks; ++kb) {
        sm90::mbar_wait(&full[stage], phase);
        wait_turn();
        pass_turn();
        release(stage);
        ring_step<STAGES>(pipe, stage, phase);
      }
      continue;
    }

    // One tile's k blocks and epilogue, tile_n columns from column n0 + col_offset: all of
    // the tile's BLOCK_N, or one half of it (SPLIT_TAIL's last round; the stages hold
    // the whole tile's b rows, of which the half's start col_offset rows in).
    auto multiply_tile = [&](auto tile_n) {
      constexpr int PART = decltype(tile_n)::VALUE / 2;  // fp32 registers per wgmma result
      const int col_offset = 2 * PART < BLOCK_N && work == SECOND_HALF ? BLOCK_N / 2 : 0;
      const u32 b_half = b_base + col_offset * BLOCK_K;
      float acc[PART];
      // One result per slice: the slices of a k block run back to back on the tensor
      // core, with one wait per k block (a shared buffer would drain the pipe once per
      // slice).
      float part[SLICES][PART];
#pragma unroll
      for (int i = 0; i < PART; ++i) acc[i] = 0.0f;

      // Keeps the compiler's accesses to the slices' results on their side of a wgmma
      // fence or wait.
      auto fence_parts = [&] {
#pragma unroll
        for (int h = 0; h < SLICES; ++h) {
#pragma unroll
          for (int i = 0; i < PART; ++i) sm90::fence_operand(part[h][i]);
        }
      };

      // The wgmma of one slice (of the k block in ring stage s) into d, the first
      // instruction overwriting d; one commit group. The caller fences the registers.
      auto issue = [&](float(&d)[PART], int s, int slice) {
        const u32 desc_a = sm90::smem_desc_lo(a_base + s * L::A_TILE);
        const u32 desc_b = sm90::smem_desc_lo(b_half + s * L::B_TILE);
#pragma unroll
        for (int ks = 0; ks < STEPS_PER_SLICE; ++ks) {
          // +32 bytes of k per step inside the swizzle atom: +2 in the address field.
          const int k32 = slice * STEPS_PER_SLICE + ks;
          sm90::wgmma_m64k32_e4m3<2 * PART>(d, desc_a + 2 * k32, desc_b + 2 * k32, ks > 0);
        }
        sm90::wgmma_commit();
      };

      // Whether the k block's stage is known loaded: tested right after the previous k
      // block's wgmma issue, so that the barrier's latency is off the path from the
      // promotion to the next issue when the loads run ahead.
      bool loaded = false;
      // Unrolled by four: the loop's control, the scales' row address and part of the
      // ring's bookkeeping are then paid once per four k blocks (13 SASS instructions
      // fewer per k block, 1-2.5 % faster: docs/performance.md, log item 50). The
      // pair kernels take two, where four spills.
      constexpr int K_UNROLL = CLUSTER == 1 ? 4 : 2;
#pragma unroll K_UNROLL
      for (int kb = 0; kb < k_blocks; ++kb) {
        if (!loaded) sm90::mbar_wait(&full[stage], phase);
        wait_turn();
        // One fence for the k block: nothing writes a register between its slices.
        fence_parts();
        sm90::wgmma_fence();
#pragma unroll
        for (int h = 0; h < SLICES; ++h) issue(part[h], stage, h);
        pass_turn();
        // The ring's next position, worked out once: for the test and the advance.
        int next_stage = stage;
        u32 next_phase = phase;
        ring_step<STAGES>(pipe, next_stage, next_phase);
        loaded = sm90::mbar_test(&full[next_stage], next_phase);
        // The scales (rows row_in_tile and + 8) are read while the tensor core runs,
        // before the stage is handed back.
        const float* slot = scales + stage * SLOT_FLOATS;
        const float scale0 = slot[row_in_tile] * slot[BLOCK_M];
        const float scale1 = slot[row_in_tile + 8] * slot[BLOCK_M];
        sm90::wgmma_wait<0>();
        fence_parts();
        release(stage);  // the stage is read
        // The slices are summed in fp32, then scaled once: the same products as a
        // whole-block partial, so an infinite scale still gives +-Inf rather than
        // Inf - Inf from two slices of opposite sign.
#pragma unroll
        for (int i = 0; i < PART; ++i) {
          float block = part[0][i];
#pragma unroll
          for (int h = 1; h < SLICES; ++h) block += part[h][i];
          acc[i] += block * ((i & 2) ? scale1 : scale0);
        }
        stage = next_stage;
        phase = next_phase;
      }

      // Epilogue straight from registers: rows below rows_valid, columns below n (a
      // multiple of 16; out's rows start 16-byte aligned: validate.py).
      const int r0 = m0 + row_in_tile;
      const i64 row_offset0 = tile.group * p.out_stride_g + static_cast<i64>(r0) * p.out_stride_m;
      const i64 row_offset1 = row_offset0 + 8 * p.out_stride_m;
      const bool valid0 = r0 < tile.rows_valid;
      const bool valid1 = r0 + 8 < tile.rows_valid;
      if constexpr (OUT_KIND == OUT_F32) {
#pragma unroll
        for (int j = 0; j < PART / 4; ++j) {
          const int col = tile.n0 + col_offset + 8 * j + col2;
          if (col < p.n) {
            const float* v = &acc[4 * j];
            float* out = static_cast<float*>(p.out);
            if (valid0) sm90::st_global_v2_f32(out + row_offset0 + col, v[0], v[1]);
            if (valid1) sm90::st_global_v2_f32(out + row_offset1 + col, v[2], v[3]);
          }
        }
      } else {
        // The four lanes of a quad hold two columns each of every 8 consecutive columns
        // of a row. Traded four groups of 8 at a time (transpose_quad), each lane holds
        // one group whole and writes it with one 16-byte store: a quarter of the store
        // instructions of two-column stores, which cost 5-14 % of the kernel
        // (docs/performance.md, log item 36).
        static_assert(PART % 16 == 0, "whole quads of 8-column groups");
        const int quad_lane = lane % 4;
#pragma unroll
        for (int h = 0; h < 2; ++h) {  // row r0, then row r0 + 8
#pragma unroll
          for (int j0 = 0; j0 < PART / 4; j0 += 4) {
            u32 words[4];
#pragma unroll
            for (int q = 0; q < 4; ++q) {
              const float* v = &acc[4 * (j0 + q) + 2 * h];
              words[q] = pack_pair<OUT_KIND>(v[0], v[1]);
            }
            transpose_quad(words, quad_lane);
            const int col = tile.n0 + col_offset + 8 * (j0 + quad_lane);
            if ((h == 0 ? valid0 : valid1) && col < p.n) {
              sm90::st_global_v4_b32(static_cast<u16*>(p.out) + (h == 0 ? row_offset0 : row_offset1) + col,
                                     words);
            }
          }
        }
      }
    };
    if constexpr (SPLIT_TAIL) {
      if (work != WHOLE_TILE) {
        multiply_tile(Width<BLOCK_N / 2>{});
        continue;
      }
    }
    multiply_tile(Width<BLOCK_N>{});
  }
  if constexpr (TURNS) {
    // Pipeline 0 runs one tile more than pipeline 1 when the last round has only its
    // tile: pipeline 1 keeps taking turns through it.
    if (pipe == 1 && scheduler.previous_round_had_tile(PIPES)) {
      for (int kb = 0; kb < k_blocks; ++kb) {
        wait_turn();
        pass_turn();
      }
    }
  }
  if (turn == 0) wait_turn();  // takes warpgroup 1's last hand-over
}

}  // namespace sm90_gemm

template <int BLOCK_M, int BLOCK_N, int STAGES, int NUM_CONSUMER_WG, int PROMOTE_K,
          int OUT_KIND, int PIPES, bool TURNS = false, bool SPLIT_TAIL = false>
__global__ void __launch_bounds__((NUM_CONSUMER_WG + 1) * 128, 1)
    sm90_fp8_masked_gemm(const MaskedGemmParams p, const __grid_constant__ TmaMap tma_a,
                         const __grid_constant__ TmaMap tma_b) {
  sm90_gemm::masked_gemm<BLOCK_M, BLOCK_N, STAGES, NUM_CONSUMER_WG, PROMOTE_K, OUT_KIND, PIPES,
                         TURNS, SPLIT_TAIL, false, 1>(p, tma_a, tma_b, nullptr);
}

// Tiles claimed at run time (DYNAMIC): tile_counter is zero at the launch
// (common/tickets.cuh); no turns.
template <int BLOCK_M, int BLOCK_N, int STAGES, int NUM_CONSUMER_WG, int PROMOTE_K,
          int OUT_KIND, int PIPES, bool SPLIT_TAIL = false>
__global__ void __launch_bounds__((NUM_CONSUMER_WG + 1) * 128, 1)
    sm90_fp8_masked_gemm_claimed(const MaskedGemmParams p, const __grid_constant__ TmaMap tma_a,
                                 const __grid_constant__ TmaMap tma_b, u64* tile_counter) {
  sm90_gemm::masked_gemm<BLOCK_M, BLOCK_N, STAGES, NUM_CONSUMER_WG, PROMOTE_K, OUT_KIND, PIPES,
                         false, SPLIT_TAIL, true, 1>(p, tma_a, tma_b, tile_counter);
}

// Clusters of two CTAs sharing each tile's b (masked_gemm); tma_b's box is half the tile.
template <int BLOCK_M, int BLOCK_N, int STAGES, int NUM_CONSUMER_WG, int PROMOTE_K,
          int OUT_KIND, int PIPES, bool TURNS = false>
__global__ void __cluster_dims__(2, 1, 1) __launch_bounds__((NUM_CONSUMER_WG + 1) * 128, 1)
    sm90_fp8_masked_gemm_pair(const MaskedGemmParams p, const __grid_constant__ TmaMap tma_a,
                              const __grid_constant__ TmaMap tma_b) {
  sm90_gemm::masked_gemm<BLOCK_M, BLOCK_N, STAGES, NUM_CONSUMER_WG, PROMOTE_K, OUT_KIND, PIPES,
                         TURNS, false, false, 2>(p, tma_a, tma_b, nullptr);
  sm90::cluster_sync();  // no CTA leaves while its peer may still signal its barriers
}
