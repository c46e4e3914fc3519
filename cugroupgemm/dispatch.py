"""Kernel families and the choice among them by compute capability.

A family is one kernel source in kernels_cu/ plus its host half in
cugroupgemm/families/ (same stem): which GPUs it runs on, the exact target it is
compiled for there, its heuristics, and the instances CI compiles and disassembles.

A family that has never been validated on the GPU's architecture is used only once its
first-use self-check (selfcheck.py) agrees with the portable kernel; until then, and
after a failed check, the next family in the preference order is taken.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

from . import env, selfcheck
from .build import KernelSpec
from .device import DeviceInfo
from .dlpack import TensorView
from .errors import UnsupportedDeviceError
from .launch import LaunchPlan
from .problem import Problem


@dataclass(frozen=True)
class Family:
    name: str
    source: str  # file under kernels_cu/
    check_targets: tuple[str, ...]  # targets CI compiles for
    runs_on: Callable[[DeviceInfo], bool]
    target_for: Callable[[DeviceInfo], str]
    plan: Callable[[Problem, DeviceInfo], LaunchPlan]
    # Representative instances per target, each with the regex its SASS must match (the
    # tensor-core instruction it is meant to use).
    check_specs: Callable[[str], list[tuple[KernelSpec, str]]]
    validated_archs: tuple[int, ...]  # SM numbers it has been run and checked on
    # Kernel arguments after the params struct (e.g. TMA descriptors), from the plan and
    # the argument views ("a", "b", "a_scale", "b_scale", "masked_m", "out").
    extra_arguments: Callable[[LaunchPlan, dict[str, TensorView]], tuple] = lambda plan, views: ()


def families() -> dict[str, Family]:
    portable, sm90, sm100 = _family_modules()
    return {family.name: family for family in (portable.FAMILY, sm90.FAMILY, sm100.FAMILY)}


@functools.cache
def _family_modules():
    # Imported on first use (they import this module); FAMILY is read on every call, so
    # a replaced one (tests, tuning) takes effect.
    from .families import portable, sm90, sm100

    return portable, sm90, sm100


# Preference order: the fastest family that runs on the device wins.
PREFERENCE = ("sm100", "sm90", "portable")


def choose_family(info: DeviceInfo, forced: str | None = None) -> Family:
    """The family for ``info``; ``forced`` (or CUGROUPGEMM_KERNEL) overrides the choice
    and skips the self-check (that is how an unvalidated family is debugged)."""
    known = families()
    forced = forced or env.forced_family()
    if forced:
        family = known.get(forced)
        if family is None:
            raise UnsupportedDeviceError(
                f"CUGROUPGEMM_KERNEL={forced!r}: expected one of {', '.join(sorted(known))}")
        if not family.runs_on(info):
            raise UnsupportedDeviceError(
                f"CUGROUPGEMM_KERNEL={forced!r}: the {forced} family cannot run on "
                f"{info.name} (compute capability {info.cc[0]}.{info.cc[1]})")
        return family
    for name in PREFERENCE:
        family = known.get(name)
        if family is not None and family.runs_on(info) and selfcheck.trusted(family, info):
            return family
    raise UnsupportedDeviceError(
        f"cugroupgemm needs compute capability 8.0 or newer; {info.name} (device "
        f"{info.device_id}) has {info.cc[0]}.{info.cc[1]}")
