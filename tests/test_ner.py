"""NER runs: the masked loss, the NER config, entity tagging of raw text with offsets, and (slow)
a run trained on a slice of CoNLL-2003 with the tiny random BERT: its scores, `tfattn evaluate`
on a CoNLL file, the raw-text scoring path, the `tfattn ner` command, attention, and the export
served in a process that knows nothing of tfattn."""

import csv
import json
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest
import tensorflow as tf
from task_harness import tiny_ner_config

from tfattn.cli import main
from tfattn.data import NER_LABELS, load_conll
from tfattn.models import TokenClassifier, TransformerEncoder, VocabularyPreprocessor
from tfattn.models.wordpiece import bert_preprocessor_from_pretrained
from tfattn.tagging import IGNORE_INDEX, format_entity_report, group_entities
from tfattn.tasks.config import TrainConfig
from tfattn.tasks.encoder_task import load_run
from tfattn.tasks.ner import EntityTagger, evaluate_sentences, masked_token_loss
from tfattn.training.loop import train
from tfattn.training.metrics import masked_token_accuracy

LABEL = {name: index for index, name in enumerate(NER_LABELS)}
ENTITY_KEYS = {"entity_group", "score", "word", "start", "end"}


def test_masked_loss_and_accuracy_skip_ignored_positions():
    logits = tf.constant([[[2.0, 0.0], [0.0, 2.0], [5.0, -5.0]]])
    labels = tf.constant([[0, 0, IGNORE_INDEX]])
    # Two kept positions: -log softmax = log(1 + e^-2) and log(1 + e^2).
    expected = (np.log1p(np.exp(-2.0)) + np.log1p(np.exp(2.0))) / 2
    np.testing.assert_allclose(masked_token_loss(labels, logits), expected, rtol=1e-6)
    np.testing.assert_allclose(masked_token_accuracy(labels, logits), 0.5)
    all_ignored = tf.fill([1, 3], IGNORE_INDEX)
    assert float(masked_token_loss(all_ignored, logits)) == 0.0


def test_ner_config_defaults_validation_file_and_requires_data_and_a_backbone(tmp_path):
    config = TrainConfig(task="ner", data=str(tmp_path / "train.txt"), backbone="bert").resolve()
    assert config.validation_data == str(tmp_path / "valid.txt")
    # NER fine-tunes with its own learning rate; the other pretrained defaults stay.
    assert (config.learning_rate, config.max_length, config.batch_size, config.epochs) == (5e-5, 128, 32, 3)
    assert TrainConfig(task="ner", data="hf:conll2003", backbone="bert").resolve().validation_data == "hf:conll2003"
    with pytest.raises(ValueError, match="NER training needs --backbone"):
        TrainConfig(task="ner", data="train.txt").resolve()
    with pytest.raises(ValueError, match="NER training needs --data"):
        TrainConfig(task="ner", backbone="bert").resolve()


def test_train_ner_command_without_a_backbone_is_a_one_line_error(tmp_path, capsys):
    assert main(["train", "ner", "--data", str(tmp_path / "train.txt"), "--run-dir", str(tmp_path / "r")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: NER training needs --backbone") and "\n" not in error
    assert not (tmp_path / "r").exists()


def test_tagging_raw_text_needs_a_preprocessor_with_offsets():
    preprocessor = VocabularyPreprocessor(["paris", "hilton"], max_length=8)
    encoder = TransformerEncoder(vocab_size=4, max_length=8, embed_dim=8, num_heads=2, ff_dim=8)
    model = TokenClassifier(preprocessor, encoder, NER_LABELS)
    assert model(tf.constant(["Paris Hilton", "x"])).shape == (2, 2, len(NER_LABELS))
    with pytest.raises(ValueError, match="needs character offsets, which VocabularyPreprocessor does not give"):
        model.tag_tokens(tf.constant(["Paris Hilton"]))


def _fake_tag_tokens(preprocessor, word_labels):
    """`tag_tokens` of a fake model that labels every sub-token of word i of a text with
    `word_labels[text][i]` (probability 0.9), from the real in-graph tokenizer's offsets."""

    def tag_tokens(texts):
        encoded = preprocessor.encode_with_offsets(texts)
        word_ids = encoded["word_ids"].numpy()
        probabilities = np.full(word_ids.shape + (len(NER_LABELS),), 0.1 / (len(NER_LABELS) - 1), np.float32)
        for row, text in enumerate(texts.numpy()):
            for position, word in enumerate(word_ids[row]):
                name = "O" if word < 0 else word_labels[text.decode()][word]
                probabilities[row, position, LABEL[name]] = 0.9
        return {"probabilities": probabilities, "offsets": encoded["offsets"], "word_ids": encoded["word_ids"]}

    return tag_tokens


def test_tagger_groups_entities_with_offsets_from_token_probabilities(tiny_bert_dir):
    preprocessor = bert_preprocessor_from_pretrained(tiny_bert_dir, max_length=32)
    # "Schwarzenegger" is three pieces (schwarz ##ene ##gger); the fake model labels words.
    word_labels = {
        "Paris Hilton flew to Paris .": ["B-PER", "I-PER", "O", "O", "B-LOC", "O"],
        "Schwarzenegger met the EU": ["B-PER", "O", "O", "B-ORG"],
        "nothing here": ["O", "O"],
    }
    texts = list(word_labels)
    tagger = EntityTagger(_fake_tag_tokens(preprocessor, word_labels), NER_LABELS)
    assert tagger.aggregation_strategy == "first"
    # Batches of 2: the third text comes from a second batch, results stay in text order.
    results = tagger(texts, batch_size=2)
    assert [[(e["entity_group"], e["word"], e["start"], e["end"]) for e in entities] for entities in results] == [
        [("PER", "Paris Hilton", 0, 12), ("LOC", "Paris", 21, 26)],
        [("PER", "Schwarzenegger", 0, 14), ("ORG", "EU", 23, 25)],
        [],
    ]
    for entities in results:
        for entity in entities:
            assert set(entity) == ENTITY_KEYS and entity["score"] == pytest.approx(0.9)
    # One string is one text.
    assert tagger(texts[1]) == [results[1]]
    # "simple" groups token by token: each piece of the word is a B-PER, so each starts an entity.
    simple = EntityTagger(_fake_tag_tokens(preprocessor, word_labels), NER_LABELS, aggregation_strategy="simple")
    assert [(e["entity_group"], e["word"], e["start"], e["end"]) for e in simple(texts[1])[0]] == [
        ("PER", "Schwarz", 0, 7),
        ("PER", "ene", 7, 10),
        ("PER", "gger", 10, 14),
        ("ORG", "EU", 23, 25),
    ]
    with pytest.raises(ValueError, match="aggregation_strategy must be one of"):
        EntityTagger(_fake_tag_tokens(preprocessor, word_labels), NER_LABELS, "mean")(texts)


# --- a trained run (slow) -------------------------------------------------------------------

VALIDATION_LIMIT = 64


@pytest.fixture(scope="module")
def ner_run(tiny_bert_dir, conll_train, conll_valid, tmp_path_factory):
    """500 CoNLL training sentences, 6 epochs on the tiny BERT (about a minute); validated on
    the first 64 sentences of the validation file. Returns (run folder, the returned scores)."""
    run_dir = tmp_path_factory.mktemp("ner") / "run"
    sizes = dict(limit=500, validation_limit=VALIDATION_LIMIT, epochs=6, patience=6)
    config = tiny_ner_config(conll_train, conll_valid, tiny_bert_dir, run_dir, **sizes)
    scores = train(config)
    return run_dir, scores


def _texts(conll_valid, count):
    return [" ".join(words) for words in load_conll(conll_valid).words[:count]]


def _write_conll(path, sentences):
    """Write `TaggedSentences` as a two-column CoNLL file."""
    lines = []
    for words, tags in zip(sentences.words, sentences.tags):
        lines += [f"{word} {sentences.label_names[tag]}" for word, tag in zip(words, tags)] + [""]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.slow
def test_training_writes_the_run_folder_and_learns_entities(ner_run):
    run_dir, scores = ner_run
    assert {
        "run.json",
        "config.json",
        "labels.json",
        "history.csv",
        "logs",
        "checkpoints",
        "validation_scores.json",
        "validation_report.txt",
    } <= {p.name for p in run_dir.iterdir()}
    assert {"model.json", "weights.index"} <= {p.name for p in (run_dir / "model").iterdir()}
    assert not (run_dir / "vocab.txt").exists()  # the WordPiece vocabulary lives in model.json
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"
    assert json.loads((run_dir / "labels.json").read_text())["label_names"] == NER_LABELS

    saved = json.loads((run_dir / "validation_scores.json").read_text())
    assert saved == {**scores, "source": saved["source"]}
    assert set(saved["per_type"]) == {"PER", "ORG", "LOC", "MISC"}
    assert saved["support"] == sum(s["support"] for s in saved["per_type"].values()) == 142
    assert (run_dir / "validation_report.txt").read_text().strip() == format_entity_report(saved)
    # The best epoch is the one kept (Keras's "auto" mode would keep the worst F1), and 500
    # sentences teach even a random tiny BERT entities well above chance.
    history = list(csv.DictReader((run_dir / "history.csv").open()))
    assert len(history) == 6
    assert saved["f1"] == pytest.approx(max(float(row["val_entity_f1"]) for row in history), abs=1e-6)
    assert saved["f1"] > 0.3

    model, label_names, config = load_run(run_dir)
    assert isinstance(model, TokenClassifier) and model.label_names == label_names == NER_LABELS
    assert config["task"] == "ner" and config["validation_limit"] == VALIDATION_LIMIT


@pytest.mark.slow
def test_evaluate_command_scores_a_conll_file_from_raw_text(ner_run, conll_valid, tmp_path, capsys):
    run_dir, _ = ner_run
    validation = json.loads((run_dir / "validation_scores.json").read_text())
    # The run's own validation sentences as a CoNLL file of their own: `evaluate` reads the
    # words joined by spaces through the model's in-graph tokenizer, training scored the
    # Hugging Face tokenizer's pieces; both must find the same entities.
    sentences = load_conll(conll_valid).subset(range(VALIDATION_LIMIT))
    data = _write_conll(tmp_path / "first64.txt", sentences)
    capsys.readouterr()
    assert main(["evaluate", "--run", str(run_dir), "--data", str(data)]) == 0
    out = capsys.readouterr().out
    written = json.loads((run_dir / "test_scores.json").read_text())
    assert written["source"] == str(data)
    assert {k: v for k, v in written.items() if k != "source"} == {k: v for k, v in validation.items() if k != "source"}
    table = format_entity_report(written)
    assert table in out and f"wrote {run_dir / 'test_scores.json'}, {run_dir / 'test_report.txt'}" in out
    assert (run_dir / "test_report.txt").read_text().strip() == table
    for entity_type in ("PER", "ORG", "LOC", "MISC"):
        row = written["per_type"][entity_type]
        assert any(
            line.split()
            == [entity_type, f"{row['precision']:.4f}", f"{row['recall']:.4f}", f"{row['f1']:.4f}", str(row["support"])]
            for line in out.splitlines()
        )

    # The Python API: the same scores on the same sentences.
    model = load_run(run_dir)[0]
    direct = evaluate_sentences(model, sentences)
    assert direct["f1"] == pytest.approx(validation["f1"], abs=1e-12) and direct["per_type"] == validation["per_type"]

    # Without --data: the run's validation sentences again (the first --validation-limit of its
    # validation file), so the report it rewrites keeps its numbers.
    assert main(["evaluate", "--run", str(run_dir)]) == 0
    assert json.loads((run_dir / "validation_scores.json").read_text()) == validation


@pytest.mark.slow
def test_evaluate_reads_the_test_split_of_a_hugging_face_dataset(ner_run, monkeypatch, capsys):
    run_dir, _ = ner_run
    calls = []

    class FakeDataset:
        column_names = ["id", "tokens", "ner_tags"]
        features = {"ner_tags": types.SimpleNamespace(feature=types.SimpleNamespace(names=NER_LABELS))}

        def __getitem__(self, column):
            return {
                "tokens": [["EU", "rejects", "German", "call"], ["Peter", "Blackburn"]],
                "ner_tags": [[3, 0, 7, 0], [1, 2]],
            }[column]

    def load_dataset(name, split):
        calls.append((name, split))
        return FakeDataset()

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    assert main(["evaluate", "--run", str(run_dir), "--data", "hf:conll2003", "--prefix", "hf"]) == 0
    assert calls == [("conll2003", "test")]
    scores = json.loads((run_dir / "hf_scores.json").read_text())
    assert scores["source"] == "hf:conll2003[test]" and scores["support"] == 3


@pytest.mark.slow
def test_ner_command_groups_like_the_tagger_and_aggregation_changes_only_grouping(ner_run, conll_valid, capsys):
    run_dir, _ = ner_run
    texts = _texts(conll_valid, 40)
    model = load_run(run_dir)[0]
    tagged = {name: np.asarray(value) for name, value in model.tag_tokens(tf.constant(texts)).items()}

    def grouped(strategy):
        return [
            group_entities(
                text,
                tagged["offsets"][row],
                tagged["probabilities"][row],
                NER_LABELS,
                word_ids=tagged["word_ids"][row],
                aggregation_strategy=strategy,
            )
            for row, text in enumerate(texts)
        ]

    def command(*options):
        capsys.readouterr()
        assert main(["ner", "--run", str(run_dir), *options, *texts]) == 0
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
        assert [line["text"] for line in lines] == texts
        for line in lines:
            assert set(line) == {"text", "entities"}
            for entity in line["entities"]:
                assert set(entity) == ENTITY_KEYS and line["text"][entity["start"] : entity["end"]] == entity["word"]
                assert entity["entity_group"] in {"PER", "ORG", "LOC", "MISC"} and 0 < entity["score"] <= 1
        return [line["entities"] for line in lines]

    first, simple = grouped("first"), grouped("simple")
    assert sum(map(len, first)) >= 20  # the run finds entities, so the comparison means something
    assert first != simple  # somewhere a word's pieces disagree
    for options, expected in (
        ((), first),
        (("--aggregation-strategy", "first"), first),
        (("--aggregation-strategy", "simple"), simple),
    ):
        printed = command(*options)
        assert [[_without_score(e) for e in entities] for entities in printed] == [
            [_without_score(e) for e in entities] for entities in expected
        ], options
        np.testing.assert_allclose(
            [e["score"] for entities in printed for e in entities],
            [e["score"] for entities in expected for e in entities],
            atol=1e-5,
        )
    assert EntityTagger.from_run(run_dir, aggregation_strategy="simple")(texts) == command(
        "--aggregation-strategy", "simple"
    )


@pytest.mark.slow
def test_predict_refuses_an_ner_run_and_attention_shows_the_wordpieces(ner_run, tiny_bert_dir, tmp_path, capsys):
    run_dir, _ = ner_run
    assert main(["predict", "--run", str(run_dir), "Peter flew to Paris"]) == 2
    assert f"{run_dir} is a run of task 'ner', not for 'tfattn predict': use 'tfattn ner --run {run_dir} TEXT'" in (
        capsys.readouterr().err
    )

    from tfattn.pretrained import load_tokenizer

    text = "Peter Blackburn of the European Commission said on Thursday in Brussels ."
    [maps] = load_run(run_dir)[0].attention(text)
    assert maps.tokens == load_tokenizer(tiny_bert_dir)(text).tokens()
    assert maps.tokens[0] == "[CLS]" and maps.tokens[-1] == "[SEP]"
    assert maps.attention.shape == (2, 2, len(maps.tokens), len(maps.tokens))  # the tiny BERT's layers, heads
    np.testing.assert_allclose(maps.attention.sum(axis=-1), 1.0, atol=1e-5)
    png = tmp_path / "ner_attention.png"
    assert main(["attention", "--run", str(run_dir), text, "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


SERVE = textwrap.dedent(
    """
    import json
    import sys

    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (the export's WordPiece ops)

    export_dir, texts_file, out_file = sys.argv[1:]
    with open(texts_file, encoding="utf-8") as handle:
        texts = json.load(handle)
    serve = tf.saved_model.load(export_dir).signatures["serving_default"]
    outputs = serve(texts=tf.constant(texts))
    result = {name: value.numpy().tolist() for name, value in outputs.items()}
    for name in ("labels", "label_names"):
        result[name] = [[item.decode("utf-8") for item in row] for row in result[name]]
    result["tfattn_modules"] = sorted(name for name in sys.modules if name.split(".")[0] == "tfattn")
    with open(out_file, "w", encoding="utf-8") as handle:
        json.dump(result, handle)
    """
)


@pytest.mark.slow
def test_export_served_without_tfattn_gives_the_entities_of_the_run(ner_run, conll_valid, tmp_path, capsys):
    run_dir, _ = ner_run
    export_dir = tmp_path / "export"
    assert main(["export", "--run", str(run_dir), "--out", str(export_dir)]) == 0
    assert (
        "label_ids, labels, scores, probabilities, offsets, word_ids, label_names per token" in capsys.readouterr().out
    )
    texts = _texts(conll_valid, 32)
    (tmp_path / "texts.json").write_text(json.dumps(texts), encoding="utf-8")
    (tmp_path / "serve.py").write_text(SERVE, encoding="utf-8")
    result = subprocess.run(
        [
            sys.executable,
            str(tmp_path / "serve.py"),
            str(export_dir),
            str(tmp_path / "texts.json"),
            str(tmp_path / "served.json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    served = json.loads((tmp_path / "served.json").read_text(encoding="utf-8"))
    assert served.pop("tfattn_modules") == []
    assert served["label_names"] == [NER_LABELS] * len(texts)

    # Per-token outputs: those of the run's model.
    model = load_run(run_dir)[0]
    live = {name: np.asarray(value) for name, value in model.tag_tokens(tf.constant(texts)).items()}
    for name in ("offsets", "word_ids", "label_ids"):
        np.testing.assert_array_equal(served[name], live[name], err_msg=name)
    np.testing.assert_allclose(served["probabilities"], live["probabilities"], atol=1e-5)
    np.testing.assert_allclose(served["scores"], np.max(served["probabilities"], axis=-1), atol=1e-7)
    assert served["labels"] == [[NER_LABELS[i] for i in row] for row in served["label_ids"]]

    # Grouped in this process with the "first" strategy: exactly the run's entities and offsets.
    grouped = [
        group_entities(
            text,
            served["offsets"][row],
            served["probabilities"][row],
            served["label_names"][row],
            word_ids=served["word_ids"][row],
            aggregation_strategy="first",
        )
        for row, text in enumerate(texts)
    ]
    expected = EntityTagger.from_run(run_dir)(texts)
    assert sum(map(len, expected)) >= 15
    assert [[_without_score(e) for e in entities] for entities in grouped] == [
        [_without_score(e) for e in entities] for entities in expected
    ]
    np.testing.assert_allclose(
        [e["score"] for entities in grouped for e in entities],
        [e["score"] for entities in expected for e in entities],
        atol=1e-5,
    )
    # And the tagger over the export, in this process, agrees as well.
    exported = EntityTagger.from_export(export_dir)(texts)
    assert [[_without_score(e) for e in entities] for entities in exported] == [
        [_without_score(e) for e in entities] for entities in expected
    ]


def _without_score(entity):
    return {key: value for key, value in entity.items() if key != "score"}
