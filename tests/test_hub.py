"""TF-Hub BERT path: the tiny BERT exported by `export_hub_bert` (once per session), equivalence of
its preprocess model with the Hugging Face tokenizer and of its encoder with TFBertModel,
`HubPreprocessor` / `HubEncoder` in a task model, and the loading errors.

Everything that needs the export is `slow`: writing it takes about 15 s, even for the tiny BERT.

Freezing (encoder bit-identical, head trains), fine-tuning (the encoder changes), save/load and
export of this family run through the shared harness in test_task_models.py (`hub-*` cases).
"""

import csv

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_hub as hub
from conftest import InterruptTraining
from task_harness import captured_logs, exported_tiny_hub_bert

from tfattn.cli import main
from tfattn.data import read_agnews_csv
from tfattn.models import HubEncoder, HubPreprocessor, TextClassifier
from tfattn.models.hub import HubLoadError, export_hub_bert, resolve_hub_handle
from tfattn.pretrained import load_backbone, load_tokenizer
from tfattn.tasks.config import TrainConfig
from tfattn.training.loop import train

TEXTS = [
    "Stocks fell sharply on Monday as oil prices rose.",
    "The Lakers beat the Celtics 102-99 in overtime!",
    "NASA's new probe — unaffable scientists, naïve café [MASK] talk.",
]


@pytest.fixture(scope="session")
def tiny_hub_dirs(tiny_bert_dir, tmp_path_factory):
    return exported_tiny_hub_bert(tiny_bert_dir, tmp_path_factory)


@pytest.fixture(scope="module")
def agnews_texts(agnews_csv):
    return read_agnews_csv(agnews_csv).texts[:256]


@pytest.mark.slow
def test_preprocess_ids_equal_the_hf_tokenizer(tiny_hub_dirs, tiny_bert_dir, agnews_texts):
    texts = TEXTS + agnews_texts
    tokenizer = load_tokenizer(tiny_bert_dir)
    features = hub.KerasLayer(str(tiny_hub_dirs[0]))(tf.constant(texts))
    expected = tokenizer(texts, padding="max_length", truncation=True, max_length=128, return_tensors="np")
    assert features["input_word_ids"].shape == (len(texts), 128)
    np.testing.assert_array_equal(features["input_word_ids"].numpy(), expected["input_ids"])
    np.testing.assert_array_equal(features["input_mask"].numpy(), expected["attention_mask"])
    np.testing.assert_array_equal(features["input_type_ids"].numpy(), expected["token_type_ids"])

    # HubPreprocessor cuts each batch to its longest row: the tokenizer's padding=True.
    trimmed = HubPreprocessor(tiny_hub_dirs[0])(tf.constant(TEXTS))
    expected = tokenizer(TEXTS, padding=True, return_tensors="np")
    np.testing.assert_array_equal(trimmed["input_word_ids"].numpy(), expected["input_ids"])
    np.testing.assert_array_equal(trimmed["input_mask"].numpy(), expected["attention_mask"])
    assert all(value.dtype == tf.int32 for value in trimmed.values())


@pytest.mark.slow
def test_preprocess_has_tokenize_and_bert_pack_inputs_for_pairs(tiny_hub_dirs, tiny_bert_dir):
    preprocess = hub.load(str(tiny_hub_dirs[0]))
    tokenized = preprocess.tokenize(tf.constant(["unaffable cats", "hi"]))
    assert tokenized.ragged_rank == 2  # [batch, words, wordpieces], as TF-Hub preprocessors return
    assert [len(word) for word in tokenized[0].to_list()] == [3, 1]  # un ##aff ##able, cats
    special = {name: int(value) for name, value in preprocess.tokenize.get_special_tokens_dict().items()}
    assert special == {
        "vocab_size": 30522,
        "start_of_sequence_id": 101,
        "end_of_segment_id": 102,
        "padding_id": 0,
        "mask_id": 103,
    }

    pack = hub.KerasLayer(preprocess.bert_pack_inputs, arguments=dict(seq_length=24))
    second = preprocess.tokenize(tf.constant(["Is it raining?", "yes"]))
    packed = pack([tokenized, second])
    expected = load_tokenizer(tiny_bert_dir)(
        ["unaffable cats", "hi"], ["Is it raining?", "yes"], padding="max_length", max_length=24, return_tensors="np"
    )
    np.testing.assert_array_equal(packed["input_word_ids"].numpy(), expected["input_ids"])
    np.testing.assert_array_equal(packed["input_type_ids"].numpy(), expected["token_type_ids"])
    np.testing.assert_array_equal(packed["input_mask"].numpy(), expected["attention_mask"])
    assert preprocess.bert_pack_inputs([tokenized])["input_word_ids"].shape == (2, 128)  # default length


@pytest.mark.slow
def test_encoder_matches_tfbertmodel_and_returns_attention(tiny_hub_dirs, tiny_bert_dir):
    features = hub.KerasLayer(str(tiny_hub_dirs[0]))(tf.constant(TEXTS))
    module = hub.KerasLayer(str(tiny_hub_dirs[1]), trainable=True)
    outputs = module(features)
    reference = load_backbone(tiny_bert_dir)(
        input_ids=features["input_word_ids"],
        attention_mask=features["input_mask"],
        token_type_ids=features["input_type_ids"],
        output_hidden_states=True,
        output_attentions=True,
    )
    np.testing.assert_allclose(outputs["sequence_output"], reference.last_hidden_state, atol=1e-5)
    np.testing.assert_allclose(outputs["pooled_output"], reference.pooler_output, atol=1e-5)
    np.testing.assert_allclose(outputs["default"], reference.pooler_output, atol=1e-5)
    assert len(outputs["encoder_outputs"]) == 2
    np.testing.assert_allclose(outputs["encoder_outputs"][0], reference.hidden_states[1], atol=1e-5)
    attention = outputs["attention_probs"]
    assert len(attention) == 2 and attention[0].shape == (3, 2, 128, 128)
    np.testing.assert_allclose(attention[1], reference.attentions[1], atol=1e-5)
    np.testing.assert_allclose(tf.reduce_sum(attention[1], axis=-1), np.ones((3, 2, 128)), atol=1e-5)
    assert len(module.trainable_weights) == len(module.weights) == 39  # all of BERT, pooler included

    # HubEncoder: the module's outputs under the model contract's names.
    encoder = HubEncoder(tiny_hub_dirs[1])
    contract = encoder(features, output_attentions=True)
    np.testing.assert_allclose(contract["sequence_output"], reference.last_hidden_state, atol=1e-5)
    np.testing.assert_allclose(contract["pooled_output"], reference.pooler_output, atol=1e-5)
    np.testing.assert_allclose(contract["attention_scores"][0], reference.attentions[0], atol=1e-5)
    assert "attention_scores" not in encoder(features)


def test_export_refuses_a_folder_without_vocab_and_an_existing_output(tiny_bert_dir, tmp_path, capsys):
    assert main(["export-hub", "--from", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "no vocab.txt" in error and error.count("\n") == 1
    assert not (tmp_path / "out").exists()
    (tmp_path / "hub" / "encoder").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="encoder already exists; pass overwrite=True"):
        export_hub_bert(tiny_bert_dir, tmp_path / "hub")
    assert sorted(p.name for p in (tmp_path / "hub").iterdir()) == ["encoder"]  # nothing written


@pytest.mark.slow
def test_padding_trim_leaves_predictions_unchanged(tiny_hub_dirs):
    model = TextClassifier(
        HubPreprocessor(tiny_hub_dirs[0]), HubEncoder(tiny_hub_dirs[1]), num_classes=3, pooling="mean"
    )
    padded = model.preprocessor.module(tf.constant(TEXTS[:2]))  # the module's fixed 128 columns
    trimmed = model.preprocessor(tf.constant(TEXTS[:2]))
    assert padded["input_word_ids"].shape[1] == 128 and trimmed["input_word_ids"].shape[1] == 13
    padded = {name: tf.cast(padded[name], tf.int32) for name in trimmed}
    np.testing.assert_allclose(model(padded, training=False), model(trimmed, training=False), atol=1e-5)

    # Attention names the wordpieces from the module's vocab.txt asset.
    [maps] = model.attention(TEXTS[1])
    assert maps.tokens[:3] == ["[CLS]", "the", "lakers"] and maps.tokens[-1] == "[SEP]"
    assert maps.attention.shape == (2, 2, len(maps.tokens), len(maps.tokens))


def test_handle_errors_are_one_line_and_name_the_handle(tmp_path):
    with pytest.raises(HubLoadError, match="no-such-folder: no such folder"):
        resolve_hub_handle(tmp_path / "no-such-folder", "encoder")
    (tmp_path / "not_a_model").mkdir()
    with pytest.raises(HubLoadError, match="not_a_model: not a SavedModel folder"):
        HubEncoder(tmp_path / "not_a_model")
    url = "https://tfhub.dev/tensorflow/bert_en_uncased_preprocess/3"
    with pytest.raises(HubLoadError) as error:
        resolve_hub_handle(url, "preprocess model")
    message = str(error.value)
    assert url in message and "export-hub" in message and "\n" not in message


def test_config_saves_local_hub_folders_absolute_and_urls_as_given(tmp_path, monkeypatch):
    # A run keeps its handles; a relative folder would load only from the folder it was trained in.
    (tmp_path / "hub" / "preprocess").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    config = TrainConfig(hub_preprocess="hub/preprocess", hub_encoder="https://tfhub.dev/encoder/1").resolve()
    assert config.hub_preprocess == str(tmp_path.resolve() / "hub" / "preprocess")
    assert config.hub_encoder == "https://tfhub.dev/encoder/1"


def test_cli_reports_unreachable_hub_handle_in_one_line(agnews_csv, tmp_path, capsys):
    argv = [
        "train",
        "agnews",
        "--data",
        str(agnews_csv),
        "--limit",
        "40",
        "--run-dir",
        str(tmp_path / "r"),
        "--hub-preprocess",
        "https://tfhub.dev/tensorflow/bert_en_uncased_preprocess/3",
        "--hub-encoder",
        str(tmp_path),
    ]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "bert_en_uncased_preprocess" in error and "Traceback" not in error and error.count("\n") == 1


@pytest.mark.slow
def test_two_phase_training_resumes_without_redoing_the_frozen_phase(tiny_hub_dirs, agnews_csv, tmp_path, capsys):
    run_dir = tmp_path / "run"
    config = TrainConfig(
        data=str(agnews_csv),
        run_dir=str(run_dir),
        limit=160,
        epochs=1,
        batch_size=16,
        learning_rate=5e-5,
        hub_preprocess=str(tiny_hub_dirs[0]),
        hub_encoder=str(tiny_hub_dirs[1]),
        freeze_epochs=1,
        patience=5,
    )
    with pytest.raises(KeyboardInterrupt):
        train(config, callbacks=[InterruptTraining(1, when="begin")])  # stops as the fine-tuning phase begins
    assert (run_dir / "phases" / "frozen" / "weights.index").exists()
    capsys.readouterr()
    with captured_logs() as logs:
        report = train(config)
    out = capsys.readouterr().out
    assert "phase 'frozen' already finished" in out
    assert not [line for line in logs + out.splitlines() if "non-serializable" in line]
    with open(run_dir / "history.csv") as handle:
        assert [int(row["epoch"]) for row in csv.DictReader(handle)] == [0, 1]
    assert 0.0 <= report.accuracy <= 1.0 and report.num_examples == 16

    # The run folder works with the other commands.
    assert main(["predict", "--run", str(run_dir), "Stocks rally as tech earnings beat forecasts"]) == 0
    assert main(["attention", "--run", str(run_dir), "Stocks rally", "--out", str(tmp_path / "a.png")]) == 0
    assert (tmp_path / "a.png").stat().st_size > 10_000


@pytest.mark.slow
def test_hub_model_trains_under_mirrored_strategy_over_two_cpu_devices(tiny_hub_dirs, agnews_csv, tmp_path):
    # A SavedModel restored under a strategy runs only in a replica context: the model is built
    # through `strategy.run`, as `fit` calls it.
    config = TrainConfig(
        data=str(agnews_csv),
        run_dir=str(tmp_path / "run"),
        limit=100,
        epochs=1,
        batch_size=16,
        hub_preprocess=str(tiny_hub_dirs[0]),
        hub_encoder=str(tiny_hub_dirs[1]),
        freeze_epochs=1,
        strategy="mirrored",
    )
    report = train(config)
    assert report.num_examples == 10
    with open(tmp_path / "run" / "history.csv") as handle:
        losses = [float(row["loss"]) for row in csv.DictReader(handle)]
    assert len(losses) == 2 and all(np.isfinite(losses))
