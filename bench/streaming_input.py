"""Peak memory and speed of the streaming input path as the data grows: AG News replicated 1x, 10x, 100x.

The AG News training CSV is copied `scale` times into `--shards` files per scale (so workers
could shard by file). Each measurement runs in a fresh Python process, so its peak RSS
(`ru_maxrss`) is its own:
- streaming: `count_and_check` over the files, a vocabulary adapted on `sample_texts(..., 20_000)`,
  then `--batches` batches of `streaming_dataset` (after warm-up) for pipeline examples/s, then a
  small from-scratch `TextClassifier` trained `--train-steps` steps (after warm-up) on the stream
  for training examples/s;
- in-memory, for contrast: every text read (`read_agnews_csv`), tokenized up front
  (`preprocess_in_chunks`) and batched by `tfattn.data.pipelines.make_dataset`.
The targets: streaming's peak memory at 100x within 1.5x of 1x, its throughput within 20%.

Throughput is timed in windows, in `--rounds` rounds that alternate the order of the scales; the
table gives each scale's best window (other work on a shared machine only ever slows a window),
the JSON also the median and the process CPU time per 1,000 examples, which load does not move.

    python bench/streaming_input.py                     # builds the data, runs all, writes the JSON
    python bench/streaming_input.py --scales 1,10 --paths streaming
"""

import argparse
import csv
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SOURCE = Path("/work/shared/data/ag_news/train.csv")
RESULTS = REPO / "bench" / "results" / "streaming_input.json"
PATHS = ("streaming", "in-memory")
# Shared by every measurement, so the scales differ only in the amount of data.
VOCAB_SIZE = 20_000
MAX_LENGTH = 128
SAMPLE_TEXTS = 20_000
SEED = 0


def build_scale(source: Path, folder: Path, scale: int, shards: int) -> int:
    """Write `scale` copies of the source rows into `shards` CSV files (contiguous runs of rows),
    unless a finished copy is there already; returns the number of rows."""
    marker = folder / "built.json"
    if marker.is_file():
        built = json.loads(marker.read_text())
        if built == {"source": str(source), "scale": scale, "shards": shards, "rows": built.get("rows")}:
            return built["rows"]
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("part-*.csv"):
        old.unlink()
    with open(source, encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    total = len(rows) * scale
    per_shard = -(-total // shards)
    written = 0
    for shard in range(shards):
        count = min(per_shard, total - written)
        if count <= 0:
            break
        with open(folder / f"part-{shard:03d}.csv", "w", encoding="utf-8", newline="") as handle:
            # Quoting every field as the official file does: the rows read back as the same fields.
            writer = csv.writer(handle, quoting=csv.QUOTE_ALL, lineterminator="\n")
            for index in range(written, written + count):
                writer.writerow(rows[index % len(rows)])
        written += count
    marker.write_text(json.dumps({"source": str(source), "scale": scale, "shards": shards, "rows": total}))
    return total


def peak_rss_mib() -> float:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_batches(dataset, batches: int, warmup: int, windows: int):
    """Rates over `batches` batches after `warmup`, timed in `windows` equal windows.

    Returns a dict: examples/s per window (wall clock), process CPU milliseconds per 1,000
    examples over all windows (what the pipeline costs, whatever else runs on the machine),
    and the seconds to the first batch.
    """
    iterator = iter(dataset)
    start = time.perf_counter()
    next(iterator)
    first_batch_s = time.perf_counter() - start
    for _ in range(warmup - 1):
        next(iterator)
    rates, total, cpu_start = [], 0, time.process_time()
    for _ in range(windows):
        examples, start = 0, time.perf_counter()
        for _ in range(batches // windows):
            _, labels = next(iterator)
            examples += int(labels.shape[0])
        rates.append(examples / (time.perf_counter() - start))
        total += examples
    cpu_ms = (time.process_time() - cpu_start) * 1000 / total * 1000
    return {
        "window_rates": [round(rate) for rate in rates],
        "cpu_ms_per_1k": round(cpu_ms, 1),
        "first_batch_s": first_batch_s,
    }


def time_training(model, dataset, steps: int, warmup: int, windows: int, batch_size: int):
    """Training examples/s per window of `steps // windows` steps after `warmup` steps, all in one
    `fit` (each `fit` starts a new iterator, whose shuffle buffer would fill again)."""
    import tf_keras as keras

    per_window = steps // windows
    marks = []  # (wall, cpu) at the end of the warm-up and of each window

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            done = batch + 1 - warmup
            if done >= 0 and done % per_window == 0:
                marks.append((time.perf_counter(), time.process_time()))

    model.fit(dataset, steps_per_epoch=warmup + per_window * windows, epochs=1, verbose=0, callbacks=[Clock()])
    rates = [per_window * batch_size / (end[0] - begin[0]) for begin, end in zip(marks, marks[1:])]
    cpu_ms = (marks[-1][1] - marks[0][1]) * 1000 / (per_window * windows * batch_size) * 1000
    return {"window_rates": [round(rate) for rate in rates], "cpu_ms_per_1k": round(cpu_ms, 1)}


def measure_streaming(args) -> dict:
    import tf_keras as keras

    from tfattn.data.streaming import (
        StreamFormat,
        count_and_check,
        expand_data_files,
        sample_texts,
        stream_examples,
        streaming_dataset,
    )
    from tfattn.models import TextClassifier, TransformerEncoder, VocabularyPreprocessor

    keras.utils.set_random_seed(SEED)
    phases = {"after_import": peak_rss_mib()}
    files = expand_data_files(str(Path(args.data_dir) / "part-*.csv"))
    stream_format = StreamFormat.for_files(files, "agnews")
    start = time.perf_counter()
    summary = count_and_check(files, stream_format)
    check_s = time.perf_counter() - start
    phases["after_check"] = peak_rss_mib()

    preprocessor = VocabularyPreprocessor.adapt(
        sample_texts(files, stream_format, SAMPLE_TEXTS), vocab_size=VOCAB_SIZE, max_length=MAX_LENGTH
    )
    phases["after_adapt"] = peak_rss_mib()

    def dataset():
        examples = stream_examples(files, stream_format, shuffle_files=True, seed=SEED)
        return streaming_dataset(
            examples, preprocessor, args.batch_size, shuffle_buffer=args.shuffle_buffer, seed=SEED, repeat=True
        )

    pipeline = time_batches(dataset(), args.batches, args.warmup_batches, args.windows)
    phases["after_pipeline"] = peak_rss_mib()

    encoder = TransformerEncoder(
        vocab_size=len(preprocessor.vocabulary),
        max_length=MAX_LENGTH,
        embed_dim=64,
        num_heads=2,
        ff_dim=64,
        num_blocks=1,
    )
    model = TextClassifier(preprocessor, encoder, 4, pooling="mean")
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    training = time_training(model, dataset(), args.train_steps, args.train_warmup_steps, args.windows, args.batch_size)
    phases["after_training"] = peak_rss_mib()
    return {
        "examples": summary.num_examples,
        "files": len(files),
        "check_s": round(check_s, 2),
        "first_batch_s": round(pipeline.pop("first_batch_s"), 2),
        "pipeline": pipeline,
        "training": training,
        "peak_rss_mib_by_phase": {name: round(value, 1) for name, value in phases.items()},
        "peak_rss_mib": round(peak_rss_mib(), 1),
    }


def measure_in_memory(args) -> dict:
    import numpy as np
    import tf_keras as keras

    from tfattn.data import read_agnews_csv
    from tfattn.data.pipelines import make_dataset
    from tfattn.data.streaming import expand_data_files
    from tfattn.models import VocabularyPreprocessor, preprocess_in_chunks

    keras.utils.set_random_seed(SEED)
    phases = {"after_import": peak_rss_mib()}
    files = expand_data_files(str(Path(args.data_dir) / "part-*.csv"))
    start = time.perf_counter()
    texts, labels = [], []
    for path in files:
        part = read_agnews_csv(path)
        texts.extend(part.texts)
        labels.append(part.labels)
    labels = np.concatenate(labels)
    read_s = time.perf_counter() - start
    phases["after_read"] = peak_rss_mib()

    preprocessor = VocabularyPreprocessor.adapt(texts[:SAMPLE_TEXTS], vocab_size=VOCAB_SIZE, max_length=MAX_LENGTH)
    start = time.perf_counter()
    features = preprocess_in_chunks(preprocessor, texts)
    tokenize_s = time.perf_counter() - start
    phases["after_tokenize"] = peak_rss_mib()

    dataset = make_dataset(features, labels, args.batch_size, shuffle=True, seed=SEED).repeat()
    pipeline = time_batches(dataset, args.batches, args.warmup_batches, args.windows)
    phases["after_pipeline"] = peak_rss_mib()
    return {
        "examples": len(texts),
        "files": len(files),
        "read_s": round(read_s, 2),
        "tokenize_s": round(tokenize_s, 2),
        "first_batch_s": round(pipeline.pop("first_batch_s"), 2),
        "pipeline": pipeline,
        "training": None,
        "peak_rss_mib_by_phase": {name: round(value, 1) for name, value in phases.items()},
        "peak_rss_mib": round(peak_rss_mib(), 1),
    }


def run_child(args, path: str, scale: int, data_dir: Path) -> dict:
    """One measurement in a fresh interpreter; its last stdout line is the JSON result."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--measure",
        path,
        "--data-dir",
        str(data_dir),
        "--batch-size",
        str(args.batch_size),
        "--batches",
        str(args.batches),
        "--warmup-batches",
        str(args.warmup_batches),
        "--train-steps",
        str(args.train_steps),
        "--train-warmup-steps",
        str(args.train_warmup_steps),
        "--shuffle-buffer",
        str(args.shuffle_buffer),
        "--windows",
        str(args.windows),
    ]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"{path} at {scale}x failed (exit {done.returncode})")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result.update(scale=scale, path=path, wall_s=round(time.perf_counter() - start, 1))
    return result


def summarize(runs) -> dict:
    """One row per (scale, path) from its runs: the highest peak RSS, and the best timing window
    as the throughput (other work on a shared machine only ever slows a window down), with the
    median of all windows and the CPU cost beside it."""
    first = runs[0]
    summary = {key: first[key] for key in ("scale", "path", "examples", "files", "data_mb")}
    summary["runs"] = len(runs)
    summary["peak_rss_mib"] = max(run["peak_rss_mib"] for run in runs)
    for part in ("pipeline", "training"):
        if first[part] is None:
            summary[f"{part}_examples_per_s"] = None
            continue
        rates = [rate for run in runs for rate in run[part]["window_rates"]]
        summary[f"{part}_examples_per_s"] = max(rates)
        summary[f"{part}_examples_per_s_median"] = round(statistics.median(rates))
        summary[f"{part}_cpu_ms_per_1k"] = round(statistics.median(run[part]["cpu_ms_per_1k"] for run in runs), 1)
    return summary


def ratio(value, base):
    return None if value is None or not base else round(value / base, 2)


def table(results) -> str:
    lines = [
        "| scale | examples | path | peak RSS MiB | pipeline examples/s | pipeline CPU ms / 1k examples "
        "| training examples/s | RSS vs 1x | pipeline vs 1x | training vs 1x |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    smallest = min(result["scale"] for result in results)
    base = {result["path"]: result for result in results if result["scale"] == smallest}

    def number(value):
        return "—" if value is None else f"{value:,.0f}"

    def versus(result, key):
        value = ratio(result[key], base[result["path"]][key])
        return "—" if value is None else f"{value:.2f}"

    for result in results:
        cells = [
            f"{result['scale']}x",
            f"{result['examples']:,}",
            result["path"],
            number(result["peak_rss_mib"]),
            number(result["pipeline_examples_per_s"]),
            number(result.get("pipeline_cpu_ms_per_1k")),
            number(result["training_examples_per_s"]),
            versus(result, "peak_rss_mib"),
            versus(result, "pipeline_examples_per_s"),
            versus(result, "training_examples_per_s"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", default=str(Path(tempfile.gettempdir()) / "tfattn-streaming-bench"))
    parser.add_argument("--source", default=str(SOURCE), help="the AG News CSV to replicate")
    parser.add_argument("--scales", default="1,10,100")
    parser.add_argument("--shards", type=int, default=10, help="files per scale")
    parser.add_argument("--paths", default=",".join(PATHS))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=1000, help="timed pipeline batches")
    parser.add_argument("--warmup-batches", type=int, default=20)
    parser.add_argument("--train-steps", type=int, default=150, help="timed training steps")
    parser.add_argument("--train-warmup-steps", type=int, default=50)
    parser.add_argument("--shuffle-buffer", type=int, default=10_000)
    parser.add_argument("--windows", type=int, default=5, help="timing windows per measurement")
    parser.add_argument(
        "--rounds", type=int, default=3, help="streaming measurements per scale, in rounds over the scales"
    )
    parser.add_argument("--output", default=str(RESULTS))
    # Internal: one measurement, run in its own process by the parent.
    parser.add_argument("--measure", choices=PATHS, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.measure:
        measure = measure_streaming if args.measure == "streaming" else measure_in_memory
        print(json.dumps(measure(args)))
        return

    scales = [int(scale) for scale in args.scales.split(",")]
    paths = [path.strip() for path in args.paths.split(",")]
    data_dirs = {}
    for scale in scales:
        data_dirs[scale] = Path(args.work_dir) / f"x{scale}"
        rows = build_scale(Path(args.source), data_dirs[scale], scale, args.shards)
        size_mb = sum(path.stat().st_size for path in data_dirs[scale].glob("part-*.csv")) / 1e6
        print(f"{scale}x: {rows:,} rows in {args.shards} files, {size_mb:.0f} MB", flush=True)

    runs = []
    for round_index in range(args.rounds):
        # Alternate the order, so a slow spell of the machine does not always hit the same scale.
        for scale in scales if round_index % 2 == 0 else scales[::-1]:
            for path in paths:
                # The in-memory path is the contrast, not the subject: one run per scale.
                if path == "in-memory" and round_index > 0:
                    continue
                run = run_child(args, path, scale, data_dirs[scale])
                run["round"] = round_index
                run["data_mb"] = round(sum(p.stat().st_size for p in data_dirs[scale].glob("part-*.csv")) / 1e6, 1)
                runs.append(run)
                print(f"  round {round_index}, {scale}x, {path}: {json.dumps(run)}", flush=True)
    results = [
        summarize([run for run in runs if run["scale"] == scale and run["path"] == path])
        for scale in scales
        for path in paths
    ]

    import tensorflow as tf

    report = {
        "benchmark": "streaming_input",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python bench/streaming_input.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "cpus": os.cpu_count(),
        },
        "settings": {
            "source": args.source,
            "shards": args.shards,
            "batch_size": args.batch_size,
            "batches": args.batches,
            "warmup_batches": args.warmup_batches,
            "train_steps": args.train_steps,
            "train_warmup_steps": args.train_warmup_steps,
            "shuffle_buffer": args.shuffle_buffer,
            "windows": args.windows,
            "rounds": args.rounds,
            "vocab_size": VOCAB_SIZE,
            "max_length": MAX_LENGTH,
            "sample_texts": SAMPLE_TEXTS,
            "model": "TextClassifier(mean pooling) over TransformerEncoder(embed 64, 2 heads, ff 64, 1 block)",
            "seed": SEED,
        },
        "results": results,
        "runs": runs,
    }
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(table(results))
    print(f"\nwrote {output}")


if __name__ == "__main__":
    main()
