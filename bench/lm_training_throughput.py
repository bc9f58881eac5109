"""Training speed of the default GPT as a fraction of this machine's matmul rate.

Trains the default miniature GPT (`tfattn train lm` defaults: 4 blocks of 128, 4 heads,
feed-forward 512, 2,000 pieces, blocks of 128 tokens, batch 32) through the task's own trainer on
a slice of Tiny Shakespeare, with and without XLA (`--jit-compile`), reads each epoch's
examples/s from the run's history (the first epoch includes tracing and compiling, so the last
one counts), and divides the model FLOP/s it achieved by `bench/flops.py`'s float32 matmul
rate, measured in the same process.

Model FLOPs per token (matrix products only, 2 per multiply-add): the decoder blocks as
`encoder_forward_flops` counts them (the causal mask does not halve what the kernels compute),
plus the output layer (2 x width x vocabulary); a training step is 3 forward passes.

    python bench/lm_training_throughput.py --characters 300000 --epochs 2 --json OUT.json
"""

import argparse
import csv
import os
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from flops import encoder_forward_flops, matmul_rate, training_flops  # noqa: E402

from bench.machine import cpu_model  # noqa: E402
from bench.result_file import write_result  # noqa: E402
from tfattn.tasks.language_model import GPT_DEFAULTS, LanguageModelConfig  # noqa: E402
from tfattn.training.loop import train  # noqa: E402

SHAKESPEARE = REPO.parent / "shared" / "data" / "text" / "tiny_shakespeare_train.txt"


def flops_per_token(block_size, vocab_size, embed_dim, ff_dim, num_blocks, **_):
    """Forward FLOPs per token of the GPT, its output layer included."""
    blocks = encoder_forward_flops(block_size, num_blocks, embed_dim, ff_dim) / block_size
    return blocks + 2 * embed_dim * vocab_size


def last_epoch_rate(run_dir):
    """Examples (blocks) per second of the run's last epoch."""
    with open(Path(run_dir) / "history.csv", newline="") as handle:
        return float(list(csv.DictReader(handle))[-1]["examples_per_second"])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHAKESPEARE))
    parser.add_argument("--characters", type=int, default=300_000, help="training characters (a slice)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run; the last is timed")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)

    peak = matmul_rate(tf.float32)
    print(f"float32 matmul rate: {peak:.1f} GFLOP/s")
    rows = []
    work = Path(tempfile.mkdtemp())
    for jit in (False, True):
        config = LanguageModelConfig(
            data=args.data,
            run_dir=str(work / ("xla" if jit else "graph")),
            limit=args.characters,
            epochs=args.epochs,
            jit_compile=jit,
            seed=0,
        ).resolve()
        train(config)
        sizes = {name: getattr(config, name) for name in GPT_DEFAULTS} | {"block_size": config.block_size}
        tokens_per_second = last_epoch_rate(config.run_dir) * config.block_size
        achieved = tokens_per_second * training_flops(flops_per_token(**sizes)) / 1e9
        rows.append(
            {
                "jit_compile": jit,
                "tokens_per_second": round(tokens_per_second, 1),
                "model_gflops_per_second": round(achieved, 2),
                "fraction_of_matmul_rate": round(achieved / peak, 4),
                **sizes,
            }
        )
        print(rows[-1])
    result = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "cpu": cpu_model(),
        "command": "python bench/lm_training_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "characters": args.characters,
        "epochs": args.epochs,
        "matmul_gflops_per_second": round(peak, 1),
        "runs": rows,
    }
    if args.json:
        write_result(result, args.json)
    return result


if __name__ == "__main__":
    main()
