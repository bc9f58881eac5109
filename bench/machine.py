"""What machine a benchmark ran on: the CPU's model name, recorded beside every figure."""

from pathlib import Path


def cpu_model() -> str | None:
    """The CPU's model name as /proc/cpuinfo gives it (None where there is no such file)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), None)
