"""The torch tensor views read without DLPack (the eager call's fast path on torch's
current stream, and the custom ops) equal the views DLPack gives, on CPU tensors."""

import dataclasses

import pytest

from cugroupgemm import dlpack, intake

torch = pytest.importorskip("torch")


def tensors():
    base = torch.arange(4 * 6 * 256, dtype=torch.float32).reshape(4, 6, 256)
    yield "contiguous", base
    yield "transposed", base.transpose(1, 2)
    yield "sliced with an offset", base[1:, 2:5, 128:]
    yield "zero stride", base[:1].expand(3, 6, 256)
    yield "one element", base[0, 0, :1]
    yield "empty", base[:0]
    for dtype in (torch.float8_e4m3fn, torch.uint8, torch.int32, torch.bfloat16,
                  torch.float16, torch.float64, torch.int64):
        yield str(dtype), base[:, :, :128].to(dtype)


@pytest.mark.parametrize("name, tensor", list(tensors()), ids=[n for n, _ in tensors()])
def test_direct_view_equals_the_dlpack_view(name, tensor):
    direct = intake.torch_tensor_view(tensor)
    via_dlpack = dlpack.take(tensor, "x", None)
    fields = ("ptr", "shape", "strides", "dtype", "device_type", "device_id", "readonly")
    if tensor.numel() == 0:
        fields = fields[1:]  # DLPack may hand an empty tensor's address as null
    assert {f: getattr(direct, f) for f in fields} == {f: getattr(via_dlpack, f) for f in fields}
    assert direct.owner is tensor


def test_a_fake_tensor_gets_the_abstract_view():
    tensor = torch.empty((2, 3, 128), dtype=torch.bfloat16, device="meta")
    view = intake.torch_tensor_view(tensor, located=False)
    assert dataclasses.astuple(view) == dataclasses.astuple(intake.view_of((2, 3, 128),
                                                                           "bfloat16"))


@pytest.mark.parametrize("tensor", [
    torch.zeros(4, 128),  # not on a GPU
    torch.zeros(4, 128, requires_grad=True),
    torch.zeros(4, 128, dtype=torch.int16),  # a dtype dtypes.py does not name
], ids=["cpu", "requires_grad", "int16"])
def test_only_plain_cuda_tensors_skip_dlpack(tensor):
    assert intake._direct_torch_view(tensor, 0) is None
