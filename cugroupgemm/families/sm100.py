"""Host half of kernels_cu/sm100_fp8_masked_gemm.cu: TMA + tcgen05.mma + tensor memory.

NOTE: never run on hardware (no Blackwell GPU was reachable when it was written);
``validated_archs`` is empty, so on a real 10.x GPU the library compares it with the
portable kernel on first use (cugroupgemm/selfcheck.py). docs/sm100.md has the design.

A persistent kernel like sm90's: at most one CTA per SM walks the same masked tile list.
One tile shape: 128 rows (the UMMA M whose accumulator row i is tensor-memory lane i) x
128 columns (one b-scale block); stages of 2 x 16 KiB fill the shared memory.

Targets: compute capability 10.0 (B200, GB200) gets an ``sm_100a`` cubin, which runs on
exactly 10.0. 10.3 (B300, GB300) gets the same source built for the family target
``sm_100f`` (NVRTC >= 12.9), whose cubin runs on every member of the 10.x family; the
kernel uses nothing outside the family feature set (CI compiles both).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..build import KernelSpec
from ..device import DeviceInfo
from ..dispatch import Family
from ..dlpack import TensorView
from ..dtypes import OutKind
from ..errors import UnsupportedDeviceError
from ..launch import LaunchPlan
from ..problem import Problem
from . import sm90

SOURCE = "sm100_fp8_masked_gemm.cu"
TARGETS = {(10, 0): "sm_100a", (10, 3): "sm_100f"}
BLOCK_M = 128
BLOCK_N = 128
BLOCK_K = 128
THREADS = 256  # producer, MMA, allocator, idle warp + one promotion/epilogue warpgroup
# Mirrors of kernels_cu/sm100_fp8_masked_gemm.cu (Layout): full + empty mbarrier per
# stage, acc_full + acc_empty per tensor-memory buffer, the TMEM address slot, and the
# slack for aligning the dynamic window to 1024 bytes.
ACC_STAGES = 4  # 512 tensor-memory columns / BLOCK_N
BARRIER_BYTES_PER_STAGE = 16
FIXED_BYTES = ACC_STAGES * 16 + 16 + 1024
MIN_STAGES = 2
MAX_STAGES = 16

# The device the CI instances are planned for (check_specs): a B200's limits (148 SMs,
# 227 KiB of opt-in shared memory per block, as on the H100).
REFERENCE_DEVICE = DeviceInfo(device_id=-1, name="B200 (reference)", cc=(10, 0), sm_count=148,
                              smem_per_block_optin=232448, l2_bytes=126 * 2**20)
# Limits of one SM100 SM the resource report is held to (CUDA C Programming Guide,
# compute capability 10.0): 64K 32-bit registers, at most 255 per thread.
REGISTERS_PER_SM = 65536
MAX_REGISTERS_PER_THREAD = 255


@dataclass(frozen=True)
class Sm100Config:
    stages: int
    out_kind: OutKind

    @property
    def smem_bytes(self) -> int:
        return smem_bytes(self.stages)

    def expression(self) -> str:
        return f"sm100_fp8_masked_gemm<{self.stages}, {int(self.out_kind)}>"


def stage_bytes() -> int:
    return (BLOCK_M + BLOCK_N) * BLOCK_K


def smem_bytes(stages: int) -> int:
    return stages * (stage_bytes() + BARRIER_BYTES_PER_STAGE) + FIXED_BYTES


def max_stages(info: DeviceInfo) -> int:
    """The most stages whose shared memory fits the device's opt-in limit (capped)."""
    per_stage = stage_bytes() + BARRIER_BYTES_PER_STAGE
    return min(MAX_STAGES, (info.smem_per_block_optin - FIXED_BYTES) // per_stage)


def choose_config(problem: Problem, info: DeviceInfo) -> Sm100Config:
    """One tile shape; stages from the device's shared memory.

    NOTE: 128 x 128 only, chosen for being simplest to get right unseen: M = 64 puts the
    accumulator rows on TMEM lanes in a different pattern (PTX ISA 9.7.16.10.5), and N = 256
    needs 256 fp32 registers of accumulator per row, i.e. two promotion warpgroups and
    setmaxnreg. Both are speed options for when the kernel can be measured.

    The kernel takes all 512 tensor-memory columns: with more than half the shared memory
    per CTA, two CTAs of it never share an SM (and if they did, the second one's
    tcgen05.alloc would wait for the first to finish, not deadlock).

    Worked example (B200: 232448 B opt-in, 148 SMs): stages = (232448 - 1104) // 32784 = 7,
    smem 7 * 32784 + 1104 = 230592 B, 256 threads. G = 32 groups at expected_m = 256,
    n = 7168: at most 32 * 2 * 56 = 3584 live tiles, so 148 CTAs walk about 24 tiles each.
    """
    stages = max_stages(info)
    if stages < MIN_STAGES:
        raise UnsupportedDeviceError(
            f"the sm100 kernel needs at least {smem_bytes(MIN_STAGES)} bytes of shared "
            f"memory per block; {info.name} offers {info.smem_per_block_optin}")
    return Sm100Config(stages, problem.out_kind)


def runs_on(info: DeviceInfo) -> bool:
    return info.cc in TARGETS


def target_for(info: DeviceInfo) -> str:
    return TARGETS[info.cc]


def plan(problem: Problem, info: DeviceInfo, config: Sm100Config | None = None) -> LaunchPlan:
    """Launch plan; ``config`` overrides the stage count (tests) but never the output kind."""
    return sm90.persistent_plan("sm100", SOURCE, target_for(info),
                                config or choose_config(problem, info), problem, info,
                                BLOCK_M, BLOCK_N, THREADS)


def extra_arguments(plan: LaunchPlan, views: dict[str, TensorView]) -> tuple:
    """The same 3-D (k, rows, groups) TMA maps as the Hopper kernel (the code verified on
    the H100), boxes of 128 rows."""
    return (sm90._operand_map("a", views["a"], BLOCK_M),
            sm90._operand_map("b", views["b"], BLOCK_N))


def reference_configs(info: DeviceInfo = REFERENCE_DEVICE) -> list[Sm100Config]:
    """The instance the heuristics pick on ``info``, in each output kind."""
    return [Sm100Config(max_stages(info), kind)
            for kind in (OutKind.BF16, OutKind.F16, OutKind.F32)]


# What this toolkit's disassembler (nvdisasm 13.5) prints: UTCQMMA for tcgen05.mma
# kind::f8f6f4 and UTMALDG for the TMA loads; both must be there.
SASS_PATTERN = r"(?s)(?=.*\bUTCQMMA\b)(?=.*\bUTMALDG\.3D\b)"


def check_specs(target: str) -> list[tuple[KernelSpec, str]]:
    return [(KernelSpec(SOURCE, config.expression(), target), SASS_PATTERN)
            for config in reference_configs()]


FAMILY = Family(
    name="sm100",
    source=SOURCE,
    check_targets=tuple(TARGETS.values()),
    runs_on=runs_on,
    target_for=target_for,
    plan=plan,
    check_specs=check_specs,
    validated_archs=(),
    extra_arguments=extra_arguments,
)
