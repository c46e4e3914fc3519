"""What the compiler made of a kernel, without a GPU: resources and disassembly.

Used by ``python -m cugroupgemm check`` and by the CI tests that every family compiles
for every target it claims, with the tensor-core instructions it is meant to use.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .build import Binary, KernelSpec, compile_kernel


@dataclass(frozen=True)
class Resources:
    registers: int
    smem_bytes: int  # static shared memory (dynamic comes at launch)
    stack_bytes: int
    spill_store_bytes: int
    spill_load_bytes: int

    def __str__(self):
        return (f"regs {self.registers:3d}  static smem {self.smem_bytes:6d} B  "
                f"stack {self.stack_bytes} B  spills {self.spill_store_bytes}/"
                f"{self.spill_load_bytes} B")


def resources(binary: Binary) -> Resources:
    """Parse ptxas' verbose report (the build always asks for it) for one kernel."""
    text = binary.log
    section = text[text.find(f"Function properties for {binary.lowered_name}"):]
    frame = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill "
                      r"loads", section)
    used = re.search(r"Used (\d+) registers(?:.*?(\d+) bytes smem)?", section)
    if not frame or not used:
        raise ValueError(f"no ptxas resource report for {binary.lowered_name} in:\n{text}")
    return Resources(registers=int(used.group(1)), smem_bytes=int(used.group(2) or 0),
                     stack_bytes=int(frame.group(1)), spill_store_bytes=int(frame.group(2)),
                     spill_load_bytes=int(frame.group(3)))


@functools.cache
def disassembler() -> tuple[str, ...] | None:
    """nvdisasm or cuobjdump: from PATH, a CUDA toolkit, or the NVIDIA wheels."""
    for tool, arguments in (("nvdisasm", ("-c",)), ("cuobjdump", ("-sass",))):
        path = shutil.which(tool)
        if path is None:
            try:
                from cuda import pathfinder

                path = pathfinder.find_nvidia_binary_utility(tool)
            except Exception:  # noqa: BLE001 - not installed: try the next tool
                path = None
        if path:
            return (path, *arguments)
    return None


def disassemble(binary: Binary) -> str:
    command = disassembler()
    if command is None:
        raise FileNotFoundError("no disassembler: install nvidia-cuda-nvdisasm (the [test] "
                                "extra does) or put a CUDA toolkit's nvdisasm on PATH")
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory, "kernel.cubin")
        path.write_bytes(binary.cubin)
        done = subprocess.run([*command, str(path)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{command[0]} failed on the cubin: {done.stderr.strip()}")
    return done.stdout


_INSTRUCTION = re.compile(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);")
_LABEL = re.compile(r"^\s*\.(L_x_\d+):")
_BRANCH_TARGET = re.compile(r"\bBRA\b[^;]*?(?:\.(L_x_\d+)|\b0x([0-9a-f]+))")


def inner_loops(sass: str, instruction: str) -> list[list[str]]:
    """The innermost loops of the disassembly that hold ``instruction`` (a GEMM's k loops):
    each the instructions from a backward branch's target to the branch. nvdisasm names
    targets by label, cuobjdump by address."""
    code: list[tuple[int, str]] = []  # (address, instruction)
    labels: dict[str, int] = {}  # label -> index of the instruction it names
    for line in sass.splitlines():
        if label := _LABEL.match(line):
            labels[label.group(1)] = len(code)
        elif found := _INSTRUCTION.search(line):
            code.append((int(found.group(1), 16), found.group(2).strip()))
    index_of = {address: i for i, (address, _) in enumerate(code)}
    loops = []
    for end, (_, text) in enumerate(code):
        target = _BRANCH_TARGET.search(text)
        if target is None:
            continue
        start = (labels.get(target.group(1)) if target.group(1)
                 else index_of.get(int(target.group(2), 16)))
        if start is not None and start <= end and any(
                instruction in body for _, body in code[start:end + 1]):
            loops.append((start, end))
    # A range that holds another, or crosses a shorter one, is no innermost loop (an
    # out-of-line path, such as a barrier wait's retry, also branches back into a loop).
    def outer(s, e, s2, e2):  # whether (s, e) holds or crosses the shorter (s2, e2)
        crosses = s < s2 <= e < e2 or s2 < s <= e2 < e
        return (s2, e2) != (s, e) and (s <= s2 and e2 <= e or crosses and e2 - s2 < e - s)

    return [[body for _, body in code[s:e + 1]] for s, e in loops
            if not any(outer(s, e, s2, e2) for s2, e2 in loops)]


@dataclass(frozen=True)
class KernelCheck:
    spec: KernelSpec
    resources: Resources
    sass: str | None  # None when no disassembler is installed
    tensor_core_pattern: str

    @property
    def tensor_core_ok(self) -> bool | None:
        return None if self.sass is None else bool(re.search(self.tensor_core_pattern, self.sass))

    @property
    def local_memory_ops(self) -> int | None:
        return None if self.sass is None else len(re.findall(r"\b(?:LDL|STL)\b", self.sass))


def check_kernel(spec: KernelSpec, tensor_core_pattern: str) -> KernelCheck:
    binary = compile_kernel(spec)
    sass = disassemble(binary) if disassembler() else None
    return KernelCheck(spec, resources(binary), sass, tensor_core_pattern)
