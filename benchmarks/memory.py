"""This process's memory from /proc, for the benchmarks (light: Dask workers import it to report their peak)."""

from __future__ import annotations

from pathlib import Path


def memory_status() -> dict[str, float]:
    """This process's memory figures from /proc, GiB (VmHWM, unlike ru_maxrss, is not inherited across exec)."""
    lines = Path("/proc/self/status").read_text().splitlines()
    return {key: int(value.split()[0]) / 2**20 for key, value in (line.split(":", 1) for line in lines if line.startswith(("Vm", "Rss")))}


def peak_rss_gib() -> float:
    return memory_status()["VmHWM"]


def reset_peak_rss() -> None:
    """Linux: VmHWM starts again from the current RSS."""
    Path("/proc/self/clear_refs").write_text("5")
