"""cugroupgemm: masked grouped FP8 GEMM with exact fp32 fine-grained scales.

Framework-agnostic (PyTorch, JAX, CuPy through DLPack); importing it imports neither
torch nor jax. See README.md and docs/api.md.
"""

__version__ = "0.1.0"

from .api import batch_deepgemm_fp8_nt_groupwise  # noqa: E402
from .errors import (  # noqa: E402
    ArgumentTypeError,
    ArgumentValueError,
    CuGroupGemmError,
    KernelCompileError,
    MaskedMError,
    OutputAllocationError,
    UnsupportedDeviceError,
)
from .quantize import per_block_cast_to_fp8, per_token_cast_to_fp8  # noqa: E402

__all__ = [
    "batch_deepgemm_fp8_nt_groupwise", "per_token_cast_to_fp8", "per_block_cast_to_fp8",
    "CuGroupGemmError", "ArgumentTypeError", "ArgumentValueError", "KernelCompileError",
    "MaskedMError", "OutputAllocationError", "UnsupportedDeviceError", "__version__",
]
