"""Build events on the "cugroupgemm" logger, their collector, the CLI's logging, the progress line."""

import io
import logging

from test_build import SPEC, tiny_kernels  # noqa: F401 - the fixture: a private kernels_cu/

from cugroupgemm import build, logs


def test_a_cold_compile_then_a_disk_hit_are_counted(tiny_kernels):  # noqa: F811
    with logs.KernelEvents() as events:
        build.compile_kernel(SPEC)
        build._memory_cache.clear()  # as a new process would start
        build.compile_kernel(SPEC)
        build.compile_kernel(SPEC)  # from memory: no event
    assert [e.event for e in events.events] == [logs.COMPILE, logs.DISK_HIT]
    assert events.count(logs.COMPILE) == 1 and events.events[0].spec == SPEC
    assert all(e.seconds >= 0 for e in events.events)


def test_collector_leaves_the_logger_as_it_found_it():
    logs.log.setLevel(logging.WARNING)
    with logs.KernelEvents() as events:
        assert logs.log.level == logging.DEBUG and events in logs.log.handlers
    assert logs.log.level == logging.WARNING and events not in logs.log.handlers
    logs.log.setLevel(logging.NOTSET)


def test_compile_is_logged_at_info_with_its_time(tiny_kernels, caplog):  # noqa: F811
    with caplog.at_level(logging.DEBUG, logger="cugroupgemm"):
        build.compile_kernel(SPEC)
    messages = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert any(level == "DEBUG" and "disk cache miss for tiny<3> (sm_80)" in text
               for level, text in messages)
    assert any(level == "DEBUG" and "-arch=sm_80" in text for level, text in messages)
    assert any(level == "INFO" and text.startswith("compiled tiny<3> for sm_80 in ")
               for level, text in messages)


def test_cli_verbosity_sets_the_handler_level():
    before = list(logs.log.handlers)
    try:
        logs.configure_cli(1)
        handler = logs.log.handlers[-1]
        assert handler.level == logging.INFO and logs.log.level == logging.INFO
    finally:
        logs.log.handlers[:] = before
        logs.log.setLevel(logging.NOTSET)


def test_progress_prints_one_line_per_step_when_not_a_terminal():
    stream = io.StringIO()
    progress = logs.Progress(12, stream)
    progress.step("copy bandwidth")
    progress.step("decode G=32")
    progress.close()
    assert stream.getvalue() == "[ 1/12] copy bandwidth\n[ 2/12] decode G=32\n"


def test_progress_redraws_one_line_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    progress = logs.Progress(2, stream)
    progress.step("a long first step")
    progress.step("short")
    progress.close()
    text = stream.getvalue()
    assert "\n" not in text and text.count("\r") == 4  # two steps, then the line is cleared
    assert "\r[2/2] short" + " " * (len("[1/2] a long first step") - len("[2/2] short")) in text
