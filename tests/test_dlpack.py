"""DLPack in and out, on CPU-producible capsules (NumPy) and fake CUDA arrays."""

import gc

import numpy as np
import pytest
from conftest import FakeCudaArray

from cugroupgemm import dlpack, dtypes
from cugroupgemm.errors import ArgumentTypeError


def test_strided_numpy_view_keeps_strides_offset_and_dtype():
    base = np.arange(2 * 3 * 8, dtype=np.float32).reshape(2, 3, 8)
    sliced = base[:, 1:, ::2]
    view = dlpack.take(sliced, "x", stream=None)
    assert view.shape == (2, 2, 4)
    assert view.strides == (24, 8, 2)
    assert view.dtype == dtypes.FLOAT32
    assert view.device_type == dlpack.KDL_CPU
    assert view.ptr == base.ctypes.data + 8 * 4  # byte offset of row 1 honoured


@pytest.mark.parametrize("dtype, expected", [
    (np.int32, dtypes.INT32), (np.uint8, dtypes.UINT8), (np.float16, dtypes.FLOAT16),
    (np.float64, dtypes.FLOAT64)])
def test_dtypes_are_read(dtype, expected):
    assert dlpack.take(np.zeros(4, dtype), "x", None).dtype == expected


def test_read_only_flag_of_versioned_capsules():
    array = np.zeros(4, np.int32)
    array.flags.writeable = False
    assert dlpack.take(array, "x", None).readonly


def test_legacy_capsules_are_read_too():
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    view = dlpack.view_from_capsule(array.__dlpack__())  # NumPy's default: legacy
    assert view.shape == (2, 3) and view.strides == (3, 1)


def test_consumed_capsule_cannot_be_taken_twice():
    capsule = np.zeros(3, np.float32).__dlpack__()
    dlpack.view_from_capsule(capsule)
    with pytest.raises(ArgumentTypeError, match="unused DLPack capsule"):
        dlpack.view_from_capsule(capsule)


def test_non_dlpack_object_is_a_type_error_naming_the_argument():
    with pytest.raises(ArgumentTypeError, match=r"^b: expected an array that supports DLPack"):
        dlpack.take([1, 2, 3], "b", None)


def test_fp8_fake_cuda_array_round_trips_through_our_capsules():
    fake = FakeCudaArray((4, 32, 256), dtypes.FLOAT8_E4M3FN, strides=(16384, 512, 1))
    view = dlpack.take(fake, "a", stream=1)
    assert view.dtype == dtypes.FLOAT8_E4M3FN and view.dtype.code == 10
    assert view.strides == (16384, 512, 1)
    assert view.device_type == dlpack.KDL_CUDA


@pytest.mark.parametrize("max_version", [None, (1, 0)])
def test_exported_capsule_is_imported_by_numpy_and_freed(max_version):
    source = np.arange(6, dtype=np.float32)
    before = dlpack.live_export_count()
    export = dlpack.Export(source.ctypes.data, (2, 3), dtypes.FLOAT32, 0, keepalive=source,
                           device_type=dlpack.KDL_CPU)
    imported = np.from_dlpack(export)
    np.testing.assert_array_equal(imported, source.reshape(2, 3))
    del imported
    gc.collect()
    assert dlpack.live_export_count() == before


def test_unconsumed_capsule_frees_its_export():
    source = np.zeros(4, np.float32)
    before = dlpack.live_export_count()
    export = dlpack.Export(source.ctypes.data, (4,), dtypes.FLOAT32, 0, keepalive=source,
                           device_type=dlpack.KDL_CPU)
    capsule = export.__dlpack__(max_version=(1, 1))
    assert dlpack.live_export_count() == before + 1
    del capsule
    gc.collect()
    assert dlpack.live_export_count() == before


def test_export_tells_the_producer_hook_the_consumer_stream():
    seen = []
    source = np.zeros(4, np.float32)
    export = dlpack.Export(source.ctypes.data, (4,), dtypes.FLOAT32, 0, keepalive=source,
                           before_export=seen.append, device_type=dlpack.KDL_CPU)
    export.__dlpack__(stream=7)
    assert seen == [7]


def test_export_refuses_copies_to_other_devices():
    export = FakeCudaArray((4,), dtypes.FLOAT32)._export
    with pytest.raises(BufferError, match="copy"):
        export.__dlpack__(dl_device=(dlpack.KDL_CPU, 0))
