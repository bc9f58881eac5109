"""Tests of attention extraction and SavedModel export on a small text classifier."""

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfattn.attention import extract_attention
from tfattn.export import export_text_classifier
from tfattn.networks import build_text_classifier, build_token_classifier, build_vectorizer, token_model_of

TEXTS = ["stocks fell on wall street", "the team won the final game", "new chip from intel", "oil prices rose"]
LABELS = ["World", "Sports", "Business", "Sci/Tech"]


@pytest.fixture(scope="module")
def text_model():
    vectorizer = build_vectorizer(TEXTS, vocab_size=50)
    token_model = build_token_classifier(
        vectorizer.vocabulary_size(), num_classes=4, max_length=12, embed_dim=8, num_heads=2, ff_dim=16, num_blocks=2
    )
    return build_text_classifier(vectorizer, token_model, max_length=12)


def test_extract_attention_shapes_tokens_and_rows(text_model):
    maps = extract_attention(text_model, ["Stocks fell on Wall Street", "oil"])
    assert [m.tokens for m in maps] == [["stocks", "fell", "on", "wall", "street"], ["oil"]]
    assert maps[0].attention.shape == (2, 2, 5, 5) and maps[1].attention.shape == (2, 2, 1, 1)
    np.testing.assert_allclose(maps[0].attention.sum(axis=-1), 1.0, atol=1e-5)


def test_attention_does_not_depend_on_batch_neighbours(text_model):
    alone = extract_attention(text_model, "oil prices rose")[0].attention
    # Batched with a longer text, this text gets padded: its maps must not change.
    batched = extract_attention(text_model, ["stocks fell on wall street today again", "oil prices rose"])[1].attention
    np.testing.assert_allclose(batched, alone, atol=1e-5)


def test_attention_matches_the_blocks_own_scores(text_model):
    token_model = token_model_of(text_model)
    ids = tf.constant([[2, 3, 4]])
    x = token_model.get_layer("embedding")(ids)
    _, first_scores = token_model.get_layer("block_0")(x, return_attention_scores=True)
    vocabulary = text_model.get_layer("vectorizer").get_vocabulary()
    text = " ".join(vocabulary[i] for i in (2, 3, 4))
    np.testing.assert_allclose(extract_attention(text_model, text)[0].attention[0], first_scores[0], atol=1e-5)


def test_export_round_trip_without_tfattn(text_model, tmp_path):
    export_dir = export_text_classifier(text_model, LABELS, tmp_path / "export")
    expected = text_model(tf.constant(TEXTS)).numpy()
    # A fresh interpreter that never imports tfattn serves the same predictions.
    script = (
        "import json, sys, tensorflow as tf\n"
        f"serve = tf.saved_model.load({str(export_dir)!r}).signatures['serving_default']\n"
        f"out = serve(tf.constant({TEXTS!r}))\n"
        "assert 'tfattn' not in sys.modules\n"
        "print(json.dumps({k: v.numpy().tolist() for k, v in out.items() if k == 'probabilities'}"
        " | {'label': [s.decode() for s in out['label'].numpy()],"
        " 'names': [s.decode() for s in out['label_names'].numpy()[0]]}))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    served = json.loads(result.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(served["probabilities"], expected, atol=1e-5)
    assert served["label"] == [LABELS[i] for i in expected.argmax(-1)]
    assert served["names"] == LABELS


def test_export_refuses_to_overwrite_and_leaves_no_staging_folder(text_model, tmp_path):
    target = tmp_path / "export"
    target.mkdir()
    with pytest.raises(FileExistsError, match="already exists"):
        export_text_classifier(text_model, LABELS, target)
    export_text_classifier(text_model, LABELS, target, overwrite=True)
    assert (target / "saved_model.pb").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
