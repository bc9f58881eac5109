"""Hugging Face BERT models: `HuggingFaceEncoder` + `BertPreprocessor` in a `TextClassifier`, on the
tiny random BERT (2 layers, hidden 32, MiniLM's vocabulary); the real MiniLM checkpoint only where
its weights matter (`slow`). Fit, save/load, export and attention shapes of this family run
through the shared harness in test_task_models.py."""

import shutil

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from task_harness import captured_logs

from tfattn.models import HuggingFaceEncoder, TextClassifier, load_model, save_model
from tfattn.models.preprocessors import HF_FEATURE_NAMES
from tfattn.models.wordpiece import bert_preprocessor_from_pretrained
from tfattn.pretrained import PretrainedLoadError, load_backbone, load_tokenizer, tokenize_texts
from tfattn.tasks.config import TrainConfig
from tfattn.tasks.encoder_task import load_run
from tfattn.training.loop import train
from tfattn.training.optimizer import create_optimizer

TEXTS = ["Find the area of a circle of radius 3.", "How many primes are less than 20?"]


@pytest.fixture(scope="module")
def tokenizer(tiny_bert_dir):
    return load_tokenizer(tiny_bert_dir)


def _classifier(checkpoint, pooling, num_classes=3, max_length=64):
    return TextClassifier(
        bert_preprocessor_from_pretrained(checkpoint, max_length=max_length),
        HuggingFaceEncoder.from_pretrained(checkpoint),
        num_classes=num_classes,
        pooling=pooling,
    )


def _hf_features(tokenizer, texts, **kwargs):
    """The fast tokenizer's batch under the model contract's feature names."""
    encoded = tokenizer(texts, padding=True, return_tensors="tf", **kwargs)
    return {name: tf.cast(encoded[hf_name], tf.int32) for name, hf_name in HF_FEATURE_NAMES.items()}


@pytest.mark.slow
def test_strings_in_the_model_give_what_the_hf_tokenizer_ids_give(tiny_bert_dir, tokenizer, tmp_path):
    """The in-graph WordPiece feeds the backbone the checkpoint tokenizer's ids (with its
    truncation), before and after a save/load round trip; attention names the wordpieces."""
    model = _classifier(tiny_bert_dir, "mean", max_length=8)
    texts = TEXTS + ["tiny"]
    expected = model(_hf_features(tokenizer, texts, truncation=True, max_length=8), training=False).numpy()
    np.testing.assert_allclose(model(tf.constant(texts), training=False), expected, atol=1e-5)

    loaded = load_model(save_model(model, tmp_path / "model"))
    np.testing.assert_allclose(loaded(tf.constant(texts), training=False), expected, atol=1e-5)

    [attention] = loaded.attention(TEXTS[1])
    assert attention.tokens == ["[CLS]", "how", "many", "prime", "##s", "are", "less", "[SEP]"]  # cut to 8
    assert attention.attention.shape == (2, 2, 8, 8)


@pytest.mark.slow
def test_mean_pooling_ignores_padding(tiny_bert_dir, tokenizer):
    mean = _classifier(tiny_bert_dir, "mean")
    short = _hf_features(tokenizer, TEXTS[:1])
    padded = {name: tf.pad(value, [[0, 0], [0, 15]]) for name, value in short.items()}  # 15 [PAD] (id 0)
    np.testing.assert_allclose(mean(padded, training=False), mean(short, training=False), atol=1e-5)
    # Without the mask the 15 pad positions would shift the mean: the test can tell.
    unmasked = dict(padded, input_mask=tf.ones_like(padded["input_mask"]))
    assert np.abs(mean(unmasked, training=False) - mean(short, training=False)).max() > 1e-3
    # CLS pooling over the same encoder and head differs from mean pooling.
    cls = TextClassifier(mean.preprocessor, mean.encoder, num_classes=3, pooling="cls")
    cls(short)
    cls.head.set_weights(mean.head.get_weights())
    assert np.abs(cls(short, training=False) - mean(short, training=False)).max() > 1e-3


@pytest.mark.slow
def test_frozen_backbone_stays_bit_identical_while_head_trains(tiny_bert_dir, tokenizer):
    """With the trainer's optimizer (AdamW with weight decay, warmup): a frozen backbone is
    neither trained nor decayed; unfrozen, all of it but the unread pooler trains."""
    model = _classifier(tiny_bert_dir, "cls", num_classes=2)
    features = _hf_features(tokenizer, TEXTS)
    model(features)
    model.freeze_encoder()
    model.compile(
        optimizer=create_optimizer(1e-2, total_steps=4, weight_decay=0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        run_eagerly=True,
    )
    backbone_before = [w.numpy().copy() for w in model.encoder.weights]
    head_before = [w.numpy().copy() for w in model.trainable_weights]
    assert len(head_before) == 2  # only the head's kernel and bias train
    model.fit(features, np.array([0, 1]), epochs=3, verbose=0)  # step 0 of the warmup has rate 0
    assert all(np.array_equal(b, w.numpy()) for b, w in zip(backbone_before, model.encoder.weights, strict=True))
    assert all(not np.array_equal(b, w.numpy()) for b, w in zip(head_before, model.trainable_weights, strict=True))
    model.unfreeze_encoder()
    names = [w.name for w in model.encoder.trainable_weights]
    assert len(names) == 37 and not [name for name in names if "pooler" in name]  # cls does not read the pooler


def test_tokenize_texts_gives_unpadded_ragged_features(tokenizer):
    features = tokenize_texts(tokenizer, ["a b c", "hello"], max_length=4)
    assert sorted(features) == ["input_mask", "input_type_ids", "input_word_ids"]
    ids = features["input_word_ids"]
    assert isinstance(ids, tf.RaggedTensor) and ids.dtype == tf.int32
    assert ids.row_lengths().numpy().tolist() == [4, 3]  # truncated to 4 with [SEP]
    assert ids.to_list() == [[101, 1037, 1038, 102], [101, 7592, 102]]
    assert features["input_mask"].to_list() == [[1, 1, 1, 1], [1, 1, 1]]
    assert features["input_type_ids"].to_list() == [[0, 0, 0, 0], [0, 0, 0]]


def test_unreachable_hub_name_is_a_one_line_error():
    with pytest.raises(PretrainedLoadError, match="'no-such-org/no-such-bert'.*local checkpoint folder") as caught:
        load_tokenizer("no-such-org/no-such-bert")
    assert "\n" not in str(caught.value)


def test_missing_checkpoint_files_are_named_in_one_line(tiny_bert_dir, tmp_path):
    with pytest.raises(PretrainedLoadError, match="no config.json"):
        HuggingFaceEncoder.from_pretrained(tmp_path)
    no_weights = tmp_path / "no_weights"
    shutil.copytree(tiny_bert_dir, no_weights, ignore=shutil.ignore_patterns("*.h5", "*.safetensors"))
    with pytest.raises(PretrainedLoadError) as caught:
        HuggingFaceEncoder.from_pretrained(no_weights)
    message = str(caught.value)
    assert message.startswith(str(no_weights)) and "no tf_model.h5 or model.safetensors or pytorch_model.bin" in message
    assert "\n" not in message


@pytest.mark.slow
def test_real_minilm_checkpoint_loads_its_weights_and_embeds_by_meaning(minilm_dir):
    """The MiniLM folder holds PyTorch safetensors weights only: they are converted on load (no
    layer newly initialized), the 6 layers x 12 heads give attention, and the mean-pooled
    sentence vectors of all-MiniLM-L6-v2 put paraphrases closer than unrelated sentences."""
    from safetensors.numpy import load_file

    encoder = HuggingFaceEncoder.from_pretrained(minilm_dir)
    preprocessor = bert_preprocessor_from_pretrained(minilm_dir)
    texts = ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby."]
    features = preprocessor(tf.constant(texts))
    outputs = encoder(features, output_attentions=True)
    length = features["input_mask"].shape[1]
    assert [tuple(a.shape) for a in outputs["attention_scores"]] == [(3, 12, length, length)] * 6

    stored = load_file(str(minilm_dir / "model.safetensors"))
    prefix = "" if "embeddings.word_embeddings.weight" in stored else "bert."
    by_name = {w.name: w.numpy() for w in encoder.weights}
    word_embeddings = next(v for n, v in by_name.items() if "word_embeddings" in n)
    np.testing.assert_array_equal(word_embeddings, stored[prefix + "embeddings.word_embeddings.weight"])
    query = next(v for n, v in by_name.items() if "layer_._5/attention/self/query/kernel" in n)
    np.testing.assert_array_equal(query, stored[prefix + "encoder.layer.5.attention.self.query.weight"].T)
    # The same backbone loaded by transformers itself gives the same sequence output.
    reference = load_backbone(minilm_dir)(**{hf: features[name] for name, hf in HF_FEATURE_NAMES.items()})
    np.testing.assert_allclose(outputs["sequence_output"], reference.last_hidden_state, atol=1e-5)

    mask = tf.cast(features["input_mask"], tf.float32)[:, :, None]
    vectors = tf.reduce_sum(outputs["sequence_output"] * mask, 1) / tf.reduce_sum(mask, 1)
    vectors = tf.math.l2_normalize(vectors, axis=-1).numpy()
    paraphrase, unrelated = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
    assert paraphrase > 0.6 and unrelated < 0.3, (paraphrase, unrelated)


@pytest.mark.slow
def test_fine_tuning_logs_no_non_serializable_warning(tiny_bert_dir, agnews_csv, tmp_path, capfd):
    """The trainer's whole fine-tuning run (checkpoints, best-epoch weights, TensorBoard, saved
    model) on the tiny BERT: no Keras "non-serializable" warning anywhere, and the run loads."""
    config = TrainConfig(
        task="agnews",
        data=str(agnews_csv),
        run_dir=str(tmp_path / "run"),
        backbone=str(tiny_bert_dir),
        limit=48,
        epochs=2,
        batch_size=16,
        max_length=32,
        learning_rate=1e-3,
    )
    with captured_logs() as logs:
        report = train(config)
    out, err = capfd.readouterr()
    assert not [line for line in logs + (out + err).splitlines() if "non-serializable" in line]
    assert report.num_examples > 0
    model, label_names, _ = load_run(tmp_path / "run")
    assert isinstance(model, TextClassifier) and model.pooling == "cls" and len(label_names) == 4
    probabilities = model.predict_proba(["Stocks rally as tech earnings beat forecasts"])
    assert probabilities.shape == (1, 4) and np.isclose(probabilities.sum(), 1.0, atol=1e-5)
