"""The NumPy float64 reference: fp8 codes, the quantizers' math, the masked GEMM, calc_diff."""

import numpy as np
import pytest

from cugroupgemm import reference as ref


def test_every_e4m3_code_decodes_and_round_trips():
    codes = np.arange(256, dtype=np.uint8)
    values = ref.fp8_e4m3_to_float64(codes)
    nan = (codes & 0x7F) == 0x7F
    assert np.isnan(values[nan]).all() and not np.isnan(values[~nan]).any()
    assert values[0x7E] == 448.0 and values[0x01] == 2.0 ** -9 and values[0x08] == 2.0 ** -6
    back = ref.float32_to_fp8_e4m3(values[~nan].astype(np.float32))
    np.testing.assert_array_equal(back, codes[~nan])


def test_rounding_is_nearest_even_and_saturating():
    as_codes = lambda xs: ref.float32_to_fp8_e4m3(np.array(xs, np.float32))  # noqa: E731
    # 1.0625 lies halfway between 1.0 (mantissa 000) and 1.125 (001): even wins
    assert list(ref.fp8_e4m3_to_float64(as_codes([1.0625, 1.1875]))) == [1.0, 1.25]
    assert list(ref.fp8_e4m3_to_float64(as_codes([470.0, 1e9, -np.inf]))) == [448.0, 448.0,
                                                                               -448.0]
    assert as_codes([np.nan])[0] & 0x7F == 0x7F
    assert as_codes([-0.0])[0] == 0x80
    assert as_codes([2.0 ** -10])[0] == 0x00  # halfway to the smallest subnormal: even (0)


def test_scale_rules():
    amax = np.array([448.0, 449.0, 0.0, 896.0], np.float32)
    np.testing.assert_array_equal(ref.scale_for_amax(amax, True), [1.0, 2.0, 2.0 ** -22, 2.0])
    plain = ref.scale_for_amax(amax, False)
    assert plain[1] == np.float32(449.0) / np.float32(448.0)
    assert plain[2] == np.float32(1e-4) / np.float32(448.0)


@pytest.mark.parametrize("power_of_two", [True, False])
def test_per_token_dequantises_close_to_the_input(power_of_two):
    x = np.random.default_rng(0).standard_normal((3, 5, 256)).astype(np.float32) * 10
    q, s = ref.per_token_cast_to_fp8(x, power_of_two)
    assert q.shape == x.shape and s.shape == (3, 5, 2)
    back = ref.fp8_e4m3_to_float64(q) * np.repeat(s, 128, axis=-1)
    assert np.abs(back - x).max() <= np.abs(x).max() * 2.0 ** -3
    assert (ref.fp8_e4m3_to_float64(q).max() <= 448.0)


def test_per_block_handles_ragged_edges():
    x = np.random.default_rng(1).standard_normal((130, 300)).astype(np.float32)
    q, s = ref.per_block_cast_to_fp8(x)
    assert q.shape == (130, 300) and s.shape == (2, 3)
    assert s[1, 2] == ref.scale_for_amax(np.abs(x[128:, 256:]).max()[None], True)[0]


def test_masked_gemm_matches_a_direct_computation():
    rng = np.random.default_rng(2)
    a = rng.integers(0, 0x7E, size=(2, 5, 256), dtype=np.uint8)
    b = rng.integers(0, 0x7E, size=(2, 144, 256), dtype=np.uint8)
    a_scale = rng.uniform(0.5, 2, (2, 5, 2)).astype(np.float32)
    b_scale = rng.uniform(0.5, 2, (2, 2, 2)).astype(np.float32)
    out = ref.masked_gemm(a, b, a_scale, b_scale, np.array([3, 9], np.int32))
    fa, fb = ref.fp8_e4m3_to_float64(a), ref.fp8_e4m3_to_float64(b)
    g, r, c = 1, 4, 140
    expected = sum(float(a_scale[g, r, kb]) * float(b_scale[g, c // 128, kb])
                   * (fa[g, r, kb * 128:(kb + 1) * 128] @ fb[g, c, kb * 128:(kb + 1) * 128])
                   for kb in range(2))
    assert out[g, r, c] == pytest.approx(expected, rel=1e-12)
    assert (out[0, 3:] == 0).all()  # rows past masked_m


def test_calc_diff():
    x = np.array([1.0, 2.0, 3.0])
    assert ref.calc_diff(x, x) == pytest.approx(0.0, abs=1e-15)
    assert ref.calc_diff(x, -x) == pytest.approx(2.0)
    assert np.isnan(ref.calc_diff(np.array([np.nan]), np.array([1.0])))
