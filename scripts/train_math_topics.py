"""Train a math-problem topic classifier: `python scripts/train_math_topics.py --data train.jsonl --backbone PATH`.

Same options as `tfattn train math --help` (`--freeze` for a frozen backbone; without
`--backbone` the from-scratch transformer). The loop is `tfattn.training.loop.train`.
"""

import sys

from tfattn.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", "math", *sys.argv[1:]]))
