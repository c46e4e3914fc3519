"""Host half of kernels_cu/sm90_fp8_masked_gemm.cu: TMA + wgmma on Hopper (sm_90a).

A persistent kernel: at most one CTA per SM walks the masked tile list (group, m tile,
n tile; m tiles past clamp(masked_m[g], 0, m) skipped) with a stride of the grid size.
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
from ..errors import ArgumentValueError, UnsupportedDeviceError
from ..launch import LaunchPlan
from ..problem import Problem

SOURCE = "sm90_fp8_masked_gemm.cu"
TARGET = "sm_90a"
BLOCK_K = 128  # bytes of k per stage: one 128-byte swizzle span, one scale block
WG_ROWS = 64  # rows per consumer warpgroup (the wgmma M)
BLOCK_N_CHOICES = (128, 256)  # multiples of the 128-column b-scale block
DEFAULT_BLOCK_N = 128
DECODE_MAX_EXPECTED_M = 64  # expected_m up to this: 64-row tiles, one consumer warpgroup
# Mirrors of kernels_cu/sm90_fp8_masked_gemm.cu (Layout): barrier bytes per stage (full +
# empty mbarrier) and the slack for aligning the dynamic window to 1024 bytes.
BARRIER_BYTES_PER_STAGE = 16
SMEM_ALIGN_SLACK = 1024
MIN_STAGES = 2
MAX_STAGES = 16
MAX_INT32 = 2**31 - 1

# The device the CI instances are planned for (check_specs): an H100 SXM's limits.
REFERENCE_DEVICE = DeviceInfo(device_id=-1, name="H100 (reference)", cc=(9, 0), sm_count=132,
                              smem_per_block_optin=232448, l2_bytes=50 * 2**20)


@dataclass(frozen=True)
class Sm90Config:
    block_m: int
    block_n: int
    stages: int
    out_kind: OutKind

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
                f"{self.consumer_warpgroups}, {int(self.out_kind)}>")


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


def choose_config(problem: Problem, info: DeviceInfo) -> Sm90Config:
    """Tile shape from expected_m, stages from the device's shared memory.

    - block_m: 64 (one consumer warpgroup) when expected_m <= 64 (decode: fewer wasted
      rows per tile), else 128 (two consumer warpgroups, prefill).
    - block_n: 128. The kernel also offers 256 (pass a config to ``plan``), which reads a
      once per 256 columns but promotes its two 128-column halves one after the other
      (128 accumulator + 64 partial registers fit; 128 + 128 would not). A wave count
      cannot choose between them: with T tiles at 128 and T' >= T / 2 at 256 on S SMs,
      ceil(T / S) * 128 <= ceil(T' / S) * 256 always, so 256 only pays if its tiles run
      faster per flop; that waits for a measurement on the H100.
    - stages: as many (block_m + block_n) x 128-byte stages (+ 16 bytes of barriers) as
      fit the device's opt-in shared memory (smem_per_block_optin, less 1024 bytes of
      alignment slack), at most 16; fewer than 2 is an error.

    Worked example (H100: 232448 B opt-in): G = 4, expected_m = 256, n = 7168 ->
    block_m 128, block_n 128, stages = (232448 - 1024) // (32768 + 16) = 7, smem
    7 * 32784 + 1024 = 230512 B, 384 threads. Decode, expected_m = 8: block_m 64,
    stages = 231424 // 24592 = 9, smem 222352 B, 256 threads.
    """
    block_m = WG_ROWS if problem.expected_m <= DECODE_MAX_EXPECTED_M else 2 * WG_ROWS
    block_n = DEFAULT_BLOCK_N
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


def _check_problem(problem: Problem):
    """TMA addresses 3-D (k, rows, groups) boxes; the params struct holds int32 sizes."""
    for argument, what, value in (("a", "k (a.shape[2])", problem.k),
                                  ("a", "m (a.shape[1])", problem.m),
                                  ("b", "n (b.shape[1])", problem.n),
                                  ("a", "the number of groups (a.shape[0])",
                                   problem.num_groups)):
        if value > MAX_INT32:
            raise ArgumentValueError(f"{argument}: the sm90 kernel supports {what} up to "
                                     f"2^31 - 1, got {value}")


def plan(problem: Problem, info: DeviceInfo, config: Sm90Config | None = None) -> LaunchPlan:
    """Launch plan; ``config`` overrides the heuristic tile choice (tests, tuning) but
    never the output kind, which is the problem's."""
    _check_problem(problem)
    if config is None:
        config = choose_config(problem, info)
    elif config.out_kind != problem.out_kind:
        config = dataclasses.replace(config, out_kind=problem.out_kind)
    if config.smem_bytes > info.smem_per_block_optin:
        raise UnsupportedDeviceError(
            f"sm90 config {config} needs {config.smem_bytes} bytes of shared memory; "
            f"{info.name} offers {info.smem_per_block_optin}")
    # masked_m stays on the GPU: size the grid for every m tile that could be live.
    most_tiles = tiles(problem, config.block_m, config.block_n, problem.m)
    grid = (max(1, min(info.sm_count, most_tiles)), 1, 1)
    spec = KernelSpec(SOURCE, config.expression(), TARGET)
    return LaunchPlan(spec, grid, (config.threads, 1, 1), config.smem_bytes, config)


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
    shapes = [(WG_ROWS, 128), (2 * WG_ROWS, 128), (2 * WG_ROWS, 256)]
    return [Sm90Config(bm, bn, max_stages(bm, bn, info), OutKind.BF16) for bm, bn in shapes]


def check_specs(target: str) -> list[tuple[KernelSpec, str]]:
    configs = reference_configs()
    # The other output kinds on the decode and the widest prefill shape.
    configs += [Sm90Config(configs[0].block_m, configs[0].block_n, configs[0].stages, OutKind.F32),
                Sm90Config(configs[2].block_m, configs[2].block_n, configs[2].stages, OutKind.F16),
                Sm90Config(configs[2].block_m, configs[2].block_n, configs[2].stages, OutKind.F32)]
    return [(KernelSpec(SOURCE, config.expression(), target), r"QGMMA") for config in configs]


FAMILY = Family(
    name="sm90",
    source=SOURCE,
    check_targets=(TARGET,),
    runs_on=runs_on,
    target_for=target_for,
    plan=plan,
    check_specs=check_specs,
    validated_archs=(),
    extra_arguments=extra_arguments,
)
