"""The host/kernel boundary: the params struct, the launch plan and the launch itself."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

from . import tile_counters
from .build import KernelSpec, LoadedKernel, load_kernel
from .dlpack import TensorView
from .problem import Problem


class GemmParams(ctypes.Structure):
    """Mirror of ``struct MaskedGemmParams`` (kernels_cu/common/params.cuh), field by field."""

    _fields_ = [("a", ctypes.c_void_p), ("b", ctypes.c_void_p),
                ("a_scale", ctypes.c_void_p), ("b_scale", ctypes.c_void_p),
                ("masked_m", ctypes.c_void_p), ("out", ctypes.c_void_p),
                ("a_stride_g", ctypes.c_int64), ("a_stride_m", ctypes.c_int64),
                ("b_stride_g", ctypes.c_int64), ("b_stride_n", ctypes.c_int64),
                ("as_stride_g", ctypes.c_int64), ("as_stride_m", ctypes.c_int64),
                ("as_stride_k", ctypes.c_int64),
                ("bs_stride_g", ctypes.c_int64), ("bs_stride_n", ctypes.c_int64),
                ("bs_stride_k", ctypes.c_int64),
                ("out_stride_g", ctypes.c_int64), ("out_stride_m", ctypes.c_int64),
                ("num_groups", ctypes.c_int32), ("m", ctypes.c_int32),
                ("n", ctypes.c_int32), ("k", ctypes.c_int32)]


def gemm_params(problem: Problem, a: TensorView, b: TensorView, a_scale: TensorView,
                b_scale: TensorView, masked_m: TensorView, out: TensorView) -> GemmParams:
    return GemmParams(a.ptr, b.ptr, a_scale.ptr, b_scale.ptr, masked_m.ptr, out.ptr,
                      a.strides[0], a.strides[1], b.strides[0], b.strides[1],
                      *a_scale.strides, *b_scale.strides, out.strides[0], out.strides[1],
                      problem.num_groups, problem.m, problem.n, problem.k)


@dataclass(frozen=True)
class LaunchPlan:
    """Which kernel to run and how: made by a family from a problem and a device."""

    spec: KernelSpec
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    smem_bytes: int
    config: object  # the family's frozen config dataclass, for printing and tests
    # The kernel's last parameter is a tile counter, zero at the launch (tile_counters.py)
    tile_counter: bool = False


def launch(plan: LaunchPlan, device_id: int, stream: int, *arguments: ctypes._CData):
    """Launch ``plan`` on ``stream`` with by-value ctypes arguments (raises on failure).

    Each argument is a ctypes object whose bytes are the kernel parameter: the params
    struct, and for TMA kernels the 64-byte aligned tensor maps that follow it.
    """
    prepare(plan, device_id, *arguments).run(stream)


def prepare(plan: LaunchPlan, device_id: int, *arguments: ctypes._CData) -> KernelLaunch:
    """Everything of a launch but the stream: the kernel loaded, its shared memory allowed."""
    kernel = load_kernel(plan.spec, device_id)
    kernel.allow_dynamic_smem(plan.smem_bytes)
    return KernelLaunch(kernel, plan, device_id, arguments)


@dataclass(frozen=True)
class KernelLaunch:
    """A prepared launch; ``run`` may repeat it (warm_calls.py replays it)."""

    kernel: LoadedKernel
    plan: LaunchPlan
    device_id: int
    arguments: tuple  # ctypes objects: the params struct first

    def __post_init__(self):
        # Made once, not per launch (a warm call's host cost, docs/performance.md, log
        # item 38): the type of the array of argument addresses the driver takes, and the
        # addresses of the arguments after the params struct (tensor maps, which
        # `arguments` keeps alive).
        count = len(self.arguments) + self.plan.tile_counter
        object.__setattr__(self, "_pointer_array", ctypes.c_void_p * count)
        object.__setattr__(self, "_fixed_addresses",
                           tuple(map(ctypes.addressof, self.arguments[1:])))

    def run(self, stream: int, params: ctypes._CData | None = None):
        """Launch on ``stream``; ``params`` replaces the first argument when given. A
        plan with a tile counter gets the stream's (a fresh one under capture)."""
        import cupy

        params = self.arguments[0] if params is None else params
        if cupy.cuda.runtime.getDevice() == self.device_id:
            self._launch(cupy, stream, params)
        else:  # the kernel is loaded in the device's context: make it current
            with cupy.cuda.Device(self.device_id):
                self._launch(cupy, stream, params)

    def _launch(self, cupy, stream: int, params: ctypes._CData):
        plan = self.plan
        counter_address = ()
        if plan.tile_counter:  # (a default stream handle means this device's)
            counter = ctypes.c_uint64(tile_counters.counter_for(self.device_id, stream))
            counter_address = (ctypes.addressof(counter),)
        pointers = self._pointer_array(ctypes.addressof(params), *self._fixed_addresses,
                                       *counter_address)
        cupy.cuda.driver.launchKernel(self.kernel.handle, *plan.grid, *plan.block,
                                      plan.smem_bytes, stream, ctypes.addressof(pointers), 0)
