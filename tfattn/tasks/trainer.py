"""The one training loop: every task (text or token classification) with every model family.

`train(config)`: load and split the task's data, tokenize it once, build the task model
(preprocessor + encoder + head, `tfattn.models`) under the chosen `tf.distribute` strategy,
compile it with AdamW + warmup, `model.fit` on length-bucketed `tf.data` batches, then save it
(`tfattn.models.save_model`, raw strings in) and its validation report into the run folder.
Rerunning the same config after an interruption resumes from the last finished epoch; rerunning
a finished run stops at once, and another config or changed data in the same folder is refused
(`tfattn.run_manifest`).

A *task* (`tfattn.tasks.classification.ClassificationTask`, `tfattn.tasks.ner.NerTask`) names
its data, head, loss, metrics and validation report; a *family* names the preprocessor and
encoder: `ScratchFamily` (a vocabulary learned from the training texts + tfattn's transformer),
`PretrainedFamily` (a Hugging Face BERT) and `HubFamily` (a TF-Hub preprocess + encoder pair).
A run trains in one or more *phases*: TF-Hub models first train their head on a frozen encoder,
then fine-tune everything, each phase compiled afresh with its own AdamW + warmup schedule.
A frozen phase trains the head alone on the encoder's outputs, computed once (`tfattn.tasks.frozen`).
"""

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import tf_keras as keras

from tfattn.data.pipelines import JIT_LENGTH_MULTIPLE, count_batches, make_dataset, warn_about_texts
from tfattn.models import (
    HubEncoder,
    HubPreprocessor,
    HuggingFaceEncoder,
    TransformerEncoder,
    VocabularyPreprocessor,
    preprocess_in_chunks,
    save_model,
)
from tfattn.models.wordpiece import BertPreprocessor, learn_wordpiece_vocabulary
from tfattn.run_manifest import locked_run_folder
from tfattn.tasks.config import FROZEN_LEARNING_RATE
from tfattn.tasks.frozen import (
    HEAD_STEPS_PER_EXECUTION,
    FinishedCachedPhase,
    HeadModel,
    cached_phase_data,
    can_cache,
)
from tfattn.tasks.runs import MODEL_DIR, load_run_model, write_labels
from tfattn.training import (
    EpochOrder,
    compile_and_fit,
    finish_training,
    get_strategy,
    is_resuming,
    mark_trained,
    phase_finished,
    start_run,
)
from tfattn.workers import lost_workers_reported, worker_run_dir


@dataclass(frozen=True)
class Phase:
    """Part of a run with one optimizer schedule; `trainable`: whether the encoder trains in it.
    Its name names its backup, best-epoch and final-weights folders."""

    name: str
    epochs: int
    learning_rate: float
    trainable: bool = True


def checkpoint_tokenizer(name_or_path, max_length):
    """`(fast tokenizer, in-graph BertPreprocessor)` of a Hugging Face checkpoint, name or folder.
    A hub name fails here, in seconds offline, and a tokenizer the in-graph WordPiece cannot
    reproduce is refused: both before the run folder is touched."""
    from tfattn.models.wordpiece import bert_preprocessor_from_tokenizer
    from tfattn.pretrained import check_pretrained_source, load_tokenizer

    check_pretrained_source(name_or_path)
    tokenizer = load_tokenizer(name_or_path)
    return tokenizer, bert_preprocessor_from_tokenizer(tokenizer, max_length)


class Family:
    """What every family shares: its config and run folder, and its phases (`--freeze` trains
    the head alone)."""

    # Whether the model must be built inside a replica (`strategy.run`), as `fit` calls it, rather
    # than by a plain call in the strategy's scope. A plain call is preferred: in a replica, the
    # unseeded head initializer draws other values under a multi-worker strategy than alone.
    builds_in_replica_context = False

    def __init__(self, config):
        self.config = config

    def check(self):
        """Fail in one line if the model cannot be loaded; runs before the run folder is touched."""

    def phases(self):
        c = self.config
        return [Phase("train", c.epochs, c.learning_rate, trainable=not c.freeze)]

    def initialize(self, model):
        """Put starting weights into the freshly built `model` beyond what its layers initialise
        (nothing here; pretrained families load theirs when building the encoder)."""

    def encode_tagged(self, sentences, what):
        raise ValueError("token classification (NER) needs a Hugging Face BERT: pass --backbone")


class ScratchFamily(Family):
    """The from-scratch transformer over a vocabulary learned from the training texts: whole
    words (`VocabularyPreprocessor`) or WordPiece sub-words (`BertPreprocessor`), per `tokenizer`."""

    def check(self):
        c = self.config
        if c.embeddings_from:
            from tfattn.pretrained import pretrained_word_embeddings

            _, self.preprocessor = checkpoint_tokenizer(c.embeddings_from, c.max_length)
            self.pretrained_embeddings = pretrained_word_embeddings(c.embeddings_from)
            width = self.pretrained_embeddings.shape[1]
            if c.embed_dim > width:
                raise ValueError(
                    f"--embed-dim {c.embed_dim} is wider than the embeddings of {c.embeddings_from} ({width}); "
                    f"choose at most {width}"
                )

    def prepare(self, train_texts, run_dir):
        c = self.config
        vocab_path = run_dir / "vocab.txt"
        if not c.embeddings_from:  # with it, `check` built the checkpoint's preprocessor
            # A resumed run must reuse the vocabulary its checkpoint was trained with.
            resumed = is_resuming(run_dir) and vocab_path.exists()
            saved = vocab_path.read_text(encoding="utf-8").split("\n") if resumed else None
            self.preprocessor = self._learned_preprocessor(train_texts, saved)
        tokens = self.preprocessor.words if c.tokenizer == "words" else self.preprocessor.vocabulary
        vocab_path.write_text("\n".join(tokens), encoding="utf-8")

    def _learned_preprocessor(self, train_texts, saved):
        """The preprocessor over `saved` tokens (a resumed run's vocab.txt) or, without them, over
        a vocabulary learned from `train_texts`."""
        c = self.config
        if c.tokenizer == "wordpiece":
            tokens = saved or learn_wordpiece_vocabulary(train_texts, c.vocab_size)
            return BertPreprocessor(vocabulary=tokens, max_length=c.max_length)
        if saved:
            return VocabularyPreprocessor(saved, c.max_length)
        return VocabularyPreprocessor.adapt(train_texts, c.vocab_size, c.max_length)

    def initialize(self, model):
        if self.config.embeddings_from:
            from tfattn.pretrained import reduce_embeddings

            table = reduce_embeddings(self.pretrained_embeddings, self.config.embed_dim)
            model.encoder.embedding.token_embeddings.assign(table)

    def encode_texts(self, texts, what):
        # One pass: the tokens per text (before truncation) are counted on the way.
        token_counts = []

        def preprocess(chunk):
            token_ids = self.preprocessor.tokenize(chunk)
            token_counts.append(token_ids.row_lengths().numpy())
            return self.preprocessor.pack([token_ids])

        features = preprocess_in_chunks(preprocess, texts)
        lengths = np.concatenate(token_counts or [np.zeros(0, np.int64)])
        max_length = self.config.max_length
        # WordPiece rows also hold [CLS] and [SEP]; an empty text is those two alone.
        wordpiece = self.config.tokenizer == "wordpiece"
        room, filler = (max_length - 2, "[CLS] [SEP]") if wordpiece else (max_length, "[UNK]")
        warn_about_texts(
            len(texts), int(np.sum(lengths > room)), int(np.sum(lengths == 0)), max_length, what, filler=filler
        )
        return features

    def build_encoder(self):
        c = self.config
        return TransformerEncoder(
            vocab_size=len(self.preprocessor.vocabulary),
            max_length=c.max_length,
            embed_dim=c.embed_dim,
            num_heads=c.num_heads,
            ff_dim=c.ff_dim,
            num_blocks=c.num_blocks,
            dropout=c.dropout,
            positional=c.positional,
            token_dropout=c.token_dropout,
            bigram_buckets=c.bigram_buckets,
        )


class PretrainedFamily(Family):
    """A Hugging Face BERT checkpoint (name or folder). Training texts are tokenized by its fast
    tokenizer; the saved model reads raw strings through the in-graph `BertPreprocessor`, which
    gives the same ids."""

    def check(self):
        self.tokenizer, self.preprocessor = checkpoint_tokenizer(self.config.backbone, self.config.max_length)

    def prepare(self, train_texts, run_dir):
        """The preprocessor was built by `check`."""

    def encode_texts(self, texts, what):
        from tfattn.pretrained import tokenize_texts

        return tokenize_texts(self.tokenizer, texts, self.config.max_length, what=what)

    def encode_tagged(self, sentences, what):
        from tfattn.ner import tokenize_and_align

        return tokenize_and_align(self.tokenizer, sentences, self.config.max_length, word_shapes=self.config.word_shape)

    def build_encoder(self):
        return HuggingFaceEncoder.from_pretrained(self.config.backbone)


class HubFamily(Family):
    """A TF-Hub BERT preprocess + encoder pair (URLs or SavedModel folders, e.g. `tfattn export-hub`)."""

    # A SavedModel restored under a strategy cannot run its functions in cross-replica context.
    builds_in_replica_context = True

    def check(self):
        from tfattn.models.hub import resolve_hub_handle

        resolve_hub_handle(self.config.hub_preprocess, "preprocess model")
        resolve_hub_handle(self.config.hub_encoder, "encoder")

    def prepare(self, train_texts, run_dir):
        self.preprocessor = HubPreprocessor(self.config.hub_preprocess)

    def encode_texts(self, texts, what):
        features = preprocess_in_chunks(self.preprocessor, texts)
        lengths = features["input_mask"].row_lengths().numpy()
        # The preprocess model truncates by itself, so truncated texts cannot be counted here.
        warn_about_texts(len(lengths), empty=int(np.sum(lengths <= 2)), what=what, filler="[CLS] [SEP] only")
        return features

    def build_encoder(self):
        return HubEncoder(self.config.hub_encoder)

    def phases(self):
        c = self.config
        if c.freeze:
            return [Phase("frozen", c.epochs, c.learning_rate, trainable=False)]
        fine_tuned = Phase("fine-tuned", c.epochs, c.learning_rate, trainable=True)
        if not c.freeze_epochs:
            return [fine_tuned]
        return [Phase("frozen", c.freeze_epochs, FROZEN_LEARNING_RATE, trainable=False), fine_tuned]


def family_of(config):
    family_class = HubFamily if config.hub_encoder else PretrainedFamily if config.backbone else ScratchFamily
    return family_class(config)


def task_of(config):
    """The registered task of `config` (`tfattn.tasks.registry`), holding it."""
    from tfattn.tasks.registry import task_class

    return task_class(config.task)(config)


def training_order(config, task, family, train_split):
    """The training data, as an `EpochOrder` (read into memory, tokenized once) or a
    `StreamOrder` (`--stream`: read and tokenized as training goes)."""
    if config.stream:
        return task.stream_order(family, train_split)
    features, labels = task.encode(family, train_split, "training")
    # XLA compiles a program per batch shape: under --jit-compile, batches are padded to
    # multiples of JIT_LENGTH_MULTIPLE tokens, a handful of shapes instead of one per length.
    pad_to_multiple = JIT_LENGTH_MULTIPLE if config.jit_compile else None
    data = make_dataset(
        features, labels, config.batch_size, shuffle=True, seed=config.seed, pad_to_multiple=pad_to_multiple
    )
    return EpochOrder(data, count_batches(data), examples=(features, labels))


def train(config, callbacks: Sequence[keras.callbacks.Callback] = (), overwrite: bool = False):
    """Train any registered task: read its data, open the run folder, fit, evaluate on the
    validation data and save everything under `config.run_dir`.

    Args:
        config: a task's config (`TrainConfig`, `TranslationConfig`); None fields take the
            task's and family's defaults.
        callbacks: extra Keras callbacks, run after the standard ones.
        overwrite: replace a run folder that holds another (or the same, finished) run.

    Returns:
        The task's validation report: a `ClassificationReport`, for NER the `entity_scores`
        dict, for translation the BLEU and chrF scores.

    Raises:
        tfattn.run_manifest.RunFinished: the run folder holds this run, already finished.
        tfattn.run_manifest.RunConflict: it holds something else (another config or data).
        tfattn.training.TrainingDiverged: the loss became NaN or infinite.
    """
    config = config.resolve()
    # First: a multi-worker strategy must exist before any other TensorFlow work in the process.
    strategy = get_strategy(config.strategy)
    task = task_of(config)
    prepared = task.prepare_training()
    with worker_run_dir(config.run_dir, strategy) as run_dir, lost_workers_reported():
        # One process per run folder, for the whole run (each worker locks the folder it writes).
        with locked_run_folder(run_dir, overwrite):
            run_dir = start_run(
                run_dir, asdict(config), task.data_sources(), config.seed, config.mixed_precision, overwrite
            )
            return task.fit(run_dir, prepared, strategy, callbacks)


def fit_encoder_task(task, family, train_split, validation_split, strategy, run_dir, callbacks):
    """`Task.fit` of an encoder task: the family's preprocessor and encoder under the task's
    head, trained phase by phase in the folder this worker writes."""
    config = task.config
    label_names = train_split.label_names
    print(f"{task.describe(train_split, validation_split)}; model: {config.model_description}")

    family.prepare(task.texts_for_vocabulary(train_split), run_dir)
    order = training_order(config, task, family, train_split)
    validation = task.validation(family, validation_split)

    with strategy.scope():
        model = task.build_model(family.preprocessor, family.build_encoder(), label_names)
        # Built before fit: BackupAndRestore can only restore into existing variables. Built in the
        # scope: the task models create their variables on first call, and a variable created
        # outside the strategy's scope cannot be trained under it.
        features = order.sample_batch()[0]
        if family.builds_in_replica_context:
            strategy.run(model, args=(features,))
        else:
            model(features)
        family.initialize(model)
    if config.pretrained:
        print(
            f"newly initialized (trained from scratch): the head, {len(label_names)} outputs on the "
            f"{task.head_input} vectors; every other weight is pretrained"
        )
    phases = family.phases()
    first_epoch = 0
    for index, phase in enumerate(phases):
        last_epoch = first_epoch + phase.epochs
        if len(phases) > 1:
            print(f"phase {phase.name!r}: epochs {first_epoch + 1}-{last_epoch}, learning rate {phase.learning_rate:g}")
        if phase.trainable:
            model.unfreeze_encoder()
        else:
            model.freeze_encoder()
        fit_model, fit_order, validation_data = model, order, validation.data
        if not phase.trainable and can_cache(config, model):
            # The head trains alone on the frozen encoder's outputs, computed once (tfattn.tasks.frozen).
            fit_model = HeadModel(model)
            if phase_finished(run_dir, phase.name):
                fit_order, validation_data = FinishedCachedPhase(), None  # its weights are only loaded
            else:
                fit_order, validation_data = cached_phase_data(model, config, run_dir, order, validation)
        trained = compile_and_fit(
            fit_model,
            fit_order,
            run_dir,
            config,
            loss=task.loss(),
            metrics=task.metrics(len(label_names)),
            monitor=task.monitor,
            examples_per_epoch=len(train_split),
            phase=phase.name,
            first_epoch=first_epoch,
            last_epoch=last_epoch,
            learning_rate=phase.learning_rate,
            strategy=strategy,
            append_history=index > 0 or is_resuming(run_dir),
            validation_data=validation_data,
            validation_callback=validation.callback,
            callbacks=callbacks,
            jit_compile=config.jit_compile,
            # A head step on cached vectors takes about a millisecond, less than the per-batch
            # callbacks: run many per call (callbacks then see every 50th batch).
            steps_per_execution=HEAD_STEPS_PER_EXECUTION if fit_model is not model else 1,
        )
        if not trained:
            print(f"phase {phase.name!r} already finished; loaded its weights")
        first_epoch = last_epoch
    mark_trained(run_dir)  # fit_phase checked the weights are finite

    save_model(model, run_dir / MODEL_DIR)
    write_labels(run_dir, label_names)
    # The report is of the saved model, loaded back: what evaluate, predict and export will use.
    report, summary = task.report(load_run_model(run_dir), model, validation_split, validation, run_dir)
    finish_training(run_dir, summary)
    return report
