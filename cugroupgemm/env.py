"""The environment variables cugroupgemm reads, all in one place (docs/environment.md)."""

from __future__ import annotations

import os
from pathlib import Path

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def forced_family() -> str | None:
    """CUGROUPGEMM_KERNEL: force a kernel family (portable, sm90, sm100)."""
    value = os.environ.get("CUGROUPGEMM_KERNEL", "").strip().lower()
    return value or None


def self_check() -> bool:
    """CUGROUPGEMM_SELFCHECK: compare a family never validated on this GPU's architecture
    with the portable kernel on first use (default on; 0/false/no/off trusts it)."""
    return os.environ.get("CUGROUPGEMM_SELFCHECK", "").strip().lower() not in _FALSE


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
