"""The training loop every text-classification run goes through, for every model family.

`train(config)`: load and split the task's data, tokenize it once, build and compile the model
under the chosen `tf.distribute` strategy with AdamW + warmup, `model.fit` on length-bucketed
`tf.data` batches, then save a strings-in model and its validation report into the run folder.
Rerunning the same config after an interruption resumes from the last finished epoch; rerunning
a finished run stops at once, and another config or changed data in the same folder is refused
(`tfattn.run_manifest`).

A *family* knows how to tokenize, build, wrap for raw strings and save one kind of model:
`ScratchFamily` (the from-scratch transformer), `PretrainedFamily` (a Hugging Face backbone) and
`HubFamily` (a TF-Hub preprocess + encoder pair). A family trains in one or more *phases*:
TF-Hub models first train their head on a frozen encoder, then fine-tune everything, each phase
compiled afresh with its own AdamW + warmup schedule.
"""

from dataclasses import asdict, dataclass
from pathlib import Path

from tfattn.data.pipelines import count_batches, encode_texts, make_dataset
from tfattn.evaluation import write_evaluation
from tfattn.networks import build_text_classifier, build_token_classifier, build_vectorizer
from tfattn.optimization import create_optimizer
from tfattn.tasks.config import FROZEN_LEARNING_RATE, load_splits
from tfattn.tasks.runs import HUB_MODEL_DIR, MODEL_FILE, PRETRAINED_DIR, evaluate_texts, write_labels
from tfattn.training import (
    EpochOrder,
    MacroF1,
    finish_training,
    fit_phase,
    fit_verbosity,
    get_strategy,
    is_resuming,
    mark_trained,
    standard_callbacks,
    start_run,
    with_epoch_length,
)


@dataclass(frozen=True)
class Phase:
    """Part of a run with one optimizer schedule; `trainable`: whether a pretrained encoder
    trains in it (families without a separate encoder ignore it). Its name names its backup,
    best-epoch and final-weights folders."""

    name: str
    epochs: int
    learning_rate: float
    trainable: bool = True


class Family:
    """What every family shares: its config and run folder, and by default one training phase."""

    def __init__(self, config, run_dir):
        self.config = config
        self.run_dir = run_dir

    def check(self):
        """Fail in one line if the model cannot be loaded; runs before the run folder is touched."""

    def phases(self):
        return [Phase("train", self.config.epochs, self.config.learning_rate)]

    def set_phase(self, model, phase):
        """Prepare `model` for `phase`, before it is compiled for it."""


class ScratchFamily(Family):
    """The from-scratch transformer: a TextVectorization vocabulary learned from the training texts."""

    def prepare(self, train_texts):
        # A resumed run must reuse the vocabulary its checkpoint was trained with.
        vocab_path = self.run_dir / "vocab.txt"
        resuming = is_resuming(self.run_dir) and vocab_path.exists()
        saved = vocab_path.read_text(encoding="utf-8").split("\n") if resuming else None
        self.vectorizer = build_vectorizer(train_texts, self.config.vocab_size, vocabulary=saved)
        # The first two entries are padding and [UNK], which set_vocabulary adds back itself.
        vocab_path.write_text("\n".join(self.vectorizer.get_vocabulary()[2:]), encoding="utf-8")

    def encode(self, texts, what):
        return encode_texts(self.vectorizer, texts, self.config.max_length, what=what)

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


class PretrainedFamily(Family):
    """A Hugging Face checkpoint (name or folder) with a classification head."""

    def check(self):
        from tfattn.pretrained import check_pretrained_source, load_tokenizer

        check_pretrained_source(self.config.backbone)
        self.tokenizer = load_tokenizer(self.config.backbone)  # a hub name fails here, in seconds offline

    def prepare(self, train_texts):
        """The tokenizer was loaded by `check`."""

    def encode(self, texts, what):
        from tfattn.pretrained import tokenize_texts

        return tokenize_texts(self.tokenizer, texts, self.config.max_length, what=what)

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


class HubFamily(Family):
    """A TF-Hub BERT preprocess + encoder pair (URLs or SavedModel folders, e.g. `tfattn export-hub`)."""

    def check(self):
        from tfattn.hub import resolve_hub_handle

        resolve_hub_handle(self.config.hub_preprocess, "preprocess model")
        resolve_hub_handle(self.config.hub_encoder, "encoder")

    def prepare(self, train_texts):
        from tfattn.hub import load_hub_layer

        self.preprocessor = load_hub_layer(self.config.hub_preprocess, "preprocess model")

    def encode(self, texts, what):
        from tfattn.hub import preprocess_in_chunks

        return preprocess_in_chunks(self.preprocessor, texts, what=what)

    def build_model(self, num_classes):
        from tfattn.hub import HubBertClassifier

        c = self.config
        return HubBertClassifier(c.hub_preprocess, c.hub_encoder, num_classes, dropout=c.dropout)

    def phases(self):
        c = self.config
        if c.freeze:
            return [Phase("frozen", c.epochs, c.learning_rate, trainable=False)]
        fine_tuned = Phase("fine-tuned", c.epochs, c.learning_rate, trainable=True)
        if not c.freeze_epochs:
            return [fine_tuned]
        return [Phase("frozen", c.freeze_epochs, FROZEN_LEARNING_RATE, trainable=False), fine_tuned]

    def set_phase(self, model, phase):
        if phase.trainable:
            model.unfreeze_encoder()
        else:
            model.freeze_encoder()

    def save_text_model(self, model):
        """Save the handles and weights; the model itself takes raw strings."""
        from tfattn.hub import save_hub_classifier

        save_hub_classifier(model, self.run_dir / HUB_MODEL_DIR)
        return model


def _family_of(config, run_dir):
    family_class = HubFamily if config.hub_encoder else PretrainedFamily if config.backbone else ScratchFamily
    return family_class(config, run_dir)


def train(config, callbacks=(), overwrite=False):
    """Train, evaluate on the validation split and save everything under `config.run_dir`.

    Args:
        config: a `TrainConfig`; None fields take the task's and family's defaults.
        callbacks: extra Keras callbacks, run after the standard ones.
        overwrite: replace a run folder that holds another (or the same, finished) run.

    Returns:
        The validation `ClassificationReport`.

    Raises:
        tfattn.run_manifest.RunFinished: the run folder holds this run, already finished.
        tfattn.run_manifest.RunConflict: it holds something else (another config or data).
        tfattn.training.TrainingDiverged: the loss became NaN or infinite.
    """
    config = config.resolve()
    train_examples, validation_examples = load_splits(config)
    family = _family_of(config, Path(config.run_dir))
    family.check()
    run_dir = start_run(
        config.run_dir, asdict(config), [config.data], config.seed, config.mixed_precision, overwrite=overwrite
    )
    label_names = train_examples.label_names
    print(
        f"{config.task}: {len(train_examples)} training / {len(validation_examples)} validation examples "
        f"from {train_examples.source}; model: {config.model_description}"
    )

    family.prepare(train_examples.texts)
    train_data = make_dataset(
        family.encode(train_examples.texts, "training texts"), train_examples.labels, config.batch_size,
        shuffle=True, seed=config.seed,
    )
    validation_data = make_dataset(
        family.encode(validation_examples.texts, "validation texts"), validation_examples.labels, config.batch_size
    )
    batches_per_epoch = count_batches(train_data)
    train_data = with_epoch_length(train_data, batches_per_epoch)

    strategy = get_strategy(config.strategy)
    with strategy.scope():
        model = family.build_model(len(label_names))
    # Built before fit: BackupAndRestore can only restore into existing variables.
    model(next(iter(train_data))[0])
    order = EpochOrder(train_data)
    phases = family.phases()
    first_epoch = 0
    for index, phase in enumerate(phases):
        last_epoch = first_epoch + phase.epochs
        if len(phases) > 1:
            print(f"phase {phase.name!r}: epochs {first_epoch + 1}-{last_epoch}, learning rate {phase.learning_rate:g}")
        family.set_phase(model, phase)
        with strategy.scope():
            model.compile(
                optimizer=create_optimizer(
                    phase.learning_rate,
                    batches_per_epoch * phase.epochs,
                    warmup_fraction=config.warmup_fraction,
                    weight_decay=config.weight_decay,
                ),
                loss="sparse_categorical_crossentropy",
                metrics=["accuracy", MacroF1(len(label_names))],
                jit_compile=config.jit_compile,
            )
        trained = fit_phase(
            model, train_data, order, run_dir, phase.name, first_epoch, last_epoch,
            callbacks=standard_callbacks(
                run_dir,
                len(train_examples),
                batches_per_epoch,
                config.batch_size,
                patience=config.patience,
                time_budget=config.time_budget,
                phase=phase.name,
                append_history=index > 0 or is_resuming(run_dir),
            )
            + list(callbacks),
            validation_data=validation_data,
            verbose=fit_verbosity(),
        )
        if not trained:
            print(f"phase {phase.name!r} already finished; loaded its weights")
        first_epoch = last_epoch
    mark_trained(run_dir)  # fit_phase checked the weights are finite

    text_model = family.save_text_model(model)
    write_labels(run_dir, label_names)
    report = evaluate_texts(text_model, validation_examples)
    write_evaluation(report, run_dir, prefix="validation", config=asdict(config))
    print(report.format_text())
    finish_training(run_dir, f"validation accuracy {report.accuracy:.4f}, macro-F1 {report.macro_f1:.4f}")
    return report
