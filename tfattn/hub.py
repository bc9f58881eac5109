"""TF-Hub BERT modules: export a Hugging Face BERT in the TF-Hub format, and classify with any pair.

TF-Hub serves BERT as two SavedModels used through `hub.KerasLayer`: a *preprocess* model
(raw strings -> `input_word_ids`, `input_mask`, `input_type_ids`) and an *encoder* (those ids ->
`pooled_output`, `sequence_output`, `encoder_outputs`). `export_hub_bert` writes both from a
local Hugging Face BERT checkpoint, so the TF-Hub workflow runs offline or on your own BERT;
its encoder also returns `attention_probs` (one `[batch, heads, seq, seq]` tensor per layer).
`HubBertClassifier` puts a dropout + dense head on the `pooled_output` of any such pair:
tfhub.dev / Kaggle handles or local folders.

Example:

    export_hub_bert(offline_minilm_path(), "hub/minilm")
    model = HubBertClassifier("hub/minilm/preprocess", "hub/minilm/encoder", num_classes=4)
    model(tf.constant(["Stocks fell sharply on Monday"]))  # [1, 4] probabilities
"""

import functools
import json
from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfattn.export import write_atomically

__all__ = [
    "HUB_FEATURE_NAMES",
    "HubBertClassifier",
    "HubLoadError",
    "build_hub_encoder",
    "export_hub_bert",
    "load_hub_layer",
    "resolve_hub_handle",
]

# The TF-Hub names of the BERT inputs, and the Hugging Face names they correspond to.
HUB_FEATURE_NAMES = {"input_word_ids": "input_ids", "input_mask": "attention_mask", "input_type_ids": "token_type_ids"}
PREPROCESS_DIR = "preprocess"
ENCODER_DIR = "encoder"
HUB_CLASSIFIER_FILE = "hub_classifier.json"


class HubLoadError(OSError):
    """A TF-Hub handle could not be resolved or is not a SavedModel; the message names it."""


def resolve_hub_handle(handle, what="module"):
    """The local SavedModel folder of `handle`: a folder as is, a URL downloaded by tensorflow_hub.

    Raises `HubLoadError` in one line naming the handle for a folder without `saved_model.pb`,
    a path that does not exist, or a URL that cannot be reached (e.g. offline).
    """
    handle = str(handle)
    if "://" not in handle:
        folder = Path(handle).expanduser()
        if not folder.exists():
            raise HubLoadError(f"{handle}: no such folder (TF-Hub {what}: a SavedModel folder or a tfhub.dev/Kaggle URL)")
        if not (folder / "saved_model.pb").is_file() and not (folder / "saved_model.pbtxt").is_file():
            raise HubLoadError(f"{handle}: not a SavedModel folder (no saved_model.pb) for the TF-Hub {what}")
        return str(folder)
    import tensorflow_hub as hub

    try:
        return hub.resolve(handle)
    except Exception as error:  # urllib, HTTP and tensorflow_hub errors alike
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
        raise HubLoadError(
            f"cannot reach the TF-Hub {what} {handle} (offline?): {reason}; pass a local SavedModel folder "
            "instead, e.g. one written by `tfattn export-hub`"
        ) from None


def load_hub_layer(handle, what="module", **kwargs):
    """`hub.KerasLayer` of a handle checked by `resolve_hub_handle`; kwargs go to KerasLayer."""
    import tensorflow_hub as hub
    # BERT preprocess models use tensorflow_text ops (e.g. RoundRobinTrim), which exist in a
    # process only once tensorflow_text is imported.
    import tensorflow_text  # noqa: F401

    return hub.KerasLayer(resolve_hub_handle(handle, what), **kwargs)


# --- export ------------------------------------------------------------------------------


def _hub_names(features):
    return {hub_name: features[hf_name] for hub_name, hf_name in HUB_FEATURE_NAMES.items()}


class _SpecialTokens(tf.Module):
    def __init__(self, preprocessor):
        super().__init__()
        ids = {
            "vocab_size": len(preprocessor.vocabulary),
            "start_of_sequence_id": preprocessor.cls_id,
            "end_of_segment_id": preprocessor.sep_id,
            "padding_id": preprocessor.pad_id,
            "mask_id": preprocessor.vocabulary.index("[MASK]") if "[MASK]" in preprocessor.vocabulary else -1,
        }
        self.__call__ = tf.function(lambda: {name: tf.constant(value, tf.int32) for name, value in ids.items()},
                                    input_signature=[])


class _Tokenize(tf.Module):
    def __init__(self, preprocessor):
        super().__init__()
        self.get_special_tokens_dict = _SpecialTokens(preprocessor)
        self.__call__ = tf.function(
            preprocessor.tokenize_words, input_signature=[tf.TensorSpec([None], tf.string)]
        )


class _PackInputs(tf.Module):
    """`bert_pack_inputs`: 1 or 2 tokenized segments (ragged rank 1 or 2) -> the BERT inputs, with
    an optional `seq_length=` override, as TF-Hub preprocessors have it."""

    def __init__(self, preprocessor, default_seq_length):
        super().__init__()

        @tf.function
        def pack(inputs, seq_length=default_seq_length):
            return _hub_names(preprocessor.pack(list(inputs), seq_length=seq_length))

        self.__call__ = pack
        for ragged_rank in (1, 2):
            for num_segments in (1, 2):
                spec = tf.RaggedTensorSpec([None] * (ragged_rank + 1), tf.int32, ragged_rank=ragged_rank)
                pack.get_concrete_function([spec] * num_segments, seq_length=tf.TensorSpec([], tf.int32))
                pack.get_concrete_function([spec] * num_segments)


class _Preprocess(tf.Module):
    """The preprocess SavedModel: strings `[batch]` -> `[batch, seq_length]` int32 BERT inputs."""

    def __init__(self, preprocessor, vocab_file, seq_length):
        super().__init__()
        self.tokenize = _Tokenize(preprocessor)
        self.bert_pack_inputs = _PackInputs(preprocessor, seq_length)
        # Shipped as an asset so readers of the folder (e.g. attention plots) can name the tokens.
        self.vocab_file = tf.saved_model.Asset(str(vocab_file))
        self.do_lower_case = tf.Variable(preprocessor.lower_case, trainable=False)
        self.__call__ = tf.function(
            lambda texts: _hub_names(preprocessor.pack([preprocessor.tokenize(texts)], seq_length=seq_length)),
            input_signature=[tf.TensorSpec([None], tf.string, name="sentences")],
        )


def build_hub_encoder(backbone):
    """A Keras model with the TF-Hub BERT encoder interface over a transformers TF BERT `backbone`.

    Inputs: a dict of int32 `[batch, seq]` `input_word_ids`, `input_mask`, `input_type_ids`.
    Outputs: `pooled_output` and `default` `[batch, hidden]`, `sequence_output`
    `[batch, seq, hidden]`, `encoder_outputs` (each layer's output) and `attention_probs` (each
    layer's `[batch, heads, seq, seq]` attention).
    """
    inputs = {name: keras.Input(shape=(None,), dtype=tf.int32, name=name) for name in HUB_FEATURE_NAMES}
    outputs = backbone(
        **{HUB_FEATURE_NAMES[name]: value for name, value in inputs.items()},
        output_hidden_states=True,
        output_attentions=True,
        return_dict=True,
    )
    return keras.Model(
        inputs,
        {
            "pooled_output": outputs.pooler_output,
            "default": keras.layers.Identity(name="default")(outputs.pooler_output),
            "sequence_output": outputs.last_hidden_state,
            # hidden_states[0] is the embedding output; TF-Hub lists only the layers' outputs.
            "encoder_outputs": list(outputs.hidden_states[1:]),
            "attention_probs": list(outputs.attentions),
        },
        name="hub_bert_encoder",
    )


def export_hub_bert(checkpoint, out_dir, seq_length=128, overwrite=False):
    """Write `out_dir/preprocess` and `out_dir/encoder`, TF-Hub BERT SavedModels of a local
    Hugging Face BERT checkpoint folder (config.json, weights, vocab.txt).

    The preprocess model gives the ids of the checkpoint's Hugging Face tokenizer (same vocab,
    same casing; see `tfattn.wordpiece`), padded to `seq_length`, and has the `tokenize` and
    `bert_pack_inputs` sub-objects for sentence pairs. The encoder keeps the weights trainable,
    so `hub.KerasLayer(encoder, trainable=True)` fine-tunes it.

    Returns:
        `(preprocess_dir, encoder_dir)` as `Path`s.
    """
    from tfattn.pretrained import load_backbone
    from tfattn.wordpiece import bert_preprocessor_from_pretrained

    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    for folder in (out_dir / PREPROCESS_DIR, out_dir / ENCODER_DIR):
        if folder.exists() and not overwrite:  # before the slow model loading
            raise FileExistsError(f"{folder} already exists; pass overwrite=True (--overwrite) to replace it")
    if not (checkpoint / "vocab.txt").is_file():
        raise HubLoadError(f"{checkpoint}: no vocab.txt; export-hub needs a WordPiece (BERT-family) checkpoint folder")
    preprocessor = bert_preprocessor_from_pretrained(checkpoint, max_length=seq_length)
    preprocess = _Preprocess(preprocessor, checkpoint / "vocab.txt", seq_length)
    encoder = build_hub_encoder(load_backbone(checkpoint))

    preprocess_dir = write_atomically(
        out_dir / PREPROCESS_DIR, lambda staging: tf.saved_model.save(preprocess, str(staging)), overwrite
    )
    encoder_dir = write_atomically(
        out_dir / ENCODER_DIR,
        lambda staging: encoder.save(str(staging), save_format="tf", include_optimizer=False),
        overwrite,
    )
    return preprocess_dir, encoder_dir


# --- classifier --------------------------------------------------------------------------


def _trim_to_longest_row(features):
    """Cut `[batch, seq_length]` inputs to the batch's longest real row: TF-Hub preprocessors
    pad to a fixed length, and the encoder's cost grows with it while padding changes nothing."""
    length = tf.reduce_max(tf.reduce_sum(tf.cast(features["input_mask"], tf.int32), axis=1))
    return {name: value[:, :length] for name, value in features.items()}


@keras.saving.register_keras_serializable(package="tfattn")
class HubBertClassifier(keras.Model):
    """Raw strings (or preprocessed inputs) -> class probabilities, over a TF-Hub BERT pair.

    Args:
        preprocess_handle: a TF-Hub BERT preprocess model: tfhub.dev / Kaggle URL or local folder.
        encoder_handle: the matching encoder, URL or folder.
        num_classes: size of the softmax head on `pooled_output`.
        trainable: fine-tune the encoder; False trains only the head (see `freeze_encoder`).
        dropout: dropout rate before the head.

    Calling it on strings `[batch]` preprocesses them in the graph (so an exported model serves
    raw strings); calling it on a dict of TF-Hub inputs skips that step (training pipelines
    preprocess once, up front). `output_attentions=True` also returns the encoder's per-layer
    attention, which encoders written by `export_hub_bert` have and tfhub.dev ones lack.
    """

    def __init__(self, preprocess_handle, encoder_handle, num_classes, trainable=False, dropout=0.1, **kwargs):
        super().__init__(**kwargs)
        self.preprocess_handle = str(preprocess_handle)
        self.encoder_handle = str(encoder_handle)
        self.num_classes = int(num_classes)
        self.dropout_rate = float(dropout)
        self.preprocessor = load_hub_layer(self.preprocess_handle, "preprocess model", name="preprocess")
        self.encoder = load_hub_layer(self.encoder_handle, "encoder", trainable=trainable, name="encoder")
        self.dropout = keras.layers.Dropout(dropout)
        self.classifier = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="classifier")

    def freeze_encoder(self):
        """Train only the head. Recompile afterwards: Keras fixes the trained weights at compile."""
        self.encoder.trainable = False

    def unfreeze_encoder(self):
        """Fine-tune the encoder too. Recompile afterwards, e.g. with the warmup optimizer."""
        self.encoder.trainable = True

    def preprocess(self, texts):
        """TF-Hub inputs of strings `[batch]`, cut to the batch's longest row."""
        return _trim_to_longest_row(self.preprocessor(tf.convert_to_tensor(texts, tf.string)))

    def call(self, inputs, training=False, output_attentions=False):
        features = inputs if isinstance(inputs, dict) else self.preprocess(inputs)
        outputs = self.encoder(features, training=training)
        probabilities = self.classifier(self.dropout(outputs["pooled_output"], training=training))
        if not output_attentions:
            return probabilities
        if "attention_probs" not in outputs:
            raise ValueError(
                f"the encoder {self.encoder_handle} has no attention_probs output (tfhub.dev encoders "
                "lack it); export one with `tfattn export-hub` to plot attention"
            )
        return probabilities, outputs["attention_probs"]

    @functools.cached_property
    def vocabulary(self):
        """The preprocess model's tokens by id, from its `assets/vocab.txt` (None if it has none);
        read once."""
        vocab_file = Path(resolve_hub_handle(self.preprocess_handle, "preprocess model")) / "assets" / "vocab.txt"
        if not vocab_file.is_file():
            return None
        from tfattn.wordpiece import read_vocabulary

        return read_vocabulary(vocab_file)

    def attention_maps(self, texts):
        """`(tokens, scores)` of a batch of texts: token strings per text (padding removed) and
        attention `[batch, layers, heads, seq, seq]`, as `tfattn.attention` reads every family."""
        features = self.preprocess(texts)
        _, attentions = self(features, training=False, output_attentions=True)
        vocabulary = self.vocabulary
        ids = features["input_word_ids"].numpy()
        mask = features["input_mask"].numpy().astype(bool)
        tokens = [
            [vocabulary[i] if vocabulary else str(i) for i in row[keep]] for row, keep in zip(ids, mask)
        ]
        return tokens, tf.stack(attentions, axis=1).numpy()

    def get_config(self):
        return {
            "name": self.name,
            "preprocess_handle": self.preprocess_handle,
            "encoder_handle": self.encoder_handle,
            "num_classes": self.num_classes,
            "trainable": self.encoder.trainable,
            "dropout": self.dropout_rate,
        }


def save_hub_classifier(model, directory):
    """Write the classifier's handles (`hub_classifier.json`) and all its weights, encoder included."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = {key: value for key, value in model.get_config().items() if key != "name"}
    (directory / HUB_CLASSIFIER_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    model.save_weights(str(directory / "weights"))


def load_hub_classifier(directory):
    """A `HubBertClassifier` written by `save_hub_classifier` (its handles must still resolve)."""
    directory = Path(directory)
    config = json.loads((directory / HUB_CLASSIFIER_FILE).read_text(encoding="utf-8"))
    model = HubBertClassifier(**config)
    model(tf.constant(["build"]))
    model.load_weights(str(directory / "weights")).expect_partial()
    return model



def preprocess_in_chunks(preprocessor, texts, chunk_size=512, what="texts"):
    """TF-Hub inputs of many texts as a dict of ragged `[n, (length)]` int32 tensors (padding
    removed), for `tfattn.data.pipelines.make_dataset` to batch by length.

    Warns with a count about texts with no token besides `[CLS] [SEP]` (their outputs stay
    finite: the encoder pools over those two). The preprocess model truncates by itself, so
    truncated texts cannot be counted here.
    """
    from tfattn.data.pipelines import warn_about_texts

    parts = {name: [] for name in HUB_FEATURE_NAMES}
    all_lengths = []
    for start in range(0, len(texts), chunk_size):
        features = preprocessor(tf.constant(list(texts[start : start + chunk_size])))
        lengths = tf.reduce_sum(tf.cast(features["input_mask"], tf.int32), axis=1)
        all_lengths.append(lengths.numpy())
        for name in HUB_FEATURE_NAMES:
            parts[name].append(tf.RaggedTensor.from_tensor(features[name], lengths=lengths))
    if all_lengths:
        lengths = np.concatenate(all_lengths)
        warn_about_texts(len(lengths), empty=int(np.sum(lengths <= 2)), what=what, filler="[CLS] [SEP] only")
    return {name: tf.concat(pieces, axis=0) for name, pieces in parts.items()}
