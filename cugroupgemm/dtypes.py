"""Element types as DLPack names them, and the kinds the kernels are compiled for."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .errors import ArgumentTypeError, describe


@dataclass(frozen=True)
class DType:
    """A DLPack element type: (type code, bits), with a readable name."""

    name: str
    code: int
    bits: int

    @property
    def itemsize(self) -> int:
        return self.bits // 8

    def __str__(self) -> str:
        return self.name


# DLPack type codes (dlpack.h, DLDataTypeCode).
_INT, _UINT, _FLOAT, _BFLOAT, _FLOAT8_E4M3FN = 0, 1, 2, 4, 10

INT32 = DType("int32", _INT, 32)
INT64 = DType("int64", _INT, 64)
UINT8 = DType("uint8", _UINT, 8)
FLOAT16 = DType("float16", _FLOAT, 16)
FLOAT32 = DType("float32", _FLOAT, 32)
FLOAT64 = DType("float64", _FLOAT, 64)
BFLOAT16 = DType("bfloat16", _BFLOAT, 16)
FLOAT8_E4M3FN = DType("float8_e4m3fn", _FLOAT8_E4M3FN, 8)

_KNOWN = {(d.code, d.bits): d for d in
          (INT32, INT64, UINT8, FLOAT16, FLOAT32, FLOAT64, BFLOAT16, FLOAT8_E4M3FN)}

# NOTE: CuPy has no fp8 dtype, so CuPy callers hold e4m3 bits in uint8 arrays; the
# GEMM and the quantizers' outputs treat uint8 as e4m3fn bit patterns.
FP8_INPUT_DTYPES = (FLOAT8_E4M3FN, UINT8)


def from_dlpack_code(code: int, bits: int, lanes: int) -> DType:
    """The DType of a DLPack (code, bits, lanes) triple; unknown ones get a generic name."""
    if lanes != 1:
        return DType(f"dlpack(code={code}, bits={bits}, lanes={lanes})", code, bits)
    return _KNOWN.get((code, bits)) or DType(f"dlpack(code={code}, bits={bits})", code, bits)


class OutKind(enum.IntEnum):
    """Output element kinds compiled into the GEMM (kernels_cu/common/types.cuh)."""

    BF16 = 0
    F16 = 1
    F32 = 2

    @property
    def dtype(self) -> DType:
        return {OutKind.BF16: BFLOAT16, OutKind.F16: FLOAT16, OutKind.F32: FLOAT32}[self]

    @classmethod
    def of(cls, dtype: DType) -> "OutKind | None":
        return {BFLOAT16: cls.BF16, FLOAT16: cls.F16, FLOAT32: cls.F32}.get(dtype)


class InKind(enum.IntEnum):
    """Input element kinds compiled into the quantizers (kernels_cu/common/types.cuh)."""

    F32 = 0
    BF16 = 1
    F16 = 2

    @classmethod
    def of(cls, dtype: DType) -> "InKind | None":
        return {FLOAT32: cls.F32, BFLOAT16: cls.BF16, FLOAT16: cls.F16}.get(dtype)


_OUT_NAMES = {"bfloat16": OutKind.BF16, "bf16": OutKind.BF16,
              "float16": OutKind.F16, "half": OutKind.F16, "f16": OutKind.F16,
              "float32": OutKind.F32, "float": OutKind.F32, "f32": OutKind.F32}


def out_kind_from_user(value, argument: str = "out_dtype") -> OutKind:
    """Map a user's dtype (torch/JAX/NumPy/CuPy dtype object or a string) to an OutKind.

    Frameworks are recognised by the dtype's text, so no framework is imported:
    ``torch.bfloat16`` prints as "torch.bfloat16", NumPy/JAX/ml_dtypes types have a
    ``__name__`` or ``name``.
    """
    if value is None:
        return OutKind.BF16
    name = getattr(value, "__name__", None) or getattr(value, "name", None) or str(value)
    name = str(name).lower().removeprefix("torch.").removeprefix("<class '").rstrip("'>")
    name = name.rsplit(".", 1)[-1]
    if name not in _OUT_NAMES:
        raise ArgumentTypeError(
            f"{argument}: expected bfloat16, float16 or float32, got {describe(value)}")
    return _OUT_NAMES[name]
