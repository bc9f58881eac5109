"""The from-scratch recipe options: WordPiece vocabularies learned from the training texts, token
dropout, label smoothing, token tables initialised from a checkpoint's embeddings, and the
one-line refusals of options that do not apply."""

import json

import numpy as np
import pytest
import tensorflow as tf
from task_harness import run_task_test

from tfattn.cli import main
from tfattn.families import ScratchFamily
from tfattn.models import TextClassifier, TransformerEncoder
from tfattn.models.wordpiece import LEARNED_SPECIAL_TOKENS, BertPreprocessor, learn_wordpiece_vocabulary
from tfattn.pretrained import pretrained_word_embeddings, reduce_embeddings
from tfattn.tasks.classification import SmoothedSparseCrossentropy, evaluate_texts
from tfattn.tasks.config import TrainConfig
from tfattn.tasks.encoder_task import load_run
from tfattn.tasks.registry import task_of
from tfattn.training.loop import train

CORPUS = [
    "Stocks fell sharply as oil prices rose.",
    "The Lakers beat the Celtics 101-99!",
    "Intel unveils a new chip; stocks rose.",
    "Rain, rain and more rain in Paris",
]
SMALL_MODEL = dict(embed_dim=16, num_heads=2, ff_dim=32, batch_size=32, epochs=1)


def test_learned_wordpiece_vocabulary_covers_every_training_character():
    vocabulary = learn_wordpiece_vocabulary(CORPUS * 3, vocab_size=200)
    assert vocabulary[:4] == LEARNED_SPECIAL_TOKENS  # [PAD] is id 0, the padding id
    # Words seen at least twice are whole tokens; punctuation is split off as its own token.
    assert {"stocks", "rain", "rose", ".", "!", ";", "-"} <= set(vocabulary)
    preprocessor = BertPreprocessor(vocabulary=vocabulary, max_length=32)
    ids = preprocessor.tokenize(CORPUS).flat_values.numpy()
    assert 1 not in ids  # no [UNK]: every character of the training texts has a piece
    # An unseen word is spelt with pieces rather than lost as [UNK].
    pieces = [vocabulary[i] for i in preprocessor.tokenize(["Stockholm"]).flat_values.numpy()]
    # (Only whole words made it into this tiny vocabulary, so the unseen word is spelt by letters.)
    assert pieces == ["s", "##t", "##o", "##c", "##k", "##h", "##o", "##l", "##m"]
    with pytest.raises(ValueError, match="no texts"):
        learn_wordpiece_vocabulary([], 100)


def test_label_smoothing_loss_matches_the_smoothed_cross_entropy_by_hand():
    logits = tf.constant([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    labels = tf.constant([0, 2])
    targets = np.full((2, 3), 0.1 / 3)
    targets[0, 0] += 0.9
    targets[1, 2] += 0.9
    by_hand = -(targets * tf.nn.log_softmax(logits).numpy()).sum(axis=1).mean()
    assert SmoothedSparseCrossentropy(0.1)(labels, logits).numpy() == pytest.approx(by_hand, rel=1e-6)
    assert by_hand == pytest.approx(0.3275939, rel=1e-6)
    # No smoothing: the plain sparse cross-entropy.
    plain = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits).numpy()
    assert SmoothedSparseCrossentropy(0.0)(labels, logits).numpy() == pytest.approx(plain, rel=1e-6)


def test_token_dropout_drops_whole_tokens_in_training_only():
    encoder = TransformerEncoder(vocab_size=20, max_length=8, embed_dim=8, num_heads=2, ff_dim=16, token_dropout=0.5)
    reference = TransformerEncoder.from_config({**encoder.get_config(), "token_dropout": 0.0})
    features = {"input_word_ids": tf.constant([[3, 4, 5, 6, 7, 8]]), "input_mask": tf.ones([1, 6], tf.int32)}
    reference(features)
    encoder(features)
    encoder.set_weights(reference.get_weights())
    # At inference the rate changes nothing.
    np.testing.assert_allclose(
        encoder(features, training=False)["sequence_output"], reference(features, training=False)["sequence_output"]
    )
    # In training a token's vector is zeroed whole or kept whole, scaled by 1 / (1 - rate).
    tf.random.set_seed(0)
    dropped = encoder.token_dropout_layer(tf.ones([4, 6, 8]), training=True).numpy()
    per_token = dropped.reshape(-1, 8)
    assert set(np.unique(per_token)) == {0.0, 2.0}
    assert np.all(per_token.min(axis=1) == per_token.max(axis=1))
    assert encoder.get_config()["token_dropout"] == 0.5
    with pytest.raises(ValueError, match="token_dropout must be in"):
        TransformerEncoder(vocab_size=20, max_length=8, token_dropout=1.0)


def test_reduced_embeddings_keep_the_principal_axes_and_the_scale():
    rng = np.random.default_rng(0)
    # Rank 2 plus a little noise: two principal axes hold nearly all the variance.
    table = rng.normal(size=(200, 2)) @ rng.normal(size=(2, 6)) + 0.01 * rng.normal(size=(200, 6))
    reduced = reduce_embeddings(table, 2)
    assert reduced.shape == (200, 2) and reduced.dtype == np.float32
    assert reduced.std() == pytest.approx(table.std(), rel=1e-5)
    # Distances between rows survive the projection up to the one global scale.
    original = np.linalg.norm(table[:50, None] - table[None, :50], axis=-1)
    projected = np.linalg.norm(reduced[:50, None] - reduced[None, :50], axis=-1)
    ratio = projected[original > 0] / original[original > 0]
    assert ratio.std() / ratio.mean() < 0.01
    np.testing.assert_array_equal(reduce_embeddings(table, 6), table.astype(np.float32))
    with pytest.raises(ValueError, match="cannot widen a 6-wide embedding table to 7"):
        reduce_embeddings(table, 7)


@pytest.mark.slow
def test_text_classifier_over_a_learned_wordpiece_vocabulary_with_bigrams(tmp_path):
    """The math recipe's model, a from-scratch encoder with hashed bigrams behind a learned
    WordPiece vocabulary, passes the task harness, export included (served from raw strings by
    TensorFlow and tensorflow_text alone)."""
    preprocessor = BertPreprocessor(vocabulary=learn_wordpiece_vocabulary(CORPUS, 100), max_length=16)
    sizes = dict(embed_dim=8, num_heads=2, ff_dim=16, num_blocks=2, dropout=0.0)
    encoder = TransformerEncoder(len(preprocessor.vocabulary), 16, bigram_buckets=32, **sizes)
    run_task_test(
        TextClassifier,
        dict(preprocessor=preprocessor, encoder=encoder, num_classes=4, pooling="mean"),
        (CORPUS, [2, 1, 3, 0]),
        tmp_path=tmp_path,
        label_names=["World", "Sports", "Business", "Sci/Tech"],
        expected_output_shape=(4, 4),
        expected_attention_shape=(2, 2),
        expected_tokens=["[CLS]", "stocks", "fell", "sharply", "as", "oil", "prices", "rose", ".", "[SEP]"],
        expected_trainable_encoder_weights=35,  # 34 without the bigram table
        export=True,
        tensorflow_text=True,
    )


@pytest.mark.slow
def test_wordpiece_run_saves_its_vocabulary_and_reloads(agnews_csv, tmp_path):
    run_dir = tmp_path / "wordpiece"
    config = TrainConfig(
        task="agnews",
        data=str(agnews_csv),
        run_dir=str(run_dir),
        limit=200,
        tokenizer="wordpiece",
        vocab_size=500,
        token_dropout=0.1,
        label_smoothing=0.1,
        **SMALL_MODEL,
    )
    train(config)
    model, _, saved_config = load_run(run_dir)
    assert saved_config["tokenizer"] == "wordpiece" and saved_config["label_smoothing"] == 0.1
    assert isinstance(model.preprocessor, BertPreprocessor)
    assert model.preprocessor.vocabulary == (run_dir / "vocab.txt").read_text(encoding="utf-8").split("\n")
    assert model.preprocessor.vocabulary[:4] == LEARNED_SPECIAL_TOKENS
    assert model.encoder.token_dropout == 0.1
    # The reloaded model, reading raw validation texts, scores what the run reported.
    report = evaluate_texts(model, task_of(config).load_splits()[1])
    assert report.accuracy == json.loads((run_dir / "validation_scores.json").read_text())["accuracy"]


@pytest.mark.slow
def test_scratch_table_starts_from_the_checkpoint_embeddings(tiny_bert_dir, agnews_csv, tmp_path):
    config = TrainConfig(
        task="agnews", data=str(agnews_csv), run_dir=str(tmp_path), embeddings_from=str(tiny_bert_dir), **SMALL_MODEL
    ).resolve()
    assert config.tokenizer == "wordpiece"
    family = ScratchFamily(config)
    family.check()
    family.prepare([], tmp_path)
    assert (tmp_path / "vocab.txt").read_text(encoding="utf-8").split("\n") == family.preprocessor.vocabulary
    model = TextClassifier(family.preprocessor, family.build_encoder(), num_classes=4, pooling="mean")
    model(tf.constant(["build"]))
    family.initialize(model)
    expected = reduce_embeddings(pretrained_word_embeddings(str(tiny_bert_dir)), 16)
    np.testing.assert_allclose(model.encoder.embedding.token_embeddings.numpy(), expected, rtol=1e-6)
    wide = TrainConfig(
        task="agnews", data=str(agnews_csv), embeddings_from=str(tiny_bert_dir), embed_dim=64, num_heads=2
    ).resolve()
    with pytest.raises(ValueError, match=r"--embed-dim 64 is wider than the embeddings of .* \(32\); choose at most"):
        ScratchFamily(wide).check()


def test_from_scratch_defaults_are_per_task_and_explicit_values_win():
    recipe = ("tokenizer", "bigram_buckets", "token_dropout", "learning_rate")

    def resolved(**fields):
        config = TrainConfig(data="x", **fields).resolve()
        return tuple(getattr(config, name) for name in recipe)

    assert resolved(task="math") == ("wordpiece", 65536, 0.1, 5e-4)
    assert resolved(task="agnews") == ("words", 0, 0.0, 1e-3)
    assert resolved(task="math", tokenizer="words", bigram_buckets=0, learning_rate=1e-3) == ("words", 0, 0.1, 1e-3)
    assert resolved(task="agnews", embeddings_from="ckpt")[0] == "wordpiece"  # the checkpoint's vocabulary
    # A pretrained model has none of them: its checkpoint fixes tokens and embeddings.
    assert resolved(task="math", backbone="bert")[:3] == (None, None, None)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--tokenizer", "chars"], "argument --tokenizer: invalid choice: 'chars'"),
        (["--tokenizer", "wordpiece", "--backbone", "x"], "--tokenizer applies to the from-scratch model, not"),
        (["--embeddings-from", "x", "--backbone", "y"], "--embeddings-from applies to the from-scratch model, not"),
        (["--embeddings-from", "x", "--tokenizer", "words"], "drop --tokenizer words"),
        (["--label-smoothing", "1"], "--label-smoothing: must be a number in [0, 1), got '1'"),
        (["--token-dropout", "-0.1"], "--token-dropout: must be a number in [0, 1), got '-0.1'"),
        (["--bigram-buckets", "4", "--backbone", "x"], "--bigram-buckets applies to the from-scratch model, not"),
        (["--word-shape"], "--word-shape applies to token classification (ner)"),
    ],
)
def test_recipe_options_that_do_not_apply_stop_in_one_line(extra, message, agnews_csv, tmp_path, capsys):
    run_dir = tmp_path / "run"
    argv = ["train", "agnews", "--data", str(agnews_csv), "--run-dir", str(run_dir)] + extra
    try:
        code = main(argv)
    except SystemExit as stopped:  # refused by the argument parser itself
        code = stopped.code
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1, error
    assert not run_dir.exists()
