"""Host half of kernels_cu/sm90_fp8_masked_gemm.cu: TMA + wgmma on Hopper (sm_90a).

A persistent kernel: at most one CTA per SM walks the masked tile list (group, n tile,
m tile; m tiles past clamp(masked_m[g], 0, m) skipped) with a stride of the grid size
(of the number of clusters, for CTAs paired in clusters); a last partial round whose
half tiles fit one round runs as half tiles (split_tail, from expected_m 64 on). Below
expected_m 113 the tiles after each pipeline's first are claimed at run time instead
(dynamic; the launch passes a zeroed counter, tile_counters.py).
Each CTA has one producer warpgroup (TMA for the operands, cp.async for the scales) and
one or two independent pipelines, each with its own tiles, ring of stages and
BLOCK_M / 64 consumer warpgroups; stages of (BLOCK_M + BLOCK_N) x 128 bytes plus their
scales fill whatever shared memory the device offers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .. import tma
from ..build import KernelSpec
from ..device import DeviceInfo
from ..dispatch import Family
from ..dlpack import TensorView
from ..dtypes import OutKind
from ..errors import UnsupportedDeviceError
from ..launch import LaunchPlan
from ..problem import Problem

SOURCE = "sm90_fp8_masked_gemm.cu"
TARGET = "sm_90a"
BLOCK_K = 128  # bytes of k per stage: one 128-byte swizzle span, one scale block
WG_ROWS = 64  # rows per consumer warpgroup (the wgmma M)
BLOCK_N_CHOICES = (64, 128)  # inside one 128-column b-scale block
MAX_CONSUMER_WARPGROUPS = 3  # a fourth would leave each fewer registers than a tile needs
# k per wgmma chain before its partial is scaled into the fp32 accumulators. Hopper's fp8
# wgmma accumulates with fewer bits than fp32 (docs/performance.md, "Accuracy"), so the
# chain is kept shorter than the 128-wide scale block. (32 was measured and dropped: its
# four results per k block would not fit the registers beside the accumulators.)
PROMOTE_K_CHOICES = (64, 128)
DEFAULT_PROMOTE_K = 64
# Mirrors of kernels_cu/sm90_fp8_masked_gemm.cu (Layout): bookkeeping bytes per stage (full
# and empty mbarriers; the ticket ring's slot of two mbarriers and a ticket, which every
# instance lays out, used with `dynamic`), the scale slot (block_m a scales + one b
# scale, fp32, in 16-byte units).
BOOKKEEPING_BYTES_PER_STAGE = 16 + 24
MIN_STAGES = 2
MAX_STAGES = 16

# The device the CI instances are planned for (check_specs): an H100 SXM's limits.
REFERENCE_DEVICE = DeviceInfo(device_id=-1, name="H100 (reference)", cc=(9, 0), sm_count=132,
                              smem_per_block_optin=232448, l2_bytes=50 * 2**20)


@dataclass(frozen=True)
class Sm90Config:
    block_m: int
    block_n: int
    stages: int
    out_kind: OutKind
    promote_k: int = DEFAULT_PROMOTE_K
    pipes: int = 1  # independent pipelines per CTA, each with its own tiles and ring
    # CTAs per cluster sharing each tile's b through TMA multicast (kernel: masked_gemm);
    # a tile is then cluster x block_m rows. Correct on the H200, 0.5-36 % slower than
    # the default on the benchmark's shapes (docs/performance.md, log item 26).
    cluster: int = 1
    # The two pipelines' warpgroups take turns issuing wgmma (ping-pong): needs two
    # pipelines of one warpgroup each, tiles not claimed (log items 23, 26, 39).
    turns: bool = False
    # A last partial round whose half tiles fit one round runs as half tiles of
    # block_n / 2 columns (kernels_cu/common/scheduler.cuh): needs block_n 128, no
    # cluster.
    split_tail: bool = False
    # Tiles after each pipeline's first are claimed at run time from a counter in global
    # memory (kernels_cu/common/tickets.cuh; the launch passes a zeroed one,
    # tile_counters.py), so a pipeline that runs ahead takes more: needs no cluster, no
    # turns.
    dynamic: bool = False

    def __post_init__(self):
        if (self.block_m % WG_ROWS or self.pipes not in (1, 2) or self.cluster not in (1, 2)
                or (self.turns and (self.pipes, self.block_m) != (2, WG_ROWS))
                or (self.split_tail and (self.block_n != 128 or self.cluster != 1))
                or (self.dynamic and (self.cluster != 1 or self.turns))
                or not 1 <= self.pipes * self.block_m // WG_ROWS <= MAX_CONSUMER_WARPGROUPS
                or self.block_n not in BLOCK_N_CHOICES
                or self.promote_k not in PROMOTE_K_CHOICES):
            raise ValueError(f"unsupported sm90 config {self}")

    @property
    def consumer_warpgroups(self) -> int:
        return self.pipes * self.block_m // WG_ROWS

    @property
    def threads(self) -> int:
        return (self.consumer_warpgroups + 1) * 128

    @property
    def stage_bytes(self) -> int:
        return stage_bytes(self.block_m, self.block_n)

    @property
    def smem_bytes(self) -> int:
        return smem_bytes(self.block_m, self.block_n, self.stages, self.pipes)

    def expression(self) -> str:
        if self.dynamic:  # its own entry point: it takes the tile counter, and no turns
            kernel, flags = "sm90_fp8_masked_gemm_claimed", _flags(self.split_tail)
        elif self.cluster == 2:
            kernel, flags = "sm90_fp8_masked_gemm_pair", _flags(self.turns)
        else:
            kernel, flags = "sm90_fp8_masked_gemm", _flags(self.turns, self.split_tail)
        return (f"{kernel}<{self.block_m}, {self.block_n}, {self.stages}, "
                f"{self.consumer_warpgroups}, {self.promote_k}, {int(self.out_kind)}, "
                f"{self.pipes}{flags}>")


def _flags(*flags: bool) -> str:
    """The kernel's trailing bool template arguments, up to the last one set (the rest
    keep their defaults)."""
    while flags and not flags[-1]:
        flags = flags[:-1]
    return "".join(f", {str(flag).lower()}" for flag in flags)


def stage_bytes(block_m: int, block_n: int) -> int:
    """Operand bytes of one stage: a k block of the tile's a and b rows."""
    return (block_m + block_n) * BLOCK_K


def scale_slot_bytes(block_m: int) -> int:
    """The block_m a scales and the b scale of one stage (fp32), in 16-byte units."""
    return -(-(block_m + 1) * 4 // 16) * 16


def _bytes_per_stage(block_m: int, block_n: int) -> int:
    return stage_bytes(block_m, block_n) + BOOKKEEPING_BYTES_PER_STAGE + scale_slot_bytes(block_m)


def smem_bytes(block_m: int, block_n: int, stages: int, pipes: int = 1) -> int:
    """Shared memory of ``pipes`` rings of ``stages`` stages each."""
    return pipes * stages * _bytes_per_stage(block_m, block_n)


def max_stages(block_m: int, block_n: int, info: DeviceInfo, pipes: int = 1) -> int:
    """The most stages per ring whose shared memory fits the device's opt-in limit
    (capped)."""
    per_stage = pipes * _bytes_per_stage(block_m, block_n)
    return min(MAX_STAGES, info.smem_per_block_optin // per_stage)


def most_tiles(problem: Problem, block_m: int, block_n: int) -> int:
    """Tiles when every group's rows are valid (masked_m stays on the GPU)."""
    return problem.num_groups * -(-problem.m // block_m) * -(-problem.n // block_n)


# The tile: 64 x 128 in two pipelines per CTA (two consumer warpgroups on different
# tiles, so one's fp32 promotion overlaps the other's wgmma). Measured on the H200 over
# the benchmark's sixteen shapes (docs/performance.md, 2026-12-02): 5 % less total time
# than 128 x 128, up to 23 % less on single shapes.
TILE = (64, 128)
PIPES = 2
# Except where a typical group has between one and two 64-row tiles of rows
# (expected_m in WIDE_ROWS, masked_m mostly 38-145; from expected_m 50 on, groups of
# round(1.3 expected_m) rows need a second 64-row tile): there one 128 x 128 tile (two
# warpgroups taking turns, one pipeline) streams each group's b through one SM per n
# tile instead of two. Measured (docs/performance.md, log items 27, 36 and 41), claimed
# against the 64 x 128 tile's pick there: 2-9 % faster at expected_m 56-60, 2-24 % at
# 64-96, 4 % at 104, 0-2 % at 112; 3 % slower at 120, 5-6 % at 128; at 52-54 3 % faster
# with n 7168 and k 2048, 1.5 % slower with n 4096 and k 7168; 0.5-4 % slower at 48-50.
# Only where a wide tile per group and n tile covers every SM (uses_wide_tile): with fewer
# tiles, the 64 x 128 tile's twice as many run on twice as many SMs. Measured at
# expected_m 54-104 where G x n/128 < 132 (docs/performance.md, log item 41 e): up to 26 %
# faster (G = 1, n 4096), at worst 1 % slower (G = 2, n 4096, expected_m 80-104); the
# wide tile 3-10 % ahead again at G = 4, n 7168 (224 tiles) from expected_m 60.
WIDE_TILE = (128, 128)
WIDE_ROWS = range(54, 113)
# From this expected_m on, either tile splits a last partial round into half tiles where
# the halves fit one round (Sm90Config.split_tail). Measured on the H200
# (docs/performance.md, log item 33): where a split happens, 13 % faster on prefill G1
# n4096 (48 tiles left after two rounds of 264), 7 % on G4 n7168, 2-4 % on G2 n7168 and
# em128 n4096; where none does, the split build still ran 0-9 % faster on prefill and
# expected_m 64-256, but 0.3-2.5 % slower at expected_m 8-32 (a different schedule and
# every role reading all of masked_m first: item 34), which keep the whole-tile build.
SPLIT_TAIL_FROM = 64
# Below this expected_m (through WIDE_ROWS), tiles after each pipeline's first are
# claimed at run time (Sm90Config.dynamic). Measured on the H200 (docs/performance.md,
# log item 35), same run, two rounds: 0.7-2.3 % faster at expected_m 8 and 32, 2.4-4.6 %
# at 64 (the wide tile, whose last round there is too full to split); even at 128, 1-1.4 %
# slower at 256 and 3-12 % on prefill with the split build, split or not (item 36, on
# the later kernel: 4-13 % slower from 128 on, prefill 3-11 %).
DYNAMIC_BELOW = WIDE_ROWS.stop
# Where tiles are not claimed, the two pipelines of TILE take turns issuing wgmma
# (Sm90Config.turns). Measured on the H200 (docs/performance.md, log item 39), since
# every k loop runs in the uniform datapath: 0.5-3.7 % faster than the two pipelines
# issuing freely on prefill and expected_m 128-256, which with uniform loops drift into
# issuing together (9-14 % slower than before those loops).


def choose_config(problem: Problem, info: DeviceInfo) -> Sm90Config:
    """The tile (TILE in PIPES pipelines, or WIDE_TILE in one where expected_m is in
    WIDE_ROWS and its tiles cover every SM), its last partial round split into half
    tiles from expected_m SPLIT_TAIL_FROM on, its tiles claimed at run time below
    expected_m DYNAMIC_BELOW (and TILE's pipelines taking turns from there on), stages
    from the device's shared memory.

    - promote_k: DEFAULT_PROMOTE_K (accuracy; docs/performance.md).
    - stages per pipeline: as many as fit the device's opt-in shared memory
      (smem_per_block_optin), at most 16; a stage is
      (block_m + block_n) x 128 operand bytes, 40 bytes of bookkeeping (four mbarriers
      and a ticket) and the scale slot (block_m + 1 floats in 16-byte units); fewer than
      2 is an error.

    Worked examples (H100: 232448 B opt-in):
    - expected_m 256 -> block_m 64, block_n 128, two pipelines of
      232448 // (2 * (24576 + 40 + 272)) = 4 stages, smem 2 * 4 * 24888 = 199104 B,
      384 threads;
    - expected_m 64 -> block_m 128, block_n 128, one pipeline of
      232448 // (32768 + 40 + 528) = 6 stages, smem 6 * 33336 = 200016 B, 384 threads.
    """
    (block_m, block_n), pipes = ((WIDE_TILE, 1) if uses_wide_tile(problem, info)
                                 else (TILE, PIPES))
    dynamic = problem.expected_m < DYNAMIC_BELOW
    return fitted_config(block_m, block_n, info, problem.out_kind, pipes=pipes,
                         split_tail=problem.expected_m >= SPLIT_TAIL_FROM, dynamic=dynamic,
                         turns=not dynamic)


def uses_wide_tile(problem: Problem, info: DeviceInfo) -> bool:
    """Whether choose_config takes WIDE_TILE: expected_m in WIDE_ROWS, and one wide tile per
    group (at most a few groups there hold more than 128 rows) and n tile for every SM."""
    n_tiles = -(-problem.n // WIDE_TILE[1])
    return problem.expected_m in WIDE_ROWS and problem.num_groups * n_tiles >= info.sm_count


def fitted_config(block_m: int, block_n: int, info: DeviceInfo,
                  out_kind: OutKind = OutKind.BF16, **options) -> Sm90Config:
    """The config of this tile (``options``: Sm90Config's other fields) with as many
    stages per ring as fit ``info``'s shared memory (max_stages); fewer than MIN_STAGES is
    an error."""
    pipes = options.get("pipes", 1)
    stages = max_stages(block_m, block_n, info, pipes)
    if stages < MIN_STAGES:
        raise UnsupportedDeviceError(
            f"the sm90 kernel needs at least {smem_bytes(block_m, block_n, MIN_STAGES, pipes)} "
            f"bytes of shared memory per block; {info.name} offers {info.smem_per_block_optin}")
    return Sm90Config(block_m, block_n, stages, out_kind, **options)


def runs_on(info: DeviceInfo) -> bool:
    return info.cc == (9, 0)


def target_for(info: DeviceInfo) -> str:
    return TARGET


def plan(problem: Problem, info: DeviceInfo, config: Sm90Config | None = None) -> LaunchPlan:
    """Launch plan; ``config`` overrides the heuristic tile choice (tests, tuning) but
    never the output kind, which is the problem's."""
    config = config or choose_config(problem, info)
    return persistent_plan("sm90", SOURCE, TARGET, config, problem, info, config.block_m,
                           config.block_n, config.threads, config.cluster, config.dynamic)


def persistent_plan(family: str, source: str, target: str, config, problem: Problem,
                    info: DeviceInfo, block_m: int, block_n: int, threads: int,
                    cluster: int = 1, tile_counter: bool = False) -> LaunchPlan:
    """The plan of a persistent TMA kernel (this family's and sm100's): ``config`` takes
    the problem's output kind and must fit the device's shared memory; one CTA per SM, or
    per tile that could be live if fewer (masked_m stays on the GPU, so every m tile
    counts; kernels_cu/common/scheduler.cuh hands a CTA's pipelines whole rounds). With
    clusters of ``cluster`` CTAs sharing tiles of cluster x block_m rows, as many whole
    clusters as fit the SMs. ``tile_counter``: the kernel takes a zeroed counter after
    its other arguments (launch.KernelLaunch.run passes it).
    NOTE: that assumes every cluster of the grid can be resident at once: true of pairs
    on the H200 (66 of 132 SMs' worth, cuOccupancyMaxActiveClusters through
    scripts/cluster_occupancy.py, 2026-12-02); a grid larger than that would serialise
    clusters."""
    if config.out_kind != problem.out_kind:
        config = dataclasses.replace(config, out_kind=problem.out_kind)
    if config.smem_bytes > info.smem_per_block_optin:
        raise UnsupportedDeviceError(
            f"{family} config {config} needs {config.smem_bytes} bytes of shared memory; "
            f"{info.name} offers {info.smem_per_block_optin}")
    clusters = min(info.sm_count // cluster, most_tiles(problem, block_m * cluster, block_n))
    grid = (cluster * max(1, clusters), 1, 1)
    spec = KernelSpec(source, config.expression(), target)
    return LaunchPlan(spec, grid, (threads, 1, 1), config.smem_bytes, config, tile_counter)


def _operand_map(argument: str, view: TensorView, rows_box: int) -> tma.TensorMap:
    """(G, rows, k) K-major fp8 bytes -> a 3-D map (k, rows, G), box (128, rows_box, 1)."""
    groups, rows, k = view.shape
    stride_g, stride_r = view.strides[0], view.strides[1]
    # A dimension of extent 1 is never stepped over: give it a dense, valid stride.
    if rows == 1:
        stride_r = k
    if groups == 1:
        stride_g = rows * stride_r
    return tma.encode_tiled_u8(argument, view.ptr, (k, rows, groups), (stride_r, stride_g),
                               (BLOCK_K, rows_box, 1))


def extra_arguments(plan: LaunchPlan, views: dict[str, TensorView]) -> tuple:
    config: Sm90Config = plan.config
    # With clusters each CTA loads its share of b's rows (into every CTA of the cluster).
    return (_operand_map("a", views["a"], config.block_m),
            _operand_map("b", views["b"], config.block_n // config.cluster))


def reference_configs(info: DeviceInfo = REFERENCE_DEVICE) -> list[Sm90Config]:
    """The configs the heuristics pick (TILE in whole tiles and WIDE_TILE with a split last
    round, both with tiles claimed at run time; TILE with a split last round, not
    claimed, its pipelines taking turns), planned for ``info``, bf16 out. (WIDE_TILE in
    whole tiles, the pick from WIDE_ROWS.start to SPLIT_TAIL_FROM, is check_specs'.) A
    group per SM, so that the wide tile's tiles cover them."""
    return [choose_config(Problem(info.sm_count, 4096, BLOCK_K, BLOCK_K, expected_m,
                                  OutKind.BF16), info)
            for expected_m in (1, SPLIT_TAIL_FROM, DYNAMIC_BELOW)]


def check_specs(target: str) -> list[tuple[KernelSpec, str]]:
    whole, wide, split = reference_configs()
    static_whole = dataclasses.replace(whole, dynamic=False)
    # The other output kinds; the wide tile in whole tiles (the pick below
    # SPLIT_TAIL_FROM) and unclaimed, TILE in whole tiles unclaimed, split claimed and
    # split with its pipelines issuing freely, the other one-pipeline tiles, the other
    # promote_k choice, the pair sharing b (with and without turns), which a caller can
    # ask for through plan(config=).
    configs = [whole, wide, split, dataclasses.replace(split, out_kind=OutKind.F32),
               dataclasses.replace(split, out_kind=OutKind.F16),
               dataclasses.replace(wide, split_tail=False),
               dataclasses.replace(wide, dynamic=False), static_whole,
               dataclasses.replace(split, dynamic=True, turns=False),
               dataclasses.replace(split, turns=False),
               fitted_config(64, 128, REFERENCE_DEVICE), fitted_config(192, 64, REFERENCE_DEVICE),
               dataclasses.replace(wide, promote_k=128),
               dataclasses.replace(static_whole, cluster=2),
               dataclasses.replace(static_whole, cluster=2, turns=True)]
    return [(KernelSpec(SOURCE, config.expression(), target), r"QGMMA") for config in configs]


FAMILY = Family(
    name="sm90",
    source=SOURCE,
    check_targets=(TARGET,),
    runs_on=runs_on,
    target_for=target_for,
    plan=plan,
    check_specs=check_specs,
    validated_archs=(90,),  # H100 and H200 (tests/test_sm90_gpu.py)
    extra_arguments=extra_arguments,
)
