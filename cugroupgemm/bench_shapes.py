"""The shapes the benchmark and the warm-up know: named presets and custom ones.

A shape is what a caller passes: groups, rows per group m (the largest masked_m), n, k and
the expected_m hint. The benchmark draws each group's masked_m around expected_m and
counts FLOPs and bytes on the valid rows only.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Shape:
    label: str
    groups: int
    m: int
    n: int
    k: int
    expected_m: int

    def __str__(self) -> str:
        return (f"{self.label} G={self.groups} m={self.m} em={self.expected_m} n={self.n} "
                f"k={self.k}")


# DeepSeek-V3's routed experts (hidden 7168, expert intermediate 2048): the gate/up
# projection is (n, k) = (4096, 7168), the down projection (7168, 2048).
DEEPSEEK_V3_NK = ((4096, 7168), (7168, 2048))
# Issue 3's shapes. Prefill: few groups, many rows. Decode: 8-way expert parallelism
# leaves 32 local experts; DeepEP's low-latency dispatch gives each up to 1024 rows.
PREFILL = [Shape("prefill", g, 4096, n, k, em) for g, em in ((1, 1024), (2, 512), (4, 256))
           for n, k in DEEPSEEK_V3_NK]
DECODE = [Shape("decode", 32, 1024, n, k, em) for em in (8, 32, 64, 128, 256)
          for n, k in DEEPSEEK_V3_NK]
HOPPER = PREFILL + DECODE
QUICK = [PREFILL[0], DECODE[0], DECODE[4], DECODE[8]]  # em 1024, 8, 64, 256; n=4096

PRESETS = {
    "hopper": HOPPER,  # issue 3: every prefill and decode shape (the default)
    "prefill": PREFILL,
    "decode": DECODE,
    "deepseek-v3-prefill": PREFILL,
    "deepseek-v3-decode": DECODE,
    "quick": QUICK,
}
DEFAULT_PRESET = "hopper"


def int_list(text: str) -> tuple[int, ...]:
    """'8,32,64' -> (8, 32, 64): non-negative ints, for command-line flags."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"expected comma-separated integers, got {text!r}") from None
    if any(v < 0 for v in values):
        raise ValueError(f"expected non-negative integers, got {text!r}")
    return values


def custom_shapes(groups, m, n, k, expected_m) -> list[Shape]:
    """Every combination of the given values (each a tuple of ints), labelled 'custom'."""
    return [Shape("custom", *values)
            for values in itertools.product(groups, m, n, k, expected_m)]


def draw_masked_m(shape: Shape, seed: int = 0):
    """Issue 3's routing: round(expected_m * U(0.7, 1.3)) per group, clipped to [0, m]."""
    import numpy as np

    rng = np.random.default_rng(seed)
    drawn = np.round(shape.expected_m * rng.uniform(0.7, 1.3, shape.groups))
    return np.clip(drawn, 0, shape.m).astype(np.int32)


@dataclass(frozen=True)
class Work:
    """What one call must do, counted on the valid rows only."""

    flops: int
    bytes: int  # b of the non-empty groups, valid a rows, their scales, valid out rows


def work(shape: Shape, masked_m, out_itemsize: int) -> Work:
    rows = int(sum(int(v) for v in masked_m))
    active = sum(1 for v in masked_m if v > 0)
    k_blocks = shape.k // 128
    moved = (active * shape.n * shape.k + rows * shape.k  # b and a (one byte each)
             + rows * k_blocks * 4 + active * math.ceil(shape.n / 128) * k_blocks * 4  # scales
             + rows * shape.n * out_itemsize)
    return Work(flops=2 * rows * shape.n * shape.k, bytes=moved)
