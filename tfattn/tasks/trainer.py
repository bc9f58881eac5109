"""The one training loop: every task (text or token classification) with every model family.

`train(config)`: load and split the task's data, tokenize it once, build the task model
(preprocessor + encoder + head, `tfattn.models`) under the chosen `tf.distribute` strategy,
compile it with AdamW + warmup, `model.fit` on length-bucketed `tf.data` batches, then save it
(`tfattn.models.save_model`, raw strings in) and its validation report into the run folder.
Rerunning the same config after an interruption resumes from the last finished epoch; rerunning
a finished run stops at once, and another config or changed data in the same folder is refused
(`tfattn.run_manifest`).

A *task* (`tfattn.tasks.classification.ClassificationTask`, `tfattn.tasks.ner.NerTask`) names
its data, head, loss, metrics and validation report; a *family* (`tfattn.families`) names the
preprocessor and encoder: from scratch (a vocabulary learned from the training texts + tfattn's
transformer), a Hugging Face BERT, or a TF-Hub preprocess + encoder pair.
A run trains in one or more *phases*: TF-Hub models first train their head on a frozen encoder,
then fine-tune everything, each phase compiled afresh with its own AdamW + warmup schedule.
A frozen phase trains the head alone on the encoder's outputs, computed once (`tfattn.tasks.frozen`).
"""

from collections.abc import Sequence
from dataclasses import asdict

import tf_keras as keras

from tfattn.data.pipelines import JIT_LENGTH_MULTIPLE, count_batches, make_dataset
from tfattn.models import save_model
from tfattn.run_manifest import locked_run_folder
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
