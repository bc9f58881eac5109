"""SavedModel export of translators (`tfattn.serving.translators`): the export round trip in a
fresh interpreter.

Tiny untrained translators (a transformer and the RNN with subword vocabularies, and the RNN
with word vocabularies), the vocabularies learned from real Spanish-English pairs, are exported
greedy or with beam width 3 (every model with every strategy, and every vocabulary with both
model kinds: the four CASES below; the two other products, RNN greedy with subwords and RNN beam
with words, repeated that coverage at about 30 s each); a new Python that imports only tensorflow and tensorflow_text
(never tfattn) serves them, and its outputs must be what the model decodes in this process:
the same token ids and strings, the same scores and cross-attention (to float rounding), and
the pieces of the ids it read and wrote.
"""

import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tf_keras as keras
from conftest import missing
from task_harness import PLAIN_SOURCE

from tfattn.data.translation import read_translation_pairs
from tfattn.decoding import DecodingOptions, decode
from tfattn.models.translation import (
    EOS_ID,
    PAD_ID,
    RnnTranslator,
    TransformerTranslator,
    TranslationPreprocessor,
    build_sample,
)
from tfattn.serving.translators import EXPORT_INFO_FILE, export_translator

MAX_TARGET_LENGTH = 10
STRATEGIES = {"greedy": DecodingOptions(), "beam": DecodingOptions(beam_width=3)}
MODELS = {
    "transformer": (TransformerTranslator, {"embed_dim": 8, "num_heads": 2, "ff_dim": 16, "num_blocks": 2}),
    "rnn": (RnnTranslator, {"embed_dim": 8, "units": 8}),
    "rnn-words": (RnnTranslator, {"embed_dim": 8, "units": 8}),
}
# "kind-strategy" pairs exported and served: each model kind with each strategy, each vocabulary
# with each model kind.
CASES = ["transformer-greedy", "transformer-beam", "rnn-beam", "rnn-words-greedy"]
ATOL = 1e-5
# Every test here exports translators (a traced decoding loop per model and strategy, minutes on
# 2 cores): `slow`. The quick suite's translation coverage is tests/test_translation.py.
pytestmark = pytest.mark.slow

_SERVE_SCRIPT = (
    """
import json, sys
import tensorflow as tf
import tensorflow_text  # registers the SentencePiece ops, nothing else
"""
    + PLAIN_SOURCE
    + """
request = json.loads(sys.stdin.readline())
results = {}
for name, folder in request["exports"].items():
    serve = tf.saved_model.load(folder).signatures["serving_default"]
    outputs = serve(texts=tf.constant(request["texts"]))
    results[name] = {key: plain(value.numpy().tolist()) for key, value in outputs.items()}
    empty = serve(texts=tf.constant([], tf.string))
    results[name]["empty_batch_shapes"] = {key: value.shape.as_list() for key, value in empty.items()}
imported = sorted(name for name in sys.modules if name.split(".")[0] == "tfattn")
assert not imported, f"serving the exports imported {imported}"
print(json.dumps(results))
"""
)


@pytest.fixture(scope="module")
def pairs():
    # Where conftest.py finds the shared corpora ($TFATTN_SHARED_DATA, else <workspace>/shared/data).
    shared = os.environ.get("TFATTN_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
    path = Path(shared) / "translation" / "spa_eng_valid.tsv"
    if not path.is_file():
        missing(f"real data not found at {path}")
    return read_translation_pairs(path, limit=200)


@pytest.fixture(scope="module")
def texts(pairs):
    # Short and long sources, one longer than max_source_length (cut), an empty one, and
    # characters the vocabulary never saw (unknown pieces).
    return [pairs.sources[0], pairs.sources[150], " ".join(pairs.sources[100:110]), "", "¿Qué hay? 日本 €"]


@pytest.fixture(scope="module")
def models(pairs):
    # Seeded before the vocabularies are learned: `tf.random.set_seed` clears TensorFlow's kernel
    # cache, which deletes the SentencePiece resources of vocabularies built before it.
    keras.utils.set_random_seed(0)
    # 100 entries: SentencePiece needs one piece per character of the corpus (full character
    # coverage); 100 words leave many words of these pairs unknown.
    preprocessors = {
        vocabulary: TranslationPreprocessor.learn(
            pairs.sources,
            pairs.targets,
            vocab_size=100,
            vocabulary=vocabulary,
            max_source_length=16,
            max_target_length=MAX_TARGET_LENGTH,
        )
        for vocabulary in ("subword", "words")
    }
    return {
        kind: build_sample(cls(preprocessors["words" if kind.endswith("-words") else "subword"], **kwargs))
        for kind, (cls, kwargs) in MODELS.items()
    }


@pytest.fixture(scope="module")
def exports(models, tmp_path_factory):
    """Each of CASES exported: `{"kind-strategy": folder}`."""
    root = tmp_path_factory.mktemp("translation_exports")
    return {
        case: export_translator(models[case.rsplit("-", 1)[0]], root / case, STRATEGIES[case.rsplit("-", 1)[1]])
        for case in CASES
    }


@pytest.fixture(scope="module")
def fresh_interpreter(tmp_path_factory):
    """A new Python running `_SERVE_SCRIPT`, waiting for its request on stdin. Requested before
    `exports`, so its TensorFlow import overlaps the exports being written."""
    # cwd: a folder without tfattn, so nothing there can be imported by accident.
    process = subprocess.Popen(
        [sys.executable, "-c", _SERVE_SCRIPT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path_factory.mktemp("fresh"),
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    yield process
    if process.poll() is None:  # a fixture failed before asking: stop our own child
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def served(fresh_interpreter, exports, texts):
    """What the fresh interpreter serves from every export: `{"kind-strategy": {output: list}}`."""
    request = {"exports": {name: str(folder) for name, folder in exports.items()}, "texts": texts}
    stdout, stderr = fresh_interpreter.communicate(json.dumps(request) + "\n", timeout=300)
    assert fresh_interpreter.returncode == 0, f"the fresh interpreter failed:\n{stderr[-4000:]}"
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", CASES)
def test_fresh_interpreter_serves_what_the_model_decodes(case, models, texts, served):
    kind, strategy = case.rsplit("-", 1)
    model, options, outputs = models[kind], STRATEGIES[strategy], served[case]
    preprocessor = model.preprocessor
    source_ids = preprocessor.pad_sources(texts)
    decoded = decode(model, source_ids, replace(options, return_attention=True))
    token_ids = decoded.token_ids.numpy()

    np.testing.assert_array_equal(np.asarray(outputs["token_ids"], np.int32), token_ids)
    assert outputs["translations"] == model.translate(texts, beam_width=options.beam_width)
    np.testing.assert_allclose(outputs["scores"], decoded.scores.numpy(), atol=ATOL)
    attention = np.asarray(outputs["cross_attention"], np.float32)
    layers, heads = model.attention_shape()
    assert attention.shape == (len(texts), token_ids.shape[1], layers, heads, source_ids.shape[1])
    np.testing.assert_allclose(attention, decoded.cross_attention.numpy(), atol=ATOL)

    # The pieces line up with the ids: padding "", the end id "</s>".
    assert outputs["source_pieces"] == _pieces(preprocessor.source, source_ids.numpy())
    assert outputs["target_pieces"] == _pieces(preprocessor.target, token_ids)
    assert all(
        row[list(ids).index(EOS_ID)] == "</s>" for row, ids in zip(outputs["target_pieces"], token_ids) if EOS_ID in ids
    )
    # Each generated token attends over the real source pieces only, with weights summing to 1
    # in every layer and head; steps after a row's end attend nowhere.
    generated = token_ids != PAD_ID
    real_source = source_ids.numpy() != PAD_ID
    np.testing.assert_allclose(attention.sum(axis=-1)[generated], 1.0, atol=ATOL)
    assert not attention[~generated].any()
    assert not (attention * ~real_source[:, None, None, None, :]).any()

    assert outputs["empty_batch_shapes"] == {
        "translations": [0],
        "token_ids": [0, 0],
        "scores": [0],
        "source_pieces": [0, 0],
        "target_pieces": [0, 0],
        "cross_attention": [0, 0, layers, heads, 0],
    }


def test_the_served_rows_cover_ended_and_unfinished_translations(served):
    # What the comparisons above rely on: some translation ends before the longest one (padding
    # after its end token), some runs to max_length without ending (beam search then answers
    # with its best running hypothesis). Untrained models, so whichever rows those are.
    rows = [ids for outputs in served.values() for ids in outputs["token_ids"]]
    assert any(EOS_ID in ids and ids[-1] == PAD_ID for ids in rows)
    assert any(EOS_ID not in ids and len(ids) == MAX_TARGET_LENGTH for ids in rows)


def _pieces(vocabulary, ids):
    pieces = vocabulary.pieces(ids).numpy()
    return [[piece.decode("utf-8") if id_ != PAD_ID else "" for piece, id_ in zip(*row)] for row in zip(pieces, ids)]


def test_export_records_its_decoding_options(models, exports):
    info = json.loads((exports["transformer-beam"] / EXPORT_INFO_FILE).read_text(encoding="utf-8"))
    assert info["model"] == "transformer" and info["config"] == models["transformer"].get_config()
    assert info["preprocessor"] == {"vocabulary": "subword", "max_source_length": 16, "max_target_length": 10}
    decoding = info["decoding"]
    assert (decoding["strategy"], decoding["beam_width"], decoding["max_length"]) == ("beam", 3, MAX_TARGET_LENGTH)
    assert decoding["return_attention"] is True  # the export always serves the attention
    info = json.loads((exports["rnn-words-greedy"] / EXPORT_INFO_FILE).read_text(encoding="utf-8"))
    assert (info["decoding"]["strategy"], info["preprocessor"]["vocabulary"]) == ("greedy", "words")


def test_export_refuses_an_existing_folder_and_keeps_its_files(models, tmp_path):
    target = tmp_path / "export"
    (target / "assets.extra").mkdir(parents=True)
    (target / "saved_model.pb").write_text("the previous export")
    (target / EXPORT_INFO_FILE).write_text('{"written_by": "tfattn"}')  # an earlier tfattn export: replaceable
    with pytest.raises(FileExistsError, match=re.escape(f"{target} already exists; pass overwrite=True")):
        export_translator(models["rnn"], target)
    assert (target / "saved_model.pb").read_text() == "the previous export"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["export"]  # no staging folder left

    export_translator(models["rnn"], target, overwrite=True)
    assert (target / EXPORT_INFO_FILE).is_file() and (target / "saved_model.pb").read_bytes() != b"the previous export"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["export"]
