"""Hugging Face TF causal language models (GPT-2 and kin) decoded by `tfattn.decoding`.

`HuggingFaceCausalLM` wraps a `transformers` TF causal LM (a `TFAutoModelForCausalLM`) and its
tokenizer in the language-model step interface `tfattn.decoding` calls, so greedy, beam search
and sampling continue prompts as they do for tfattn's own GPT (`tfattn.models.causal_lm`):
- prompts come as one batch `[batch, P]`, LEFT-padded with `pad_id`, so every row's last prompt
  token sits in the last column;
- `encode` runs the model over the prompts once and keeps the key/value cache of all but the
  last column (padding masked out of attention, positions counted from each row's first real
  token, as the model's own `generate` does);
- decoding step 0 feeds each row's last prompt token, step t its t-th generated token, and every
  step's self-attention over the P prompt columns comes along.
Greedy and beam search give the tokens the model's own `generate` gives for the same settings
(`max_new_tokens` = `DecodingOptions.max_length`); note that `DecodingOptions.early_stopping`
defaults to True and `generate`'s to False.

GPT-2 has no padding token, and its end token `<|endoftext|>` may be part of a prompt (an empty
prompt is fed as just that token), so the padding id is `vocab_size`, an id outside the
vocabulary: the mask is `prompt_ids != pad_id`, and ids from `vocab_size` on are fed to the model
as the end token (their outputs are masked out or ignored). Of the generation config only the
end token is applied; its logits processors (`bad_words_ids`...) are not (tfattn's own
`DecodingOptions` give the repetition controls).

Example:
>>> model = HuggingFaceCausalLM.from_pretrained("openai-community/gpt2")  # doctest: +SKIP
>>> model.generate(["The capital of France is"], max_new_tokens=5)  # doctest: +SKIP
"""

import inspect
from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfattn.pretrained import config_int, first_id

__all__ = ["HuggingFaceCausalLM"]


class HuggingFaceCausalLM:
    """A Hugging Face TF causal language model behind tfattn's language-model step interface.

    Args:
        model: a `transformers` TF causal LM (`TFAutoModelForCausalLM.from_pretrained`, or one
            built from a config, e.g. `TFGPT2LMHeadModel(GPT2Config(...))`).
        tokenizer: its tokenizer; needed only for text (`tokenize_prompts`, `detokenize`,
            `generate`).
        max_output_length: most new tokens generated per prompt by default (the end token
            included).
    """

    family_name = "Hugging Face causal LM"  # as the attention explorer names it
    fixed_size_cache = True  # `start_cache(state, max_steps)`: decoding may be XLA-compiled

    def __init__(self, model, tokenizer=None, max_output_length=50):
        if int(max_output_length) < 1:
            raise ValueError(f"max_output_length must be at least 1, got {max_output_length!r}")
        self.model, self.tokenizer = model, tokenizer
        self._max_output_length = int(max_output_length)
        config, generation = model.config, model.generation_config
        # Models with several end ids stop at the first one here.
        end = first_id(generation.eos_token_id, config.eos_token_id)
        if end is None:
            raise ValueError(f"{config.model_type} model has no eos_token_id in its config; set it to decode")
        self.eos_id = int(end)
        # What an empty prompt is fed as: the start token `generate` uses without a prompt
        # (GPT-2's is its end token, `<|endoftext|>`).
        start = first_id(generation.bos_token_id, config.bos_token_id)
        self.bos_id = self.eos_id if start is None else int(start)
        self.vocab_size = int(config.vocab_size)
        # Outside the vocabulary: GPT-2 has no padding token, and its end token may be in a prompt.
        self.pad_id = self.vocab_size
        self.never_generated = ()  # the padding id is not a column of the logits
        self.context_length = config_int(config, ("n_positions", "max_position_embeddings", "n_ctx"))
        # Not every architecture takes position ids (OPT derives them from the mask itself).
        self._takes_positions = "position_ids" in inspect.signature(model.call).parameters
        # GPT-2 and CTRL keep each layer's past as one tensor, keys and values stacked on axis 0;
        # most others as a (key, value) pair. Set by the first model call that returns a cache.
        self._stacked_past = False

    @property
    def max_output_length(self):
        return self._max_output_length

    @classmethod
    def from_pretrained(cls, name_or_folder, max_output_length=50):
        """The model and tokenizer of a Hugging Face hub name (`openai-community/gpt2`,
        `distilbert/distilgpt2`) or of a folder `save_pretrained` wrote; a folder with only
        PyTorch weights is converted (needs torch).

        Args:
            name_or_folder: hub name or local folder.
            max_output_length: see the class.
        """
        from transformers import TFAutoModelForCausalLM

        from tfattn.pretrained import load_generating_model

        model, tokenizer = load_generating_model(TFAutoModelForCausalLM, name_or_folder, "causal language model")
        return cls(model, tokenizer, max_output_length=max_output_length)

    def attention_shape(self):
        """`(layers, heads)` of the model's self-attention."""
        config = self.model.config
        layers = config_int(config, ("n_layer", "num_hidden_layers", "num_layers"))
        heads = config_int(config, ("n_head", "num_attention_heads", "num_heads"))
        return layers, heads

    def self_attention(self, token_ids):
        """The causal self-attention `[batch, layers, heads, length, length]` over unpadded ids."""
        token_ids = tf.convert_to_tensor(token_ids, tf.int32)
        outputs = self._forward(token_ids, tf.ones_like(token_ids), attentions=True)
        return tf.stack(outputs.attentions, axis=1)

    def pieces(self, token_ids):
        """Each id's token, as the tokenizer spells it (GPT-2's `Ġ` marks a space)."""
        return self._needs_tokenizer("pieces").convert_ids_to_tokens([int(i) for i in token_ids])

    # The step interface.

    def encode(self, prompt_ids):
        """The decoding state of left-padded prompts `prompt_ids` `[batch, P]` (`pad_id` before
        each row's tokens, at least one token a row): `source_mask` `[batch, P]` (True at prompt
        tokens), `prompt_ids`, each row's `last_tokens` `[batch]`, and `key_values`, the cache of
        columns 0..P-2 (per layer a key and a value `[batch, heads, P - 1, head_dim]`)."""
        prompt_ids = tf.convert_to_tensor(prompt_ids, tf.int32)
        mask = tf.not_equal(prompt_ids, self.pad_id)
        # All P columns run, and the last column's keys and values are cut off: causal attention
        # makes the others the same as a pass over columns 0..P-2, and this way P == 1 (nothing to
        # prefill, whatever P is when traced) needs no special case. Step 0 then feeds the last
        # column again: one extra token per batch.
        outputs = self._forward(prompt_ids, mask, use_cache=True, attentions=False)
        keep = tf.shape(prompt_ids)[1] - 1
        key_values = tuple(
            (key[:, :, :keep], value[:, :, :keep]) for key, value in self._batch_major(outputs.past_key_values)
        )
        return {
            "source_mask": mask,
            "prompt_ids": prompt_ids,
            "last_tokens": prompt_ids[:, -1],
            "key_values": key_values,
        }

    def start_tokens(self, state):
        """Each row's last prompt token `[batch]`, fed at step 0."""
        return state["last_tokens"]

    def context_ids(self, state):
        """The left-padded prompts: what the repetition controls count before the output."""
        return state["prompt_ids"]

    def start_cache(self, state, max_steps=None):
        """The prefilled cache of `encode`: per layer `(key, value)`, each `[batch, heads, P - 1,
        head_dim]` (batch-major: beam search repeats and gathers it along axis 0). The attention
        mask over the cache is not kept in it: it is the prompt's mask then ones, rebuilt from
        the state and the step (a mask growing along its last axis would break the decoding
        loop's shape invariants, which fix every cache tensor's last axis).

        With `max_steps`, a fixed-size cache instead, `{"fixed": layers}`: each key and value
        `[batch, heads, P - 1 + max_steps, head_dim]`, the prompt's then zeros that step t
        overwrites at place P - 1 + t (what XLA compiles: no tensor changes shape)."""
        if max_steps is None:
            return state["key_values"]
        room = [[0, 0], [0, 0], [0, max_steps], [0, 0]]
        return {"fixed": tuple((tf.pad(key, room), tf.pad(value, room)) for key, value in state["key_values"])}

    def decode_step(self, token_ids, step, state, cache):
        """Next-token logits `[batch, vocab_size]` float32 after `token_ids` `[batch]` (step 0:
        the last prompt tokens; step t: the t-th generated tokens), the cache with them, and
        their self-attention over the P prompt columns `[batch, layers, heads, P]`."""
        if isinstance(cache, dict):
            return self._fixed_decode_step(token_ids, step, state, cache["fixed"])
        mask = self._mask(state, step)
        # Counted from the row's first real token: the step's position is the tokens before it.
        positions = tf.reduce_sum(tf.cast(mask, tf.int32), axis=1, keepdims=True) - 1
        outputs = self._forward(
            token_ids[:, None], mask, positions=positions, past_key_values=self._model_past(cache), use_cache=True
        )
        cache = self._batch_major(outputs.past_key_values)
        return self._logits(outputs), cache, self._prompt_attention(outputs, state)

    def _fixed_decode_step(self, token_ids, step, state, cache):
        """`decode_step` from a fixed-size cache (`start_cache(state, max_steps)`): the model
        attends to the prompt's places, the places steps 0..t-1 wrote and the fed token; the
        fed token's key and value (the model appends them after the cache) are written at
        place P - 1 + t."""
        prompt_mask = state["source_mask"]
        batch, prompt_length = tf.shape(prompt_mask)[0], tf.shape(prompt_mask)[1]
        places = tf.shape(cache[0][0])[2]
        written = tf.range(places - (prompt_length - 1))[None, :] < step
        mask = tf.concat(
            [
                prompt_mask[:, :-1],
                tf.broadcast_to(written, [batch, places - prompt_length + 1]),
                tf.ones([batch, 1], tf.bool),
            ],
            axis=1,
        )
        positions = tf.reduce_sum(tf.cast(prompt_mask, tf.int32), axis=1, keepdims=True) - 1 + step
        outputs = self._forward(
            token_ids[:, None], mask, positions=positions, past_key_values=self._model_past(cache), use_cache=True
        )
        here = tf.equal(tf.range(places), prompt_length - 1 + step)[None, None, :, None]
        cache = tuple(
            (tf.where(here, key[:, :, -1:], old_key), tf.where(here, value[:, :, -1:], old_value))
            for (key, value), (old_key, old_value) in zip(self._batch_major(outputs.past_key_values), cache)
        )
        # Over the prompt: its first P - 1 places, then its last token, which is the fed token
        # itself at step 0 (the last key) and at place P - 1 afterwards.
        attention = []
        for layer in outputs.attentions:
            row = tf.cast(layer[:, :, -1], tf.float32)
            last = tf.where(step == 0, row[:, :, -1], row[:, :, prompt_length - 1])
            attention.append(tf.concat([row[:, :, : prompt_length - 1], last[:, :, None]], axis=-1))
        return self._logits(outputs), {"fixed": cache}, tf.stack(attention, axis=1)

    def decode_prefix(self, prefix_ids, state):
        """`decode_step`'s logits and attention from the whole prefix `prefix_ids` `[batch,
        step + 1]` (the last prompt tokens, then the tokens generated), with no cache: one pass
        over the prompt's first P - 1 columns and the prefix."""
        step = tf.shape(prefix_ids)[1] - 1
        token_ids = tf.concat([state["prompt_ids"][:, :-1], tf.cast(prefix_ids, tf.int32)], axis=1)
        outputs = self._forward(token_ids, self._mask(state, step), use_cache=False)
        return self._logits(outputs), self._prompt_attention(outputs, state)

    # Text in and out.

    def tokenize_prompts(self, texts):
        """The ids each prompt of `texts` (strings) is fed as: the tokenizer's, no special tokens
        added; an empty prompt is the start token alone (GPT-2's `<|endoftext|>`)."""
        tokenizer = self._needs_tokenizer("tokenize_prompts")
        texts = [str(text) for text in texts]
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
        return [list(row) if len(row) else [self.bos_id] for row in ids]

    def detokenize(self, token_ids):
        """Strings of generated ids `token_ids` `[batch, steps]` (numpy or tensor): each row cut
        at its first end token, padding dropped, special tokens skipped."""
        tokenizer = self._needs_tokenizer("detokenize")
        texts = []
        for row in np.asarray(token_ids).tolist():
            row = row[: row.index(self.eos_id)] if self.eos_id in row else row
            texts.append(
                tokenizer.decode([token for token in row if token < self.vocab_size], skip_special_tokens=True)
            )
        return texts

    def generate(self, texts, max_new_tokens=None, batch_size=16, **decoding_options):
        """The continuations (strings) of prompts `texts`, in their order: `tfattn.models.causal_lm.generate`
        (batched by length, left-padded; a prompt too long for the context keeps its last tokens)."""
        from tfattn.models.causal_lm import generate

        return generate(self, texts, max_new_tokens=max_new_tokens, batch_size=batch_size, **decoding_options)

    # Training and scoring (`tfattn train lm --backbone`).

    def encode_stream(self, documents):
        """One stream of ids (int32 numpy) for `documents`: the end token, then each document
        followed by the end token, as tfattn's GPT reads text (GPT-2 was trained so too)."""
        tokenizer = self._needs_tokenizer("encode_stream")
        parts = [np.array([self.eos_id], np.int32)]
        for document in documents:
            parts += [np.asarray(tokenizer(document, add_special_tokens=False)["input_ids"], np.int32)]
            parts += [np.array([self.eos_id], np.int32)]
        return np.concatenate(parts)

    def __call__(self, token_ids, training=False):
        """Next-token logits `[batch, length, vocab]` float32 of packed text `token_ids` (no
        padding before a real token: a block's padding comes after it, which causal attention
        never lets a real token see)."""
        token_ids = tf.cast(token_ids, tf.int32)
        token_ids = tf.where(token_ids >= self.vocab_size, self.eos_id, token_ids)
        logits = self.model(input_ids=token_ids, training=training, return_dict=True).logits
        return tf.cast(logits[..., : self.vocab_size], tf.float32)

    def training_model(self):
        """A Keras model of this one's weights for `model.fit`: token ids in, logits out (built)."""
        model = _TrainableCausalLM(self)
        model(tf.constant([[self.eos_id]]))
        return model

    def save(self, folder):
        """`save_pretrained` of the model and its tokenizer into `folder` (created)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(folder))
        self._needs_tokenizer("save").save_pretrained(str(folder))
        return folder

    # Helpers.

    def _forward(self, token_ids, mask, positions=None, past_key_values=None, use_cache=False, attentions=True):
        """The model's outputs over `token_ids` `[batch, n]`, attending where `mask` `[batch,
        past + n]` is True; with the attention weights when `attentions`. Positions default to the
        real tokens before each one (the exclusive cumulative sum of the mask, as `generate`
        counts them for left-padded prompts)."""
        mask = tf.cast(mask, tf.int32)
        if positions is None:
            positions = tf.math.cumsum(mask, axis=1, exclusive=True)[:, -tf.shape(token_ids)[1] :]
        options = {"position_ids": positions} if self._takes_positions else {}
        # Padding (and a finished row's padding) reads as the end token: the lookup needs a real id.
        token_ids = tf.where(token_ids >= self.vocab_size, self.eos_id, tf.cast(token_ids, tf.int32))
        return self.model(
            input_ids=token_ids,
            attention_mask=mask,
            past_key_values=past_key_values,
            use_cache=use_cache,
            output_attentions=attentions,
            return_dict=True,
            training=False,
            **options,
        )

    def _mask(self, state, step):
        """The attention mask `[batch, P + step]` when step `step` is fed: the prompt's, then
        the generated tokens (all real; a finished row's are ignored)."""
        mask = state["source_mask"]
        return tf.concat([mask, tf.ones([tf.shape(mask)[0], step], tf.bool)], axis=1)

    def _batch_major(self, past_key_values):
        """The model's `past_key_values` as per layer `(key, value)`, each `[batch, heads, seq,
        head_dim]`; notes the model's layout for `_model_past`."""
        layers = []
        for layer in past_key_values:
            if isinstance(layer, (tuple, list)):
                layers.append((layer[0], layer[1]))
            else:
                self._stacked_past = True
                key, value = tf.unstack(layer, num=2, axis=0)
                layers.append((key, value))
        return tuple(layers)

    def _model_past(self, cache):
        """A batch-major cache back in the model's own layout."""
        if self._stacked_past:
            return tuple(tf.stack([key, value], axis=0) for key, value in cache)
        return tuple((key, value) for key, value in cache)

    def _logits(self, outputs):
        """The last position's logits `[batch, vocab_size]` float32."""
        return tf.cast(outputs.logits[:, -1, : self.vocab_size], tf.float32)

    def _prompt_attention(self, outputs, state):
        """The last position's self-attention over the P prompt columns, `[batch, layers, heads,
        P]` float32, from one `[batch, heads, positions, keys]` tensor per layer."""
        prompt_length = tf.shape(state["source_mask"])[1]
        return tf.stack([tf.cast(layer[:, :, -1, :prompt_length], tf.float32) for layer in outputs.attentions], axis=1)

    def _needs_tokenizer(self, method):
        if self.tokenizer is None:
            raise ValueError(f"{method} needs a tokenizer: pass tokenizer= or use HuggingFaceCausalLM.from_pretrained")
        return self.tokenizer


class _TrainableCausalLM(keras.Model):
    """`HuggingFaceCausalLM` as a Keras model that `model.fit` trains: its call is the wrapper's
    (ids in, float32 logits out) and its weights are the Hugging Face model's."""

    def __init__(self, wrapped, **kwargs):
        super().__init__(**kwargs)
        self.wrapped = wrapped
        self.backbone = wrapped.model  # tracked: its weights are this model's

    def call(self, token_ids, training=None):
        return self.wrapped(token_ids, training=bool(training))
