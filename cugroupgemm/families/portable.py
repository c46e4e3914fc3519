"""Host half of kernels_cu/portable_fp8_masked_gemm.cu: mma.sync on any sm_80+ GPU.

The fallback and the cross-check of the faster families. One CTA per
(n tile, m tile, group); CTAs whose m tile starts at or past masked_m[g] exit at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..build import KernelSpec, plain_target
from ..device import DeviceInfo
from ..dispatch import Family
from ..dtypes import OutKind
from ..errors import ArgumentValueError
from ..launch import LaunchPlan
from ..problem import Problem

SOURCE = "portable_fp8_masked_gemm.cu"
BLOCK_N = 128  # one b-scale block per tile
BLOCK_K = 128  # one a/b-scale block per k step
STAGES = 3  # cp.async pipeline depth of the kernel
BLOCK_M_CHOICES = (16, 32, 64, 128)
MAX_GRID_YZ = 65535


@dataclass(frozen=True)
class PortableConfig:
    block_m: int
    block_n: int
    num_warps: int
    out_kind: OutKind
    native_fp8_mma: bool  # fp8 mma.sync (sm_89+) or fp8 -> f16 in registers (sm_80)

    @property
    def smem_bytes(self) -> int:
        return STAGES * (self.block_m + self.block_n) * BLOCK_K

    def expression(self) -> str:
        native = "true" if self.native_fp8_mma else "false"
        return (f"portable_fp8_masked_gemm<{self.block_m}, {self.block_n}, {self.num_warps}, "
                f"{int(self.out_kind)}, {native}>")


def choose_config(problem: Problem, native_fp8_mma: bool) -> PortableConfig:
    """The smallest m tile that holds a typical group, so decode wastes no rows.

    Worked example: expected_m = 8 (decode) -> block_m 16, 4 warps; expected_m = 200
    (prefill) -> block_m 128, 8 warps.
    """
    block_m = next((bm for bm in BLOCK_M_CHOICES if bm >= problem.expected_m),
                   BLOCK_M_CHOICES[-1])
    num_warps = 8 if block_m == 128 else 4
    return PortableConfig(block_m, BLOCK_N, num_warps, problem.out_kind, native_fp8_mma)


def runs_on(info: DeviceInfo) -> bool:
    return info.cc >= (8, 0)


def plan(problem: Problem, info: DeviceInfo, native_fp8_mma: bool | None = None) -> LaunchPlan:
    native = info.arch >= 89 if native_fp8_mma is None else native_fp8_mma
    config = choose_config(problem, native)
    m_tiles = -(-problem.m // config.block_m)
    if m_tiles > MAX_GRID_YZ or problem.num_groups > MAX_GRID_YZ:
        raise ArgumentValueError(
            f"a: the portable kernel handles at most {MAX_GRID_YZ} groups and "
            f"{MAX_GRID_YZ * config.block_m} rows per group, got shape "
            f"({problem.num_groups}, {problem.m}, {problem.k})")
    grid = (-(-problem.n // config.block_n), m_tiles, problem.num_groups)
    spec = KernelSpec(SOURCE, config.expression(), plain_target(info))
    return LaunchPlan(spec, grid, (config.num_warps * 32, 1, 1), config.smem_bytes, config)


# NOTE: only sm_89 (and sm_120) have an fp8 mma.sync in hardware (QMMA); on sm_90 and
# sm_100 ptxas lowered it to HMMA plus conversions and spilled, so there the kernel
# converts e4m3 -> f16 with cvt and issues f16 mma.sync (HMMA.16816.F32) on either path.
_NATIVE_SASS = {"sm_89": r"QMMA\.16832\.F32\.E4M3"}
_F16_SASS = r"HMMA\.16816\.F32"


def check_specs(target: str) -> list[tuple[KernelSpec, str]]:
    native = target != "sm_80"
    configs = [PortableConfig(bm, BLOCK_N, 8 if bm == 128 else 4, OutKind.BF16, native)
               for bm in BLOCK_M_CHOICES]
    if native:  # the sm_80 path must build on the newer targets too
        configs.append(PortableConfig(64, BLOCK_N, 4, OutKind.F32, False))
    return [(KernelSpec(SOURCE, config.expression(), target),
             _NATIVE_SASS.get(target, _F16_SASS) if config.native_fp8_mma else _F16_SASS)
            for config in configs]


FAMILY = Family(
    name="portable",
    source=SOURCE,
    check_targets=("sm_80", "sm_89", "sm_90a", "sm_100a"),
    runs_on=runs_on,
    target_for=plain_target,
    plan=plan,
    check_specs=check_specs,
    validated_archs=(90,),
)
