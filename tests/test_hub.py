"""TF-Hub BERT path: hub-format export of the offline MiniLM, equivalence with Hugging Face,
the frozen-then-fine-tuned classifier, its run folder and export, and the loading errors."""

import csv

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_hub as hub
import tf_keras as keras
from conftest import InterruptTraining

from tfattn.attention import extract_attention
from tfattn.cli import main
from tfattn.data import read_agnews_csv
from tfattn.export import export_text_classifier
from tfattn.hub import (
    HubBertClassifier,
    HubLoadError,
    export_hub_bert,
    load_hub_classifier,
    resolve_hub_handle,
    save_hub_classifier,
)
from tfattn.optimization import create_optimizer
from tfattn.pretrained import load_backbone, load_tokenizer
from tfattn.tasks.config import TrainConfig
from tfattn.tasks.trainer import train

TEXTS = [
    "Stocks fell sharply on Monday as oil prices rose.",
    "The Lakers beat the Celtics 102-99 in overtime!",
    "NASA's new probe — unaffable scientists, naïve café [MASK] talk.",
]


@pytest.fixture(scope="module")
def hub_dirs(minilm_dir, tmp_path_factory):
    """The offline MiniLM in TF-Hub format, written by the `tfattn export-hub` command."""
    out = tmp_path_factory.mktemp("hub") / "minilm"
    assert main(["export-hub", "--from", str(minilm_dir), "--out", str(out)]) == 0
    return out / "preprocess", out / "encoder"


@pytest.fixture(scope="module")
def agnews_texts(agnews_csv):
    return read_agnews_csv(agnews_csv).texts[:256]


def test_preprocess_ids_equal_the_hf_tokenizer(hub_dirs, minilm_dir, agnews_texts):
    preprocess = hub.KerasLayer(str(hub_dirs[0]))
    texts = TEXTS + agnews_texts
    features = preprocess(tf.constant(texts))
    expected = load_tokenizer(minilm_dir)(texts, padding="max_length", truncation=True, max_length=128, return_tensors="np")
    assert features["input_word_ids"].shape == (len(texts), 128)
    np.testing.assert_array_equal(features["input_word_ids"].numpy(), expected["input_ids"])
    np.testing.assert_array_equal(features["input_mask"].numpy(), expected["attention_mask"])
    np.testing.assert_array_equal(features["input_type_ids"].numpy(), expected["token_type_ids"])


def test_preprocess_has_tokenize_and_bert_pack_inputs_for_pairs(hub_dirs, minilm_dir):
    preprocess = hub.load(str(hub_dirs[0]))
    tokenized = preprocess.tokenize(tf.constant(["unaffable cats", "hi"]))
    assert tokenized.ragged_rank == 2  # [batch, words, wordpieces], as TF-Hub preprocessors return
    assert [len(word) for word in tokenized[0].to_list()] == [3, 1]  # un ##aff ##able, cats
    special = {name: int(value) for name, value in preprocess.tokenize.get_special_tokens_dict().items()}
    assert special == {"vocab_size": 30522, "start_of_sequence_id": 101, "end_of_segment_id": 102,
                       "padding_id": 0, "mask_id": 103}

    pack = hub.KerasLayer(preprocess.bert_pack_inputs, arguments=dict(seq_length=24))
    second = preprocess.tokenize(tf.constant(["Is it raining?", "yes"]))
    packed = pack([tokenized, second])
    expected = load_tokenizer(minilm_dir)(
        ["unaffable cats", "hi"], ["Is it raining?", "yes"], padding="max_length", max_length=24, return_tensors="np"
    )
    np.testing.assert_array_equal(packed["input_word_ids"].numpy(), expected["input_ids"])
    np.testing.assert_array_equal(packed["input_type_ids"].numpy(), expected["token_type_ids"])
    np.testing.assert_array_equal(packed["input_mask"].numpy(), expected["attention_mask"])
    assert preprocess.bert_pack_inputs([tokenized])["input_word_ids"].shape == (2, 128)  # default length


def test_encoder_matches_tfbertmodel_and_returns_attention(hub_dirs, minilm_dir):
    preprocess = hub.KerasLayer(str(hub_dirs[0]))
    encoder = hub.KerasLayer(str(hub_dirs[1]), trainable=True)
    features = preprocess(tf.constant(TEXTS))
    outputs = encoder(features)
    reference = load_backbone(minilm_dir)(
        input_ids=features["input_word_ids"], attention_mask=features["input_mask"],
        token_type_ids=features["input_type_ids"], output_hidden_states=True,
    )
    np.testing.assert_allclose(outputs["sequence_output"], reference.last_hidden_state, atol=1e-4)
    np.testing.assert_allclose(outputs["pooled_output"], reference.pooler_output, atol=1e-4)
    np.testing.assert_allclose(outputs["default"], reference.pooler_output, atol=1e-4)
    assert len(outputs["encoder_outputs"]) == 6
    np.testing.assert_allclose(outputs["encoder_outputs"][2], reference.hidden_states[3], atol=1e-4)
    attention = outputs["attention_probs"]
    assert len(attention) == 6 and attention[0].shape == (3, 12, 128, 128)
    np.testing.assert_allclose(tf.reduce_sum(attention[5], axis=-1), np.ones((3, 12, 128)), atol=1e-4)
    assert len(encoder.trainable_weights) == len(encoder.weights) > 100


def test_export_refuses_a_folder_without_vocab_and_an_existing_output(minilm_dir, hub_dirs, tmp_path, capsys):
    assert main(["export-hub", "--from", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "no vocab.txt" in capsys.readouterr().err
    with pytest.raises(FileExistsError, match="already exists"):
        export_hub_bert(minilm_dir, hub_dirs[0].parent)


def _encoder_values(model):
    return [v.numpy().copy() for v in model.encoder.weights]


def test_encoder_changes_only_when_unfrozen(hub_dirs):
    model = HubBertClassifier(*hub_dirs, num_classes=2)
    texts = tf.constant(["good news for markets", "bad game for the team"] * 4)
    labels = tf.constant([0, 1] * 4)
    model(texts)
    encoder_before, head_before = _encoder_values(model), model.classifier.get_weights()[0].copy()

    model.freeze_encoder()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    model.fit(texts, labels, batch_size=8, epochs=2, verbose=0)
    for before, after in zip(encoder_before, _encoder_values(model)):
        np.testing.assert_array_equal(before, after)
    assert not np.allclose(head_before, model.classifier.get_weights()[0])

    model.unfreeze_encoder()
    model.compile(optimizer=create_optimizer(1e-4, total_steps=2), loss="sparse_categorical_crossentropy")
    model.fit(texts, labels, batch_size=8, epochs=2, verbose=0)
    changed = [not np.array_equal(b, a) for b, a in zip(encoder_before, _encoder_values(model))]
    assert sum(changed) > 0.9 * len(changed)


def test_padding_trim_leaves_predictions_unchanged(hub_dirs):
    model = HubBertClassifier(*hub_dirs, num_classes=3)
    features = model.preprocessor(tf.constant(TEXTS[:2]))
    trimmed = model.preprocess(tf.constant(TEXTS[:2]))
    assert trimmed["input_word_ids"].shape[1] < 128
    np.testing.assert_allclose(model(features), model(trimmed), atol=1e-5)


def test_save_load_export_and_attention_round_trip(hub_dirs, tmp_path):
    model = HubBertClassifier(*hub_dirs, num_classes=4)
    model(tf.constant(TEXTS))
    model.classifier.set_weights([w + 0.1 for w in model.classifier.get_weights()])
    expected = model(tf.constant(TEXTS)).numpy()

    save_hub_classifier(model, tmp_path / "saved")
    np.testing.assert_allclose(load_hub_classifier(tmp_path / "saved")(tf.constant(TEXTS)), expected, atol=1e-5)

    export_text_classifier(model, ["a", "b", "c", "d"], tmp_path / "export")
    served = tf.saved_model.load(str(tmp_path / "export")).signatures["serving_default"](texts=tf.constant(TEXTS))
    np.testing.assert_allclose(served["probabilities"], expected, atol=1e-5)

    [maps] = extract_attention(model, TEXTS[1])
    assert maps.tokens[:3] == ["[CLS]", "the", "lakers"] and maps.tokens[-1] == "[SEP]"
    assert maps.attention.shape == (6, 12, len(maps.tokens), len(maps.tokens))


def test_handle_errors_are_one_line_and_name_the_handle(tmp_path):
    with pytest.raises(HubLoadError, match="no-such-folder: no such folder"):
        resolve_hub_handle(tmp_path / "no-such-folder", "encoder")
    (tmp_path / "not_a_model").mkdir()
    with pytest.raises(HubLoadError, match="not_a_model: not a SavedModel folder"):
        resolve_hub_handle(tmp_path / "not_a_model", "encoder")
    url = "https://tfhub.dev/tensorflow/bert_en_uncased_preprocess/3"
    with pytest.raises(HubLoadError) as error:
        resolve_hub_handle(url, "preprocess model")
    message = str(error.value)
    assert url in message and "export-hub" in message and "\n" not in message


def test_cli_reports_unreachable_hub_handle_in_one_line(agnews_csv, tmp_path, capsys):
    argv = ["train", "agnews", "--data", str(agnews_csv), "--limit", "40", "--run-dir", str(tmp_path / "r"),
            "--hub-preprocess", "https://tfhub.dev/tensorflow/bert_en_uncased_preprocess/3",
            "--hub-encoder", str(tmp_path)]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "bert_en_uncased_preprocess" in error and "Traceback" not in error and error.count("\n") == 1


@pytest.mark.slow
def test_two_phase_training_resumes_without_redoing_the_frozen_phase(hub_dirs, agnews_csv, tmp_path, capsys):
    run_dir = tmp_path / "run"
    config = TrainConfig(
        data=str(agnews_csv), run_dir=str(run_dir), limit=160, epochs=1, batch_size=16, learning_rate=5e-5,
        hub_preprocess=str(hub_dirs[0]), hub_encoder=str(hub_dirs[1]), freeze_epochs=1, patience=5,
    )
    with pytest.raises(KeyboardInterrupt):
        train(config, callbacks=[InterruptTraining(1, when="begin")])  # stops as the fine-tuning phase begins
    assert (run_dir / "phases" / "frozen" / "weights.index").exists()
    capsys.readouterr()
    report = train(config)
    assert "phase 'frozen' already finished" in capsys.readouterr().out
    with open(run_dir / "history.csv") as handle:
        assert [int(row["epoch"]) for row in csv.DictReader(handle)] == [0, 1]
    assert 0.0 <= report.accuracy <= 1.0 and report.num_examples == 16

    # The run folder works with the other commands.
    assert main(["predict", "--run", str(run_dir), "Stocks rally as tech earnings beat forecasts"]) == 0
    assert main(["attention", "--run", str(run_dir), "Stocks rally", "--out", str(tmp_path / "a.png")]) == 0
    assert (tmp_path / "a.png").stat().st_size > 10_000
