"""SavedModel export of a language model: prompts in, generated text out, in the graph (Hugging Face models: ids).

The exported folder loads with `import tensorflow as tf; import tensorflow_text` only (the latter
registers the SentencePiece ops; no tfattn import) and serves two signatures:
- `serving_default(prompts: string[batch])`: decoded as the export's options say (greedy by
  default, or beam search, or sampling with fixed settings);
- `sample(prompts, temperature: float, top_k: int, top_p: float, seed: int)`: sampling with the
  settings as inputs (`top_k` 0 and `top_p` 1.0 keep every token);
both returning
- `continuations` `[batch]` strings: the text generated after each prompt (up to the end token);
- `token_ids` `[batch, steps]` int32: the generated ids (the end id included, then padding 0);
- `scores` `[batch]`: summed log probabilities (beam search: length-normalized);
- `prompt_ids` `[batch, P]` int32: the ids each prompt was fed as, left-padded with 0 (the
  end-of-text token first; a prompt longer than the context keeps its last tokens).
At most `max_new_tokens` tokens (fixed at export) are generated per prompt.

A Hugging Face causal LM (a `--backbone` run) is exported token ids in, token ids out: GPT-2's
byte-level BPE tokenizer does not run in a TensorFlow graph. Its signatures take
`input_ids` and `attention_mask` `[batch, n]` int32, as its tokenizer gives them
(`tokenizer(texts, padding=True, return_tensors="tf")`, either padding side; every row needs a
token, an empty prompt being the start token alone), instead of `prompts`, and return
`token_ids` (after a row's end, the padding id `vocab_size`, outside the vocabulary), `scores`
and `prompt_ids` (left-padded with that id); `tokenizer.batch_decode` turns ids into text. They
load with `tensorflow` alone.

Example:
>>> import tempfile
>>> from tfattn.models.causal_lm import GPT, LanguageModelPreprocessor, build_gpt
>>> preprocessor = LanguageModelPreprocessor.learn(["to be or not to be\\n"] * 50, vocab_size=300, context_length=16)
>>> model = build_gpt(GPT(preprocessor, embed_dim=8, num_heads=2, ff_dim=16, num_blocks=1))
>>> folder = export_language_model(model, tempfile.mkdtemp() + "/export", max_new_tokens=4)
>>> served = tf.saved_model.load(str(folder)).signatures["serving_default"](prompts=tf.constant(["to be"]))
>>> served["token_ids"].shape[1] <= 4
True
"""

from dataclasses import replace
from pathlib import Path

import tensorflow as tf

from tfattn.decoding import DecodingOptions, decoding_function
from tfattn.files import check_export_target, write_export
from tfattn.models.causal_lm import END_OF_TEXT
from tfattn.models.hf_causal_lm import HuggingFaceCausalLM
from tfattn.models.translation import PAD_ID
from tfattn.serving.translators import decoding_record, export_record

__all__ = ["export_language_model"]

PROMPTS_SPEC = tf.TensorSpec([None], tf.string, name="prompts")
IDS_SPEC = tf.TensorSpec([None, None], tf.int32, name="input_ids")
MASK_SPEC = tf.TensorSpec([None, None], tf.int32, name="attention_mask")
SAMPLING_SPECS = (
    tf.TensorSpec([], tf.float32, name="temperature"),
    tf.TensorSpec([], tf.int32, name="top_k"),
    tf.TensorSpec([], tf.float32, name="top_p"),
    tf.TensorSpec([], tf.int32, name="seed"),
)
GREEDY = DecodingOptions()


class _LanguageModelModule(tf.Module):
    """What the SavedModel holds: the GPT (its weights), its vocabulary (the SentencePiece
    resource) and the decoding functions."""

    def __init__(self, model, options):
        super().__init__()
        self.model = model
        self.vocabulary = model.preprocessor.vocabulary  # tracked: the tokenizer resource is saved
        self.options = options
        # The most prompt tokens that fit before max_new_tokens new ones (`causal_lm.fit_prompts`).
        self.room = model.context_length - options.max_length + 1
        self._decode = decoding_function(model, options)

    def _prompt_ids(self, prompts):
        """Left-padded ids `[batch, P]`: end-of-text then each prompt's pieces, the last `room`
        of them."""
        pieces = self.vocabulary.tokenize(prompts)
        start = tf.fill([pieces.nrows(), 1], tf.constant(END_OF_TEXT, pieces.dtype))
        ids = tf.concat([tf.RaggedTensor.from_tensor(start), pieces], axis=1)
        return _left_pad(ids[:, -self.room :])

    def _outputs(self, prompts, decode):
        # An empty batch has no last prompt column to start from: answered without decoding.
        return tf.cond(tf.size(prompts) > 0, lambda: self._decoded(prompts, decode), _nothing)

    def _decoded(self, prompts, decode):
        prompt_ids = self._prompt_ids(prompts)
        token_ids, scores, _ = decode(prompt_ids)
        ended = tf.cumsum(tf.cast(tf.equal(token_ids, END_OF_TEXT), tf.int32), axis=1) > 0
        return {
            "continuations": self.vocabulary.detokenize(tf.where(ended, PAD_ID, token_ids)),
            "token_ids": token_ids,
            "scores": scores,
            "prompt_ids": prompt_ids,
        }

    @tf.function(input_signature=[PROMPTS_SPEC])
    def generate(self, prompts):
        return self._outputs(prompts, self._decode)

    @tf.function(input_signature=[PROMPTS_SPEC, *SAMPLING_SPECS])
    def sample(self, prompts, temperature, top_k, top_p, seed):
        options = _sampling_options(self.options, temperature, top_k, top_p, seed)
        return self._outputs(prompts, decoding_function(self.model, options))


class _TokenIdsModule(tf.Module):
    """What the SavedModel of a Hugging Face causal LM holds: the model (its weights) and the
    decoding functions, token ids in and out (its tokenizer does not run in the graph)."""

    def __init__(self, model, options):
        super().__init__()
        self.model = model.model  # tracked: the Hugging Face Keras model's weights are saved
        self.options = options
        self._wrapper = model
        self.room = model.context_length - options.max_length + 1
        self._decode = decoding_function(model, options)

    def _prompt_ids(self, input_ids, attention_mask):
        """Left-padded ids `[batch, P]` (padding `pad_id`) of the tokens where `attention_mask`
        is 1, whichever side the caller padded; the last `room` of each row."""
        kept = tf.ragged.boolean_mask(tf.cast(input_ids, tf.int32), tf.not_equal(attention_mask, 0))
        tf.debugging.assert_positive(
            kept.row_lengths(), message="every prompt needs a token (an empty one: the start token alone)"
        )
        return _left_pad(kept[:, -self.room :], self._wrapper.pad_id)

    def _outputs(self, input_ids, attention_mask, decode):
        def decoded():
            prompt_ids = self._prompt_ids(input_ids, attention_mask)
            token_ids, scores, _ = decode(prompt_ids)
            return {"token_ids": token_ids, "scores": scores, "prompt_ids": prompt_ids}

        nothing = {key: value for key, value in _nothing().items() if key != "continuations"}
        return tf.cond(tf.shape(input_ids)[0] > 0, decoded, lambda: nothing)

    @tf.function(input_signature=[IDS_SPEC, MASK_SPEC])
    def generate(self, input_ids, attention_mask):
        return self._outputs(input_ids, attention_mask, self._decode)

    @tf.function(input_signature=[IDS_SPEC, MASK_SPEC, *SAMPLING_SPECS])
    def sample(self, input_ids, attention_mask, temperature, top_k, top_p, seed):
        options = _sampling_options(self.options, temperature, top_k, top_p, seed)
        return self._outputs(input_ids, attention_mask, decoding_function(self._wrapper, options))


def _sampling_options(options, temperature, top_k, top_p, seed):
    """`options` sampling with the settings a `sample` signature takes as inputs, checked in the graph."""
    tf.debugging.assert_positive(temperature, message="temperature must be above 0")
    tf.debugging.assert_greater_equal(top_k, 0, message="top_k must be 0 (every token) or more")
    tf.debugging.assert_positive(top_p, message="top_p must be in (0, 1]")
    tf.debugging.assert_less_equal(top_p, 1.0, message="top_p must be in (0, 1]")
    return replace(options, beam_width=1, sample=True, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)


def _nothing():
    return {
        "continuations": tf.zeros([0], tf.string),
        "token_ids": tf.zeros([0, 0], tf.int32),
        "scores": tf.zeros([0], tf.float32),
        "prompt_ids": tf.zeros([0, 0], tf.int32),
    }


def _left_pad(ragged_ids, pad_id=PAD_ID):
    """`[batch, longest]`: each row's ids at the right end, `pad_id` before them."""
    right_padded = ragged_ids.to_tensor(default_value=pad_id)
    width = tf.shape(right_padded)[1]
    # Column j of a row of n ids holds its id j - (width - n), or padding where that is negative.
    source = tf.range(width)[None, :] - (width - tf.cast(ragged_ids.row_lengths(), tf.int32))[:, None]
    gathered = tf.gather(right_padded, tf.maximum(source, 0), batch_dims=1)
    return tf.where(source >= 0, gathered, pad_id)


def export_language_model(
    model,
    export_dir: str | Path,
    options: DecodingOptions = GREEDY,
    max_new_tokens=None,
    overwrite=False,
    protected=(),
) -> Path:
    """Write a GPT (`tfattn.models.causal_lm.GPT`) as a SavedModel that continues raw prompts,
    or a `HuggingFaceCausalLM` as one that continues token ids (see the module docstring for
    their signatures and outputs); written to a temporary sibling folder first and renamed into
    place.

    Args:
        model: a GPT, its variables built (`build_gpt`, `load_language_model`), or a
            `tfattn.models.hf_causal_lm.HuggingFaceCausalLM`.
        export_dir: destination folder.
        options: how `serving_default` decodes (greedy, beam search or sampling).
        max_new_tokens: most tokens generated per prompt (default: the model's `max_output_length`).
        overwrite: replace an existing `export_dir` that tfattn exported.
        protected: folders `export_dir` must not be or hold, e.g. the run being exported.
    """
    from tfattn.models.weights import check_finite_weights

    check_export_target(export_dir, overwrite, protected)  # before the slow work
    pretrained = isinstance(model, HuggingFaceCausalLM)
    check_finite_weights(model.model if pretrained else model)
    new_tokens = model.max_output_length if max_new_tokens is None else int(max_new_tokens)
    if not 1 <= new_tokens <= model.context_length:
        raise ValueError(f"--max-new-tokens must be between 1 and the context length {model.context_length}")
    options = replace(options, max_length=new_tokens, return_attention=False)
    if pretrained:
        module = _TokenIdsModule(model, options)
        info = {
            "kind": "language_model",
            "model": f"hugging_face/{model.model.config.model_type}",
            "ids": {"eos_id": model.eos_id, "pad_id": model.pad_id, "vocab_size": model.vocab_size},
            "decoding": decoding_record(options),
        }
    else:
        module = _LanguageModelModule(model, options)
        info = export_record("language_model", model, options)
    signatures = {"serving_default": module.generate, "sample": module.sample}
    return write_export(
        export_dir,
        lambda staging: tf.saved_model.save(module, str(staging), signatures=signatures),
        overwrite,
        protected,
        info=info,
    )
