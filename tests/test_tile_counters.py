"""Who gets which tile counter (cugroupgemm/tile_counters.py), with CUDA faked: no GPU."""

import ctypes
import sys
import types

import pytest

from cugroupgemm import launch, tile_counters
from cugroupgemm.build import KernelSpec


class FakeRuntime:
    """The few cupy.cuda.runtime calls tile_counters makes, recorded."""

    streamNonBlocking = 1

    def __init__(self):
        self.capturing = set()
        self.calls = []
        self.next_address = 0x10000

    def streamIsCapturing(self, stream):
        return stream in self.capturing

    def malloc(self, nbytes):
        address, self.next_address = self.next_address, self.next_address + nbytes
        self.calls.append(("malloc", nbytes))
        return address

    def streamCreateWithFlags(self, flags):
        self.calls.append(("streamCreate", flags))
        return 999

    def memsetAsync(self, address, value, nbytes, stream):
        self.calls.append(("memset", address, value, nbytes, stream))

    def streamSynchronize(self, stream):
        self.calls.append(("sync", stream))

    def streamDestroy(self, stream):
        self.calls.append(("destroy", stream))


@pytest.fixture
def runtime(monkeypatch):
    fake = FakeRuntime()
    cupy = types.SimpleNamespace(cuda=types.SimpleNamespace(
        runtime=fake, Device=lambda device_id: _NoContext()))
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setitem(sys.modules, "cupy.cuda", cupy.cuda)
    monkeypatch.setattr(tile_counters, "_per_stream", {})
    monkeypatch.setattr(tile_counters, "_slabs", {})
    monkeypatch.setattr("cugroupgemm.capture.relaxed_capture_mode", _NoContext)
    return fake


class _NoContext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_a_stream_keeps_its_counter_and_streams_and_devices_do_not_share(runtime):
    first = tile_counters.counter_for(0, 5)
    assert tile_counters.counter_for(0, 5) == first
    others = {tile_counters.counter_for(0, 6), tile_counters.counter_for(1, 5)}
    assert len(others | {first}) == 3
    # One slab per device, zeroed once on a private stream that is then synchronised.
    assert [call[0] for call in runtime.calls] == ["malloc", "streamCreate", "memset", "sync",
                                                   "destroy"] * 2
    nbytes = tile_counters.SLAB_COUNTERS * tile_counters.COUNTER_BYTES
    assert ("memset", first, 0, nbytes, 999) in runtime.calls


def test_each_captured_launch_gets_a_counter_of_its_own(runtime):
    eager = tile_counters.counter_for(0, 5)
    runtime.capturing.add(5)
    captured = [tile_counters.counter_for(0, 5) for _ in range(3)]
    assert len(set(captured) | {eager}) == 4
    runtime.capturing.clear()
    assert tile_counters.counter_for(0, 5) == eager  # capture did not replace it


def test_a_used_up_slab_is_followed_by_a_new_one(runtime, monkeypatch):
    monkeypatch.setattr(tile_counters, "SLAB_COUNTERS", 2)
    addresses = [tile_counters.counter_for(0, stream) for stream in range(5)]
    assert len(set(addresses)) == 5
    assert sum(call[0] == "malloc" for call in runtime.calls) == 3
    assert addresses[1] - addresses[0] == tile_counters.COUNTER_BYTES


@pytest.mark.parametrize("tile_counter", [False, True])
def test_a_launch_passes_the_streams_counter_last_when_its_plan_takes_one(monkeypatch,
                                                                         tile_counter):
    launched = []

    def launch_kernel(handle, gx, gy, gz, bx, by, bz, smem, stream, arguments, extra):
        pointers = ctypes.cast(arguments, ctypes.POINTER(ctypes.c_void_p))
        count = 3 if tile_counter else 2
        launched.append([ctypes.c_uint64.from_address(pointers[i]).value for i in range(count)])

    driver = types.SimpleNamespace(launchKernel=launch_kernel)
    cupy = types.SimpleNamespace(cuda=types.SimpleNamespace(
        driver=driver, runtime=types.SimpleNamespace(getDevice=lambda: 0)))
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setitem(sys.modules, "cupy.cuda", cupy.cuda)
    asked = []
    monkeypatch.setattr(tile_counters, "counter_for",
                        lambda device_id, stream: asked.append(stream) or 1000 + stream)
    plan = launch.LaunchPlan(KernelSpec("k.cu", "k", "sm_90a"), (1, 1, 1), (128, 1, 1), 0,
                             None, tile_counter)
    kernel = types.SimpleNamespace(handle=1)
    prepared = launch.KernelLaunch(kernel, plan, 0, (ctypes.c_uint64(11), ctypes.c_uint64(12)))
    prepared.run(7)
    prepared.run(8, ctypes.c_uint64(13))
    expected = [[11, 12], [13, 12]]
    assert launched == ([row + [1000 + s] for row, s in zip(expected, (7, 8))] if tile_counter
                        else expected)
    assert asked == ([7, 8] if tile_counter else [])  # a static kernel takes no counter


def test_the_per_thread_default_stream_is_one_stream_per_thread(runtime):
    import threading

    mine = tile_counters.counter_for(0, tile_counters.PER_THREAD_STREAM)
    theirs = []
    thread = threading.Thread(target=lambda: theirs.append(
        tile_counters.counter_for(0, tile_counters.PER_THREAD_STREAM)))
    thread.start()
    thread.join()
    assert theirs[0] != mine
    assert tile_counters.counter_for(0, tile_counters.PER_THREAD_STREAM) == mine
