"""Named-entity recognition (CoNLL-2003): the task for `tfattn.training.loop.train`, word-level
scoring of a model on CoNLL files, and `EntityTagger`, raw texts -> entities with offsets.

    config = TrainConfig(task="ner", data="conll2003/train.txt", backbone="path/to/bert", run_dir="runs/ner")
    scores = train(config)                          # entity P/R/F1 per type on valid.txt
    tagger = EntityTagger.from_run("runs/ner")      # or EntityTagger.from_export("exported/ner")
    tagger(["Dmitry flew from Moscow to Berlin."])  # [[{"entity_group": "PER", ...}, ...]]

The model is a `tfattn.models.TokenClassifier`; the loss and metrics skip the positions
labelled `IGNORE_INDEX` (special tokens, later sub-tokens are trained with the I- tag). Words
are labelled by their first sub-token; entities are grouped by `tfattn.tagging.group_entities`.
With `TrainConfig.word_shape` the model also reads each sub-token's casing in the raw text
(`tfattn.tagging.word_shape_ids`): from the words when training and validating, and in the graph
from raw text when evaluating, tagging and serving the export.
"""

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfattn.data import TaggedSentences, load_conll
from tfattn.data.pipelines import make_dataset, warn_about_texts
from tfattn.models import TokenClassifier
from tfattn.pretrained import HF_FEATURE_NAMES
from tfattn.runs.folders import write_report
from tfattn.tagging import (
    AGGREGATION_STRATEGIES,
    IGNORE_INDEX,
    OUTSIDE,
    SHAPE_FEATURE,
    entity_scores,
    format_entity_report,
    group_entities,
    word_predictions,
)
from tfattn.tasks.classification import Validation
from tfattn.tasks.encoder_task import EncoderTask
from tfattn.training.metrics import masked_token_accuracy


def masked_token_loss(labels, logits):
    """Mean cross-entropy over the positions whose label is not `IGNORE_INDEX`."""
    labels = tf.cast(labels, tf.int32)
    keep = tf.cast(labels != IGNORE_INDEX, tf.float32)
    losses = keras.losses.sparse_categorical_crossentropy(tf.maximum(labels, 0), logits, from_logits=True)
    return tf.reduce_sum(losses * keep) / tf.maximum(tf.reduce_sum(keep), 1.0)


def _ragged(rows):
    lengths = [len(row) for row in rows]
    values = np.fromiter((value for row in rows for value in row), dtype=np.int32, count=sum(lengths))
    return tf.RaggedTensor.from_row_lengths(values, np.asarray(lengths, np.int64))


def encoded_features(encoded):
    """The model's ragged feature dict of `tfattn.tagging.tokenize_and_align` output (with the word
    shape ids when it holds them)."""
    features = {name: _ragged(encoded[hf_name]) for name, hf_name in HF_FEATURE_NAMES.items() if hf_name in encoded}
    if SHAPE_FEATURE in encoded:
        features[SHAPE_FEATURE] = _ragged(encoded[SHAPE_FEATURE])
    return features


def predict_word_tags(model, encoded, batch_size=64, dataset=None):
    """Predicted label ids per word for sentences encoded by `tokenize_and_align`; pass
    `dataset` (unshuffled batches of `encoded_features(encoded)`) to reuse one built earlier."""
    if dataset is None:
        dataset = make_dataset(encoded_features(encoded), _ragged(encoded["labels"]), batch_size)
    predictions = []
    for features, _ in dataset:
        predictions.extend(model(features, training=False).numpy().argmax(axis=-1))
    return [
        word_predictions(word_ids, row[: len(word_ids)], num_words)
        for word_ids, row, num_words in zip(encoded["word_ids"], predictions, encoded["num_words"])
    ]


def predict_sentence_tags(model, sentences, batch_size=32):
    """Predicted label ids per word of `TaggedSentences`, from raw text alone: each sentence's
    words joined by spaces go through the model's in-graph tokenizer (and word shapes, for a
    model that reads them), and a word takes the label of the first sub-token starting at its
    first character ("O" if truncation left it none)."""
    outside = model.label_names.index(OUTSIDE) if OUTSIDE in model.label_names else 0
    results = []
    for start in range(0, len(sentences), batch_size):
        batch = sentences.words[start : start + batch_size]
        tagged = model.tag_tokens(tf.constant([" ".join(words) for words in batch]))
        label_ids, offsets = tagged["label_ids"].numpy(), tagged["offsets"].numpy()
        for row, words in enumerate(batch):
            first_token = {}
            for position, (token_start, token_end) in enumerate(offsets[row]):
                if token_end > token_start:
                    first_token.setdefault(int(token_start), position)
            word_starts = np.cumsum([0] + [len(word) + 1 for word in words[:-1]])
            results.append([int(label_ids[row, first_token[s]]) if s in first_token else outside for s in word_starts])
    return results


class ValidationEntityScores(keras.callbacks.Callback):
    """Adds `val_entity_f1`, `val_entity_precision`, `val_entity_recall` and
    `val_token_accuracy` (word level, seqeval) to the epoch logs."""

    def __init__(self, encoded, sentences, batch_size):
        super().__init__()
        self.encoded, self.sentences = encoded, sentences
        # Built once, reused every epoch.
        self.dataset = make_dataset(encoded_features(encoded), _ragged(encoded["labels"]), batch_size)

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


def write_entity_report(scores, run_dir, prefix):
    """Write `PREFIX_scores.json` and `PREFIX_report.txt` (the entity table) into `run_dir`;
    returns the paths."""
    return write_report(run_dir, prefix, scores, format_entity_report(scores))


def evaluate_sentences(model: TokenClassifier, sentences: TaggedSentences) -> dict:
    """`entity_scores` of a `TokenClassifier` on `TaggedSentences`, from raw text."""
    scores = entity_scores(sentences.tags, predict_sentence_tags(model, sentences), sentences.label_names)
    scores["source"] = sentences.source
    return scores


class NerTask(EncoderTask):
    """One label per word (CoNLL tags): fine-tunes a Hugging Face BERT token classifier, monitored
    by the entity F1 of the validation file."""

    name = "ner"
    summary = "CoNLL-2003 named entities"
    description = (
        "CoNLL-2003 named entities. --data: a CoNLL file (2 or 4 columns) or hf:conll2003; "
        "--validation-data defaults to valid.txt beside it. Needs --backbone."
    )
    monitor = "val_entity_f1"
    serve_command = "ner"
    serve_help = "named entities of each text, one JSON line per text (NER runs)"
    export_outputs = "label_ids, labels, scores, probabilities, offsets, word_ids, label_names per token"
    # NER fine-tunes best a little faster, and reads word shapes (+0.5 entity F1 over 3 seeds
    # with the uncased MiniLM; BENCHMARKS.md).
    defaults = {"learning_rate": 5e-5, "word_shape": True}
    head_input = "token"  # what the head reads, in words

    @classmethod
    def check_config(cls, config):
        if config.label_smoothing:
            raise ValueError("--label-smoothing applies to text classification (classify, agnews, math), not to ner")
        if not config.data:
            raise ValueError("NER training needs --data: a CoNLL file (e.g. ../shared/data/conll2003/train.txt)")
        if not config.backbone:
            raise ValueError("NER training needs --backbone: a Hugging Face BERT name or local checkpoint folder")
        if config.stream:
            raise ValueError("--stream reads text classification data; ner reads its files into memory")

    @classmethod
    def default_validation_data(cls, config):
        return config.data if config.data.startswith("hf:") else str(Path(config.data).with_name("valid.txt"))

    @classmethod
    def add_arguments(cls, command, parser):
        super().add_arguments(command, parser)
        if command == "serve":
            parser.add_argument(
                "--aggregation-strategy",
                choices=AGGREGATION_STRATEGIES,
                default="first",
                help="how sub-tokens form entities, as Hugging Face names it (default first: a word takes its "
                "first sub-token's label, as tfattn trains)",
            )

    def load(self):
        c = self.config
        return (
            _first(load_conll(c.data, "train"), c.limit),
            _first(load_conll(c.validation_data, "validation"), c.validation_limit),
        )

    def data_sources(self):
        return [self.config.data, self.config.validation_data]

    def describe(self, train, validation):
        return (
            f"ner: {len(train)} training sentences from {train.source}, {len(validation)} validation "
            f"from {validation.source}"
        )

    def texts_for_vocabulary(self, train):
        return [" ".join(words) for words in train.words]

    def encode(self, family, sentences, what):
        encoded = family.encode_tagged(sentences, f"{what} sentences")
        return encoded_features(encoded), _ragged(encoded["labels"])

    def validation(self, family, sentences):
        encoded = family.encode_tagged(sentences, "validation sentences")
        return Validation(callback=ValidationEntityScores(encoded, sentences, 64), encoded=encoded)

    def build_model(self, preprocessor, encoder, label_names):
        return TokenClassifier(
            preprocessor, encoder, label_names, dropout=self.config.dropout, word_shape=self.config.word_shape
        )

    def loss(self):
        return masked_token_loss

    def metrics(self, num_labels):
        return [masked_token_accuracy]

    def report(self, saved_model, trained_model, sentences, validation, run_dir):
        scores = entity_scores(
            sentences.tags, predict_word_tags(saved_model, validation.encoded), sentences.label_names
        )
        scores["source"] = sentences.source
        write_entity_report(scores, run_dir, "validation")
        print(format_entity_report(scores))
        return scores, f"validation entity F1 {scores['f1']:.4f}"

    # --- a finished run
    def serve(self, model, texts, args):
        import json

        tagger = EntityTagger(model.tag_tokens, self.label_names, args.aggregation_strategy)
        return [json.dumps({"text": t, "entities": e}, ensure_ascii=False) for t, e in zip(texts, tagger(texts))]

    def evaluate(self, model, args):
        c = self.config
        # hf:NAME sources are read by split name: --data is a test set, else the run's validation
        # sentences, the first --validation-limit of them, as training scored them.
        sentences = load_conll(args.data or c.validation_data, "test" if args.data else "validation", self.label_names)
        if not args.data:
            sentences = _first(sentences, c.validation_limit)
        scores = evaluate_sentences(model, sentences)
        return format_entity_report(scores), lambda run_dir, prefix: write_entity_report(scores, run_dir, prefix)


class EntityTagger:
    """Raw texts -> entities with character offsets, as Hugging Face's token-classification
    pipeline gives them, from a run's `TokenClassifier` or its SavedModel export.

    Args:
        tag_tokens: strings `[batch]` -> dict with `probabilities`, `offsets` and `word_ids`
            (`TokenClassifier.tag_tokens`, or the export's serving signature).
        label_names: the tags, in the model's output order.
        aggregation_strategy: how sub-tokens make entities, as Hugging Face names it: "simple"
            (token level), "first" (a word takes its first sub-token's label: how tfattn trains,
            the default), "average" or "max" (see `tfattn.tagging.group_entities`).
    """

    def __init__(
        self, tag_tokens: Callable[[tf.Tensor], dict], label_names: Sequence[str], aggregation_strategy: str = "first"
    ):
        self.tag_tokens = tag_tokens
        self.label_names = list(label_names)
        self.aggregation_strategy = aggregation_strategy

    @classmethod
    def from_run(cls, run_dir: str | Path, aggregation_strategy: str = "first") -> "EntityTagger":
        from tfattn.tasks.base import open_run

        task, model = open_run(run_dir, "tfattn ner", expect=NerTask)
        return cls(model.tag_tokens, task.label_names, aggregation_strategy)

    @classmethod
    def from_export(cls, export_dir: str | Path, aggregation_strategy: str = "first") -> "EntityTagger":
        """The tagger of a SavedModel written by `tfattn export` for an NER run."""
        serve = tf.saved_model.load(str(export_dir)).signatures["serving_default"]
        label_names = [name.decode() for name in serve(texts=tf.constant([""]))["label_names"][0].numpy()]
        return cls(lambda texts: serve(texts=texts), label_names, aggregation_strategy)

    def __call__(self, texts: str | Sequence[str], batch_size: int = 32) -> list[list[dict]]:
        """Entities of each text: a list (per text) of dicts `entity_group, score, word, start, end`."""
        if isinstance(texts, str):
            texts = [texts]
        results = []
        cut, read = 0, 0  # texts with words past the last tagged token; tokens the model reads
        for start in range(0, len(texts), batch_size):
            batch = list(texts[start : start + batch_size])
            tagged = {name: np.asarray(value) for name, value in self.tag_tokens(tf.constant(batch)).items()}
            for row, text in enumerate(batch):
                if text[int(tagged["offsets"][row, :, 1].max(initial=0)) :].strip():
                    cut += 1
                    read = max(read, int((tagged["word_ids"][row] >= 0).sum()))
                results.append(
                    group_entities(
                        text,
                        tagged["offsets"][row],
                        tagged["probabilities"][row],
                        self.label_names,
                        word_ids=tagged["word_ids"][row],
                        aggregation_strategy=self.aggregation_strategy,
                    )
                )
        warn_about_texts(
            len(texts), truncated=cut, max_length=read, advice=f"entities were tagged in their first {read} tokens only"
        )
        return results
