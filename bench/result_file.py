"""Writing a benchmark's result file: the JSON every bench script leaves in bench/results/."""

import json
import os
import platform
import time
from pathlib import Path

import tensorflow as tf


def write_result(result, out, started=None, to_markdown=None, echo_keys=None):
    """Stamp `result` with the machine (and the seconds since `started`, a `time.perf_counter()`
    reading), write it to `out` as JSON and print it: whole, or only `echo_keys`, then the
    `to_markdown(result)` table when given."""
    if started is not None:
        result["seconds"] = round(time.perf_counter() - started)
    result.update(tensorflow=tf.__version__, cpus=os.cpu_count(), machine=platform.machine())
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2) if echo_keys is None else json.dumps({key: result[key] for key in echo_keys}))
    if to_markdown is not None:
        print(to_markdown(result))
