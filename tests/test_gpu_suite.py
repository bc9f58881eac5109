"""bench/gpu_suite.py, the prepared GPU benchmark, run here on the CPU: its smoke mode goes through
every section's code with tiny sizes, so the one run a lent GPU gets does not fail on a typo.

The smoke run takes 3 to 5 minutes on 2 shared cores (SavedModel exports of BERT models and XLA
compilations on the CPU dominate), hence `slow`; so are the two other runs of the script (a
subprocess importing TensorFlow, about 5 s each). The table test is quick.
"""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import tensorflow as tf
from conftest import shared_data_dir

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "gpu_suite.py"


def load_suite():
    """bench/gpu_suite.py as a module (its top level imports no TensorFlow)."""
    spec = importlib.util.spec_from_file_location("gpu_suite", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_suite(*options, timeout):
    return subprocess.run(
        [sys.executable, str(SCRIPT), *options], capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


def numbers(value):
    """Every number (not bool) inside a JSON value."""
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [value]
    if isinstance(value, dict):
        return [n for item in value.values() for n in numbers(item)]
    if isinstance(value, list):
        return [n for item in value for n in numbers(item)]
    return []


@pytest.mark.slow
def test_smoke_run_measures_every_section(tmp_path, minilm_dir):
    data = shared_data_dir()
    for relative in ("ag_news/train.csv", "conll2003/valid.txt", "translation/spa_eng_train.tsv"):
        if not (data / relative).is_file():
            pytest.skip(f"real data not found at {data / relative}")
    finished = run_suite(
        "--smoke", "--out", str(tmp_path), "--data", str(data), "--backbone", str(minilm_dir), timeout=1200
    )
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    # Smoke results never take the GPU results' names.
    assert sorted(path.name for path in tmp_path.iterdir()) == ["gpu_suite_smoke.json", "gpu_suite_smoke.md"]
    result = json.loads((tmp_path / "gpu_suite_smoke.json").read_text())
    sections = result["sections"]
    assert list(sections) == list(load_suite().SECTIONS)
    for name, section in sections.items():
        assert section["status"] == "ok", (name, section.get("error"))
        assert "error" not in json.dumps(section), name  # no configuration or path failed either
        assert all(math.isfinite(n) for n in numbers(section)), name

    device = sections["device"]
    assert set(device["matmul_tflops"]) == {"float32", "float32_tf32", "float16", "bfloat16"}
    assert all(rate > 0 for rate in device["matmul_tflops"].values())

    minilm = sections["minilm"]
    # Every policy, and XLA for float32 (the smoke run compiles no mixed policy: Sizes).
    assert set(minilm["runs"]) == {"float32", "float32 xla", "mixed_float16", "mixed_bfloat16"}
    assert "CPU:0" in minilm["cpu_reference"]["devices"]["weights"]
    for key, run in minilm["runs"].items():
        assert run["examples_per_second"] > 0 and run["fraction_of_matmul_rate"] > 0, key
        # On the CPU, float32 takes the CPU reference's very steps. (The tiny model's 3 steps barely
        # move its loss, so the mixed policies' pass marks mean nothing here.)
        assert run["loss_matches_cpu"] if key.startswith("float32") else isinstance(run["loss_matches_cpu"], bool)
    assert minilm["runs"]["mixed_float16"]["optimizer"].startswith("LossScaleOptimizer")

    scratch = sections["scratch"]
    assert scratch["examples_per_second_steady"] > 0 and 0 <= scratch["validation_accuracy"] <= 1
    assert sections["strategy"]["same_losses"]

    translation = sections["translation"]
    assert set(translation["sentences_per_second"]) == {"greedy", "greedy_no_cache", "beam4", "beam4_no_cache"}
    assert translation["greedy_same_tokens_with_and_without_cache"]
    assert translation["beam4_same_tokens_with_and_without_cache"]

    paths = sections["serving"]["paths"]
    assert set(paths) == {"from-scratch classifier", "MiniLM classifier", "MiniLM NER", "translator (greedy)"}
    for name, entry in paths.items():
        assert entry["texts_per_second_batch_64"] > 0, name
        assert 0 < entry["latency_ms_p50_batch_1"] <= entry["latency_ms_p99_batch_1"], name

    table = (tmp_path / "gpu_suite_smoke.md").read_text()
    assert "float32 xla" in table and "mixed_bfloat16" in table and "translator (greedy)" in table


@pytest.mark.slow
def test_without_a_gpu_the_suite_stops_after_the_device_section(tmp_path):
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU")
    finished = run_suite("--sections", "device", "minilm", "--out", str(tmp_path), timeout=300)
    assert finished.returncode == 1
    sections = json.loads((tmp_path / "gpu_suite.json").read_text())["sections"]
    assert sections["device"]["status"] == "ok" and sections["device"]["gpus"] == []
    assert "matmul_tflops" not in sections["device"]  # no CPU figure passes for a GPU one
    assert sections["minilm"] == {"status": "skipped", "error": "TensorFlow sees no GPU"}


@pytest.mark.slow
def test_a_section_past_its_cap_is_stopped_and_recorded(tmp_path):
    # The MiniLM section needs far more than 6 s (imports alone take several): stopped at its cap.
    finished = run_suite("--smoke", "--sections", "minilm", "--budget", "6", "--out", str(tmp_path), timeout=120)
    assert finished.returncode == 1
    minilm = json.loads((tmp_path / "gpu_suite_smoke.json").read_text())["sections"]["minilm"]
    assert minilm["status"] == "timeout" and "time cap of 6 s" in minilm["error"]
    assert "| minilm | timeout |" in (tmp_path / "gpu_suite_smoke.md").read_text()


def test_the_table_shows_failures_beside_the_figures():
    suite = load_suite()
    results = {
        "date": "2026-12-06",
        "mode": "gpu",
        "sections": {
            "minilm": {
                "status": "ok",
                "seconds": 100.0,
                "cap_seconds": 160,
                "batch_size": 32,
                "tokens_per_batch_row": 64,
                "mean_real_tokens": 50.1,
                "steps": {"warmup": 3, "timed": 60},
                "eval_examples": 128,
                "eval_loss_before_steps": 1.4,
                "cpu_reference": {"eval_loss": 1.2, "examples_per_second": 90.0},
                "runs": {
                    "float32": {
                        "examples_per_second": 1500.0,
                        "peak_gpu_memory_mib": 900.0,
                        "fraction_of_matmul_rate": 0.05,
                        "matmul_rate": "float32_tf32",
                        "eval_loss": 1.2012,
                        "eval_loss_difference_share_of_cpu_move": 0.006,
                        "loss_matches_cpu": True,
                    },
                    "mixed_float16 xla": {"error": "InternalError: ptxas exited with 1"},
                },
            },
            "serving": {"status": "timeout", "seconds": 120.0, "cap_seconds": 120, "error": "stopped at its cap"},
            "strategy": {"status": "skipped", "error": "the suite's time budget was spent"},
        },
    }
    table = suite.markdown(results)
    assert "| float32 | 1,500.0 | 900 | 5.0% of float32_tf32 | 1.2012 | 0.0060 | yes (<= 0.05) |" in table
    assert "| mixed_float16 xla | error: InternalError: ptxas exited with 1 |" in table
    assert "| serving | timeout | 120 (120) | stopped at its cap |" in table
    assert "| strategy | skipped | - | the suite's time budget was spent |" in table
