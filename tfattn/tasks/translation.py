"""The translation task: train a translator on sentence pairs with `model.fit`, score it with
sacreBLEU and chrF, and save the run (`tfattn train translate`, `tfattn translate`).

A run folder holds `config.json`, `model/` (`save_translator`), `history.csv`, and
`validation_scores.json`; training resumes after an interruption as every tfattn run does
(`tfattn.training`: backups per epoch, best epoch by validation loss, early stopping).
"""

import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfattn.data.translation import SOURCE_COLUMNS, read_translation_pairs
from tfattn.models.translation import DEFAULT_VOCAB_SIZES, VOCABULARIES  # "subword" (the default) or "words"
from tfattn.tasks.ner import masked_token_accuracy  # padding labels are -100, as in NER batches
from tfattn.tasks.runs import MODEL_DIR

__all__ = [
    "TranslationConfig",
    "alignment",
    "bleu_and_chrf",
    "evaluate_translations",
    "load_run_translator",
    "train_translation",
    "validation_pairs",
]

SCORES_FILE = "validation_scores.json"
MODELS = ("transformer", "rnn")
# Per model, the defaults of the options left at None: the course's sizes and a learning rate per
# model, not tuned (BENCHMARKS.md "Translation" measures them, once, on the validation pairs).
MODEL_DEFAULTS = {
    "transformer": {"embed_dim": 256, "num_heads": 4, "ff_dim": 1024, "num_blocks": 2, "learning_rate": 1e-3},
    "rnn": {"embed_dim": 256, "units": 256, "learning_rate": 3e-3},
}
MODEL_OPTIONS = {"transformer": ("num_heads", "ff_dim", "num_blocks"), "rnn": ("units",)}


@dataclass
class TranslationConfig:
    """Everything that defines a translation run; saved as the run's `config.json`."""

    task: str = "translate"
    run_dir: str = "runs/translate"
    data: str | None = None  # Anki-format file or two-column TSV
    validation_data: str | None = None  # default: valid pairs split off `data` (validation_fraction)
    validation_fraction: float = 0.05
    source_column: int = 2  # 1 or 2: the column translated from (Anki files: 1 English, 2 the other)
    limit: int | None = None  # train on the first this many pairs (smoke tests)
    validation_limit: int | None = None  # validate (loss and BLEU) on the first this many pairs
    seed: int = 0
    model: str = "transformer"
    vocabulary: str = "subword"
    vocab_size: int | None = None  # entries per language (default DEFAULT_VOCAB_SIZES of vocabulary)
    max_length: int = 64  # pieces per sentence, both languages (longer ones are cut)
    embed_dim: int | None = None
    num_heads: int | None = None
    ff_dim: int | None = None
    num_blocks: int | None = None
    units: int | None = None
    dropout: float = 0.1
    label_smoothing: float = 0.1
    batch_size: int = 64
    epochs: int = 10
    learning_rate: float | None = None
    warmup_fraction: float = 0.05
    weight_decay: float = 0.01
    patience: int = 2
    time_budget: float | None = None
    mixed_precision: bool = False

    @classmethod
    def from_dict(cls, values):
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def resolve(self):
        """A copy with the model's defaults filled in; refuses options the model does not have."""
        if self.model not in MODELS:
            raise ValueError(f"--model must be one of {', '.join(MODELS)}, got {self.model!r}")
        if self.vocabulary not in VOCABULARIES:
            raise ValueError(f"--vocabulary must be one of {', '.join(VOCABULARIES)}, got {self.vocabulary!r}")
        if self.source_column not in SOURCE_COLUMNS:
            raise ValueError(f"--source-column must be 1 or 2, got {self.source_column!r}")
        if not self.data:
            raise ValueError("--data is required: an Anki-format file or a two-column TSV of sentence pairs")
        other = next(model for model in MODELS if model != self.model)
        for option in MODEL_OPTIONS[other]:
            if getattr(self, option) is not None:
                raise ValueError(f"--{option.replace('_', '-')} applies to --model {other}, not {self.model}")
        vocab_size = DEFAULT_VOCAB_SIZES[self.vocabulary] if self.vocab_size is None else self.vocab_size
        for name, value, low in (
            ("vocab_size", vocab_size, 8),
            ("max_length", self.max_length, 2),
            ("batch_size", self.batch_size, 1),
            ("epochs", self.epochs, 1),
            ("patience", self.patience, 1),
        ):
            if int(value) < low:
                raise ValueError(f"--{name.replace('_', '-')} must be at least {low}, got {value!r}")
        for name, value in (("dropout", self.dropout), ("label_smoothing", self.label_smoothing)):
            if not 0 <= float(value) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1), got {value!r}")
        defaults = {k: v for k, v in MODEL_DEFAULTS[self.model].items() if getattr(self, k) is None}
        return replace(self, vocab_size=vocab_size, **defaults)

    def model_kwargs(self):
        names = ("embed_dim", "dropout") + MODEL_OPTIONS[self.model]
        return {name: getattr(self, name) for name in names}


class MaskedCrossEntropy(keras.losses.Loss):
    """Cross-entropy per target token, averaged over the real tokens of the batch (padding labels,
    -100 in batches or 0, the padding id, count for nothing), with optional label smoothing over
    the vocabulary."""

    def __init__(self, label_smoothing=0.0, name="masked_cross_entropy"):
        super().__init__(name=name, reduction=keras.losses.Reduction.SUM)
        self.label_smoothing = float(label_smoothing)

    def call(self, labels, logits):
        labels = tf.cast(labels, tf.int32)
        mask = tf.cast(labels > 0, tf.float32)
        log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32))
        nll = -tf.gather(log_probs, tf.maximum(labels, 0), batch_dims=2)
        if self.label_smoothing:
            nll = (1 - self.label_smoothing) * nll - self.label_smoothing * tf.reduce_mean(log_probs, axis=-1)
        return tf.reduce_sum(nll * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def bleu_and_chrf(hypotheses, references):
    """Corpus sacreBLEU (13a tokenization, cased) and chrF of `hypotheses` against one reference each."""
    import sacrebleu

    return {
        "bleu": round(sacrebleu.corpus_bleu(hypotheses, [references]).score, 2),
        "chrf": round(sacrebleu.corpus_chrf(hypotheses, [references]).score, 2),
    }


def evaluate_translations(model, pairs, batch_size=64, **options):
    """Translate `pairs.sources` with `model` (`tfattn.decoding` `options`) and score them against
    `pairs.targets`: `{"bleu", "chrf", "sentences", "seconds", "translations"}`."""
    started = time.perf_counter()
    translations = model.translate(pairs.sources, batch_size=batch_size, **options)
    seconds = time.perf_counter() - started
    scores = bleu_and_chrf(translations, pairs.targets)
    return {**scores, "sentences": len(translations), "seconds": round(seconds, 1), "translations": translations}


def alignment(model, text, **options):
    """The cross-attention of `model` translating `text` (`tfattn.decoding` `options`, greedy by
    default): `(translation, source_tokens, target_tokens, attention [layers, heads, target,
    source])`, the tokens being the vocabulary's pieces or words (the end token shown as `</s>`)."""
    from tfattn.decoding import DecodingOptions, decode

    preprocessor = model.preprocessor
    source_ids = preprocessor.pad_sources([text])
    decoded = decode(model, source_ids, DecodingOptions(**options, return_attention=True))
    target_ids = decoded.token_ids[0].numpy()
    ended = np.flatnonzero(target_ids == model.eos_id)
    steps = int(ended[0]) + 1 if ended.size else len(target_ids)
    pieces = [piece.decode("utf-8") for piece in preprocessor.source.pieces(source_ids[0]).numpy()]
    target_pieces = [piece.decode("utf-8") for piece in preprocessor.target.pieces(target_ids[:steps]).numpy()]
    attention = decoded.cross_attention[0, :steps].numpy().transpose(1, 2, 0, 3)  # [layers, heads, target, source]
    translation = preprocessor.decode_targets(decoded.token_ids[:1]).numpy()[0].decode("utf-8")
    return translation, pieces, target_pieces, attention


def _split_validation(pairs, config):
    """Training and validation pairs: `validation_data`, or a seeded share of `data` grouped by
    target sentence (all translations of one sentence fall on one side, as in the shared split)."""
    if config.validation_data:
        validation = read_translation_pairs(config.validation_data, config.source_column)
        return pairs, validation.head(config.validation_limit)
    targets = sorted(set(pairs.targets))
    rng = np.random.default_rng(config.seed)
    held_out = set(rng.choice(targets, size=max(1, int(len(targets) * config.validation_fraction)), replace=False))
    train, validation = (type(pairs)(path=pairs.path) for _ in range(2))
    for source, target in zip(pairs.sources, pairs.targets):
        side = validation if target in held_out else train
        side.sources.append(source)
        side.targets.append(target)
    return train, validation.head(config.validation_limit)


def validation_pairs(config):
    """The validation pairs a run with this (resolved) config scored itself on."""
    pairs = read_translation_pairs(config.data, config.source_column, config.limit)
    return _split_validation(pairs, config)[1]


def load_run_translator(run_dir, command=""):
    """The translator a finished `tfattn train translate` run saved (the folder checked by
    `tfattn.tasks.runs.finished_run_config`)."""
    from tfattn.models.translation import load_translator
    from tfattn.tasks.runs import finished_run_config

    finished_run_config(run_dir, expected_task="translate", command=command)
    return load_translator(Path(run_dir) / MODEL_DIR)


def train_translation(config: TranslationConfig, overwrite=False, callbacks=()):
    """Train a translator, score it on the validation pairs (greedy decoding, sacreBLEU and
    chrF) and save everything under `config.run_dir`. Returns the scores dict."""
    from tfattn.data.pipelines import count_batches, make_dataset
    from tfattn.models.translation import (
        TRANSLATORS,
        TranslationPreprocessor,
        build_sample,
        load_translator,
        save_translator,
    )
    from tfattn.optimization import create_optimizer
    from tfattn.run_manifest import locked_run_folder
    from tfattn.training import (
        EpochOrder,
        finish_training,
        fit_phase,
        fit_verbosity,
        is_resuming,
        mark_trained,
        standard_callbacks,
        start_run,
        write_json,
    )

    config = config.resolve()
    pairs = read_translation_pairs(config.data, config.source_column, config.limit)
    train_pairs, validation_pairs = _split_validation(pairs, config)
    sources = [config.data] + ([config.validation_data] if config.validation_data else [])
    # One process per run folder, for the whole run (tfattn.run_manifest.locked_run_folder).
    with locked_run_folder(config.run_dir, overwrite) as run_dir:
        run_dir = start_run(run_dir, asdict(config), sources, config.seed, config.mixed_precision, overwrite)
        print(
            f"translate: {len(train_pairs)} training / {len(validation_pairs)} validation pairs from {config.data}; "
            f"model: {config.model}"
        )
        # Deterministic: a resumed run learns the same vocabularies again.
        preprocessor = TranslationPreprocessor.learn(
            train_pairs.sources,
            train_pairs.targets,
            vocab_size=config.vocab_size,
            vocabulary=config.vocabulary,
            max_source_length=config.max_length,
            max_target_length=config.max_length,
        )

        def dataset(split, shuffle):
            target_ids, labels = preprocessor.encode_targets(split.targets)
            features = {"source_ids": preprocessor.encode_sources(split.sources), "target_ids": target_ids}
            return make_dataset(features, labels, config.batch_size, shuffle=shuffle, seed=config.seed)

        train_data = dataset(train_pairs, shuffle=True)
        order = EpochOrder(train_data, count_batches(train_data))
        validation_data = dataset(validation_pairs, shuffle=False)

        model = build_sample(TRANSLATORS[config.model](preprocessor, **config.model_kwargs()))
        print(f"{config.model} translator: {model.count_params():,} weights")
        model.compile(
            optimizer=create_optimizer(
                config.learning_rate,
                order.batches_per_epoch * config.epochs,
                warmup_fraction=config.warmup_fraction,
                weight_decay=config.weight_decay,
            ),
            loss=MaskedCrossEntropy(config.label_smoothing),
            metrics=[masked_token_accuracy],
        )
        fit_phase(
            model,
            order,
            run_dir,
            "train",
            0,
            config.epochs,
            callbacks=standard_callbacks(
                run_dir,
                len(train_pairs),
                order.batches_per_epoch,
                config.batch_size,
                patience=config.patience,
                monitor="val_loss",
                time_budget=config.time_budget,
                append_history=is_resuming(run_dir),
            )
            + list(callbacks),
            validation_data=validation_data,
            verbose=fit_verbosity(),
        )
        mark_trained(run_dir)
        save_translator(model, run_dir / MODEL_DIR)
        saved = load_translator(run_dir / MODEL_DIR)  # scored as evaluate, translate and export will load it
        result = evaluate_translations(saved, validation_pairs)
        scores = {key: result[key] for key in ("bleu", "chrf", "sentences", "seconds")}
        write_json(run_dir / SCORES_FILE, {"decoding": "greedy", **scores})
        summary = (
            f"validation BLEU {scores['bleu']:.2f}, chrF {scores['chrf']:.2f} (greedy, {scores['sentences']} pairs)"
        )
        print(summary)
        finish_training(run_dir, summary)
        return scores


def read_run_config(run_dir):
    from tfattn.run_manifest import read_json_file

    return TranslationConfig.from_dict(read_json_file(Path(run_dir) / "config.json"))
