"""The CuPy direct view's decisions on a stand-in for ``cupy.ndarray`` (no GPU needed);
tests/test_api_gpu.py compares real arrays' direct views with DLPack's on a GPU."""

import sys
import types

import numpy as np
import pytest

from cugroupgemm import dtypes, intake
from cugroupgemm.dlpack import KDL_CUDA, KDL_CUDA_MANAGED


class StandIn:
    """What _direct_cupy_view reads of a CuPy array."""

    def __init__(self, shape=(2, 3), dtype=np.float32, strides=None, device_id=0,
                 device_type=KDL_CUDA, ptr=0x7F0000001000):
        self.shape, self.dtype = shape, np.dtype(dtype)
        self.itemsize = self.dtype.itemsize
        self.strides = strides or (shape[1] * self.itemsize, self.itemsize)
        self.data = types.SimpleNamespace(ptr=ptr)
        self._dlpack_device = (device_type, device_id)

    def __dlpack_device__(self):
        return self._dlpack_device


@pytest.fixture(autouse=True)
def stand_in_cupy(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(ndarray=StandIn))


def test_a_device_array_is_read_off_its_metadata():
    array = StandIn(shape=(4, 8), dtype=np.int32, strides=(64, 4), device_id=1)
    view = intake._direct_cupy_view(array, 1)
    assert (view.ptr, view.shape, view.strides) == (0x7F0000001000, (4, 8), (16, 1))
    assert (view.dtype, view.device_type, view.device_id) == (dtypes.INT32, KDL_CUDA, 1)
    assert view.owner is array and not view.readonly


@pytest.mark.parametrize("array", [
    StandIn(device_type=KDL_CUDA_MANAGED),  # DLPack reports managed memory apart
    StandIn(device_id=1),  # another device than the call's
    StandIn(strides=(13, 4)),  # byte strides that are not whole elements
    StandIn(dtype=np.int16),  # a dtype dtypes.py does not name
    StandIn(dtype=np.dtype("V2")),  # kind 'V' (ml_dtypes' types): CuPy's DLPack refuses
    np.zeros((2, 3), dtype=np.float32),  # not a CuPy array
], ids=["managed", "other device", "odd strides", "int16", "kind V", "numpy"])
def test_anything_unusual_is_left_to_dlpack(array):
    assert intake._direct_cupy_view(array, 0) is None
