"""The problem descriptor: what a call asks for, independent of any kernel."""

from __future__ import annotations

from dataclasses import dataclass

from .dtypes import OutKind


@dataclass(frozen=True)
class Problem:
    """One masked grouped GEMM: out[g, :masked_m[g]] = a[g] @ b[g].T with scales."""

    num_groups: int
    m: int  # rows per group (the largest masked_m)
    n: int
    k: int
    expected_m: int  # the caller's hint of a typical masked_m
    out_kind: OutKind

    @property
    def k_blocks(self) -> int:
        return self.k // 128

    @property
    def n_blocks(self) -> int:
        return -(-self.n // 128)

    @property
    def is_empty(self) -> bool:
        return self.num_groups == 0 or self.m == 0
