"""Two workers vs one process: losses per epoch, wall time, and how fast a killed worker is noticed.

Runs what `tests/test_multiworker.py` asserts, with its helpers, and prints the figures: for the
from-scratch model and a tiny random BERT (2 layers, hidden 32, built here), one process and two
worker processes on 127.0.0.1 (`tfattn train --workers ...`) train 3 epochs on 64 long AG News
texts (4 full global batches of 16 per epoch, no dropout); then worker 1 SIGKILLs itself in
epoch 2 and the seconds until the chief stops are measured.

    python bench/multiworker.py [--out bench/results/multiworker.json]
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import test_multiworker as harness  # noqa: E402  (the tests' runner, data and worker launcher)
from task_harness import save_tiny_bert  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "ag_news" / "train.csv"))
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "multiworker.json"))
    args = parser.parse_args()
    from tfattn.pretrained import offline_minilm_path

    work = Path(tempfile.mkdtemp(prefix="tfattn-multiworker-bench-"))
    runner = work / "runner.py"
    runner.write_text(harness.RUNNER)
    data = work / "long.csv"
    harness.write_long_texts(args.data, data)
    bert = work / "tiny_bert"
    save_tiny_bert(offline_minilm_path(), bert)

    results = {}
    for family in ("scratch", "pretrained"):
        start = time.perf_counter()
        single = subprocess.run(
            [sys.executable, str(runner), *harness.arguments(family, data, work / f"{family}-single", bert)],
            capture_output=True,
            text=True,
        )
        single_seconds = time.perf_counter() - start
        assert single.returncode == 0, single.stderr[-3000:]
        start = time.perf_counter()
        workers = harness.run_workers(runner, harness.arguments(family, data, work / f"{family}-workers", bert))
        workers_seconds = time.perf_counter() - start
        assert all(code == 0 for code, _, _ in workers), workers[0][1][-3000:]
        one, two = harness.history(work / f"{family}-single"), harness.history(work / f"{family}-workers")
        difference = max(abs(a[k] - b[k]) / abs(a[k]) for a, b in zip(one, two) for k in ("loss", "val_loss"))
        results[family] = {
            "one_process": one,
            "two_workers": two,
            "max_relative_difference": difference,
            "one_process_seconds": round(single_seconds, 1),
            "two_workers_seconds": round(workers_seconds, 1),
        }
        print(
            f"{family}: max relative loss difference {difference:.2e}; wall {single_seconds:.0f} s vs "
            f"{workers_seconds:.0f} s",
            flush=True,
        )

    (chief_code, chief_output, chief_exit), (killed_code, _, killed_exit) = harness.run_workers(
        runner, harness.arguments("scratch", data, work / "killed", bert), kill_worker_1=True
    )
    results["worker_killed"] = {
        "chief_exit_code": chief_code,
        "killed_exit_code": killed_code,
        "seconds_from_kill_to_chief_stop": round(chief_exit - killed_exit, 1),
        "chief_last_line": chief_output.strip().splitlines()[-1],
    }
    print(json.dumps(results["worker_killed"], indent=2))
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
