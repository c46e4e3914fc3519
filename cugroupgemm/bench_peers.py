"""What a user would run instead of cugroupgemm, timed beside it by the benchmark.

Every peer is optional: ``find_peers`` says for each one whether it can run here and, if
not, why; the benchmark skips what is missing. PyTorch and DeepGEMM are imported inside
functions only, so importing this module imports neither (the core never does).

Each peer is prepared once per shape from the same inputs as ours (the CuPy arrays of
``Case``, shared through DLPack without a copy) and returns a ``Prepared``: a call on
input set ``i`` and a way to read back a group's valid rows for the correctness check.
Layout work a user would do once (re-laid scales, dequantised bf16 weights) is done in
``prepare``, outside the timed calls, in the peer's favour.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .bench_shapes import Shape
from .bench_timing import rotation_sets

FP8_CEILING_SIZE = 8192  # the square FP8 matmul that measures the device's FP8 rate


@dataclass(frozen=True)
class Case:
    """One shape's inputs, shared by every contender."""

    shape: Shape
    masked_m: object  # NumPy int32 (groups,): the host's copy of the routing
    inputs: list[dict]  # per rotation set: CuPy a, b (e4m3 bits), a_scale, b_scale, masked_m


@dataclass(frozen=True)
class Prepared:
    call: Callable[[int], None]  # run once on input set i
    valid_rows: Callable[[int], object]  # group g's rows < masked_m[g] from set 0, NumPy


@dataclass(frozen=True)
class Peer:
    name: str
    what: str  # one line for the table's legend
    missing: Callable[[], str | None]  # None when the peer can run here, else why not
    prepare: Callable[[Case], Prepared]


def _torch():
    import torch

    return torch


def torch_missing() -> str | None:
    try:
        torch = _torch()
    except ImportError as exc:
        return f"torch not importable ({exc})"
    if not torch.cuda.is_available():
        return "torch sees no CUDA device"
    return None


def _scaled_mm_missing() -> str | None:
    return torch_missing() or (None if hasattr(_torch(), "_scaled_mm")
                               else "this torch has no torch._scaled_mm")


# DeepGEMM renamed its masked grouped FP8 GEMM; the newest name first.
_DEEPGEMM_NAMES = ("m_grouped_fp8_gemm_nt_masked", "m_grouped_gemm_fp8_fp8_bf16_nt_masked")


def _deepgemm_function():
    import deep_gemm

    for name in _DEEPGEMM_NAMES:
        if hasattr(deep_gemm, name):
            return getattr(deep_gemm, name)
    raise AttributeError(f"deep_gemm has none of {', '.join(_DEEPGEMM_NAMES)}")


def _deepgemm_missing() -> str | None:
    missing = torch_missing()
    if missing:
        return missing
    try:
        _deepgemm_function()
    except Exception as exc:  # noqa: BLE001 - any failure to import means: skip the peer
        return f"deep_gemm not usable ({type(exc).__name__}: {exc})"
    return None


def _as_torch(array, fp8: bool = False):
    """A CuPy array as a torch tensor on the same memory (e4m3 bits viewed as float8)."""
    torch = _torch()
    tensor = torch.from_dlpack(array)
    return tensor.view(torch.float8_e4m3fn) if fp8 else tensor


def torch_gemm_inputs(inputs: dict) -> dict:
    """The GEMM's CuPy inputs (e4m3 as uint8) as torch tensors on the same memory, a and b
    viewed as float8_e4m3fn (the benchmark's, the host profile's and the GPU tests')."""
    return {name: _as_torch(array, fp8=name in ("a", "b")) for name, array in inputs.items()}


def _torch_inputs(inputs: dict) -> tuple:
    return (_as_torch(inputs["a"], fp8=True), _as_torch(inputs["b"], fp8=True),
            _as_torch(inputs["a_scale"]), _as_torch(inputs["b_scale"]))


def _host_rows(tensor):
    return tensor.float().cpu().numpy()


def _prepare_looped_scaled_mm(case: Case) -> Prepared:
    """One block-wise ``torch._scaled_mm`` per non-empty group on its valid rows.

    The host knows masked_m here (a user's loop would read it back); rows are padded to
    16 as cuBLASLt's FP8 path wants. NOTE: cuBLASLt's block-wise scaling takes both scale
    tensors outer-dim-major: a's as a column-major (rows, k/128), b's as the (k/128, n/128)
    transpose of the contiguous b_scale[g] (measured on the H100, shared/DESIGN.md).
    """
    torch = _torch()
    m = case.shape.m
    per_set = []
    for inputs in case.inputs:
        a, b, a_scale, b_scale = _torch_inputs(inputs)
        groups = []
        for g, rows in enumerate(int(r) for r in case.masked_m):
            if rows:
                padded = min(m, -(-rows // 16) * 16)
                groups.append((g, a[g, :padded], b[g].t(),
                               a_scale[g, :padded].t().contiguous().t(), b_scale[g].t()))
        per_set.append(groups)
    results: dict[int, dict] = {}

    def call(i):
        results[i] = {g: torch._scaled_mm(a_g, b_g, scale_a, scale_b, out_dtype=torch.bfloat16)
                      for g, a_g, b_g, scale_a, scale_b in per_set[i]}

    def valid_rows(g):
        empty = torch.empty((0, case.shape.n))  # an empty group has no call, hence no result
        return _host_rows(results[0].get(g, empty)[:int(case.masked_m[g])])

    return Prepared(call, valid_rows)


def _dequantised_bf16(inputs: dict, shape: Shape) -> tuple:
    """(a, b) as bf16 values of the dequantised fp8 inputs; b one group at a time (memory)."""
    torch = _torch()
    a, b, a_scale, b_scale = _torch_inputs(inputs)
    a_bf16 = (a.float() * a_scale.repeat_interleave(128, -1)).bfloat16()
    b_bf16 = torch.empty(b.shape, dtype=torch.bfloat16, device=b.device)
    for g in range(shape.groups):
        full_scale = b_scale[g].repeat_interleave(128, 0)[:shape.n].repeat_interleave(128, 1)
        b_bf16[g] = (b[g].float() * full_scale).bfloat16()
    return a_bf16, b_bf16


def _prepare_bf16_bmm(case: Case) -> Prepared:
    """``torch.bmm`` over the groups on dequantised bf16 data, every one of the m rows."""
    torch = _torch()
    shape = case.shape
    count = min(len(case.inputs), rotation_sets(shape.groups * (shape.m + shape.n) * shape.k * 2))
    operands = [_dequantised_bf16(inputs, shape) for inputs in case.inputs[:count]]
    results = {}

    def call(i):
        a, b = operands[i % count]
        results[i % count] = torch.bmm(a, b.mT)

    def valid_rows(g):
        return _host_rows(results[0][g, :int(case.masked_m[g])])

    return Prepared(call, valid_rows)


def _prepare_deepgemm(case: Case) -> Prepared:
    """DeepGEMM's masked grouped FP8 GEMM as its users call it (it re-lays a_scale itself)."""
    torch = _torch()
    function = _deepgemm_function()
    shape = case.shape
    expected_m = max(1, shape.expected_m)  # DeepGEMM asserts expected_m > 0
    per_set = []
    for inputs in case.inputs:
        a, b, a_scale, b_scale = _torch_inputs(inputs)
        out = torch.empty((shape.groups, shape.m, shape.n), dtype=torch.bfloat16, device=a.device)
        per_set.append(((a, a_scale), (b, b_scale), out, _as_torch(inputs["masked_m"])))

    def call(i):
        a, b, out, masked_m = per_set[i]
        function(a, b, out, masked_m, expected_m)

    def valid_rows(g):
        return _host_rows(per_set[0][2][g, :int(case.masked_m[g])])

    return Prepared(call, valid_rows)


PEERS = (
    Peer("cublas-looped", "torch._scaled_mm block-wise (cuBLASLt), one call per non-empty "
         "group", _scaled_mm_missing, _prepare_looped_scaled_mm),
    Peer("bf16-bmm", "torch.bmm in bf16 on dequantised inputs, all m rows", torch_missing,
         _prepare_bf16_bmm),
    Peer("deepgemm", "DeepGEMM masked grouped FP8 GEMM", _deepgemm_missing, _prepare_deepgemm),
)


def find_peers(names=None) -> dict[str, str | None]:
    """Peer name -> None when it can run here, else why it is skipped."""
    return {peer.name: peer.missing() for peer in PEERS if names is None or peer.name in names}


def fp8_matmul_call(size: int = FP8_CEILING_SIZE) -> Callable[[int], None]:
    """A dense size^3 FP8 matmul with per-tensor scales: the device's FP8 rate (needs torch)."""
    torch = _torch()
    x = torch.randn((size, size), device="cuda").to(torch.float8_e4m3fn)
    y = torch.randn((size, size), device="cuda").to(torch.float8_e4m3fn)
    one = torch.ones((), device="cuda")

    def call(_):
        torch._scaled_mm(x, y.t(), one, one, out_dtype=torch.bfloat16)

    return call
