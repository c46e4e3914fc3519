// Tiles handed out at run time: a pipeline that runs ahead takes more of them.
//
// A ticket is an index of the tile walk (MaskedTileScheduler::tile_at). Each pipeline
// takes its first ticket from the static first round (its own index among all
// pipelines, no claim); every later ticket is claimed from a counter in global memory
// once the pipeline's producer has issued its current tile's loads, and passed to the
// pipeline's other roles through a ring in shared memory (TicketRing).
//
// The counter must be zero when a launch starts; the launch leaves it at zero (the
// claim that takes the launch's last ticket resets it), so launches that run one after
// another may share it, launches that may overlap may not: the host hands each stream,
// and each launch captured into a graph, its own (cugroupgemm/tile_counters.py).
#pragma once
#include "common/sm90_ptx.cuh"
#include "common/types.cuh"

struct TicketCounter {
  u64* counter;
  i64 first_round;  // tickets [0, first_round) are the pipelines' first, not claimed

  // The calling pipeline's next ticket (past the first round, in increasing order).
  __device__ i64 claim() const {
    return first_round + static_cast<i64>(atomicAdd(counter, 1ull));
  }

  // After a claimed `ticket` found no tile (it is at or past `end`, the number of
  // tickets): the pipeline that took the launch's last claim zeroes the counter. Each
  // pipeline whose first ticket is below end claims until a claim fails, so there are
  // end claims in all: the end - first_round tickets past the first round (if any) and
  // min(end, first_round) failures. The one that took counter value end - 1 came last.
  __device__ void finish(i64 ticket, i64 end) const {
    if (ticket == first_round + end - 1) atomicExch(counter, 0ull);
  }
};

// One pipeline's tickets, from its claimer (the TMA thread) to its reading warps (the
// scale warp and the consumer warps), through DEPTH slots of a ticket and two mbarriers.
template <int DEPTH>
struct TicketRing {
  i64* tickets;
  u64* full;   // arrival count 1: the claimer published the slot's ticket
  u64* empty;  // arrival count: the reading warps (one arrival each once it took it)
  int slot = 0;
  u32 phase = 0;

  __device__ void publish(i64 ticket) {
    sm90::mbar_wait(&empty[slot], phase ^ 1);
    tickets[slot] = ticket;
    sm90::mbar_arrive(&full[slot]);  // release: the ticket is visible to the readers
    advance();
  }

  // Called by every lane of a reading warp.
  __device__ i64 take() {
    sm90::mbar_wait(&full[slot], phase);
    const i64 ticket = tickets[slot];
    __syncwarp();
    if (threadIdx.x % 32 == 0) sm90::mbar_arrive(&empty[slot]);
    advance();
    return ticket;
  }

 private:
  __device__ void advance() {
    if (++slot == DEPTH) {
      slot = 0;
      phase ^= 1;
    }
  }
};
