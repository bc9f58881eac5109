"""TF-Hub BERT modules: export a Hugging Face BERT in the TF-Hub format, and classify with any pair.

TF-Hub serves BERT as two SavedModels used through `hub.KerasLayer`: a *preprocess* model
(raw strings -> `input_word_ids`, `input_mask`, `input_type_ids`) and an *encoder* (those ids ->
`pooled_output`, `sequence_output`, `encoder_outputs`). `export_hub_bert` writes both from a
local Hugging Face BERT checkpoint, so the TF-Hub workflow runs offline or on your own BERT;
its encoder also returns `attention_probs` (one `[batch, heads, seq, seq]` tensor per layer).
Any such pair (tfhub.dev / Kaggle handles or local folders) plugs into the task models as
`HubPreprocessor` + `HubEncoder`.
"""

import functools
from pathlib import Path

import tensorflow as tf
import tf_keras as keras

from tfattn.files import check_export_target, write_export
from tfattn.models.encoders import Encoder
from tfattn.models.preprocessors import FEATURE_NAMES, Preprocessor
from tfattn.models.wordpiece import read_vocabulary
from tfattn.pretrained import HF_FEATURE_NAMES

__all__ = [
    "HubEncoder",
    "HubLoadError",
    "HubPreprocessor",
    "build_hub_encoder",
    "export_hub_bert",
    "load_hub_layer",
    "resolve_hub_handle",
]

PREPROCESS_DIR = "preprocess"
ENCODER_DIR = "encoder"


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
            raise HubLoadError(
                f"{handle}: no such folder (TF-Hub {what}: a SavedModel folder or a tfhub.dev/Kaggle URL)"
            )
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


# --- the TF-Hub pair as a preprocessor and an encoder ------------------------------------


@keras.saving.register_keras_serializable(package="tfattn")
class HubPreprocessor(Preprocessor):
    """A TF-Hub BERT preprocess model as a preprocessor: strings -> the three features, each
    batch cut to its longest real row (TF-Hub preprocessors pad to a fixed length, and the
    encoder's cost grows with it while padding changes nothing).

    Args:
        handle: tfhub.dev / Kaggle URL or local SavedModel folder (e.g. from `tfattn export-hub`).
    """

    def __init__(self, handle, **kwargs):
        super().__init__(**kwargs)
        self.handle = str(handle)
        self.module = load_hub_layer(self.handle, "preprocess model", name="module")

    def call(self, texts):
        features = self.module(tf.convert_to_tensor(texts, tf.string))
        length = tf.reduce_max(tf.reduce_sum(tf.cast(features["input_mask"], tf.int32), axis=1))
        return {name: tf.cast(features[name][:, :length], tf.int32) for name in FEATURE_NAMES}

    @functools.cached_property
    def vocabulary(self):
        """Token strings by id from the module's `assets/vocab.txt`; ids as strings without one."""
        vocab_file = Path(resolve_hub_handle(self.handle, "preprocess model")) / "assets" / "vocab.txt"
        return read_vocabulary(vocab_file) if vocab_file.is_file() else None

    def get_config(self):
        return {**super().get_config(), "handle": self.handle}


@keras.saving.register_keras_serializable(package="tfattn")
class HubEncoder(Encoder):
    """A TF-Hub BERT encoder (tfhub.dev / Kaggle URL or SavedModel folder) as an encoder.

    Its weights are trainable unless the encoder (or the task model's `freeze_encoder`) says not.
    """

    family_name = "TF-Hub"

    def __init__(self, handle, **kwargs):
        super().__init__(**kwargs)
        self.handle = str(handle)
        self.module = load_hub_layer(self.handle, "encoder", trainable=True, name="module")

    def call(self, features, training=None, output_attentions=False):
        outputs = self.module({name: features[name] for name in FEATURE_NAMES}, training=training)
        result = {"sequence_output": outputs["sequence_output"], "pooled_output": outputs["pooled_output"]}
        if output_attentions:
            if "attention_probs" not in outputs:
                raise ValueError(
                    f"the TF-Hub encoder {self.handle} has no attention_probs output (tfhub.dev encoders lack it); "
                    "export one with `tfattn export-hub` to see attention"
                )
            result["attention_scores"] = list(outputs["attention_probs"])
        return result

    def get_config(self):
        return {**super().get_config(), "handle": self.handle}


# --- export ------------------------------------------------------------------------------


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
        self.__call__ = tf.function(
            lambda: {name: tf.constant(value, tf.int32) for name, value in ids.items()}, input_signature=[]
        )


class _Tokenize(tf.Module):
    def __init__(self, preprocessor):
        super().__init__()
        self.get_special_tokens_dict = _SpecialTokens(preprocessor)
        self.__call__ = tf.function(preprocessor.tokenize_words, input_signature=[tf.TensorSpec([None], tf.string)])


class _PackInputs(tf.Module):
    """`bert_pack_inputs`: 1 or 2 tokenized segments (ragged rank 1 or 2) -> the BERT inputs, with
    an optional `seq_length=` override, as TF-Hub preprocessors have it."""

    def __init__(self, preprocessor, default_seq_length):
        super().__init__()

        @tf.function
        def pack(inputs, seq_length=default_seq_length):
            return preprocessor.pack(list(inputs), seq_length=seq_length)

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
            lambda texts: preprocessor.pack([preprocessor.tokenize(texts)], seq_length=seq_length),
            input_signature=[tf.TensorSpec([None], tf.string, name="sentences")],
        )


def build_hub_encoder(backbone):
    """A Keras model with the TF-Hub BERT encoder interface over a transformers TF BERT `backbone`.

    Inputs: a dict of int32 `[batch, seq]` `input_word_ids`, `input_mask`, `input_type_ids`.
    Outputs: `pooled_output` and `default` `[batch, hidden]`, `sequence_output`
    `[batch, seq, hidden]`, `encoder_outputs` (each layer's output) and `attention_probs` (each
    layer's `[batch, heads, seq, seq]` attention).
    """
    inputs = {name: keras.Input(shape=(None,), dtype=tf.int32, name=name) for name in FEATURE_NAMES}
    outputs = backbone(
        **{HF_FEATURE_NAMES[name]: value for name, value in inputs.items()},
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
    same casing; see `tfattn.models.wordpiece`), padded to `seq_length`, and has the `tokenize` and
    `bert_pack_inputs` sub-objects for sentence pairs. The encoder keeps the weights trainable,
    so `hub.KerasLayer(encoder, trainable=True)` fine-tunes it.

    Returns:
        `(preprocess_dir, encoder_dir)` as `Path`s.
    """
    from tfattn.models.wordpiece import bert_preprocessor_from_pretrained
    from tfattn.pretrained import load_backbone

    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    for folder in (out_dir / PREPROCESS_DIR, out_dir / ENCODER_DIR):
        check_export_target(folder, overwrite, protected=(checkpoint,))  # before the slow model loading
    if not (checkpoint / "vocab.txt").is_file():
        raise HubLoadError(f"{checkpoint}: no vocab.txt; export-hub needs a WordPiece (BERT-family) checkpoint folder")
    preprocessor = bert_preprocessor_from_pretrained(checkpoint, max_length=seq_length)
    preprocess = _Preprocess(preprocessor, checkpoint / "vocab.txt", seq_length)
    encoder = build_hub_encoder(load_backbone(checkpoint))

    preprocess_dir = write_export(
        out_dir / PREPROCESS_DIR,
        lambda staging: tf.saved_model.save(preprocess, str(staging)),
        overwrite,
        protected=(checkpoint,),
        info={"kind": "TF-Hub BERT preprocess"},
    )
    encoder_dir = write_export(
        out_dir / ENCODER_DIR,
        lambda staging: encoder.save(str(staging), save_format="tf", include_optimizer=False),
        overwrite,
        protected=(checkpoint,),
        info={"kind": "TF-Hub BERT encoder"},
    )
    return preprocess_dir, encoder_dir
