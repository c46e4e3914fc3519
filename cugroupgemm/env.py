"""The environment variables cugroupgemm reads, all in one place (docs/environment.md)."""

from __future__ import annotations

import functools
import os
from pathlib import Path

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _value(name: str) -> str:
    """``os.environ.get(name, "")``, read on every call so that a change takes effect at
    once. Read through the mapping's own dict: ``os.environ.get`` of an unset name raises
    and catches a KeyError inside, about a microsecond, and a warm call reads three
    names (docs/performance.md, log item 38)."""
    raw = os.environ._data.get(_encoded_key(name))
    return "" if raw is None else os.environ.decodevalue(raw)


@functools.cache
def _encoded_key(name: str):
    return os.environ.encodekey(name)


def _flag(name: str) -> bool:
    return _value(name).strip().lower() in _TRUE


def forced_family() -> str | None:
    """CUGROUPGEMM_KERNEL: force a kernel family (portable, sm90, sm100)."""
    return _value("CUGROUPGEMM_KERNEL").strip().lower() or None


def self_check() -> bool:
    """CUGROUPGEMM_SELFCHECK: compare a family never validated on this GPU's architecture
    with the portable kernel on first use (default on; 0/false/no/off trusts it)."""
    return _value("CUGROUPGEMM_SELFCHECK").strip().lower() not in _FALSE


def check_masked_m() -> bool:
    """CUGROUPGEMM_CHECK_MASKED_M: read masked_m back and raise on values outside [0, m]."""
    return _flag("CUGROUPGEMM_CHECK_MASKED_M")


def print_config() -> bool:
    """CUGROUPGEMM_PRINT_CONFIG: print the chosen family, kernel and config of each call."""
    return _flag("CUGROUPGEMM_PRINT_CONFIG")


def cache_dir() -> Path:
    """CUGROUPGEMM_CACHE_DIR: where compiled cubins are kept between processes."""
    configured = os.environ.get("CUGROUPGEMM_CACHE_DIR")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cugroupgemm"


def dump_source_on_error() -> bool:
    """CUGROUPGEMM_DUMP_SOURCE: add the numbered kernel source to compile errors."""
    return _flag("CUGROUPGEMM_DUMP_SOURCE")
