"""Say what machine a benchmark ran on, so that its figures can be compared with others."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def describe() -> str:
    """Return the cores, CPU model, Python and the load average as the benchmark starts."""
    loads = " ".join(f"{load:.2f}" for load in os.getloadavg())
    return (f"machine: {os.cpu_count()} cores ({_cpu_model()}), Python "
            f"{platform.python_version()}, load average {loads} (1, 5, 15 min) at start")
