"""Host half of kernels_cu/sm90_fp8_masked_gemm.cu: TMA + wgmma on Hopper (sm_90a).

A persistent kernel: at most one CTA per SM walks the masked tile list (group, n tile,
m tile; m tiles past clamp(masked_m[g], 0, m) skipped) with a stride of the grid size.
Each CTA has one TMA producer warpgroup and BLOCK_M / 64 consumer warpgroups; stages of
(BLOCK_M + BLOCK_N) x 128 bytes fill whatever shared memory the device offers.
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
# Mirrors of kernels_cu/sm90_fp8_masked_gemm.cu (Layout): barrier bytes per stage (full +
# empty mbarrier) and the slack for aligning the dynamic window to 1024 bytes.
BARRIER_BYTES_PER_STAGE = 16
SMEM_ALIGN_SLACK = 1024
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

    def __post_init__(self):
        if (self.block_m % WG_ROWS or not 1 <= self.block_m // WG_ROWS <= MAX_CONSUMER_WARPGROUPS
                or self.block_n not in BLOCK_N_CHOICES
                or self.promote_k not in PROMOTE_K_CHOICES):
            raise ValueError(f"unsupported sm90 config {self}")

    @property
    def consumer_warpgroups(self) -> int:
        return self.block_m // WG_ROWS

    @property
    def threads(self) -> int:
        return (self.consumer_warpgroups + 1) * 128

    @property
    def stage_bytes(self) -> int:
        return stage_bytes(self.block_m, self.block_n)

    @property
    def smem_bytes(self) -> int:
        return smem_bytes(self.block_m, self.block_n, self.stages)

    def expression(self) -> str:
        return (f"sm90_fp8_masked_gemm<{self.block_m}, {self.block_n}, {self.stages}, "
                f"{self.consumer_warpgroups}, {self.promote_k}, {int(self.out_kind)}>")


def stage_bytes(block_m: int, block_n: int) -> int:
    return (block_m + block_n) * BLOCK_K


def smem_bytes(block_m: int, block_n: int, stages: int) -> int:
    return stages * (stage_bytes(block_m, block_n) + BARRIER_BYTES_PER_STAGE) + SMEM_ALIGN_SLACK


def max_stages(block_m: int, block_n: int, info: DeviceInfo) -> int:
    """The most stages whose shared memory fits the device's opt-in limit (capped)."""
    per_stage = stage_bytes(block_m, block_n) + BARRIER_BYTES_PER_STAGE
    return min(MAX_STAGES, (info.smem_per_block_optin - SMEM_ALIGN_SLACK) // per_stage)


def tiles(problem: Problem, block_m: int, block_n: int, rows: int) -> int:
    return problem.num_groups * -(-rows // block_m) * -(-problem.n // block_n)


# (largest expected_m, block_m, block_n), smallest first; past the last entry, the
# prefill tile. Measured on the H200 (docs/performance.md, 2026-12-01): 64 x 128 streams b
# fastest while a group's rows fit 64 rows; beyond, 128 x 128 (a tile that covers a
# group's rows reads b once) was as fast as or faster than 64 x 128 and 192 x 64.
TILES = ((48, 64, 128),)
PREFILL_TILE = (128, 128)


def choose_config(problem: Problem, info: DeviceInfo) -> Sm90Config:
    """Tile shape from expected_m, stages from the device's shared memory.

    - block_m x block_n: the first TILES entry whose expected_m bound holds, else
      PREFILL_TILE. Decode is bound by streaming b, once per m tile of each group: a tile
      that covers a group's rows reads b once (the spare warpgroups of a tile past
      masked_m skip their wgmma); prefill is bound by the tensor core.
    - promote_k: DEFAULT_PROMOTE_K (accuracy; docs/performance.md).
    - stages: as many (block_m + block_n) x 128-byte stages (+ 16 bytes of barriers) as
      fit the device's opt-in shared memory (smem_per_block_optin, less 1024 bytes of
      alignment slack), at most 16; fewer than 2 is an error.

    Worked example (H100: 232448 B opt-in): G = 4, expected_m = 256, n = 7168 ->
    block_m 128, block_n 128, stages = (232448 - 1024) // (32768 + 16) = 7, smem
    7 * 32784 + 1024 = 230512 B, 384 threads. Decode, expected_m = 8: block_m 64,
    stages = 231424 // 24592 = 9, smem 222352 B, 256 threads.
    """
    block_m, block_n = next(((bm, bn) for bound, bm, bn in TILES
                             if problem.expected_m <= bound), PREFILL_TILE)
    stages = max_stages(block_m, block_n, info)
    if stages < MIN_STAGES:
        raise UnsupportedDeviceError(
            f"the sm90 kernel needs at least {smem_bytes(block_m, block_n, MIN_STAGES)} bytes "
            f"of shared memory per block; {info.name} offers {info.smem_per_block_optin}")
    return Sm90Config(block_m, block_n, stages, problem.out_kind)


def runs_on(info: DeviceInfo) -> bool:
    return info.cc == (9, 0)


def target_for(info: DeviceInfo) -> str:
    return TARGET


def plan(problem: Problem, info: DeviceInfo, config: Sm90Config | None = None) -> LaunchPlan:
    """Launch plan; ``config`` overrides the heuristic tile choice (tests, tuning) but
    never the output kind, which is the problem's."""
    config = config or choose_config(problem, info)
    return persistent_plan("sm90", SOURCE, TARGET, config, problem, info, config.block_m,
                           config.block_n, config.threads)


def persistent_plan(family: str, source: str, target: str, config, problem: Problem,
                    info: DeviceInfo, block_m: int, block_n: int, threads: int) -> LaunchPlan:
    """The plan of a persistent TMA kernel (this family's and sm100's): ``config`` takes
    the problem's output kind and must fit the device's shared memory; one CTA per SM, or
    per tile that could be live if fewer (masked_m stays on the GPU, so every m tile
    counts)."""
    if config.out_kind != problem.out_kind:
        config = dataclasses.replace(config, out_kind=problem.out_kind)
    if config.smem_bytes > info.smem_per_block_optin:
        raise UnsupportedDeviceError(
            f"{family} config {config} needs {config.smem_bytes} bytes of shared memory; "
            f"{info.name} offers {info.smem_per_block_optin}")
    most_tiles = tiles(problem, block_m, block_n, problem.m)
    grid = (max(1, min(info.sm_count, most_tiles)), 1, 1)
    spec = KernelSpec(source, config.expression(), target)
    return LaunchPlan(spec, grid, (threads, 1, 1), config.smem_bytes, config)


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
    return (_operand_map("a", views["a"], config.block_m),
            _operand_map("b", views["b"], config.block_n))


def reference_configs(info: DeviceInfo = REFERENCE_DEVICE) -> list[Sm90Config]:
    """Every tile shape the heuristics can pick, planned for ``info``, bf16 out."""
    shapes = [(bm, bn) for _, bm, bn in TILES] + [PREFILL_TILE]
    return [Sm90Config(bm, bn, max_stages(bm, bn, info), OutKind.BF16) for bm, bn in shapes]


def check_specs(target: str) -> list[tuple[KernelSpec, str]]:
    configs = reference_configs()
    decode, prefill = configs[0], configs[-1]
    # The other output kinds on the decode and prefill shapes; the three-warpgroup tile
    # and the other promote_k choices, which a caller can ask for through plan(config=).
    configs += [dataclasses.replace(decode, out_kind=OutKind.F32),
                dataclasses.replace(prefill, out_kind=OutKind.F16),
                dataclasses.replace(prefill, out_kind=OutKind.F32),
                Sm90Config(192, 64, max_stages(192, 64, REFERENCE_DEVICE), OutKind.BF16),
                dataclasses.replace(prefill, promote_k=128)]
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
