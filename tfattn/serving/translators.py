"""SavedModel export of translators: a `serving_default` that translates raw strings in the graph.

The exported folder loads with `import tensorflow as tf; import tensorflow_text` only (the
latter registers the SentencePiece ops; no tfattn import) and serves
`serving_default(texts: string[batch])` ->
- `translations` `[batch]` strings;
- `token_ids` `[batch, steps]` int32: the generated ids (the end id included, then padding 0);
- `scores` `[batch]`: summed log probabilities (beam search: length-normalized);
- `source_pieces` `[batch, source_len]`: the SentencePiece piece of each source id the model
  read (the end piece `</s>` included; padding "");
- `target_pieces` `[batch, steps]`: the piece of each generated id (padding "");
- `cross_attention` `[batch, steps, layers, heads, source_len]` float32: each generated
  token's attention over the source pieces (zeros after a row's end token).
An empty batch gets empty outputs.

Tokenization, decoding (`tfattn.decoding`, one `tf.while_loop`) and detokenization all run in
the graph, with the decoding options given at export time; they are recorded in
`assets.extra/tfattn_export.json` (the SavedModel's folder for files the graph does not read),
with the model's kind and config.

Example:
>>> import tempfile
>>> from tfattn.models.translation import TranslationPreprocessor, TransformerTranslator, build_sample
>>> preprocessor = TranslationPreprocessor.learn(["hola"] * 20, ["hello"] * 20, vocab_size=12, max_target_length=4)
>>> model = build_sample(TransformerTranslator(preprocessor, embed_dim=8, num_heads=2, ff_dim=16, num_blocks=1))
>>> folder = export_translator(model, tempfile.mkdtemp() + "/export")
>>> served = tf.saved_model.load(str(folder)).signatures["serving_default"](texts=tf.constant(["hola"]))
>>> served["cross_attention"].shape[2:4]
TensorShape([1, 2])
"""

from dataclasses import asdict, replace
from pathlib import Path

import tensorflow as tf

from tfattn.decoding import DecodingOptions, decoding_function
from tfattn.files import EXPORT_MARKER, check_export_target, write_export
from tfattn.models.translation import PAD_ID
from tfattn.serving.classifiers import TEXTS_SPEC

__all__ = ["EXPORT_INFO_FILE", "decoding_record", "export_record", "export_translator"]

EXPORT_INFO_FILE = EXPORT_MARKER
DEFAULT_OPTIONS = DecodingOptions()  # greedy, up to the model's `max_output_length`


class _TranslatorModule(tf.Module):
    """What the SavedModel holds: the translator (its weights), its preprocessor (the two
    SentencePiece resources) and the decoding function of the export's options."""

    def __init__(self, model, options):
        super().__init__()
        self.model = model
        # Tracked here too, so the tokenizer resources are saved whatever Keras tracks of the model.
        self.preprocessor = model.preprocessor
        self._decode = decoding_function(model, options)

    @tf.function(input_signature=[TEXTS_SPEC])
    def translate(self, texts):
        # An empty batch pads to zero source positions, which a Keras GRU encoder cannot run
        # over: it is answered without decoding.
        return tf.cond(tf.size(texts) > 0, lambda: self._translate(texts), self._nothing)

    def _translate(self, texts):
        preprocessor = self.preprocessor
        source_ids = preprocessor.pad_sources(texts)
        token_ids, scores, cross_attention = self._decode(source_ids)
        return {
            "translations": preprocessor.decode_targets(token_ids),
            "token_ids": token_ids,
            "scores": scores,
            "source_pieces": _pieces(preprocessor.source, source_ids),
            "target_pieces": _pieces(preprocessor.target, token_ids),
            "cross_attention": cross_attention,
        }

    def _nothing(self):
        layers, heads = self.model.attention_shape()
        return {
            "translations": tf.zeros([0], tf.string),
            "token_ids": tf.zeros([0, 0], tf.int32),
            "scores": tf.zeros([0], tf.float32),
            "source_pieces": tf.zeros([0, 0], tf.string),
            "target_pieces": tf.zeros([0, 0], tf.string),
            "cross_attention": tf.zeros([0, 0, layers, heads, 0], tf.float32),
        }


def _pieces(vocabulary, ids):
    # Padding reads "" (not "<pad>"), so a client can drop it without knowing the pad id.
    return tf.where(tf.equal(ids, PAD_ID), "", vocabulary.pieces(ids))


def export_translator(
    model, export_dir: str | Path, options: DecodingOptions = DEFAULT_OPTIONS, overwrite=False, protected=()
) -> Path:
    """Write a translator (`TransformerTranslator` or `RnnTranslator`) as a SavedModel that
    translates raw strings (see the module docstring for its outputs).

    The model is saved to a temporary sibling folder first and renamed into place, so an
    interrupted export never leaves a half-written model at `export_dir`.

    Args:
        model: a translator of `tfattn.models.translation`, its variables built (`build_sample`,
            `load_translator`).
        export_dir: destination folder.
        options: how `serving_default` decodes (greedy, beam search or sampling); its
            `return_attention` is always on, since the export serves the cross-attention.
            `max_length` None means the model's `max_output_length`.
        overwrite: replace an existing `export_dir` that tfattn exported (otherwise it is an
            error; a folder holding anything else is never replaced, see `tfattn.files.write_export`).
        protected: folders `export_dir` must not be or hold, e.g. the run being exported.

    Returns:
        The export folder as a `Path`.
    """
    from tfattn.models.weights import check_finite_weights

    check_export_target(export_dir, overwrite, protected)  # before the slow work
    check_finite_weights(model)
    if options.max_length is None:
        options = replace(options, max_length=model.max_output_length)
    options = replace(options, return_attention=True)
    module = _TranslatorModule(model, options)
    info = export_record("translator", model, options)
    return write_export(
        export_dir,
        lambda staging: tf.saved_model.save(module, str(staging), signatures={"serving_default": module.translate}),
        overwrite,
        protected,
        info=info,
    )


def export_record(kind, model, options):
    """What the export of a tfattn model that decodes records about it (`write_export`'s info):
    `kind`, the model's kind and config, its preprocessor's config, and the decoding options."""
    return {
        "kind": kind,
        "model": model.kind,
        "config": model.get_config(),
        "preprocessor": model.preprocessor.get_config(),
        "decoding": decoding_record(options),
    }


def decoding_record(options):
    """`DecodingOptions` as an export records them: the strategy's name, then every field."""
    return {"strategy": options.strategy, **asdict(options)}
