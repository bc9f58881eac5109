"""Length-bucketed and bfloat16 serving of exports: each text gets its own outputs, whatever its batch.

An export sorts a batch's rows by length and runs the encoder on buckets each padded to its own
longest row (`tfattn.serving.classifiers.in_length_buckets`); these tests check what that must not change
(every text's outputs, their order, token offsets) and what it must do (cut each bucket to its
longest row), plus the bfloat16 export option and the CLI flags. Speed itself is measured by
bench/serving.py, not here.
"""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tfattn.cli import main
from tfattn.data import NER_LABELS
from tfattn.models import (
    HuggingFaceEncoder,
    TextClassifier,
    TokenClassifier,
    TransformerEncoder,
    VocabularyPreprocessor,
)
from tfattn.models.wordpiece import BertPreprocessor, bert_preprocessor_from_pretrained
from tfattn.serving.classifiers import computing_in, export_model, in_length_buckets

TEXTS = [
    "stocks fell on wall street as oil prices rose",
    "the team won the final game",
    "new chip from intel",
    "oil prices rose",
    "the final game of the season was won by the team after a long night of stocks and chips",
]
LABELS = ["World", "Sports", "Business", "Sci/Tech"]
# Short and long rows in no order, an empty text, and more rows than one bucket holds.
MIXED_BATCH = [TEXTS[2], " ".join(TEXTS * 3), TEXTS[0], "", TEXTS[3], TEXTS[1], TEXTS[4]]


@pytest.fixture(scope="module")
def text_model():
    preprocessor = VocabularyPreprocessor.adapt(TEXTS, vocab_size=60, max_length=48)
    encoder = TransformerEncoder(
        len(preprocessor.vocabulary), max_length=48, embed_dim=16, num_heads=2, ff_dim=32, num_blocks=2
    )
    model = TextClassifier(preprocessor, encoder, num_classes=4, pooling="mean")
    model(tf.constant(TEXTS[:1]), training=False)
    return model


def _features(lengths, width):
    """Features of rows with the given lengths, ids 1..length, padded to `width`."""
    ids = np.zeros((len(lengths), width), np.int32)
    for row, length in enumerate(lengths):
        ids[row, :length] = np.arange(1, length + 1) + 10 * row
    ids = tf.constant(ids)
    return {"input_word_ids": ids, "input_mask": tf.sign(ids), "input_type_ids": tf.zeros_like(ids)}


def test_buckets_are_cut_to_their_longest_row_and_outputs_keep_the_input_order():
    lengths = [5, 1, 3, 2, 4]
    features = _features(lengths, width=7)  # the batch is padded wider than its longest row
    seen = []

    def row_sums(bucket):
        seen.append(bucket["input_mask"].numpy())
        return tf.cast(tf.reduce_sum(bucket["input_word_ids"], axis=1, keepdims=True), tf.float32)

    outputs = in_length_buckets(row_sums, features, bucket_rows=2, output_shape=[1])
    expected = tf.reduce_sum(features["input_word_ids"], axis=1).numpy()
    np.testing.assert_array_equal(outputs.numpy()[:, 0], expected)
    # Sorted by length (1, 2 | 3, 4 | 5), each bucket as wide as its longest row: no padding
    # beyond what the rows of a bucket differ by.
    assert [mask.shape for mask in seen] == [(2, 2), (2, 4), (1, 5)]
    assert [mask.sum(axis=1).tolist() for mask in seen] == [[1, 2], [3, 4], [5]]


def test_per_token_outputs_are_padded_back_to_the_batch_width():
    features = _features([3, 1, 2], width=4)

    def token_values(bucket):
        return tf.cast(bucket["input_word_ids"], tf.float32)[:, :, None]

    outputs = in_length_buckets(token_values, features, bucket_rows=1, output_shape=[1], per_token=True)
    np.testing.assert_array_equal(outputs.numpy()[:, :, 0], features["input_word_ids"].numpy())


def test_an_empty_batch_has_outputs_of_the_right_shape():
    features = _features([], width=0)
    outputs = in_length_buckets(lambda bucket: tf.zeros([0, 4]), features, bucket_rows=4, output_shape=[4])
    assert outputs.shape == (0, 4)
    with pytest.raises(ValueError, match="bucket_rows must be at least 1"):
        in_length_buckets(lambda bucket: tf.zeros([0, 4]), features, bucket_rows=0, output_shape=[4])


@pytest.fixture(scope="module")
def default_export(text_model, tmp_path_factory):
    """The default export of `text_model`, with 2-row buckets instead of 16, so that the mixed
    batch spans several buckets."""
    folder = tmp_path_factory.mktemp("export") / "default"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("tfattn.serving.classifiers.DEFAULT_BUCKET_ROWS", 2)
        export_model(text_model, LABELS, folder)
    return tf.saved_model.load(str(folder)).signatures["serving_default"]


@pytest.mark.slow
def test_default_export_serves_each_text_as_it_serves_it_alone(text_model, default_export):
    served = default_export(texts=tf.constant(MIXED_BATCH))
    probabilities = served["probabilities"].numpy()
    # The rows differ, so that a row served in another row's place would be caught.
    assert np.ptp(probabilities[:, 0]) > 1e-3
    alone = np.concatenate([default_export(texts=tf.constant([text]))["probabilities"].numpy() for text in MIXED_BATCH])
    np.testing.assert_allclose(probabilities, alone, atol=1e-6)
    # And what the model gives with the whole batch padded to its longest row.
    model_probabilities = tf.nn.softmax(text_model(tf.constant(MIXED_BATCH), training=False)).numpy()
    np.testing.assert_allclose(probabilities, model_probabilities, atol=1e-6)
    assert [label.decode() for label in served["label"].numpy()] == [LABELS[i] for i in alone.argmax(axis=1)]
    assert served["label_names"].shape == (len(MIXED_BATCH), len(LABELS))
    assert default_export(texts=tf.constant([], tf.string))["probabilities"].shape == (0, len(LABELS))


@pytest.mark.slow
def test_bucketed_token_classifier_tags_each_text_as_alone(tmp_path):
    # Any encoder will do: buckets are cut from the preprocessor's features. A small one keeps
    # this fast; the WordPiece preprocessor gives the offsets the export serves.
    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "angela", "merkel", "visited", "paris", ".", "oil", "rose"]
    vocabulary += ["in", "new", "york", ",", "london", "and", "tokyo", "on", "monday", "morning", "##s", "hi"]
    model = TokenClassifier(
        BertPreprocessor(vocabulary=vocabulary, max_length=32),
        TransformerEncoder(len(vocabulary), max_length=32, embed_dim=8, num_heads=2, ff_dim=16),
        NER_LABELS,
        word_shape=True,  # a feature of its own, which buckets must cut like the others
    )
    texts = ["Angela Merkel visited Paris.", "Oil rose in New York, London and Tokyo on Monday morning.", "Hi"]
    model.tag_tokens(tf.constant(texts[:1]))  # builds the word shape table, zeros: make it count
    table = model.word_shape_embedding
    table.set_weights([np.random.default_rng(0).normal(size=table.get_weights()[0].shape)])
    export_model(model, NER_LABELS, tmp_path / "export", bucket_rows=1)
    served = {
        name: value.numpy()
        for name, value in tf.saved_model.load(str(tmp_path / "export"))
        .signatures["serving_default"](texts=tf.constant(texts))
        .items()
    }
    batch = {name: value.numpy() for name, value in model.tag_tokens(tf.constant(texts)).items()}
    mask = model.preprocessor(tf.constant(texts))["input_mask"].numpy().astype(bool)
    assert served["probabilities"].shape == batch["probabilities"].shape
    np.testing.assert_array_equal(served["offsets"], batch["offsets"])
    np.testing.assert_array_equal(served["word_ids"], batch["word_ids"])
    for row, text in enumerate(texts):
        alone = model.tag_tokens(tf.constant([text]))
        length = mask[row].sum()
        np.testing.assert_allclose(served["probabilities"][row, :length], alone["probabilities"][0], atol=1e-5)
        np.testing.assert_array_equal(served["label_ids"][row, :length], alone["label_ids"][0])
        np.testing.assert_array_equal(
            served["labels"][row, :length], np.asarray(NER_LABELS, object)[alone["label_ids"][0]].astype(bytes)
        )
    np.testing.assert_allclose(served["probabilities"][mask], batch["probabilities"][mask], atol=1e-5)
    # Past a text's last token nothing is predicted.
    assert not served["probabilities"][~mask].any() and not served["scores"][~mask].any()

    # A token classifier's default export pads the batch as `tag_tokens` does: the same outputs
    # everywhere, padding positions included.
    export_model(model, NER_LABELS, tmp_path / "default")
    default = tf.saved_model.load(str(tmp_path / "default")).signatures["serving_default"](texts=tf.constant(texts))
    for name in ("probabilities", "scores"):
        np.testing.assert_allclose(default[name].numpy(), batch[name], atol=1e-6)
    for name in ("label_ids", "offsets", "word_ids"):
        np.testing.assert_array_equal(default[name].numpy(), batch[name])


@pytest.mark.slow
def test_bfloat16_export_serves_probabilities_close_to_float32(text_model, tmp_path):
    policy = keras.mixed_precision.global_policy().name
    export_model(text_model, LABELS, tmp_path / "bf16", dtype="bfloat16")
    assert keras.mixed_precision.global_policy().name == policy  # the caller's policy is back
    served = tf.saved_model.load(str(tmp_path / "bf16")).signatures["serving_default"](texts=tf.constant(MIXED_BATCH))
    expected = tf.nn.softmax(text_model(tf.constant(MIXED_BATCH), training=False)).numpy()
    probabilities = served["probabilities"].numpy()
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities, expected, atol=2e-2)
    assert not np.allclose(probabilities, expected, atol=1e-6)  # it did compute in bfloat16


@pytest.mark.slow
def test_bfloat16_copy_of_a_bert_model_keeps_its_weights_in_float32(tiny_bert_dir):
    model = TextClassifier(
        bert_preprocessor_from_pretrained(tiny_bert_dir, max_length=32),
        HuggingFaceEncoder.from_pretrained(tiny_bert_dir),
        num_classes=4,
        pooling="mean",
    )
    texts = tf.constant(["Angela Merkel visited Paris.", "Stocks fell."])
    copy = computing_in(model, "bfloat16")
    assert copy is not model and computing_in(model, "float32") is model
    assert {weight.dtype for weight in copy.weights} == {tf.float32}
    for original, copied in zip(model.weights, copy.weights, strict=True):
        np.testing.assert_array_equal(original.numpy(), copied.numpy())
    np.testing.assert_allclose(
        tf.nn.softmax(copy(texts, training=False)), tf.nn.softmax(model(texts, training=False)), atol=2e-2
    )
    # The feed-forward GELU (erf) runs in float32: exact, then rounded to bfloat16 once.
    x = tf.cast(tf.linspace(-4.0, 4.0, 101), tf.bfloat16)
    activations = [
        layer.intermediate_act_fn for layer in copy._flatten_layers() if hasattr(layer, "intermediate_act_fn")
    ]
    assert activations
    exact = tf.cast(keras.activations.gelu(tf.cast(x, tf.float32), approximate=False), tf.bfloat16)
    for activation in activations:
        np.testing.assert_array_equal(activation(x).numpy(), exact.numpy())
    with pytest.raises(ValueError, match="dtype must be one of float32, bfloat16"):
        computing_in(model, "float16")


def test_cli_export_passes_bucket_rows_and_dtype(monkeypatch, tmp_path, capsys):
    from pathlib import Path

    from tfattn.tasks.classification import AgNewsTask
    from tfattn.tasks.config import TrainConfig

    def open_run(run, command="", serving=False):
        task = AgNewsTask(TrainConfig())
        task.run_dir, task.label_names = Path(run), LABELS
        return task, "model"

    calls = []
    monkeypatch.setattr("tfattn.tasks.base.open_run", open_run)
    monkeypatch.setattr(
        "tfattn.serving.classifiers.export_model", lambda model, labels, out, **options: calls.append(options) or out
    )
    out = str(tmp_path / "export")
    assert main(["export", "--run", "run", "--out", out, "--bucket-rows", "4", "--dtype", "bfloat16"]) == 0
    assert main(["export", "--run", "run", "--out", out]) == 0
    assert calls == [
        {"overwrite": False, "bucket_rows": 4, "dtype": "bfloat16", "protected": (Path("run"),)},
        {"overwrite": False, "bucket_rows": None, "dtype": "float32", "protected": (Path("run"),)},
    ]
    with pytest.raises(SystemExit):
        main(["export", "--run", "run", "--out", out, "--bucket-rows", "-1"])
    assert "--bucket-rows" in capsys.readouterr().err
