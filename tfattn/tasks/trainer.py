"""The training loop every text-classification run goes through, for both model families.

`train(config)`: load and split the task's data, tokenize it once, build and compile the model
under the chosen `tf.distribute` strategy with AdamW + warmup, `model.fit` on length-bucketed
`tf.data` batches, then save a strings-in model and its validation report into the run folder.
Rerunning the same config after an interruption resumes from the last finished epoch.

A *family* knows how to tokenize, build, wrap for raw strings and save one kind of model:
`ScratchFamily` (the from-scratch transformer) and `PretrainedFamily` (a Hugging Face backbone).
"""

from dataclasses import asdict
from pathlib import Path

import tf_keras as keras

from tfattn.data.pipelines import count_batches, encode_texts, make_dataset
from tfattn.evaluation import write_evaluation
from tfattn.networks import build_text_classifier, build_token_classifier, build_vectorizer
from tfattn.optimization import create_optimizer
from tfattn.tasks.config import load_splits
from tfattn.tasks.runs import MODEL_FILE, PRETRAINED_DIR, evaluate_texts, write_labels
from tfattn.training import (
    fit_verbosity,
    get_strategy,
    is_resuming,
    set_mixed_precision,
    standard_callbacks,
    write_json,
)


class ScratchFamily:
    """The from-scratch transformer: a TextVectorization vocabulary learned from the training texts."""

    def __init__(self, config, run_dir):
        self.config = config
        self.run_dir = run_dir

    def prepare(self, train_texts):
        # A resumed run must reuse the vocabulary its checkpoint was trained with.
        vocab_path = self.run_dir / "vocab.txt"
        resuming = is_resuming(self.run_dir) and vocab_path.exists()
        saved = vocab_path.read_text(encoding="utf-8").split("\n") if resuming else None
        self.vectorizer = build_vectorizer(train_texts, self.config.vocab_size, vocabulary=saved)
        # The first two entries are padding and [UNK], which set_vocabulary adds back itself.
        vocab_path.write_text("\n".join(self.vectorizer.get_vocabulary()[2:]), encoding="utf-8")

    def encode(self, texts):
        return encode_texts(self.vectorizer, texts, self.config.max_length)

    def build_model(self, num_classes):
        c = self.config
        return build_token_classifier(
            vocab_size=self.vectorizer.vocabulary_size(),
            num_classes=num_classes,
            max_length=c.max_length,
            embed_dim=c.embed_dim,
            num_heads=c.num_heads,
            ff_dim=c.ff_dim,
            num_blocks=c.num_blocks,
            dropout=c.dropout,
            positional=c.positional,
        )

    def save_text_model(self, model):
        """Save the strings-in view of the trained model; return it."""
        text_model = build_text_classifier(self.vectorizer, model, self.config.max_length)
        text_model.save(self.run_dir / MODEL_FILE)
        return text_model


class PretrainedFamily:
    """A Hugging Face checkpoint (name or folder) with a classification head."""

    def __init__(self, config, run_dir):
        self.config = config
        self.run_dir = run_dir

    def prepare(self, train_texts):
        from tfattn.pretrained import load_tokenizer

        self.tokenizer = load_tokenizer(self.config.backbone)

    def encode(self, texts):
        from tfattn.pretrained import tokenize_texts

        return tokenize_texts(self.tokenizer, texts, self.config.max_length)

    def build_model(self, num_classes):
        from tfattn.pretrained import TransformerClassifier

        c = self.config
        model = TransformerClassifier.from_pretrained_backbone(
            c.backbone, num_classes, pooling=c.pooling, dropout=c.dropout, head=c.head
        )
        if c.freeze:
            model.freeze_backbone()
        return model

    def save_text_model(self, model):
        """Save the classifier and tokenizer; return the strings-in model loaded back from them."""
        from tfattn.pretrained import load_pretrained_text_classifier, save_pretrained_text_classifier

        save_pretrained_text_classifier(model, self.tokenizer, self.run_dir / PRETRAINED_DIR)
        return load_pretrained_text_classifier(self.run_dir / PRETRAINED_DIR, self.config.max_length)


def train(config, callbacks=()):
    """Train, evaluate on the validation split and save everything under `config.run_dir`.

    Args:
        config: a `TrainConfig`; None fields take the task's and family's defaults.
        callbacks: extra Keras callbacks, run after the standard ones.

    Returns:
        The validation `ClassificationReport`.
    """
    config = config.resolve()
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if is_resuming(run_dir):
        print(f"resuming the interrupted run in {run_dir}")
    write_json(run_dir / "config.json", asdict(config))
    # Same seed, same initial weights, dropout masks and shuffles (up to nondeterministic kernels).
    keras.utils.set_random_seed(config.seed)
    set_mixed_precision(config.mixed_precision)
    train_examples, validation_examples = load_splits(config)
    label_names = train_examples.label_names
    print(
        f"{config.task}: {len(train_examples)} training / {len(validation_examples)} validation examples "
        f"from {train_examples.source}; model: {config.backbone or 'from-scratch transformer'}"
        + (" (frozen)" if config.backbone and config.freeze else "")
    )

    family = (PretrainedFamily if config.backbone else ScratchFamily)(config, run_dir)
    family.prepare(train_examples.texts)
    train_data = make_dataset(
        family.encode(train_examples.texts), train_examples.labels, config.batch_size, shuffle=True, seed=config.seed
    )
    validation_data = make_dataset(family.encode(validation_examples.texts), validation_examples.labels, config.batch_size)
    batches_per_epoch = count_batches(train_data)
    total_steps = batches_per_epoch * config.epochs

    strategy = get_strategy(config.strategy)
    with strategy.scope():
        model = family.build_model(len(label_names))
        model.compile(
            optimizer=create_optimizer(
                config.learning_rate, total_steps, warmup_fraction=config.warmup_fraction, weight_decay=config.weight_decay
            ),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
            jit_compile=config.jit_compile,
        )
    model.fit(
        train_data,
        validation_data=validation_data,
        epochs=config.epochs,
        callbacks=standard_callbacks(
            run_dir,
            len(train_examples),
            validation_data,
            len(label_names),
            batches_per_epoch,
            config.batch_size,
            patience=config.patience,
            time_budget=config.time_budget,
        )
        + list(callbacks),
        verbose=fit_verbosity(),
    )

    text_model = family.save_text_model(model)
    write_labels(run_dir, label_names)
    report = evaluate_texts(text_model, validation_examples)
    write_evaluation(report, run_dir, prefix="validation", config=asdict(config))
    print(report.format_text())
    return report
