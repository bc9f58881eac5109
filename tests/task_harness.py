"""One keras-hub-style test harness for every task model (cf. keras_hub's `TestCase.run_task_test`).

`run_task_test(cls, init_kwargs, train_data, ...)` builds a `TextClassifier` or
`TokenClassifier` of any family (from-scratch, Hugging Face, TF-Hub) and checks, in order:

1. raw strings in: float32 logits of the expected shape; the preprocessor's feature dict in gives
   the same logits; each text's outputs do not depend on its batch neighbours (padding);
2. `keras.saving.serialize_keras_object` -> JSON -> `deserialize_keras_object` gives the same
   class, preprocessor and encoder classes and the same config;
3. `fit` (a from_logits loss, a couple of steps) on raw strings: finite losses, the head moves,
   `predict` on raw strings is finite and shaped right (`predict_proba` rows sum to 1);
   training, `save_model` and `load_model` log no "non-serializable" warning;
4. `save_model` / `load_model`: same class, same config, same outputs;
5. optionally `tfattn.serving.classifiers.export_model`: refuses an existing folder, overwrites on request,
   removes a dead export's staging folder and leaves none of its own; a FRESH interpreter that
   imports only tensorflow (and tensorflow_text for WordPiece / TF-Hub models) and never tfattn
   serves the same outputs (probabilities and labels; for a TokenClassifier also the offsets,
   word_ids and label_ids of `model.tag_tokens`);
6. `model.attention(texts)`: one map per text, its tokens the text's real tokens,
   `[layers, heads, n, n]`, rows summing to 1, independent of batch neighbours;
7. `freeze_encoder`: only the head trains, the encoder's weights stay bit-identical;
   `unfreeze_encoder`: the expected number of encoder weights train and every one of them
   changes (but those that get no gradient, `weights_without_gradient`, which stay as they were).

The fresh interpreter is started first, so its TensorFlow import overlaps the other checks.
Translators pass the same battery, as encoder-decoders have it (`run_translator_test`).
"""

import contextlib
import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tfattn.models import FEATURE_NAMES, TextClassifier, TokenClassifier, load_model, save_model
from tfattn.serving.classifiers import export_model

__all__ = [
    "FreshInterpreter",
    "captured_logs",
    "exported_tiny_hub_bert",
    "run_task_test",
    "run_translator_test",
    "save_tiny_bert",
]

LEARNING_RATE = 1e-2
ATOL = 1e-5

# --- log capture -------------------------------------------------------------------------


@contextlib.contextmanager
def captured_logs():
    """Collects every log record (root, tensorflow and transformers loggers) and Python warning
    emitted inside the block, as message strings.

    Filters on those loggers are lifted meanwhile: `tfattn.quiet` (installed by any CLI call
    earlier in the session) drops some Keras warnings, "non-serializable" among them, from the
    tensorflow logger, which would make a check for them pass whatever the code does.
    """
    messages = []

    class Collect(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    handler = Collect(level=logging.DEBUG)
    loggers = [logging.getLogger(name) for name in ("", "tensorflow", "transformers")]
    saved = [(logger, logger.level, list(logger.filters)) for logger in loggers]
    for logger in loggers:
        logger.filters.clear()
        if logger.getEffectiveLevel() > logging.WARNING:
            logger.setLevel(logging.WARNING)
        logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield messages
            messages.extend(str(warning.message) for warning in caught)
    finally:
        for logger, level, filters in saved:
            logger.removeHandler(handler)
            logger.setLevel(level)
            logger.filters[:] = filters


# --- a fresh interpreter serving an export -----------------------------------------------

# For scripts run in a fresh interpreter: nested lists of a tensor's `.numpy().tolist()`, bytes
# decoded, ready for json.dumps.
PLAIN_SOURCE = """
def plain(value):
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value
"""

_SERVE_SCRIPT = """
import json, sys
import tensorflow as tf
{extra_import}
request = sys.stdin.readline()
if not request:
    sys.exit(0)
request = json.loads(request)
serve = tf.saved_model.load(request["export_dir"]).signatures["serving_default"]
outputs = serve(texts=tf.constant(request["texts"]))
imported = sorted(name for name in sys.modules if name.split(".")[0] == "tfattn")
assert not imported, f"serving the export imported {{imported}}"
{plain}
print(json.dumps({{name: plain(value.numpy().tolist()) for name, value in outputs.items()}}))
"""


class FreshInterpreter:
    """`sys.executable -c SCRIPT`: a new Python that imports tensorflow (plus tensorflow_text when
    `tensorflow_text`), then waits for one request: load an export, serve texts, check that no
    `tfattn` module was imported, print the outputs as JSON. Started early, its (slow) TensorFlow
    import runs while the caller works; `serve` sends the request, `result` waits for the answer."""

    def __init__(self, workdir, tensorflow_text=False):
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        self.stdout_path, self.stderr_path = workdir / "served.out", workdir / "served.err"
        script = _SERVE_SCRIPT.format(
            extra_import="import tensorflow_text" if tensorflow_text else "", plain=PLAIN_SOURCE
        )
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        with open(self.stdout_path, "w") as stdout, open(self.stderr_path, "w") as stderr:
            # cwd: a folder without tfattn, so nothing there can be imported by accident.
            self.process = subprocess.Popen(
                [sys.executable, "-c", script],
                stdin=subprocess.PIPE,
                stdout=stdout,
                stderr=stderr,
                text=True,
                cwd=workdir,
                env=env,
            )

    def serve(self, export_dir, texts):
        try:
            self.process.stdin.write(json.dumps({"export_dir": str(export_dir), "texts": list(texts)}) + "\n")
            self.process.stdin.close()
        except BrokenPipeError:
            pass  # it died already (e.g. importing): `result` reports its stderr

    def result(self, timeout=300):
        returncode = self.process.wait(timeout=timeout)
        stderr = self.stderr_path.read_text(errors="replace")
        assert returncode == 0, f"the fresh interpreter failed ({returncode}):\n{stderr[-4000:]}"
        return json.loads(self.stdout_path.read_text().strip().splitlines()[-1])

    def close(self):
        if self.process.poll() is None:  # the test failed before asking: stop our own child
            self.process.kill()
            self.process.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


# --- the TF-Hub export of the tiny BERT, once per session --------------------------------

_HUB_EXPORTS = {}


def tiny_ner_config(conll_train, conll_valid, tiny_bert_dir, run_dir, **fields):
    """A NER `TrainConfig` that fine-tunes the tiny BERT on a slice of CoNLL fast enough for a
    test and still learns to tag entities; `fields` (limit, epochs, ...) add to or override it."""
    from tfattn.tasks.config import TrainConfig

    values = dict(
        task="ner",
        data=str(conll_train),
        validation_data=str(conll_valid),
        backbone=str(tiny_bert_dir),
        run_dir=str(run_dir),
        learning_rate=3e-3,
        batch_size=16,
        max_length=64,
    )
    return TrainConfig(**{**values, **fields})


def tiny_scratch_classifier(words, num_classes, pooling="cls", num_blocks=1, seed=0):
    """A seeded, untrained from-scratch `TextClassifier` over `words` (width 8, 2 heads): every
    view the explorer draws, in milliseconds."""
    from tfattn.models import TransformerEncoder, VocabularyPreprocessor

    keras.utils.set_random_seed(seed)
    encoder = TransformerEncoder(
        vocab_size=len(words) + 2, max_length=16, embed_dim=8, num_heads=2, ff_dim=16, num_blocks=num_blocks
    )
    return TextClassifier(VocabularyPreprocessor(words, max_length=16), encoder, num_classes, pooling=pooling)


def tiny_bpe_tokenizer(texts, vocab_size=400):
    """A byte-level BPE tokenizer (GPT-2's kind) learned from `texts`, `<|endoftext|>` first
    (id 0, also bos, eos and unk), as a `transformers.GPT2TokenizerFast`: a GPT-2 tokenizer
    offline, in a second."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    end = "<|endoftext|>"
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[end],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return transformers.GPT2TokenizerFast(tokenizer_object=tokenizer, bos_token=end, eos_token=end, unk_token=end)


def save_tiny_gpt2(texts, folder, n_positions=64):
    """Save a tiny random GPT-2 (1 layer, width 32, no dropout) and a tokenizer learned from
    `texts` as a Hugging Face checkpoint folder (`save_pretrained`). Returns `folder`."""
    import tf_keras as keras
    import transformers

    tokenizer = tiny_bpe_tokenizer(texts)
    config = transformers.GPT2Config(
        n_layer=1,
        n_embd=32,
        n_head=2,
        n_positions=n_positions,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    keras.utils.set_random_seed(0)
    model = transformers.TFGPT2LMHeadModel(config)
    model(model.dummy_inputs)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_tiny_bert(minilm_dir, folder):
    """Save a tiny random BERT (2 layers, hidden 32, no dropout, so runs are exactly reproducible)
    as a Hugging Face checkpoint folder, with the MiniLM tokenizer files: the whole pretrained
    path in seconds. Returns `folder`."""
    import shutil

    from transformers import BertConfig, TFBertModel

    folder, minilm_dir = Path(folder), Path(minilm_dir)
    vocab_size = sum(1 for _ in open(minilm_dir / "vocab.txt", encoding="utf-8"))
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        classifier_dropout=0.0,
    )
    keras.utils.set_random_seed(0)
    model = TFBertModel(config)
    model(model.dummy_inputs)
    model.save_pretrained(folder)
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json"):
        if (minilm_dir / name).is_file():
            shutil.copy(minilm_dir / name, folder / name)
    return folder


def exported_tiny_hub_bert(tiny_bert_dir, tmp_path_factory):
    """`(preprocess_dir, encoder_dir)`: `export_hub_bert` of the tiny BERT, written once per
    session whichever test module asks first (module fixtures of the same name would each
    export it again)."""
    from tfattn.models.hub import export_hub_bert

    key = str(tiny_bert_dir)
    if key not in _HUB_EXPORTS:
        _HUB_EXPORTS[key] = export_hub_bert(tiny_bert_dir, tmp_path_factory.mktemp("tiny_hub_bert"))
    return _HUB_EXPORTS[key]


# --- the harness -------------------------------------------------------------------------


def _values(weights):
    return [w.numpy().copy() for w in weights]


def _compile(model, run_eagerly):
    model.compile(
        optimizer=keras.optimizers.Adam(LEARNING_RATE),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        run_eagerly=run_eagerly,
    )


def _fit_save_load(model, inputs, labels, fit_steps, save, load, folder):
    """`fit` one batch of everything `fit_steps` times, then `save` and `load` the model: the
    losses must be finite and nothing may log a "non-serializable" warning. Returns
    `(saved folder, loaded model)`."""
    with captured_logs() as logs:
        history = model.fit(inputs, labels, batch_size=len(labels), epochs=fit_steps, verbose=0)
        saved = save(model, folder)
        loaded = load(saved)
    noisy = [message for message in logs if "non-serializable" in message]
    assert not noisy, noisy
    losses = history.history["loss"]
    assert len(losses) == fit_steps and np.all(np.isfinite(losses)), losses
    return saved, loaded


def _json_config(obj):
    return json.loads(json.dumps(obj))


# Above Linux's largest pid_max (2**22): no process can have it.
NO_SUCH_PID = 2**22 + 1


def _expected_serving(model, texts, label_names):
    names = np.asarray(label_names, dtype=object)
    if isinstance(model, TokenClassifier):
        tagged = {name: value.numpy() for name, value in model.tag_tokens(tf.constant(texts)).items()}
        # What the export serves is computed by tag_tokens: it must agree with the model's call.
        np.testing.assert_allclose(
            tagged["probabilities"], tf.nn.softmax(model(tf.constant(texts), training=False)).numpy(), atol=ATOL
        )
        return {**tagged, "labels": names[tagged["label_ids"]].tolist()}
    probabilities = tf.nn.softmax(model(tf.constant(texts), training=False)).numpy()
    return {"probabilities": probabilities, "label": names[probabilities.argmax(-1)].tolist()}


def _check_served(served, expected, label_names, num_texts):
    assert served["label_names"] == [list(label_names)] * num_texts
    np.testing.assert_allclose(served["probabilities"], expected["probabilities"], atol=ATOL)
    if "label_ids" in expected:
        assert sorted(served) == sorted(
            ["label_ids", "labels", "scores", "probabilities", "offsets", "word_ids", "label_names"]
        )
        for name in ("offsets", "word_ids", "label_ids"):
            np.testing.assert_array_equal(np.asarray(served[name]), expected[name], err_msg=name)
        np.testing.assert_allclose(served["scores"], expected["scores"], atol=ATOL)
        assert served["labels"] == expected["labels"]
    else:
        assert sorted(served) == ["label", "label_names", "probabilities"]
        assert served["label"] == expected["label"]


def _export_round_trip(model, label_names, texts, export_dir, interpreter):
    """Export checks that need no interpreter; then hands the export to `interpreter`."""
    export_dir.mkdir(parents=True)
    with pytest.raises(FileExistsError, match="already exists; pass overwrite=True"):
        export_model(model, label_names, export_dir)
    # Left behind by an export that was killed: removed by the next export to the same place.
    stale = export_dir.with_name(f".{export_dir.name}.tmp-{NO_SUCH_PID}-0badc0de")
    (stale / "variables").mkdir(parents=True)
    expected = _expected_serving(model, texts, label_names)
    assert export_model(model, label_names, export_dir, overwrite=True) == export_dir
    assert (export_dir / "saved_model.pb").is_file()
    assert sorted(path.name for path in export_dir.parent.iterdir()) == [export_dir.name]
    interpreter.serve(export_dir, texts)
    return expected


def run_task_test(
    cls,
    init_kwargs,
    train_data,
    *,
    tmp_path,
    label_names,
    expected_output_shape,
    expected_attention_shape,
    expected_trainable_encoder_weights,
    weights_without_gradient=(),
    expected_tokens=None,
    export=False,
    tensorflow_text=False,
    run_eagerly=True,
    fit_steps=2,
):
    """The standard battery every task model passes (see the module docstring).

    Args:
        cls: `TextClassifier` or `TokenClassifier`.
        init_kwargs: its arguments (preprocessor, encoder, num_classes / label_names, pooling, ...).
        train_data: `(texts, labels)`: labels `[n]` for texts, `[n, seq]` (the batch's padded
            length) for tokens.
        tmp_path: a folder for the saved model, the export and the fresh interpreter's output.
        label_names: the class (or tag) names for the export.
        expected_output_shape: the logits' shape for all texts at once.
        expected_attention_shape: `(layers, heads)`.
        expected_trainable_encoder_weights: how many encoder weights train once unfrozen.
        weights_without_gradient: name parts of trainable encoder weights that the task does not
            read (e.g. a TF-Hub pooler under cls/mean pooling): they must stay unchanged.
        expected_tokens: the tokens of the first text, if given.
        export: also check the export round trip in a fresh interpreter (slow: 5-10 s).
        tensorflow_text: the export needs `import tensorflow_text` (WordPiece, TF-Hub).
        run_eagerly: `fit` eagerly (seconds faster for pretrained encoders) or traced.
        fit_steps: epochs of one batch in the first fit.

    Returns:
        The model, trained a few steps and unfrozen.
    """
    texts = list(train_data[0])
    labels = np.asarray(train_data[1])
    strings = tf.constant(texts)
    tmp_path = Path(tmp_path)
    interpreter = FreshInterpreter(tmp_path / "fresh", tensorflow_text) if export else None
    try:
        model = cls(**init_kwargs)

        # 1. Strings in, logits out; features in, the same; no dependence on batch neighbours.
        logits = model(strings, training=False)
        assert logits.dtype == tf.float32, logits.dtype
        assert tuple(logits.shape) == tuple(expected_output_shape), logits.shape
        assert np.all(np.isfinite(logits.numpy()))
        features = model.preprocessor(strings)
        assert sorted(features) == sorted(FEATURE_NAMES)
        assert all(value.dtype == tf.int32 for value in features.values())
        np.testing.assert_allclose(model(features, training=False), logits, atol=ATOL)
        for row, text in enumerate(texts):
            alone = model(tf.constant([text]), training=False).numpy()[0]
            # A token classifier's row alone is as long as the text's own tokens.
            np.testing.assert_allclose(alone, logits.numpy()[row][: len(alone)], atol=ATOL, err_msg=text)

        # 2. Keras serialization, through JSON as in model.json.
        config = _json_config(model.get_config())
        serialized = _json_config(keras.saving.serialize_keras_object(model))
        revived = keras.saving.deserialize_keras_object(serialized)
        assert type(revived) is cls
        assert type(revived.preprocessor) is type(model.preprocessor)
        assert type(revived.encoder) is type(model.encoder)
        assert _json_config(revived.get_config()) == config
        del revived

        # 3. fit on raw strings; 4. save_model / load_model.
        _compile(model, run_eagerly)
        head_before = _values(model.head.weights)
        saved, loaded = _fit_save_load(model, strings, labels, fit_steps, save_model, load_model, tmp_path / "saved")
        assert all(not np.array_equal(b, w.numpy()) for b, w in zip(head_before, model.head.weights, strict=True))

        predictions = model.predict(strings, batch_size=len(texts), verbose=0)
        assert predictions.shape == tuple(expected_output_shape) and np.all(np.isfinite(predictions))
        if isinstance(model, TextClassifier):
            probabilities = model.predict_proba(texts, batch_size=3)
            np.testing.assert_allclose(probabilities, tf.nn.softmax(predictions).numpy(), atol=ATOL)
            np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=ATOL)

        assert (saved / "model.json").is_file() and any(saved.glob("weights*.index"))
        assert type(loaded) is cls and _json_config(loaded.get_config()) == _json_config(model.get_config())
        np.testing.assert_allclose(loaded(strings, training=False), model(strings, training=False), atol=ATOL)
        del loaded

        # 5. Export, served by the fresh interpreter while the other checks run.
        if export:
            export_dir = tmp_path / "exports" / "export"
            expected_served = _export_round_trip(model, label_names, texts, export_dir, interpreter)

        # 6. Attention of every layer, padding removed.
        layers, heads = expected_attention_shape
        maps = model.attention(texts, batch_size=2)
        assert [m.text for m in maps] == texts
        for text, text_map in zip(texts, maps, strict=True):
            length = int(model.preprocessor(tf.constant([text]))["input_mask"].numpy().sum())
            assert len(text_map.tokens) == length, (text, text_map.tokens)
            assert text_map.attention.shape == (layers, heads, length, length)
            assert (text_map.num_layers, text_map.num_heads) == (layers, heads)
            np.testing.assert_allclose(text_map.attention.sum(axis=-1), 1.0, atol=ATOL)
        if expected_tokens is not None:
            assert maps[0].tokens == list(expected_tokens)
        # The second text, batched with the first, was padded: its maps must not change.
        np.testing.assert_allclose(model.attention(texts[1])[0].attention, maps[1].attention, atol=ATOL)

        # 7. Frozen: only the head trains. Unfrozen: the encoder too.
        model.freeze_encoder()
        _compile(model, run_eagerly)
        assert {id(w) for w in model.trainable_weights} == {id(w) for w in model.head.weights}
        assert len(model.trainable_weights) == 2  # kernel and bias
        encoder_before, head_before = _values(model.encoder.weights), _values(model.head.weights)
        model.fit(strings, labels, batch_size=len(texts), epochs=1, verbose=0)
        for weight, before in zip(model.encoder.weights, encoder_before, strict=True):
            assert np.array_equal(weight.numpy(), before), f"frozen {weight.name} changed"
        assert all(not np.array_equal(b, w.numpy()) for b, w in zip(head_before, model.head.weights, strict=True))

        model.unfreeze_encoder()
        _compile(model, run_eagerly)
        trainable = {id(w) for w in model.encoder.trainable_weights}
        assert len(trainable) == expected_trainable_encoder_weights, len(trainable)
        encoder_before = _values(model.encoder.weights)
        model.fit(strings, labels, batch_size=len(texts), epochs=1, verbose=0)
        for weight, before in zip(model.encoder.weights, encoder_before, strict=True):
            changed = not np.array_equal(weight.numpy(), before)
            without_gradient = any(part in weight.name for part in weights_without_gradient)
            should_change = id(weight) in trainable and not without_gradient
            assert changed == should_change, f"{weight.name}: changed={changed}, trainable={id(weight) in trainable}"

        if export:
            _check_served(interpreter.result(), expected_served, label_names, len(texts))
        return model
    finally:
        if interpreter is not None:
            interpreter.close()


# --- translators: the same battery, for encoder-decoders ------------------------------------


def run_translator_test(cls, init_kwargs, pairs, *, tmp_path, export=False, fit_steps=2, max_length=12):
    """The standard battery every translator passes, as `run_task_test` for the classifiers:

    1. raw strings in, strings out (`translate`); teacher-forced logits float32, `[texts, target
       length, target vocab]`, each pair's independent of its batch neighbours;
    2. `fit` (the task's loss) on the pairs: finite losses, every weighted layer moves, no
       "non-serializable" warning; 3. `save_translator` / `load_translator`: `model.json` like
       every tfattn model, the same class, config, logits and translations;
    4. optionally the export: a FRESH interpreter importing only tensorflow and tensorflow_text
       serves the translations decoded in this process;
    5. the cross-attention of a translation: `[layers, heads, target, source]`, rows summing to 1.

    Args:
        cls: `TransformerTranslator` or `RnnTranslator`; init_kwargs: its arguments (preprocessor, sizes).
        pairs: `TranslationPairs` to fit on and translate (a handful).
        tmp_path: a folder for the saved model, the export and the fresh interpreter's output.
        export: also check the export in a fresh interpreter (slow: a traced decoding loop).
        max_length: the most tokens decoded per translation.

    Returns:
        The model, trained a few steps.
    """
    from tfattn.models.translation import build_sample, load_translator, save_translator
    from tfattn.serving.translators import export_translator
    from tfattn.tasks.translation import MaskedCrossEntropy, alignment

    texts, targets = list(pairs.sources), list(pairs.targets)
    tmp_path = Path(tmp_path)
    interpreter = FreshInterpreter(tmp_path / "fresh", tensorflow_text=True) if export else None
    try:
        model = build_sample(cls(**init_kwargs))

        # 1. Strings in, strings out; logits of teacher forcing, each pair's independent of its
        # batch neighbours (compared as logits: an untrained model's near-ties may decode either way).
        translations = model.translate(texts, max_length=max_length)
        assert len(translations) == len(texts) and all(isinstance(t, str) for t in translations)
        features, labels = model.preprocessor.encode_pairs(texts, targets)
        logits = model(features, training=False)
        assert logits.dtype == tf.float32 and np.all(np.isfinite(logits.numpy()))
        vocabulary = model.preprocessor.target.vocab_size
        assert tuple(logits.shape) == (len(texts), features["target_ids"].shape[1], vocabulary), logits.shape
        for row, (text, target) in enumerate(zip(texts, targets)):
            alone_features, alone_labels = model.preprocessor.encode_pairs([text], [target])
            alone = model(alone_features, training=False).numpy()[0]
            steps = int(np.sum(alone_labels.numpy()[0] > 0))  # the target's real positions
            np.testing.assert_allclose(alone[:steps], logits.numpy()[row][:steps], atol=1e-4, err_msg=text)

        # 2. fit with the task's loss; 3. save_translator / load_translator.
        model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE), loss=MaskedCrossEntropy())
        before = {layer.name: _values(layer.weights) for layer in model.layers if layer.weights}
        folder = tmp_path / "saved"
        saved, loaded = _fit_save_load(model, features, labels, fit_steps, save_translator, load_translator, folder)
        for layer in model.layers:
            if layer.name in before:
                moved = any(not np.array_equal(b, w.numpy()) for b, w in zip(before[layer.name], layer.weights))
                assert moved, f"no weight of {layer.name} trained"
        assert (saved / "model.json").is_file() and any(saved.glob("weights*.index"))
        assert type(loaded) is cls and loaded.get_config() == model.get_config()
        np.testing.assert_allclose(loaded(features, training=False), model(features, training=False), atol=ATOL)
        translations = model.translate(texts, max_length=max_length)
        assert loaded.translate(texts, max_length=max_length) == translations

        # 4. The export, served by a fresh interpreter.
        if export:
            from tfattn.decoding import DecodingOptions

            export_dir = export_translator(model, tmp_path / "export", DecodingOptions(max_length=max_length))
            interpreter.serve(export_dir, texts)
            assert interpreter.result()["translations"] == translations

        # 5. Cross-attention: one row per generated token, a distribution over the source.
        translation, source_tokens, target_tokens, attention = alignment(model, texts[0], max_length=max_length)
        assert translation == translations[0]
        assert attention.shape[2:] == (len(target_tokens), len(source_tokens)), attention.shape
        np.testing.assert_allclose(attention.sum(-1), 1.0, atol=1e-4)
        return model
    finally:
        if interpreter is not None:
            interpreter.close()
