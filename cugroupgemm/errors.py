"""The exception family of cugroupgemm.

Every error the library raises on purpose derives from ``CuGroupGemmError`` and from
the builtin that fits (``ValueError``, ``TypeError``, ``RuntimeError``), so callers can
catch either. Messages name the argument, what was expected and what was given.
"""


class CuGroupGemmError(Exception):
    """Base of every error raised on purpose by cugroupgemm."""


class ArgumentTypeError(CuGroupGemmError, TypeError):
    """An argument has the wrong type or dtype."""


class ArgumentValueError(CuGroupGemmError, ValueError):
    """An argument has the wrong shape, strides, device or value."""


class UnsupportedDeviceError(CuGroupGemmError, RuntimeError):
    """No kernel family of cugroupgemm can run on this GPU, or the forced one cannot."""


class KernelCompileError(CuGroupGemmError, RuntimeError):
    """NVRTC rejected a kernel source; the message holds the kernel, options and log."""


class OutputAllocationError(CuGroupGemmError, MemoryError):
    """The output could not be allocated on the GPU (out of memory)."""


class MaskedMError(ArgumentValueError):
    """The opt-in check found masked_m values outside [0, m]."""


def describe(value) -> str:
    """A short description of a value for error messages."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
