"""What machine a benchmark ran on: the CPU's model name, recorded beside every figure."""

from pathlib import Path


def cpu_model() -> str | None:
    """The CPU as /proc/cpuinfo gives it: its model name, family and model numbers, and whether it
    has AVX-512 (and BF16), e.g. "AMD EPYC (family 25, model 17; AVX-512 with BF16)": machines of
    this project's kind have shown one model name for CPUs with and without AVX-512, of different
    speeds. None where there is no such file."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None
    fields = {}
    for line in lines:
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())  # the first processor's
    if "model name" not in fields:
        return None
    flags = set(fields.get("flags", "").split())
    vector = "AVX-512 with BF16" if "avx512_bf16" in flags else "AVX-512" if "avx512f" in flags else "no AVX-512"
    family, model = fields.get("cpu family", "?"), fields.get("model", "?")
    return f"{fields['model name']} (family {family}, model {model}; {vector})"
