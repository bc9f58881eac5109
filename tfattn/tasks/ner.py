"""Named-entity recognition runs: fine-tune a Hugging Face token classifier on CoNLL data, score
entities on the validation file, tag raw text and export.

    config = NerConfig(data="conll2003/train.txt", backbone="path/to/bert", run_dir="runs/ner")
    scores = train_ner(config)                    # entity F1 per type on valid.txt
    tagger = EntityTagger.from_run("runs/ner")
    tagger(["Dmitry flew from Moscow to Berlin."])  # [[{"entity_group": "PER", ...}, ...]]

The model is `TFAutoModelForTokenClassification` behind a small Keras wrapper that returns
logits; the loss and the metrics skip the positions labelled `IGNORE_INDEX` (special tokens).
Word-level predictions come from each word's first sub-token (`tfattn.ner`).
"""

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Optional

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfattn.data import load_conll
from tfattn.data.pipelines import count_batches, make_dataset
from tfattn.export import write_atomically
from tfattn.ner import IGNORE_INDEX, entity_scores, format_entity_report, group_entities, tokenize_and_align, word_predictions
from tfattn.optimization import create_optimizer
from tfattn.training import (
    EpochOrder,
    finish_training,
    fit_phase,
    fit_verbosity,
    get_strategy,
    mark_trained,
    standard_callbacks,
    start_run,
    with_epoch_length,
    write_json,
)

MODEL_DIR = "model"
FEATURE_NAMES = ("input_ids", "attention_mask", "token_type_ids")
# An exported tagger: the SavedModel, its tokenizer and its label names.
TAGGER_FILE = "tagger.json"
TOKENIZER_DIR = "tokenizer"


@dataclass
class NerConfig:
    """Everything that defines an NER run; saved as the run's `config.json`."""

    task: str = "ner"
    run_dir: str = "runs/ner"
    data: Optional[str] = None  # CoNLL training file (2 or 4 columns), or hf:conll2003
    validation_data: Optional[str] = None  # default: valid.txt beside `data`
    backbone: Optional[str] = None  # Hugging Face BERT-family name or local folder
    limit: Optional[int] = None  # train on the first this many sentences (smoke tests)
    validation_limit: Optional[int] = None
    seed: int = 0
    max_length: int = 128
    batch_size: int = 32
    epochs: int = 3
    learning_rate: float = 5e-5
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    patience: int = 2
    time_budget: Optional[float] = None
    strategy: str = "default"
    mixed_precision: bool = False

    @classmethod
    def from_dict(cls, values):
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def resolve(self):
        """A copy with the validation source filled in; errors for what is missing or out of range."""
        from tfattn.tasks.config import check_numeric_options

        check_numeric_options(self)
        if self.max_length < 3:
            raise ValueError(f"--max-length must be at least 3 ([CLS], a token, [SEP]), got {self.max_length}")
        if not self.data:
            raise ValueError("NER training needs --data: a CoNLL file (e.g. ../shared/data/conll2003/train.txt)")
        if not self.backbone:
            raise ValueError("NER training needs --backbone: a Hugging Face BERT name or local checkpoint folder")
        validation = self.validation_data
        if validation is None:
            validation = self.data if self.data.startswith("hf:") else str(Path(self.data).with_name("valid.txt"))
        return replace(self, validation_data=validation)


def masked_token_loss(labels, logits):
    """Mean cross-entropy over the positions whose label is not `IGNORE_INDEX`."""
    labels = tf.cast(labels, tf.int32)
    keep = tf.cast(labels != IGNORE_INDEX, tf.float32)
    losses = keras.losses.sparse_categorical_crossentropy(tf.maximum(labels, 0), logits, from_logits=True)
    return tf.reduce_sum(losses * keep) / tf.maximum(tf.reduce_sum(keep), 1.0)


def masked_token_accuracy(labels, logits):
    labels = tf.cast(labels, tf.int32)
    keep = tf.cast(labels != IGNORE_INDEX, tf.float32)
    correct = tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels), tf.float32)
    return tf.reduce_sum(correct * keep) / tf.maximum(tf.reduce_sum(keep), 1.0)


class TokenClassifier(keras.Model):
    """Logits `[batch, tokens, labels]` (float32) of a `TFAutoModelForTokenClassification`;
    `output_attentions=True` also returns every layer's `[batch, heads, tokens, tokens]`."""

    def __init__(self, token_model, **kwargs):
        super().__init__(**kwargs)
        self.token_model = token_model

    def call(self, features, training=False, output_attentions=False):
        features = {name: value for name, value in features.items() if name in FEATURE_NAMES}
        outputs = self.token_model(**features, training=training, output_attentions=output_attentions, return_dict=True)
        logits = tf.cast(outputs.logits, tf.float32)
        return (logits, outputs.attentions) if output_attentions else logits

    def get_config(self):
        # Saved with save_pretrained (see `train_ner`), never through the Keras config.
        return {"name": self.name}


def _ragged(rows):
    lengths = [len(row) for row in rows]
    values = np.fromiter((value for row in rows for value in row), dtype=np.int32, count=sum(lengths))
    return tf.RaggedTensor.from_row_lengths(values, np.asarray(lengths, np.int64))


def token_dataset(encoded, batch_size, shuffle=False, seed=0):
    """Batches `(features, per-token labels)` from `tokenize_and_align` output, padded per batch."""
    features = {name: _ragged(encoded[name]) for name in FEATURE_NAMES if name in encoded}
    return make_dataset(features, _ragged(encoded["labels"]), batch_size, shuffle=shuffle, seed=seed)


def predict_word_tags(classifier, encoded, batch_size=64, dataset=None):
    """Predicted label ids per word for sentences encoded by `tokenize_and_align`; pass
    `dataset` (`token_dataset(encoded, ...)`, unshuffled) to reuse one built earlier."""
    predictions = []
    for features, _ in dataset if dataset is not None else token_dataset(encoded, batch_size):
        predictions.extend(classifier(features, training=False).numpy().argmax(axis=-1))
    return [
        word_predictions(word_ids, row[: len(word_ids)], num_words)
        for word_ids, row, num_words in zip(encoded["word_ids"], predictions, encoded["num_words"])
    ]


class ValidationEntityScores(keras.callbacks.Callback):
    """Adds `val_entity_f1`, `val_entity_precision`, `val_entity_recall` and
    `val_token_accuracy` (word level, seqeval) to the epoch logs."""

    def __init__(self, encoded, sentences, batch_size):
        super().__init__()
        self.encoded, self.sentences = encoded, sentences
        self.dataset = token_dataset(encoded, batch_size)  # built once, reused every epoch

    def on_epoch_end(self, epoch, logs=None):
        predicted = predict_word_tags(self.model, self.encoded, dataset=self.dataset)
        scores = entity_scores(self.sentences.tags, predicted, self.sentences.label_names)
        if logs is not None:
            logs.update(
                val_entity_f1=scores["f1"],
                val_entity_precision=scores["precision"],
                val_entity_recall=scores["recall"],
                val_token_accuracy=scores["accuracy"],
            )


def _first(sentences, limit):
    return sentences.subset(range(min(limit, len(sentences)))) if limit else sentences


def train_ner(config, callbacks=(), overwrite=False):
    """Fine-tune, score on the validation file and save everything under `config.run_dir`.

    Returns the validation `entity_scores` dict (overall and per type). Rerunning the same
    config after an interruption resumes from the last finished epoch; a finished run, or
    another run in the folder, stops as in `tfattn.tasks.trainer.train` (`overwrite` replaces it).
    """
    from tfattn.pretrained import check_pretrained_source, load_token_classifier, load_tokenizer

    config = config.resolve()
    train_sentences = _first(load_conll(config.data, "train"), config.limit)
    validation_sentences = _first(load_conll(config.validation_data, "validation"), config.validation_limit)
    check_pretrained_source(config.backbone)
    tokenizer = load_tokenizer(config.backbone)
    run_dir = start_run(
        config.run_dir, asdict(config), [config.data, config.validation_data], config.seed, config.mixed_precision,
        overwrite=overwrite,
    )
    label_names = train_sentences.label_names
    print(
        f"ner: {len(train_sentences)} training sentences from {train_sentences.source}, "
        f"{len(validation_sentences)} validation from {validation_sentences.source}; model: {config.backbone}"
    )
    train_encoded = tokenize_and_align(tokenizer, train_sentences, config.max_length)
    validation_encoded = tokenize_and_align(tokenizer, validation_sentences, config.max_length)
    train_data = token_dataset(train_encoded, config.batch_size, shuffle=True, seed=config.seed)
    batches_per_epoch = count_batches(train_data)
    train_data = with_epoch_length(train_data, batches_per_epoch)

    with get_strategy(config.strategy).scope():
        model = TokenClassifier(load_token_classifier(config.backbone, label_names))
        model.compile(
            optimizer=create_optimizer(
                config.learning_rate,
                batches_per_epoch * config.epochs,
                warmup_fraction=config.warmup_fraction,
                weight_decay=config.weight_decay,
            ),
            loss=masked_token_loss,
            metrics=[masked_token_accuracy],
        )
    model(next(iter(train_data))[0])  # BackupAndRestore needs built weights to restore into
    fit_phase(
        model, train_data, EpochOrder(train_data), run_dir, "train", 0, config.epochs,
        callbacks=standard_callbacks(
            run_dir,
            len(train_sentences),
            batches_per_epoch=batches_per_epoch,
            batch_size=config.batch_size,
            patience=config.patience,
            monitor="val_entity_f1",
            time_budget=config.time_budget,
            validation_callback=ValidationEntityScores(validation_encoded, validation_sentences, 64),
        )
        + list(callbacks),
        verbose=fit_verbosity(),
    )
    mark_trained(run_dir)  # fit_phase checked the weights are finite

    model.token_model.save_pretrained(run_dir / MODEL_DIR)
    tokenizer.save_pretrained(run_dir / MODEL_DIR)
    from tfattn.tasks.runs import write_labels

    write_labels(run_dir, label_names)
    scores = entity_scores(
        validation_sentences.tags, predict_word_tags(model, validation_encoded), label_names
    )
    scores["source"] = validation_sentences.source
    write_json(run_dir / "validation_entities.json", scores)
    (run_dir / "validation_entities.txt").write_text(format_entity_report(scores) + "\n", encoding="utf-8")
    print(format_entity_report(scores))
    finish_training(run_dir, f"validation entity F1 {scores['f1']:.4f}")
    return scores


class EntityTagger:
    """Raw texts -> entities with character offsets, like the HF token-classification pipeline
    with `aggregation_strategy="simple"` (words labelled by their first sub-token).

    `forward(features) -> probabilities [batch, tokens, labels]` runs the model: a live
    `TokenClassifier` (`from_run`) or an exported SavedModel (`from_export`).
    """

    def __init__(self, forward, tokenizer, label_names, max_length=128, classifier=None):
        self.forward = forward
        self.tokenizer = tokenizer
        self.label_names = list(label_names)
        self.max_length = max_length
        self.classifier = classifier

    @classmethod
    def from_run(cls, run_dir):
        from tfattn.pretrained import load_token_classifier, load_tokenizer
        from tfattn.tasks.runs import LABEL_MAP_FILE
        from tfattn.data import load_label_map

        run_dir = Path(run_dir)
        config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
        classifier = TokenClassifier(load_token_classifier(run_dir / MODEL_DIR))
        return cls(
            lambda features: tf.nn.softmax(classifier(features, training=False)),
            load_tokenizer(run_dir / MODEL_DIR),
            load_label_map(run_dir / LABEL_MAP_FILE),
            config.get("max_length", 128),
            classifier=classifier,
        )

    @classmethod
    def from_export(cls, export_dir):
        """The tagger of a folder written by `export_entity_tagger` (SavedModel + tokenizer)."""
        from tfattn.pretrained import load_tokenizer

        export_dir = Path(export_dir)
        serve = tf.saved_model.load(str(export_dir)).signatures["serving_default"]
        meta = json.loads((export_dir / TAGGER_FILE).read_text(encoding="utf-8"))

        def forward(features):
            return serve(**features)["probabilities"]

        return cls(forward, load_tokenizer(export_dir / TOKENIZER_DIR), meta["label_names"], meta["max_length"])

    def _encode(self, texts):
        """The tokenizer's encoding (offsets, word ids) and the model's int32 features."""
        encoding = self.tokenizer(
            list(texts), truncation=True, max_length=self.max_length, padding=True,
            return_offsets_mapping=True, return_tensors="np",
        )
        features = {
            name: tf.constant(encoding[name] if name in encoding else np.zeros_like(encoding["input_ids"]), tf.int32)
            for name in FEATURE_NAMES
        }
        return encoding, features

    def __call__(self, texts, batch_size=32):
        """Entities of each text: a list (per text) of dicts `entity_group, score, word, start, end`."""
        if isinstance(texts, str):
            texts = [texts]
        results = []
        for start in range(0, len(texts), batch_size):
            batch = list(texts[start : start + batch_size])
            encoding, features = self._encode(batch)
            probabilities = np.asarray(self.forward(features))
            for row, text in enumerate(batch):
                results.append(
                    group_entities(
                        text,
                        encoding["offset_mapping"][row],
                        probabilities[row].argmax(axis=-1),
                        probabilities[row].max(axis=-1),
                        self.label_names,
                        word_ids=encoding.word_ids(row),
                    )
                )
        return results

    def attention_maps(self, texts):
        """`(tokens, scores [batch, layers, heads, seq, seq])`, as `tfattn.attention` reads them."""
        if self.classifier is None:
            raise ValueError("attention maps need the run folder's model, not an export")
        encoding, features = self._encode(texts)
        _, attentions = self.classifier(features, training=False, output_attentions=True)
        tokens = [
            self.tokenizer.convert_ids_to_tokens(ids[mask.astype(bool)].tolist())
            for ids, mask in zip(encoding["input_ids"], encoding["attention_mask"])
        ]
        return tokens, tf.stack(attentions, axis=1).numpy()


class _TaggerModule(tf.Module):
    def __init__(self, classifier):
        super().__init__()
        self.classifier = classifier

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32, name=name) for name in FEATURE_NAMES])
    def serve(self, input_ids, attention_mask, token_type_ids):
        features = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        probabilities = tf.nn.softmax(self.classifier(features, training=False))
        return {
            "probabilities": probabilities,
            "label_ids": tf.argmax(probabilities, axis=-1, output_type=tf.int32),
            "scores": tf.reduce_max(probabilities, axis=-1),
        }


def export_entity_tagger(tagger, export_dir, overwrite=False):
    """Write a SavedModel with `serving_default(input_ids, attention_mask, token_type_ids)` ->
    `probabilities`, `label_ids`, `scores` per token, plus the tokenizer (`tokenizer/`) and
    label names (`tagger.json`) beside it, which `EntityTagger.from_export` uses to turn the
    tokens back into entities with character offsets."""
    if tagger.classifier is None:
        raise ValueError("export needs a tagger with its model (EntityTagger.from_run)")
    module = _TaggerModule(tagger.classifier)

    def write(staging):
        tf.saved_model.save(module, str(staging), signatures={"serving_default": module.serve})
        tagger.tokenizer.save_pretrained(staging / TOKENIZER_DIR)
        meta = {"label_names": tagger.label_names, "max_length": tagger.max_length}
        (staging / TAGGER_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

    return write_atomically(export_dir, write, overwrite)
