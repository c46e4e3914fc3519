"""NumPy ground truth for the tests: fp8 e4m3 codec, the quantizers and the masked GEMM.

Everything here runs on the host in NumPy (no CuPy, no GPU) and is written for exactness,
not speed: the e4m3 codec is exact, the quantizers repeat the GPU kernels' float32
arithmetic operation for operation (kernels_cu/quantize_fp8.cu is bit-identical to them),
and the GEMM reference dequantises into float64.

Rules shared with the GPU quantizers:

* fp32 -> e4m3 is round-to-nearest-even onto the e4m3fn grid with saturation to +-448
  (as PTX ``cvt.rn.satfinite.e4m3x2.f32``): +-Inf -> +-448, NaN -> 0x7F whatever its sign
  (the sign of a NaN is dropped), and zeros, including values that round to zero, keep
  their sign (-0.0 -> 0x80).
* scale = max(amax, 1e-4) / 448 in float32, optionally rounded up to a power of two.
* NaN inputs: the block's amax ignores them (as CUDA ``fmaxf`` does), so they do not
  disturb the scale of their neighbours, and each NaN element quantises to 0x7F (NaN/s is
  NaN). A block of nothing but NaNs has amax 0, hence scale from the 1e-4 floor.
* +-Inf inputs: amax is Inf, so the scale is Inf; the finite elements of that block
  quantise to +-0 and the infinite ones to NaN (Inf/Inf), 0x7F.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "E4M3_MAX", "fp8_e4m3_to_float64", "float32_to_fp8_e4m3", "scale_for_amax",
    "per_token_cast_to_fp8", "per_block_cast_to_fp8", "masked_gemm", "calc_diff",
]

E4M3_MAX = 448.0
AMAX_FLOOR = np.float32(1e-4)
BLOCK = 128
NAN_CODE = 0x7F
MAX_CODE = 0x7E  # +448


def _decode_table() -> np.ndarray:
    table = np.empty(256, dtype=np.float64)
    for code in range(256):
        sign = -1.0 if code & 0x80 else 1.0
        exponent = (code >> 3) & 0xF
        mantissa = code & 0x7
        if exponent == 0xF and mantissa == 0x7:
            table[code] = np.nan
        elif exponent == 0:
            table[code] = sign * mantissa * 2.0 ** -9  # subnormal: m/8 * 2^-6
        else:
            table[code] = sign * (1.0 + mantissa / 8.0) * 2.0 ** (exponent - 7)
    return table


_DECODE = _decode_table()
_DECODE.setflags(write=False)
# Non-negative finite magnitudes, indexed by their code 0..126 (ascending, 0x7E = 448).
_POSITIVE = _DECODE[:MAX_CODE + 1].copy()
# Midpoints between neighbouring codes; exact in float64 (one bit more than e4m3 needs).
_MIDPOINTS = (_POSITIVE[:-1] + _POSITIVE[1:]) / 2.0


def fp8_e4m3_to_float64(bits: np.ndarray) -> np.ndarray:
    """Exact value of each float8_e4m3fn code (uint8 array) as float64.

    Bias 7, 3 mantissa bits, subnormals (exponent field 0: m * 2^-9), no infinities;
    S.1111.111 (0x7F, 0xFF) is NaN. 0x80 decodes to -0.0.
    """
    bits = np.asarray(bits)
    if bits.dtype != np.uint8:
        raise TypeError(f"bits: expected a uint8 array of e4m3 codes, got {bits.dtype}")
    return _DECODE[bits]


def float32_to_fp8_e4m3(x: np.ndarray) -> np.ndarray:
    """Round float32 values onto the e4m3fn grid; returns the uint8 codes.

    Round to nearest, ties to even (the even code, i.e. even last mantissa bit),
    saturating: every magnitude above 448 (Inf included) becomes +-448 (0x7E / 0xFE),
    as PTX ``cvt.rn.satfinite.e4m3x2.f32`` does. NaN becomes 0x7F (its sign is dropped).
    Zeros and values that round to zero keep their sign bit. Exact: the comparison is
    done in float64 on the float32 value against exact midpoints.

    Accepts float32 (or float16, widened exactly); float64 is refused, because rounding
    it to float32 first would round twice.
    """
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float16):
        raise TypeError(f"x: expected a float32 (or float16) array, got {x.dtype}")
    with np.errstate(invalid="ignore"):  # signalling NaN patterns
        v = x.astype(np.float64)
    magnitude = np.abs(v)
    nan = np.isnan(magnitude)
    magnitude = np.where(nan, 0.0, magnitude)
    # lo = number of midpoints strictly below |x|: the code of the nearest value, before
    # deciding ties (|x| exactly on a midpoint lands on the lower code here).
    code = np.searchsorted(_MIDPOINTS, magnitude, side="left")
    tie = (code < len(_MIDPOINTS)) & (_MIDPOINTS[np.minimum(code, len(_MIDPOINTS) - 1)]
                                      == magnitude)
    code = np.where(tie & (code % 2 == 1), code + 1, code)  # ties go to the even code
    code = np.minimum(code, MAX_CODE).astype(np.uint8)      # satfinite (Inf included)
    sign = np.signbit(v).astype(np.uint8) << 7
    out = code | sign
    return np.where(nan, np.uint8(NAN_CODE), out).astype(np.uint8)


def scale_for_amax(amax: np.ndarray, power_of_two: bool) -> np.ndarray:
    """The quantisation scale of a block from its amax (float32 in, float32 out).

    t = max(amax, 1e-4) / 448 in float32 (IEEE division, round to nearest even). With
    ``power_of_two`` the result is the smallest power of two >= t (t itself when it
    already is one), found from t's binary exponent (frexp), the same bit rule as the GPU
    (clear the mantissa, add one to the exponent unless the mantissa was already zero).
    Inf amax gives an Inf scale.
    """
    amax = np.asarray(amax, dtype=np.float32)
    # fmax, like CUDA fmaxf: a NaN amax (never produced by the quantizers) gives the floor.
    t = np.fmax(amax, AMAX_FLOOR).astype(np.float32) / np.float32(E4M3_MAX)
    t = np.asarray(t, dtype=np.float32)
    if not power_of_two:
        return t
    mantissa, exponent = np.frexp(t)  # t = mantissa * 2^exponent, mantissa in [0.5, 1)
    finite = np.isfinite(t)
    exact = (mantissa == 0.5) | ~finite
    rounded = np.ldexp(np.float32(1.0), exponent).astype(np.float32)
    return np.where(exact, t, rounded).astype(np.float32)


def _as_float32(x, bf16_bits: bool) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"x: expected a NumPy array (move device data to the host first), "
                        f"got {type(x).__name__}")
    if bf16_bits or x.dtype.name == "bfloat16":  # bit patterns, or an ml_dtypes array
        if x.dtype.itemsize != 2 or x.dtype == np.float16:
            raise TypeError(f"x: bf16_bits=True expects a uint16 array of bfloat16 bit "
                            f"patterns, got {x.dtype}")
        bits = x.view(np.uint16).astype(np.uint32) << 16
        return bits.view(np.float32)
    if x.dtype == np.float32:
        return x
    if x.dtype == np.float16:
        return x.astype(np.float32)  # exact
    if x.dtype == np.float64:
        return x.astype(np.float32)  # what a float32 GPU input would hold
    raise TypeError(f"x: expected float32, float16, float64 or bfloat16 bits (uint16 with "
                    f"bf16_bits=True), got {x.dtype}")


def _abs_ignoring_nan(x: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(x), np.float32(0.0), np.abs(x)).astype(np.float32)


def per_token_cast_to_fp8(x: np.ndarray, power_of_two_scale: bool = True, *,
                          bf16_bits: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Quantise (..., m, k) in 1x128 blocks along k, as the GPU per-token kernel does.

    Per block: amax = max|x| in float32 (NaNs ignored), s = ``scale_for_amax``,
    q = ``float32_to_fp8_e4m3``(float32(x) / s) with float32 division.
    Returns (q uint8 of x's shape, s float32 of shape (..., m, k // 128)).
    ``bf16_bits=True``: x is a uint16 array of bfloat16 bit patterns (an ml_dtypes
    bfloat16 array is recognised by itself); float16 is widened exactly, float64 is first
    rounded to float32 (what a float32 GPU input would hold).
    """
    xf = _as_float32(x, bf16_bits)
    if xf.ndim < 2:
        raise ValueError(f"x: expected at least 2 dimensions (..., m, k), got shape {xf.shape}")
    k = xf.shape[-1]
    if k % BLOCK:
        raise ValueError(f"x: the last dimension must be a multiple of {BLOCK}, got {k}")
    blocks = xf.reshape(*xf.shape[:-1], k // BLOCK, BLOCK)
    amax = _abs_ignoring_nan(blocks).max(axis=-1, initial=np.float32(0.0))
    scale = scale_for_amax(amax, power_of_two_scale)
    with np.errstate(all="ignore"):
        scaled = (blocks / scale[..., None]).astype(np.float32)
    q = float32_to_fp8_e4m3(scaled).reshape(xf.shape)
    return q, scale


def per_block_cast_to_fp8(x: np.ndarray, power_of_two_scale: bool = True, *,
                          bf16_bits: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Quantise (..., n, k) in 128x128 blocks, as the GPU per-block kernel does.

    Any n and k: edge blocks count only their real elements (as if zero-padded). Scale and
    rounding rules as in ``per_token_cast_to_fp8``. Returns (q uint8 of x's shape,
    s float32 of shape (..., ceil(n/128), ceil(k/128))).
    """
    xf = _as_float32(x, bf16_bits)
    if xf.ndim < 2:
        raise ValueError(f"x: expected at least 2 dimensions (..., n, k), got shape {xf.shape}")
    *lead, n, k = xf.shape
    nb, kb = -(-n // BLOCK), -(-k // BLOCK)
    padded = np.zeros((*lead, nb * BLOCK, kb * BLOCK), dtype=np.float32)
    padded[..., :n, :k] = xf
    blocks = padded.reshape(*lead, nb, BLOCK, kb, BLOCK)
    amax = _abs_ignoring_nan(blocks).max(axis=(-3, -1), initial=np.float32(0.0))
    scale = scale_for_amax(amax, power_of_two_scale)
    with np.errstate(all="ignore"):
        scaled = (blocks / scale[..., :, None, :, None]).astype(np.float32)
    q = float32_to_fp8_e4m3(scaled).reshape(padded.shape)[..., :n, :k]
    return np.ascontiguousarray(q), scale


def masked_gemm(a_bits: np.ndarray, b_bits: np.ndarray, a_scale: np.ndarray,
                b_scale: np.ndarray, masked_m: np.ndarray) -> np.ndarray:
    """Float64 reference of the masked grouped GEMM: returns (G, m, n) float64.

    out[g, r, c] = sum_k a[g,r,k] * a_scale[g,r,k//128] * b[g,c,k] * b_scale[g,c//128,k//128]
    for r < clamp(masked_m[g], 0, m); rows at and past that are 0. a_bits (G, m, k) and
    b_bits (G, n, k) are e4m3 codes (uint8); b_scale has ceil(n/128) rows, so n need not
    be a multiple of 128. Loops over groups to bound memory.
    """
    a_bits, b_bits = np.asarray(a_bits), np.asarray(b_bits)
    a_scale = np.asarray(a_scale, dtype=np.float64)
    b_scale = np.asarray(b_scale, dtype=np.float64)
    masked_m = np.asarray(masked_m).reshape(-1)
    groups, m, k = a_bits.shape
    gb, n, kb_ = b_bits.shape
    if gb != groups or kb_ != k:
        raise ValueError(f"a_bits {a_bits.shape} and b_bits {b_bits.shape} disagree")
    k_index = np.arange(k) // BLOCK
    n_index = np.arange(n) // BLOCK
    out = np.zeros((groups, m, n), dtype=np.float64)
    for g in range(groups):
        rows = int(min(max(int(masked_m[g]), 0), m))
        if rows == 0:
            continue
        a = fp8_e4m3_to_float64(a_bits[g, :rows]) * a_scale[g, :rows][:, k_index]
        b = fp8_e4m3_to_float64(b_bits[g]) * b_scale[g][n_index][:, k_index]
        out[g, :rows] = a @ b.T
    return out


def calc_diff(x: np.ndarray, y: np.ndarray) -> float:
    """DeepGEMM's similarity metric 1 - 2*sum(x*y) / sum(x*x + y*y), in float64.

    0.0 when both are all zeros; NaN if either holds a NaN (so NaN never passes a
    ``< threshold`` check).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if np.isnan(x).any() or np.isnan(y).any():
        return float("nan")
    denominator = np.sum(x * x + y * y)
    if denominator == 0:
        return 0.0
    return float(1.0 - 2.0 * np.sum(x * y) / denominator)
