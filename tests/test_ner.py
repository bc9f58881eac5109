"""NER runs: the masked loss, entity tagging of raw text with offsets, and (slow) training on a
slice of CoNLL-2003 with the offline MiniLM, the `tfattn ner` command, attention and export."""

import csv
import json

import numpy as np
import pytest
import tensorflow as tf

from tfattn.attention import extract_attention
from tfattn.cli import main
from tfattn.data import NER_LABELS
from tfattn.ner import IGNORE_INDEX
from tfattn.pretrained import load_tokenizer
from tfattn.tasks.ner import EntityTagger, NerConfig, masked_token_accuracy, masked_token_loss


def test_masked_loss_and_accuracy_skip_ignored_positions():
    logits = tf.constant([[[2.0, 0.0], [0.0, 2.0], [5.0, -5.0]]])
    labels = tf.constant([[0, 0, IGNORE_INDEX]])
    # Two kept positions: -log softmax = log(1 + e^-2) and log(1 + e^2).
    expected = (np.log1p(np.exp(-2.0)) + np.log1p(np.exp(2.0))) / 2
    np.testing.assert_allclose(masked_token_loss(labels, logits), expected, rtol=1e-6)
    np.testing.assert_allclose(masked_token_accuracy(labels, logits), 0.5)
    all_ignored = tf.fill([1, 3], IGNORE_INDEX)
    assert float(masked_token_loss(all_ignored, logits)) == 0.0


def test_config_defaults_validation_file_and_requires_a_backbone(tmp_path):
    config = NerConfig(data=str(tmp_path / "train.txt"), backbone="bert").resolve()
    assert config.validation_data == str(tmp_path / "valid.txt")
    with pytest.raises(ValueError, match="--backbone"):
        NerConfig(data="train.txt").resolve()


def test_tagger_groups_entities_with_offsets_from_model_probabilities(minilm_dir):
    tokenizer = load_tokenizer(minilm_dir)
    text = "Paris Hilton flew to Paris ."
    label = {name: index for index, name in enumerate(NER_LABELS)}
    # A fake model that tags by word: Paris Hilton = PER, the second Paris = LOC.
    word_labels = ["B-PER", "I-PER", "O", "O", "B-LOC", "O"]

    def forward(features):
        encoding = tokenizer([text], padding=True)
        probabilities = np.full((1, features["input_ids"].shape[1], len(NER_LABELS)), 0.01, np.float32)
        for position, word in enumerate(encoding.word_ids(0)):
            name = "O" if word is None else word_labels[word]
            probabilities[0, position, label[name]] = 0.9
        return probabilities

    [entities] = EntityTagger(forward, tokenizer, NER_LABELS)([text])
    assert entities == [
        {"entity_group": "PER", "score": pytest.approx(0.9), "word": "Paris Hilton", "start": 0, "end": 12},
        {"entity_group": "LOC", "score": pytest.approx(0.9), "word": "Paris", "start": 21, "end": 26},
    ]


@pytest.fixture(scope="module")
def ner_run(minilm_dir, conll_train, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ner") / "run"
    argv = ["train", "ner", "--data", str(conll_train), "--backbone", str(minilm_dir), "--run-dir", str(run_dir),
            "--limit", "256", "--validation-limit", "128", "--epochs", "3", "--learning-rate", "2e-4",
            "--batch-size", "16"]
    assert main(argv) == 0
    return run_dir


@pytest.mark.slow
def test_training_on_a_slice_writes_scores_and_learns(ner_run):
    scores = json.loads((ner_run / "validation_entities.json").read_text())
    assert set(scores["per_type"]) == {"PER", "ORG", "LOC", "MISC"}
    assert scores["support"] == sum(s["support"] for s in scores["per_type"].values()) > 100
    # 256 sentences are enough to find entities well above chance (an untrained head scores
    # ~0.07); the best epoch is the one kept (Keras's "auto" mode would keep the worst F1).
    history = list(csv.DictReader((ner_run / "history.csv").open()))
    assert len(history) == 3
    assert scores["f1"] == pytest.approx(max(float(row["val_entity_f1"]) for row in history), abs=1e-6)
    assert scores["f1"] > 0.25


@pytest.mark.slow
def test_ner_command_attention_and_export_round_trip(ner_run, tmp_path, capsys):
    text = "Peter Blackburn of the European Commission said on Thursday in Brussels ."
    capsys.readouterr()
    assert main(["ner", "--run", str(ner_run), text]) == 0
    [line] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    entities = json.loads(line)["entities"]
    for entity in entities:
        assert text[entity["start"] : entity["end"]] == entity["word"]
        assert entity["entity_group"] in {"PER", "ORG", "LOC", "MISC"} and 0 < entity["score"] <= 1

    tagger = EntityTagger.from_run(ner_run)
    [maps] = extract_attention(tagger, text)
    assert maps.tokens[0] == "[CLS]" and maps.attention.shape == (6, 12, len(maps.tokens), len(maps.tokens))

    assert main(["export", "--run", str(ner_run), "--out", str(tmp_path / "export")]) == 0
    exported = EntityTagger.from_export(tmp_path / "export")
    [served], [live] = exported([text]), tagger([text])
    assert [_without_score(e) for e in served] == [_without_score(e) for e in live]
    np.testing.assert_allclose([e["score"] for e in served], [e["score"] for e in live], atol=1e-5)


def _without_score(entity):
    return {key: value for key, value in entity.items() if key != "score"}
