"""AG News topic classification with the from-scratch transformer: data, training, evaluation.

`train(AGNewsConfig(...))` is the whole job: load and split the data, tokenize once, build
the model under the chosen `tf.distribute` strategy, `model.fit` with AdamW + warmup, then
save the strings-in model and its validation report into the run folder. Rerunning the same
config after an interruption resumes from the last finished epoch.
"""

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Optional

import numpy as np

from tfattn.data import load_agnews, split_examples
from tfattn.data.pipelines import count_batches, encode_texts, make_dataset
from tfattn.evaluation import write_evaluation
from tfattn.networks import build_text_classifier, build_token_classifier, build_vectorizer
from tfattn.optimization import create_optimizer
from tfattn.tasks.runs import evaluate_texts, save_run_model
from tfattn.training import (
    fit_verbosity,
    get_strategy,
    is_resuming,
    set_mixed_precision,
    standard_callbacks,
    write_json,
)

DEFAULT_DATA = "tfds:ag_news_subset"


@dataclass
class AGNewsConfig:
    """Everything that defines an AG News run; saved as the run's `config.json`."""

    run_dir: str = "runs/agnews"
    data: str = DEFAULT_DATA
    validation_fraction: float = 0.1
    seed: int = 0
    limit: Optional[int] = None  # train on a random subset of this many examples (smoke tests)
    # model
    vocab_size: int = 20000
    max_length: int = 256
    embed_dim: int = 64
    num_heads: int = 2
    ff_dim: int = 128
    num_blocks: int = 1
    dropout: float = 0.1
    positional: str = "learned"
    # optimization
    batch_size: int = 64
    epochs: int = 10
    learning_rate: float = 1e-3
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    patience: int = 2
    time_budget: Optional[float] = None  # seconds of training wall time, then stop
    # devices
    strategy: str = "default"
    mixed_precision: bool = False
    jit_compile: bool = False

    @classmethod
    def from_dict(cls, values):
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def load_splits(config):
    """`(train, validation)` `TextExamples` exactly as `train` splits them."""
    examples = load_agnews(config.data)
    if config.limit and config.limit < len(examples):
        rng = np.random.default_rng(config.seed)
        examples = examples.subset(np.sort(rng.choice(len(examples), config.limit, replace=False)))
    return split_examples(examples, config.validation_fraction, config.seed)


def train(config, callbacks=()):
    """Train, evaluate on the validation split and save everything under `config.run_dir`.

    Args:
        config: an `AGNewsConfig`.
        callbacks: extra Keras callbacks, run after the standard ones.

    Returns:
        The validation `ClassificationReport`.
    """
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "config.json", asdict(config))
    set_mixed_precision(config.mixed_precision)
    train_examples, validation_examples = load_splits(config)
    print(
        f"AG News: {len(train_examples)} training / {len(validation_examples)} validation examples "
        f"from {train_examples.source}"
    )

    # A resumed run must reuse the vocabulary its checkpoint was trained with.
    vocab_path = run_dir / "vocab.txt"
    resuming = is_resuming(run_dir) and vocab_path.exists()
    saved_vocabulary = vocab_path.read_text(encoding="utf-8").split("\n") if resuming else None
    if resuming:
        print(f"resuming the interrupted run in {run_dir}")
    vectorizer = build_vectorizer(train_examples.texts, config.vocab_size, vocabulary=saved_vocabulary)
    # The first two entries are padding and [UNK], which set_vocabulary adds back itself.
    vocab_path.write_text("\n".join(vectorizer.get_vocabulary()[2:]), encoding="utf-8")

    train_ids = encode_texts(vectorizer, train_examples.texts, config.max_length)
    validation_ids = encode_texts(vectorizer, validation_examples.texts, config.max_length)
    train_data = make_dataset(train_ids, train_examples.labels, config.batch_size, shuffle=True, seed=config.seed)
    validation_data = make_dataset(validation_ids, validation_examples.labels, config.batch_size)
    total_steps = count_batches(train_data) * config.epochs

    strategy = get_strategy(config.strategy)
    with strategy.scope():
        token_model = build_token_classifier(
            vocab_size=vectorizer.vocabulary_size(),
            num_classes=len(train_examples.label_names),
            max_length=config.max_length,
            embed_dim=config.embed_dim,
            num_heads=config.num_heads,
            ff_dim=config.ff_dim,
            num_blocks=config.num_blocks,
            dropout=config.dropout,
            positional=config.positional,
        )
        token_model.compile(
            optimizer=create_optimizer(
                config.learning_rate,
                total_steps,
                warmup_fraction=config.warmup_fraction,
                weight_decay=config.weight_decay,
            ),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
            jit_compile=config.jit_compile,
        )
    token_model.fit(
        train_data,
        validation_data=validation_data,
        epochs=config.epochs,
        callbacks=standard_callbacks(
            run_dir, len(train_examples), patience=config.patience, time_budget=config.time_budget
        )
        + list(callbacks),
        verbose=fit_verbosity(),
    )

    text_model = build_text_classifier(vectorizer, token_model, config.max_length)
    save_run_model(run_dir, text_model, train_examples.label_names)
    report = evaluate_texts(text_model, validation_examples)
    write_evaluation(report, run_dir, prefix="validation", config=asdict(config))
    print(report.format_text())
    return report
