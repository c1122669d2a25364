"""Time sequential calls and print their latency percentiles as one compact table."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping


def timed(action: Callable[[], object], n: int) -> list[float]:
    """Return the milliseconds each of `n` sequential calls of `action` took."""
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        action()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def machine() -> str:
    """Describe the machine and how the figures were taken."""
    return (f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
            "one client, sequential, Flask test client (no network)")


def print_table(results: Mapping[str, list[float]],
                notes: Mapping[str, str] | None = None) -> None:
    """Print one line per measurement: n, p50, p95, sequential rate and an optional note."""
    notes = notes or {}
    width = max(len(name) for name in results) + 2
    print(f"{'measure':<{width}}{'n':>5}{'p50 ms':>10}{'p95 ms':>10}{'per s':>9}")
    for name, samples in results.items():
        cuts = statistics.quantiles(samples, n=100, method="inclusive")
        rate = len(samples) / (sum(samples) / 1000)
        line = f"{name:<{width}}{len(samples):>5}{cuts[49]:>10.1f}{cuts[94]:>10.1f}{rate:>9.1f}"
        print(f"{line}  {notes.get(name, '')}".rstrip())
