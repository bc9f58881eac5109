"""Attention extraction and SavedModel export on a small from-scratch text classifier.

The export round trip in a fresh interpreter without tfattn (probabilities, labels, label
names), for every family, is in the shared harness: test_task_models.py (`scratch-mean-export`,
`slow` like every export round trip); here: what an export does with the folder it writes to.
"""

import numpy as np
import pytest
import tensorflow as tf

from tfattn.attention import extract_attention
from tfattn.files import EXPORT_MARKER
from tfattn.models import TextClassifier, TransformerEncoder, VocabularyPreprocessor
from tfattn.serving.classifiers import export_model

TEXTS = ["stocks fell on wall street", "the team won the final game", "new chip from intel", "oil prices rose"]
LABELS = ["World", "Sports", "Business", "Sci/Tech"]


@pytest.fixture(scope="module")
def text_model():
    preprocessor = VocabularyPreprocessor.adapt(TEXTS, vocab_size=50, max_length=12)
    encoder = TransformerEncoder(
        len(preprocessor.vocabulary), max_length=12, embed_dim=8, num_heads=2, ff_dim=16, num_blocks=2
    )
    return TextClassifier(preprocessor, encoder, num_classes=4, pooling="mean")


def test_extract_attention_shapes_tokens_and_rows(text_model):
    maps = extract_attention(text_model, ["Stocks fell on Wall Street", "oil"])
    assert [m.tokens for m in maps] == [["stocks", "fell", "on", "wall", "street"], ["oil"]]
    assert [m.text for m in maps] == ["Stocks fell on Wall Street", "oil"]
    assert maps[0].attention.shape == (2, 2, 5, 5) and maps[1].attention.shape == (2, 2, 1, 1)
    assert (maps[0].num_layers, maps[0].num_heads) == (2, 2)
    np.testing.assert_allclose(maps[0].attention.sum(axis=-1), 1.0, atol=1e-5)
    # Unknown words read as [UNK]; a text of none at all still has one position to attend.
    assert [m.tokens for m in extract_attention(text_model, ["stocks zebra", "?!"])] == [["stocks", "[UNK]"], ["[UNK]"]]


def test_attention_does_not_depend_on_batch_neighbours(text_model):
    alone = extract_attention(text_model, "oil prices rose")[0].attention
    # Batched with a longer text, this text gets padded: its maps must not change.
    batched = extract_attention(text_model, ["stocks fell on wall street today again", "oil prices rose"])[1].attention
    np.testing.assert_allclose(batched, alone, atol=1e-5)
    # Nor with the batch size of the extraction.
    texts = ["oil prices rose", "stocks fell", "the team won the final game"]
    by_one = [m.attention for m in extract_attention(text_model, texts, batch_size=1)]
    for single, batched in zip(by_one, extract_attention(text_model, texts, batch_size=3), strict=True):
        np.testing.assert_allclose(batched.attention, single, atol=1e-5)


def test_attention_matches_the_blocks_own_scores(text_model):
    encoder = text_model.encoder
    ids = tf.constant([[2, 3, 4]])
    x = encoder.embedding(ids)
    _, first_scores = encoder.blocks[0](x, return_attention_scores=True)
    text = " ".join(text_model.preprocessor.vocabulary[i] for i in (2, 3, 4))
    np.testing.assert_allclose(extract_attention(text_model, text)[0].attention[0], first_scores[0], atol=1e-5)


def test_export_refuses_to_overwrite_and_leaves_no_staging_folder(text_model, tmp_path, monkeypatch):
    target = tmp_path / "export"
    (target / "assets.extra").mkdir(parents=True)
    (target / "saved_model.pb").write_text("the previous export")
    (target / EXPORT_MARKER).write_text('{"written_by": "tfattn"}')  # an earlier tfattn export: replaceable
    with pytest.raises(FileExistsError, match="export already exists; pass overwrite=True"):
        export_model(text_model, LABELS, target)

    # An export that fails halfway, even with overwrite=True, keeps the previous export whole and
    # leaves no staging folder behind.
    def fail_halfway(module, folder, signatures=None):
        tf.io.gfile.makedirs(f"{folder}/variables")
        with open(f"{folder}/saved_model.pb", "w") as half_written:
            half_written.write("half")
        raise OSError("disk full")

    monkeypatch.setattr(tf.saved_model, "save", fail_halfway)
    with pytest.raises(OSError, match="disk full"):
        export_model(text_model, LABELS, target, overwrite=True)
    assert (target / "saved_model.pb").read_text() == "the previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
