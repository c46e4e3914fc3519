"""How many clusters of the sm90 pair kernel can be resident at once on this GPU
(cuOccupancyMaxActiveClusters), against the grid the planner launches.

    python scripts/cluster_occupancy.py

The planner launches min(SMs // 2, tiles) clusters of two and assumes they all fit; a
number below SMs // 2 here means the last clusters wait for the first to finish."""

import ctypes
import dataclasses

from cugroupgemm import build, driver
from cugroupgemm.device import device_info
from cugroupgemm.dtypes import OutKind
from cugroupgemm.families import sm90


class LaunchConfig(ctypes.Structure):  # CUlaunchConfig
    _fields_ = [("grid", ctypes.c_uint * 3), ("block", ctypes.c_uint * 3),
                ("shared_mem_bytes", ctypes.c_uint), ("stream", ctypes.c_void_p),
                ("attrs", ctypes.c_void_p), ("num_attrs", ctypes.c_uint)]


def main():
    info = device_info(0)
    default = dataclasses.replace(sm90.reference_configs(info)[0], dynamic=False)
    for config in (dataclasses.replace(default, cluster=2),
                   dataclasses.replace(default, cluster=2, turns=True)):
        problem = sm90.Problem(32, 1024, 7168, 2048, 256, OutKind.BF16)
        plan = sm90.plan(problem, info, config)
        kernel = build.load_kernel(plan.spec, 0)
        kernel.allow_dynamic_smem(plan.smem_bytes)
        launch = LaunchConfig((ctypes.c_uint * 3)(*plan.grid), (ctypes.c_uint * 3)(*plan.block),
                              plan.smem_bytes, None, None, 0)
        clusters = ctypes.c_int(-1)
        status = driver.libcuda().cuOccupancyMaxActiveClusters(
            ctypes.byref(clusters), ctypes.c_void_p(kernel.handle), ctypes.byref(launch))
        print(f"{info.name}: {plan.spec.expression}: grid {plan.grid[0]} CTAs "
              f"({plan.grid[0] // 2} clusters), at most {clusters.value} clusters resident "
              f"(CUresult {status})", flush=True)


if __name__ == "__main__":
    main()
