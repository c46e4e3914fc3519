"""Every host-side rule of the GEMM, through the public function, without a GPU.

The arrays are fake CUDA arrays (tests/conftest.py) and an explicit stream is passed,
so nothing here touches a GPU: each bad input must fail in validation, before launch.
"""

import pytest
from conftest import FakeCudaArray, fake_gemm_args

from cugroupgemm import batch_deepgemm_fp8_nt_groupwise, dlpack, dtypes, validate
from cugroupgemm.dtypes import OutKind
from cugroupgemm.errors import ArgumentTypeError, ArgumentValueError


def call(**overrides):
    args = fake_gemm_args(**overrides)
    return batch_deepgemm_fp8_nt_groupwise(**args, stream=0)


def check(**overrides):
    """validate.check_gemm on views of fake arrays (reaches the valid path too)."""
    args = fake_gemm_args(**overrides)
    expected_m = args.pop("expected_m")
    out = args.pop("out", None)
    views = {name: dlpack.take(obj, name, 1) for name, obj in args.items()}
    out_view = dlpack.take(out, "out", 1) if out is not None else None
    return validate.check_gemm(**views, expected_m=expected_m, granularity=(1, 128, 128),
                               out=out_view, out_kind=OutKind.BF16)


def test_valid_arguments_describe_the_problem():
    problem = check(groups=3, m=100, n=272, k=384)
    assert (problem.num_groups, problem.m, problem.n, problem.k) == (3, 100, 272, 384)
    assert problem.n_blocks == 3 and problem.k_blocks == 3


def test_uint8_operands_are_taken_as_e4m3_bits():
    check(a=FakeCudaArray((2, 64, 512), dtypes.UINT8), b=FakeCudaArray((2, 256, 512),
                                                                     dtypes.UINT8))


@pytest.mark.parametrize("name, bad, error, message", [
    ("a", FakeCudaArray((2, 64, 512), dtypes.BFLOAT16), ArgumentTypeError,
     r"^a: expected dtype float8_e4m3fn or uint8, got bfloat16"),
    ("b", FakeCudaArray((2, 256, 512), dtypes.FLOAT32), ArgumentTypeError,
     r"^b: expected dtype float8_e4m3fn or uint8, got float32"),
    ("a", FakeCudaArray((64, 512)), ArgumentValueError,
     r"^a: expected a 3-D array \(groups, m, k\), got 2-D of shape \(64, 512\)"),
    ("b", FakeCudaArray((3, 256, 512)), ArgumentValueError,
     r"^b: expected shape \(groups=2, n, k=512\) to match a \(2, 64, 512\), got \(3, 256, 512\)"),
    ("a_scale", FakeCudaArray((2, 64, 4), dtypes.FLOAT16), ArgumentTypeError,
     r"^a_scale: expected dtype float32, got float16"),
    ("a_scale", FakeCudaArray((2, 64, 3), dtypes.FLOAT32), ArgumentValueError,
     r"^a_scale: expected shape \(2, 64, 4\) \(groups, m, k/128\), got \(2, 64, 3\)"),
    ("b_scale", FakeCudaArray((2, 1, 4), dtypes.FLOAT32), ArgumentValueError,
     r"^b_scale: expected shape \(2, 2, 4\) \(groups, ceil\(n/128\), k/128\), got \(2, 1, 4\)"),
    ("masked_m", FakeCudaArray((2,), dtypes.INT64), ArgumentTypeError,
     r"^masked_m: expected dtype int32, got int64"),
    ("masked_m", FakeCudaArray((3,), dtypes.INT32), ArgumentValueError,
     r"^masked_m: expected shape \(2,\) \(groups,\), got \(3,\)"),
    ("masked_m", FakeCudaArray((2,), dtypes.INT32, strides=(2,)), ArgumentValueError,
     r"^masked_m: expected a contiguous array, got stride 2"),
])
def test_bad_array_is_named_with_expected_and_given(name, bad, error, message):
    with pytest.raises(error, match=message):
        call(**{name: bad})


def test_k_must_be_a_multiple_of_128():
    with pytest.raises(ArgumentValueError, match=r"^a, b: expected k to be a positive multiple "
                                                 r"of 128 \(the scale block\), got k=200"):
        call(a=FakeCudaArray((2, 64, 200)), b=FakeCudaArray((2, 256, 200)))


def test_n_must_be_a_multiple_of_16():
    with pytest.raises(ArgumentValueError, match=r"^b: expected n .* multiple of 16, got n=100"):
        call(n=100)


def test_operands_must_be_k_major():
    with pytest.raises(ArgumentValueError, match=r"^b: expected K-major layout \(last stride 1\)"):
        call(b=FakeCudaArray((2, 256, 512), strides=(131072, 1, 256)))


def test_operand_rows_must_be_16_byte_aligned():
    with pytest.raises(ArgumentValueError, match=r"^a: expected a 16-byte aligned start"):
        call(a=FakeCudaArray((2, 64, 512), strides=(64 * 520, 520, 1)))
    with pytest.raises(ArgumentValueError, match=r"address 0x7f0000000008"):
        call(a=FakeCudaArray((2, 64, 512), ptr=0x7F0000000008))


def test_negative_strides_are_refused():
    with pytest.raises(ArgumentValueError, match=r"^a_scale: negative strides are not supported"):
        call(a_scale=FakeCudaArray((2, 64, 4), dtypes.FLOAT32, strides=(256, -4, 1)))


def test_non_contiguous_scales_are_accepted():
    # MN-major a-scales, as DeepGEMM users keep them: (G, m, kb) with strides (kb*m, 1, m)
    check(a_scale=FakeCudaArray((2, 64, 4), dtypes.FLOAT32, strides=(256, 1, 64)))


def test_arrays_on_cpu_are_refused():
    with pytest.raises(ArgumentValueError, match=r"^b: expected an array on a CUDA device, got "
                                                 r"one on CPU"):
        call(b=FakeCudaArray((2, 256, 512), device_type=dlpack.KDL_CPU))


def test_first_array_on_cpu_is_refused_before_anything_else():
    with pytest.raises(ArgumentValueError, match=r"^a: expected an array on a CUDA device"):
        call(a=FakeCudaArray((2, 64, 512), device_type=dlpack.KDL_CPU))


def test_arrays_on_different_devices_are_refused_naming_each():
    with pytest.raises(ArgumentValueError, match=r"one CUDA device; got a on cuda:0, b on "
                                                 r"cuda:1, a_scale on cuda:0"):
        call(b=FakeCudaArray((2, 256, 512), device_id=1))


@pytest.mark.parametrize("value, error, message", [
    (-1, ArgumentValueError, r"^expected_m: expected an int in \[0, m=64\], got -1"),
    (65, ArgumentValueError, r"^expected_m: expected an int in \[0, m=64\], got 65"),
    (3.5, ArgumentTypeError, r"^expected_m: expected an int, got float 3.5"),
    (True, ArgumentTypeError, r"^expected_m: expected an int, got True"),
    ("8", ArgumentTypeError, r"^expected_m: expected an int, got str '8'"),
])
def test_expected_m_range_and_type(value, error, message):
    with pytest.raises(error, match=message):
        call(expected_m=value)


def test_expected_m_accepts_numpy_ints():
    import numpy as np

    assert check(expected_m=np.int64(7)).expected_m == 7


@pytest.mark.parametrize("granularity, error", [
    ((128, 128, 128), ArgumentValueError), ((1, 128), ArgumentValueError),
    ((1, 64, 128), ArgumentValueError), (None, ArgumentTypeError)])
def test_only_per_token_and_128_block_granularity(granularity, error):
    with pytest.raises(error, match=r"^scale_granularity_mnk: "):
        call(scale_granularity_mnk=granularity)


@pytest.mark.parametrize("out_dtype", ["int8", "float64", object()])
def test_bad_out_dtype(out_dtype):
    with pytest.raises(ArgumentTypeError, match=r"^out_dtype: expected bfloat16, float16 or "
                                                r"float32, got"):
        call(out_dtype=out_dtype)


@pytest.mark.parametrize("out, error, message", [
    (FakeCudaArray((2, 64, 256), dtypes.INT32), ArgumentTypeError,
     r"^out: expected dtype bfloat16, float16 or float32, got int32"),
    (FakeCudaArray((2, 64, 128), dtypes.BFLOAT16), ArgumentValueError,
     r"^out: expected shape \(2, 64, 256\) \(groups, m, n\), got \(2, 64, 128\)"),
    (FakeCudaArray((2, 64, 256), dtypes.BFLOAT16, strides=(16384, 1, 64)), ArgumentValueError,
     r"^out: expected rows contiguous along n"),
    (FakeCudaArray((2, 64, 256), dtypes.BFLOAT16, strides=(64 * 260, 260, 1)),
     ArgumentValueError, r"multiples of 8 elements"),
    (FakeCudaArray((2, 64, 256), dtypes.BFLOAT16, strides=(64 * 256 + 1, 256, 1)),
     ArgumentValueError, r"group and row strides that are multiples of 8 elements"),
    (FakeCudaArray((2, 64, 256), dtypes.BFLOAT16, strides=(256, 256, 1)), ArgumentValueError,
     r"^out: groups overlap"),
    (FakeCudaArray((2, 64, 256), dtypes.BFLOAT16, readonly=True), ArgumentValueError,
     r"^out: expected a writable array, got a read-only one"),
])
def test_bad_out(out, error, message):
    with pytest.raises(error, match=message):
        call(out=out)


def test_masked_m_violations_lists_groups_and_values():
    assert validate.masked_m_violations([0, 5, -1, 65, 64], 64) == [(2, -1), (3, 65)]


def test_out_kind_names_from_frameworks():
    import numpy as np

    from cugroupgemm.dtypes import out_kind_from_user

    class TorchLike:  # str(torch.bfloat16) == "torch.bfloat16"
        def __str__(self):
            return "torch.bfloat16"

    assert out_kind_from_user(TorchLike()) is OutKind.BF16
    assert out_kind_from_user(np.float16) is OutKind.F16
    assert out_kind_from_user(np.dtype("float32")) is OutKind.F32
    assert out_kind_from_user(None) is OutKind.BF16
    assert out_kind_from_user("bfloat16") is OutKind.BF16
