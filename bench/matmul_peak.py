"""This machine's dense matmul rate in float32 and bfloat16: the limit the speed benchmarks divide by.

For each square size, `bench/flops.py`'s `matmul_rate` (chained products in a `tf.function`,
best of repeated runs over `--seconds`) in float32 and in bfloat16; sizes and dtypes alternate
over `--rounds` so that machine noise hits all alike, and the best round counts (the machine's
rate, not its load's). Printed as a table and written as JSON.

    python bench/matmul_peak.py --rounds 2 --seconds 2
"""

import argparse
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.flops import matmul_rate  # noqa: E402
from bench.result_file import write_result  # noqa: E402

DTYPES = {"float32": tf.float32, "bfloat16": tf.bfloat16}


def cpu_flags():
    """The CPU's vector extensions that matter for matmuls (Linux /proc/cpuinfo), if readable."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return sorted(flag for flag in flags if flag.startswith(("avx512", "amx", "avx2", "fma")))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    parser.add_argument("--rounds", type=int, default=2, help="measurements per size and dtype, alternating")
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per measurement")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "matmul_peak.json"))
    args = parser.parse_args()

    rates = {dtype: {size: [] for size in args.sizes} for dtype in DTYPES}
    for round_index in range(args.rounds):
        for size in args.sizes:
            for name, dtype in DTYPES.items():
                rates[name][size].append(matmul_rate(dtype, size, args.seconds))
                print(f"round {round_index + 1}: {name} {size}: {rates[name][size][-1]:.1f} GFLOP/s", flush=True)

    best = {name: {size: max(values) for size, values in by_size.items()} for name, by_size in rates.items()}
    print(f"\n{'size':>6} {'float32 GFLOP/s':>16} {'bfloat16 GFLOP/s':>17} {'bf16/fp32':>10}")
    for size in args.sizes:
        fp32, bf16 = best["float32"][size], best["bfloat16"][size]
        print(f"{size:>6} {fp32:>16.1f} {bf16:>17.1f} {bf16 / fp32:>10.2f}")

    result = {
        "command": " ".join(["python", *sys.argv]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "rounds": args.rounds,
        "seconds_per_measurement": args.seconds,
        "gflops_per_second_best": {name: {str(s): round(r, 1) for s, r in by.items()} for name, by in best.items()},
        "gflops_per_second_rounds": {
            name: {str(s): [round(r, 1) for r in values] for s, values in by.items()} for name, by in rates.items()
        },
        "peak_gflops_per_second": {name: round(max(by.values()), 1) for name, by in best.items()},
        "load_average_at_end": [round(load, 2) for load in os.getloadavg()],
        "cpu_flags": cpu_flags(),
    }
    write_result(result, args.out, echo_keys=("peak_gflops_per_second", "load_average_at_end"))


if __name__ == "__main__":
    main()
