"""What cugroupgemm tells people while it works: log records, kernel events, a progress line.

Everything goes through the ``logging`` logger named "cugroupgemm"; the library adds no
handler of its own (the CLI does, with ``-v``). Build events (a compile, a disk-cache hit,
a module load) carry a ``kernel_event`` attribute, so a program can count them without
parsing messages: ``KernelEvents`` does that (the warm-up check and its test use it).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

LOGGER_NAME = "cugroupgemm"
log = logging.getLogger(LOGGER_NAME)

# The kernel events build.py reports (the record's ``kernel_event`` attribute).
COMPILE = "compile"  # NVRTC ran (a cold cache); ``seconds`` is the compile time
DISK_HIT = "disk_hit"  # the cubin came from the disk cache; ``seconds`` is the read time
LOAD = "load"  # the cubin was loaded on a device; ``seconds`` is the load time


def kernel_event(event: str, spec, seconds: float) -> dict:
    """The ``extra=`` of a build record: which event, for which KernelSpec, how long."""
    return {"kernel_event": event, "spec": spec, "seconds": seconds}


@dataclass(frozen=True)
class Event:
    event: str
    spec: object  # build.KernelSpec
    seconds: float


class KernelEvents(logging.Handler):
    """Collects the build events logged while it is attached (a context manager).

    >>> with KernelEvents() as events:
    ...     run_something()
    >>> events.count(COMPILE)
    """

    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.events: list[Event] = []
        self._previous_level = logging.NOTSET

    def emit(self, record: logging.LogRecord):
        event = getattr(record, "kernel_event", None)
        if event is not None:
            self.events.append(Event(event, record.spec, record.seconds))

    def count(self, event: str) -> int:
        return sum(e.event == event for e in self.events)

    def __enter__(self) -> KernelEvents:
        # NOTE: build events are logged at DEBUG/INFO; lower the logger's level while
        # listening, or they would be filtered out before any handler sees them.
        self._previous_level = log.level
        log.setLevel(logging.DEBUG)
        log.addHandler(self)
        return self

    def __exit__(self, *_):
        log.removeHandler(self)
        log.setLevel(self._previous_level)


def configure_cli(verbosity: int):
    """The CLI's logging: warnings by default, ``-v`` info (compiles), ``-vv`` debug."""
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbosity, 2)]
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(level)  # stays quiet when KernelEvents lowers the logger's level
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(level)


class Progress:
    """One status line on stderr: redrawn in place on a terminal, one line per step otherwise."""

    def __init__(self, total: int, stream=None):
        self.total = total
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.redraw = self.stream.isatty()
        self._width = 0

    def step(self, text: str):
        """Announce the next unit of work (counted as done by the following step or close)."""
        self.done += 1
        line = f"[{self.done:{len(str(self.total))}d}/{self.total}] {text}"
        if self.redraw:
            self.stream.write("\r" + line.ljust(self._width))
            self._width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self):
        if self.redraw and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
