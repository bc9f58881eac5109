"""Train a classifier on AG News: `python scripts/train_agnews.py --data train.csv [--backbone PATH]`.

Same options as `tfattn train agnews --help`; the training loop itself (`model.fit` with
AdamW + warmup, resume, early stopping) is `tfattn.training.loop.train`.
"""

import sys

from tfattn.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", "agnews", *sys.argv[1:]]))
