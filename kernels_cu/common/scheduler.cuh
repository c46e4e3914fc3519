// The masked persistent tile scheduler: a deterministic walk that, in the static mode,
// every role of a pipeline (TMA producer, scale copier, each consumer warpgroup) replays
// on its own, so they agree on the sequence of tiles without talking to each other.
// (Tiles handed out at run time, common/tickets.cuh, use the same walk: a ticket is a
// tile index below, which the roles take from their claimer, not from the walk.)
//
// Tiles are numbered in the order (group, n tile, m tile), m fastest, counting only the
// m tiles that start below clamp(masked_m[g], 0, m). Tile t belongs to unit t % units,
// a unit being a CTA (units = gridDim.x) or, with clusters, a cluster (units = the
// number of clusters), and with P independent pipelines per CTA to its pipeline
// (t / units) % P: each round of `units` tiles fills one pipeline of every unit, so a
// last partial round spreads over as many SMs as it has tiles (a pipeline alone on its
// SM runs faster).
// With SPLIT_TAIL, a last partial round of r tiles whose halves fit one round (2r <= the
// pipelines of all units) is walked as 2r half tiles instead, each BLOCK_N / 2 columns
// wide: a round of full tiles leaves SMs idle (prefill G1: 48 tiles of 264 pipelines),
// and a half tile takes about half the time. Its loads stay the full tile's.
// NOTE: m fastest so the m tiles of one (group, n tile) run at the same time on
// neighbouring CTAs and read that b tile from DRAM once (the others hit L2). With n
// fastest, a decode group of 65..128 rows streamed its b twice (measured on the H100,
// 2026-11-25: expected_m 64 at 0.69 of copy bandwidth, see docs/performance.md).
#pragma once
#include "common/sm90_ptx.cuh"
#include "common/types.cuh"

constexpr i64 I64_MAX = 0x7fffffffffffffffLL;

struct MaskedTile {
  i32 group;
  i32 m0;          // first row of the tile
  i32 n0;          // first column of the tile
  i32 rows_valid;  // clamp(masked_m[group], 0, m): rows at or past it are never written
  i32 half;        // 0: all BLOCK_N columns from n0; 1 or 2: the first or second half
};

template <int BLOCK_M, int BLOCK_N, bool SPLIT_TAIL = false>
struct MaskedTileScheduler {
  const i32* masked_m;
  i32 num_groups, m, n_tiles;
  i32 group = -1;
  i32 rows_valid = 0;
  i32 m_tiles = 0;      // m tiles of the current group
  i64 group_base = 0;   // index of the current group's first tile
  i64 group_tiles = 0;  // tiles of the current group
  i64 next;             // the next tile (past split_from: half tile) index of this pipeline
  i64 step;
  // SPLIT_TAIL: indices from split_from on are half tiles, split_from + j being half
  // j % 2 + 1 of tile split_from + j / 2; split_end is past the last of them.
  i64 split_from = I64_MAX;
  i64 split_end = I64_MAX;

  // `unit` of `units` takes the tiles a CTA would: the CTA itself, or with clusters the
  // cluster (whose CTAs then share each tile, BLOCK_M rows being all of theirs).
  __device__ MaskedTileScheduler(const i32* masked_m_, i32 num_groups_, i32 m_, i32 n_,
                                 i32 pipe, i32 pipes, u32 unit, u32 units)
      : masked_m(masked_m_), num_groups(num_groups_), m(m_),
        n_tiles((n_ + BLOCK_N - 1) / BLOCK_N),
        next(unit + static_cast<i64>(pipe) * units),
        step(static_cast<i64>(units) * pipes) {
    if constexpr (SPLIT_TAIL) {
      i64 tiles = 0;
      for (i32 g = 0; g < num_groups; ++g) {
        tiles += static_cast<i64>(m_tiles_in(rows_of(g))) * n_tiles;
      }
      const i64 full_rounds_end = tiles / step * step;
      const i64 rest = tiles - full_rounds_end;
      if (2 * rest <= step) {
        split_from = full_rounds_end;
        split_end = full_rounds_end + 2 * rest;
      }
    }
  }

  __device__ MaskedTileScheduler(const i32* masked_m_, i32 num_groups_, i32 m_, i32 n_,
                                 i32 pipe = 0, i32 pipes = 1)
      : MaskedTileScheduler(masked_m_, num_groups_, m_, n_, pipe, pipes, blockIdx.x,
                            gridDim.x) {}

  __device__ i32 rows_of(i32 g) const {
    const i32 rows = sm90::ld_global_i32(masked_m + g);
    return rows < 0 ? 0 : (rows > m ? m : rows);
  }

  __device__ static i32 m_tiles_in(i32 rows) { return (rows + BLOCK_M - 1) / BLOCK_M; }

  // The tile of `ticket` (an index of the walk: past split_from, of a half tile); false
  // past the last. Tickets must come in increasing order (the walk over the groups only
  // goes forward). It moves the static walk to the ticket: the static walk's code is
  // kept as it was, as any change of it moves the kernel's speed (docs/performance.md,
  // log items 30, 33).
  __device__ bool tile_at(i64 ticket, MaskedTile& tile) {
    next = ticket;
    return next_tile(tile);
  }

  // Once tile_at returned false: the number of tickets (tiles, or with a split last
  // round the tickets up to split_end).
  __device__ i64 tickets_end() const { return split_end != I64_MAX ? split_end : group_base; }

  // The next tile of this pipeline in the static walk; false when none is left.
  __device__ bool next_tile(MaskedTile& tile) {
    i64 index = next;
    tile.half = 0;
    if (SPLIT_TAIL && next >= split_from) {
      if (next >= split_end) return false;
      index = split_from + (next - split_from) / 2;
      tile.half = 1 + static_cast<i32>((next - split_from) % 2);
    }
    while (index >= group_base + group_tiles) {
      group_base += group_tiles;
      ++group;
      if (group >= num_groups) return false;
      rows_valid = rows_of(group);
      m_tiles = m_tiles_in(rows_valid);
      group_tiles = static_cast<i64>(m_tiles) * n_tiles;
    }
    const i64 local = index - group_base;
    const i64 n_tile = local / m_tiles;
    tile.group = group;
    tile.m0 = static_cast<i32>((local - n_tile * m_tiles) * BLOCK_M);
    tile.n0 = static_cast<i32>(n_tile * BLOCK_N);
    tile.rows_valid = rows_valid;
    next += step;
    return true;
  }

  // Once next_tile returned false: whether the round before this pipeline's next one
  // had a tile (a whole or a half one). For pipeline 1 of two, that round is pipeline
  // 0's, which then runs one tile more.
  __device__ bool previous_round_had_tile(i32 pipes) const {
    return next - step / pipes < tickets_end();
  }
};
