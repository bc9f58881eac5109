"""Train a CoNLL-2003 named-entity tagger: `python scripts/train_ner.py --data train.txt --backbone PATH`.

Same options as `tfattn train ner --help` (validation defaults to valid.txt beside --data). The
loop is `tfattn.training.loop.train` (with `TrainConfig(task="ner", ...)`); tag text afterwards with
`tfattn ner --run RUN "text"`.
"""

import sys

from tfattn.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", "ner", *sys.argv[1:]]))
