"""The NER word-shape feature: the casing classes, the training route (Hugging Face tokenizer on
words) and the serving route (in-graph offsets on raw text) agreeing on CoNLL, the
`TokenClassifier` that reads them (zero start, save/load, mixed precision, refusals) and (slow)
a run trained with `word_shape=True` whose saved model and export tag raw text alike."""

import json

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from task_harness import tiny_ner_config

from tfattn.cli import main
from tfattn.data import NER_LABELS, read_conll
from tfattn.models import HuggingFaceEncoder, TokenClassifier, TransformerEncoder, VocabularyPreprocessor
from tfattn.models.task_models import load_model, save_model
from tfattn.models.wordpiece import bert_preprocessor_from_pretrained
from tfattn.pretrained import load_tokenizer
from tfattn.tagging import (
    SHAPE_FEATURE,
    WORD_SHAPES,
    offset_pieces,
    text_shape_ids,
    tokenize_and_align,
    word_shape_ids,
)
from tfattn.tasks.encoder_task import load_run
from tfattn.tasks.ner import EntityTagger, encoded_features, evaluate_sentences
from tfattn.training.loop import train

SHAPE = {name: index for index, name in enumerate(WORD_SHAPES)}
TEXTS = ["Angela Merkel visited PARIS in 1996 .", "the iPhone costs $ 5", "élan ÉLAN Élan"]


def _shapes(strings):
    return [WORD_SHAPES[i] for i in word_shape_ids(tf.constant(strings)).numpy()]


def test_word_shape_ids_name_every_casing_class_ascii_or_not():
    cases = {
        "": "none",
        "paris": "lower",
        "élan": "lower",
        "東京": "lower",  # a caseless script has no capitals to see
        "Paris": "title",
        "Élan": "title",
        "A": "title",  # a lone capital is a title, not upper
        "A1": "title",
        "O'neill": "title",
        "EU": "upper",
        "ÉLAN": "upper",
        "U.S.": "upper",
        "iPhone": "mixed",
        "McDonald": "mixed",
        "1A": "mixed",
        "1996": "digits",
        "3.5": "digits",
        "٣": "digits",  # an Arabic-Indic digit is a digit too
        "-": "other",
        "$": "other",
        "\n": "other",
    }
    assert _shapes(list(cases)) == list(cases.values())
    assert set(cases.values()) == set(WORD_SHAPES)

    # Any shape in, the same shape out, int32; ragged tensors keep their rows.
    grid = word_shape_ids(tf.constant([["Paris", ""], ["EU", "1996"]]))
    assert grid.dtype == tf.int32
    np.testing.assert_array_equal(grid, [[SHAPE["title"], SHAPE["none"]], [SHAPE["upper"], SHAPE["digits"]]])
    ragged = word_shape_ids(tf.ragged.constant([["élan", "Élan", "ÉLAN"], ["x"]]))
    assert ragged.to_list() == [[SHAPE["lower"], SHAPE["title"], SHAPE["upper"]], [SHAPE["lower"]]]


@pytest.fixture(scope="module")
def preprocessor(tiny_bert_dir):
    return bert_preprocessor_from_pretrained(tiny_bert_dir, max_length=128)


def test_the_pieces_are_each_tokens_own_characters_in_the_raw_text(preprocessor):
    texts = tf.constant(["McDonald's ÉLAN", "x"])
    encoded = preprocessor.encode_with_offsets(texts)
    pieces = [[piece.decode() for piece in row] for row in offset_pieces(texts, encoded["offsets"]).numpy()]
    # [CLS] mcdonald ' s el ##an [SEP]: the pieces read the original capitals and accents.
    assert pieces == [["", "McDonald", "'", "s", "ÉL", "AN", ""], ["", "x", "", "", "", "", ""]]
    assert [WORD_SHAPES[i] for i in text_shape_ids(texts, encoded["offsets"]).numpy()[0]] == [
        "none",
        "mixed",
        "other",
        "lower",
        "upper",
        "upper",
        "none",
    ]


def test_changing_the_capitals_changes_only_the_shape_ids(preprocessor):
    texts = tf.constant(["paris hilton", "Paris Hilton", "PARIS HILTON", "pARIS hilton"])
    encoded = preprocessor.encode_with_offsets(texts)
    ids = encoded["input_word_ids"].numpy()
    assert (ids == ids[0]).all()  # the uncased tokenizer sees one text four times
    shapes = text_shape_ids(texts, encoded["offsets"]).numpy()
    none, lower, title, upper, mixed = (SHAPE[name] for name in ("none", "lower", "title", "upper", "mixed"))
    np.testing.assert_array_equal(
        shapes,
        [
            [none, lower, lower, none],
            [none, title, title, none],
            [none, upper, upper, none],
            [none, mixed, lower, none],
        ],
    )


@pytest.mark.slow
def test_training_and_serving_routes_give_the_same_shapes_on_conll(tiny_bert_dir, preprocessor, conll_valid):
    sentences = read_conll(conll_valid)
    sentences = sentences.subset(range(300))
    encoded = tokenize_and_align(load_tokenizer(tiny_bert_dir), sentences, max_length=128, word_shapes=True)
    assert len(encoded[SHAPE_FEATURE]) == len(sentences)
    served_ids, served_shapes = [], []
    texts = [" ".join(words) for words in sentences.words]
    for start in range(0, len(texts), 100):
        batch = tf.constant(texts[start : start + 100])
        graph = preprocessor.encode_with_offsets(batch)
        shapes = text_shape_ids(batch, graph["offsets"]).numpy()
        lengths = graph["input_mask"].numpy().sum(axis=1)
        for row, length in enumerate(lengths):
            served_ids.append(graph["input_word_ids"].numpy()[row, :length].tolist())
            served_shapes.append(shapes[row, :length].tolist())
    assert served_ids == encoded["input_ids"]
    assert served_shapes == encoded[SHAPE_FEATURE]
    # The sentences hold every class but "mixed" (pieces of CoNLL words are rarely mixed case),
    # so the agreement covers them.
    counts = np.bincount(np.concatenate(encoded[SHAPE_FEATURE]), minlength=len(WORD_SHAPES))
    assert all(counts[SHAPE[name]] > 20 for name in ("none", "lower", "title", "upper", "digits", "other")), counts
    # Special tokens are "none", every real piece has a class.
    for word_ids, shapes in zip(encoded["word_ids"], encoded[SHAPE_FEATURE]):
        assert [shape == SHAPE["none"] for shape in shapes] == [word is None for word in word_ids]

    # Without word_shapes nothing changes but the missing feature.
    plain = tokenize_and_align(load_tokenizer(tiny_bert_dir), sentences.subset(range(5)), max_length=128)
    assert SHAPE_FEATURE not in plain and plain["input_ids"] == encoded["input_ids"][:5]
    assert sorted(encoded_features(encoded)) == ["input_mask", "input_shape_ids", "input_type_ids", "input_word_ids"]


@pytest.fixture(scope="module")
def encoder(tiny_bert_dir):
    return HuggingFaceEncoder.from_pretrained(tiny_bert_dir)


@pytest.mark.slow
def test_a_zero_shape_embedding_leaves_the_logits_of_the_model_without_it(preprocessor, encoder):
    strings = tf.constant(TEXTS)
    shaped = TokenClassifier(preprocessor, encoder, NER_LABELS, word_shape=True)
    logits = shaped(strings, training=False).numpy()
    [table] = shaped.word_shape_embedding.get_weights()
    assert table.shape == (len(WORD_SHAPES), 32)  # the tiny BERT's hidden width
    assert not table.any()
    plain = TokenClassifier(preprocessor, encoder, NER_LABELS)  # the same encoder object
    plain(strings, training=False)
    plain.head.set_weights(shaped.head.get_weights())
    # Adding a zero vector changes nothing; a tolerance, since two graphs may fuse differently per CPU.
    np.testing.assert_allclose(plain(strings, training=False).numpy(), logits, atol=1e-6)
    assert logits.dtype == np.float32 and logits.shape[:2] == (3, 10)

    # A trained (here: set) table moves exactly the tokens of the changed classes.
    table[SHAPE["upper"]] = 1.0
    shaped.word_shape_embedding.set_weights([table])
    moved = shaped(strings, training=False).numpy()
    shapes = shaped.features(strings)[SHAPE_FEATURE].numpy()
    changed = np.abs(moved - logits).max(axis=-1) > 1e-4
    np.testing.assert_array_equal(changed, shapes == SHAPE["upper"])
    assert changed.sum() == 3  # PARIS, and ÉL ##AN of ÉLAN


@pytest.mark.slow
def test_raw_strings_and_tokenized_features_give_the_same_logits(tiny_bert_dir, preprocessor, encoder):
    """The model's in-graph shapes from raw text, and the training route's from the words."""
    from tfattn.data import TaggedSentences

    model = TokenClassifier(preprocessor, encoder, NER_LABELS, word_shape=True)
    model(tf.constant(["build"]))
    model.word_shape_embedding.set_weights([np.random.default_rng(0).normal(size=(len(WORD_SHAPES), 32))])
    words = [text.split() for text in TEXTS]
    sentences = TaggedSentences(words, [[0] * len(row) for row in words], NER_LABELS, "texts")
    features = encoded_features(tokenize_and_align(load_tokenizer(tiny_bert_dir), sentences, word_shapes=True))
    dense = {name: value.to_tensor() for name, value in features.items()}
    np.testing.assert_allclose(model(dense, training=False), model(tf.constant(TEXTS), training=False), atol=1e-5)
    tagged = model.tag_tokens(tf.constant(TEXTS))
    np.testing.assert_allclose(tagged["probabilities"], tf.nn.softmax(model(dense, training=False)).numpy(), atol=1e-5)


@pytest.mark.slow
def test_the_flag_and_the_shape_weights_survive_save_and_load(preprocessor, encoder, tmp_path):
    model = TokenClassifier(preprocessor, encoder, NER_LABELS, word_shape=True, name="shaped")
    model(tf.constant(["build"]))
    table = np.random.default_rng(1).normal(size=(len(WORD_SHAPES), 32)).astype(np.float32)
    model.word_shape_embedding.set_weights([table])
    folder = save_model(model, tmp_path / "model")
    assert json.loads((folder / "model.json").read_text())["config"]["word_shape"] is True
    loaded = load_model(folder)
    assert loaded.word_shape and loaded.name == "shaped"
    np.testing.assert_array_equal(loaded.word_shape_embedding.get_weights()[0], table)
    np.testing.assert_allclose(
        loaded(tf.constant(TEXTS), training=False), model(tf.constant(TEXTS), training=False), atol=1e-5
    )

    # A model saved before the option existed (no word_shape in its config) loads without shapes.
    plain = TokenClassifier(preprocessor, encoder, NER_LABELS)
    plain(tf.constant(["build"]))
    old = save_model(plain, tmp_path / "old")
    config = json.loads((old / "model.json").read_text())
    del config["config"]["word_shape"]
    (old / "model.json").write_text(json.dumps(config))
    revived = load_model(old)
    assert revived.word_shape is False and revived.word_shape_embedding is None
    np.testing.assert_allclose(
        revived(tf.constant(TEXTS), training=False), plain(tf.constant(TEXTS), training=False), atol=1e-5
    )


def test_word_shape_is_refused_without_offsets_and_needs_its_feature(preprocessor, encoder):
    words = VocabularyPreprocessor(["paris"], max_length=8)
    scratch = TransformerEncoder(vocab_size=3, max_length=8, embed_dim=8, num_heads=2, ff_dim=8)
    with pytest.raises(ValueError, match="word_shape=True reads each token's characters") as error:
        TokenClassifier(words, scratch, NER_LABELS, word_shape=True)
    assert "VocabularyPreprocessor" in str(error.value) and "\n" not in str(error.value)
    model = TokenClassifier(preprocessor, encoder, NER_LABELS, word_shape=True)
    with pytest.raises(ValueError, match="word_shape=True needs the feature 'input_shape_ids'"):
        model(preprocessor(tf.constant(["Paris"])))


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_keeps_the_table_and_the_logits_float32(preprocessor, policy):
    """The shape vectors join the encoder's low-precision vectors; logits stay float32."""
    keras.mixed_precision.set_global_policy(policy)
    try:
        encoder = TransformerEncoder(
            vocab_size=len(preprocessor.vocabulary), max_length=128, embed_dim=8, num_heads=2, ff_dim=8
        )
        model = TokenClassifier(preprocessor, encoder, NER_LABELS, word_shape=True)
        before = model(tf.constant(TEXTS), training=False)
        assert before.dtype == tf.float32
        [table] = model.word_shape_embedding.weights
        assert table.dtype == tf.float32
        table.assign(tf.ones_like(table))
        after = model(tf.constant(TEXTS), training=False)
        assert after.dtype == tf.float32 and np.all(np.isfinite(after.numpy()))
        assert np.abs(after.numpy() - before.numpy()).max() > 1e-2
    finally:
        keras.mixed_precision.set_global_policy("float32")


# --- a trained run (slow) -------------------------------------------------------------------


@pytest.mark.slow
def test_a_word_shape_run_saves_evaluates_and_exports_alike(tiny_bert_dir, conll_train, conll_valid, tmp_path):
    run_dir = tmp_path / "run"
    sizes = dict(limit=400, validation_limit=48, epochs=4, patience=4)
    config = tiny_ner_config(conll_train, conll_valid, tiny_bert_dir, run_dir, word_shape=True, **sizes)
    scores = train(config)
    assert json.loads((run_dir / "config.json").read_text())["word_shape"] is True
    model, label_names, _ = load_run(run_dir)
    assert isinstance(model, TokenClassifier) and model.word_shape and label_names == NER_LABELS
    # The shape table trained: the classes in the data moved away from zero.
    [table] = model.word_shape_embedding.get_weights()
    assert all(np.abs(table[SHAPE[name]]).max() > 1e-3 for name in ("lower", "title", "upper"))

    # Validation scored the tokenizer's features with the words' shapes; evaluating from raw
    # text computes them in the graph: the same entities either way.
    sentences = read_conll(conll_valid).subset(range(48))
    raw = evaluate_sentences(model, sentences)
    assert raw["f1"] == pytest.approx(scores["f1"], abs=1e-12) and raw["per_type"] == scores["per_type"]
    assert scores["predicted"] > 0  # the run tags entities, so the comparisons below mean something

    texts = [" ".join(words) for words in sentences.words]
    export_dir = tmp_path / "export"
    assert main(["export", "--run", str(run_dir), "--out", str(export_dir)]) == 0
    live = {name: np.asarray(value) for name, value in model.tag_tokens(tf.constant(texts)).items()}
    serve = tf.saved_model.load(str(export_dir)).signatures["serving_default"]
    served = {name: value.numpy() for name, value in serve(texts=tf.constant(texts)).items()}
    for name in ("offsets", "word_ids", "label_ids"):
        np.testing.assert_array_equal(served[name], live[name], err_msg=name)
    np.testing.assert_allclose(served["probabilities"], live["probabilities"], atol=1e-5)

    expected = EntityTagger.from_run(run_dir)(texts)
    exported = EntityTagger.from_export(export_dir)(texts)
    assert sum(map(len, expected)) > 0

    def spans(results):
        return [[(e["entity_group"], e["start"], e["end"], e["word"]) for e in entities] for entities in results]

    assert spans(exported) == spans(expected)
    np.testing.assert_allclose(
        [e["score"] for entities in exported for e in entities],
        [e["score"] for entities in expected for e in entities],
        atol=1e-5,
    )
    # The capitals matter to this model: the same words lower-cased are tagged otherwise.
    lowered = model.tag_tokens(tf.constant([text.lower() for text in texts]))
    assert np.abs(lowered["probabilities"].numpy() - live["probabilities"]).max() > 1e-3
