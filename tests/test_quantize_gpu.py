"""The GPU quantizers are bit-identical to cugroupgemm.reference, for every framework."""

import numpy as np
import pytest

from cugroupgemm import per_block_cast_to_fp8, per_token_cast_to_fp8
from cugroupgemm import reference as ref
from cugroupgemm.errors import ArgumentTypeError, ArgumentValueError

pytestmark = pytest.mark.gpu


def random_input(shape, seed):
    """Magnitudes spread over many binades, so scales and subnormal codes both show up."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * np.exp2(rng.integers(-12, 12, shape))).astype(
        np.float32)


def host_bits(array):
    import cupy as cp

    module = type(array).__module__.split(".")[0]
    if module == "torch":
        import torch

        return array.view(torch.uint8).cpu().numpy() if array.dtype == torch.float8_e4m3fn \
            else array.cpu().numpy()
    if module in ("jax", "jaxlib"):
        import jax
        import jax.numpy as jnp

        if array.dtype == jnp.float8_e4m3fn:
            array = jax.lax.bitcast_convert_type(array, jnp.uint8)
        return np.asarray(array)
    return cp.asnumpy(array)


@pytest.mark.parametrize("shape", [(7, 256), (3, 33, 384), (1, 1, 128)])
@pytest.mark.parametrize("power_of_two", [True, False])
def test_per_token_is_bit_exact(shape, power_of_two):
    import cupy as cp

    x = random_input(shape, seed=len(shape) + shape[-1])
    q, s = per_token_cast_to_fp8(cp.asarray(x), power_of_two_scale=power_of_two)
    want_q, want_s = ref.per_token_cast_to_fp8(x, power_of_two)
    assert q.dtype == cp.uint8 and q.shape == x.shape
    np.testing.assert_array_equal(cp.asnumpy(s), want_s)
    np.testing.assert_array_equal(cp.asnumpy(q), want_q)


@pytest.mark.parametrize("shape", [(256, 384), (2, 130, 300), (1, 1, 1), (3, 257, 129)])
@pytest.mark.parametrize("power_of_two", [True, False])
def test_per_block_is_bit_exact(shape, power_of_two):
    import cupy as cp

    x = random_input(shape, seed=sum(shape))
    q, s = per_block_cast_to_fp8(cp.asarray(x), power_of_two_scale=power_of_two)
    want_q, want_s = ref.per_block_cast_to_fp8(x, power_of_two)
    np.testing.assert_array_equal(cp.asnumpy(s), want_s)
    np.testing.assert_array_equal(cp.asnumpy(q), want_q)


@pytest.mark.parametrize("dtype_name", ["bfloat16", "float16"])
def test_torch_half_inputs_and_fp8_torch_outputs(dtype_name):
    import torch

    x = torch.from_numpy(random_input((4, 64, 256), seed=5) / 4096).cuda().to(
        getattr(torch, dtype_name))
    q, s = per_token_cast_to_fp8(x)
    assert q.dtype == torch.float8_e4m3fn and s.dtype == torch.float32 and s.shape == (4, 64, 2)
    if dtype_name == "bfloat16":
        bits = x.view(torch.int16).cpu().numpy().view(np.uint16)
        want_q, want_s = ref.per_token_cast_to_fp8(bits, bf16_bits=True)
    else:
        want_q, want_s = ref.per_token_cast_to_fp8(x.cpu().numpy())
    np.testing.assert_array_equal(host_bits(q), want_q)
    np.testing.assert_array_equal(host_bits(s), want_s)


def test_strided_torch_input():
    import torch

    base = torch.from_numpy(random_input((2, 300, 512), seed=6)).cuda()
    x = base[:, 10:138, 128:384]  # non-contiguous rows
    q, s = per_block_cast_to_fp8(x)
    want_q, want_s = ref.per_block_cast_to_fp8(x.cpu().numpy())
    np.testing.assert_array_equal(host_bits(q), want_q)
    np.testing.assert_array_equal(host_bits(s), want_s)


def test_jax_in_jax_fp8_out():
    import jax
    import jax.numpy as jnp

    x = random_input((2, 16, 256), seed=7)
    q, s = per_token_cast_to_fp8(jnp.asarray(x))
    assert isinstance(q, jax.Array) and q.dtype == jnp.float8_e4m3fn
    want_q, want_s = ref.per_token_cast_to_fp8(x)
    np.testing.assert_array_equal(host_bits(q), want_q)
    np.testing.assert_array_equal(host_bits(s), want_s)


def test_nan_quantises_to_nan_and_leaves_the_scale_alone():
    import cupy as cp

    x = random_input((2, 256), seed=8)
    x[0, 5] = np.nan
    q, s = per_token_cast_to_fp8(cp.asarray(x))
    want_q, want_s = ref.per_token_cast_to_fp8(x)
    np.testing.assert_array_equal(cp.asnumpy(q), want_q)
    np.testing.assert_array_equal(cp.asnumpy(s), want_s)
    assert int(cp.asnumpy(q)[0, 5]) & 0x7F == 0x7F


def test_quantizer_errors():
    import cupy as cp

    with pytest.raises(ArgumentValueError, match=r"^x: per-token quantisation needs the last "
                                                 r"dimension to be a multiple of 128, got 100"):
        per_token_cast_to_fp8(cp.zeros((4, 100), cp.float32))
    with pytest.raises(ArgumentTypeError, match=r"^x: expected dtype float32, bfloat16 or "
                                                r"float16, got int32"):
        per_block_cast_to_fp8(cp.zeros((4, 128), cp.int32))
    with pytest.raises(ArgumentValueError, match=r"^x: expected a 2-D .* got 1-D"):
        per_block_cast_to_fp8(cp.zeros((128,), cp.float32))
