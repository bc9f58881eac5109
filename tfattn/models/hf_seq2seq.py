"""Hugging Face TF encoder-decoders (T5, BART, Marian...) decoded by `tfattn.decoding`.

`HuggingFaceSeq2Seq` wraps a `transformers` TF seq2seq model (a `TFAutoModelForSeq2SeqLM`)
and its tokenizer in the step interface `tfattn.decoding` calls (`encode`, `start_cache`,
`decode_step`, `decode_prefix`), so greedy, beam search and sampling decode it as they decode
tfattn's own translators: the encoder runs once per batch, each step runs the decoder on one
new token with the model's own key/value cache (`past_key_values`), and every step's
cross-attention over the source comes along. Greedy and beam search give what the model's own
`generate` gives for the same settings (HF's `max_length` counts the decoder start token:
`max_length = max_output_length + 1`); note that `DecodingOptions.early_stopping` defaults to
True and `generate`'s to False.

Of the generation config only the start, end and padding ids and the single-token
`bad_words_ids` (Marian bans its padding id) are applied; other logits processors
(`min_length`, `forced_bos_token_id`, `no_repeat_ngram_size`, repetition penalties) are not.

Example:
>>> model = HuggingFaceSeq2Seq.from_pretrained("google-t5/t5-small")  # doctest: +SKIP
>>> model.translate(["How old are you?"], prefix="translate English to German: ")  # doctest: +SKIP
"""

import tensorflow as tf

from tfattn.pretrained import config_int, first_id

__all__ = ["HuggingFaceSeq2Seq"]


class HuggingFaceSeq2Seq:
    """A Hugging Face TF encoder-decoder behind tfattn's decoding step interface.

    Args:
        model: a `transformers` TF seq2seq model (`TFAutoModelForSeq2SeqLM.from_pretrained`,
            or one built from a config).
        tokenizer: its tokenizer; needed only by `translate`.
        max_output_length: most tokens generated per sentence by default (the end token
            included, the decoder start token not).
    """

    def __init__(self, model, tokenizer=None, max_output_length=64):
        if int(max_output_length) < 1:
            raise ValueError(f"max_output_length must be at least 1, got {max_output_length!r}")
        self.model, self.tokenizer = model, tokenizer
        self._max_output_length = int(max_output_length)
        config, generation = model.config, model.generation_config
        start = first_id(generation.decoder_start_token_id, config.decoder_start_token_id)
        # Models with several end ids (rare among seq2seq) stop at the first one here.
        end = first_id(generation.eos_token_id, config.eos_token_id)
        pad = first_id(generation.pad_token_id, config.pad_token_id)
        for option, value in (("decoder_start_token_id", start), ("eos_token_id", end), ("pad_token_id", pad)):
            if value is None:
                raise ValueError(f"{config.model_type} model has no {option} in its config; set it to decode")
        self.bos_id, self.eos_id, self.pad_id = int(start), int(end), int(pad)
        # Banned tokens (`bad_words_ids` of one token) are never chosen; decoding reads this.
        self.never_generated = tuple(sorted({ids[0] for ids in (generation.bad_words_ids or ()) if len(ids) == 1}))

    @property
    def max_output_length(self):
        return self._max_output_length

    @classmethod
    def from_pretrained(cls, name_or_folder, max_output_length=64):
        """The model and tokenizer of a Hugging Face hub name (`google-t5/t5-small`,
        `Helsinki-NLP/opus-mt-en-de`) or of a folder `save_pretrained` wrote; a folder with only
        PyTorch weights is converted (needs torch).

        Args:
            name_or_folder: hub name or local folder.
            max_output_length: see the class.
        """
        from transformers import TFAutoModelForSeq2SeqLM

        from tfattn.pretrained import load_generating_model

        model, tokenizer = load_generating_model(TFAutoModelForSeq2SeqLM, name_or_folder, "seq2seq model")
        return cls(model, tokenizer, max_output_length=max_output_length)

    def attention_shape(self):
        """`(layers, heads)` of the decoder's cross-attention."""
        config = self.model.config
        layers = config_int(config, ("decoder_layers", "num_decoder_layers", "num_hidden_layers"))
        heads = config_int(config, ("decoder_attention_heads", "num_heads", "num_attention_heads"))
        return layers, heads

    def encode(self, source_ids):
        """The encoder's output for padded source ids `[batch, source_len]`, and the source mask."""
        source_ids = tf.convert_to_tensor(source_ids, tf.int32)
        mask = tf.not_equal(source_ids, self.pad_id)
        encoded = self.model.get_encoder()(
            input_ids=source_ids, attention_mask=tf.cast(mask, tf.int32), return_dict=True, training=False
        )
        return {"source_mask": mask, "encoder_output": encoded.last_hidden_state}

    def start_cache(self, state):
        """The decoder's cache before any token: per layer, empty self-attention keys and values
        and the cross-attention keys and values of the source. One decoder pass over the start
        token computes them, whatever the model's cache layout (`decode_step` 0 then runs that
        token again: one extra one-token pass per batch, the price of not knowing each
        architecture's cross-attention projections)."""
        batch = tf.shape(state["source_mask"])[0]
        outputs = self._decoder(tf.fill([batch, 1], tf.constant(self.bos_id, tf.int32)), state, use_cache=True)
        # Cut the self-attention entries to no positions: `decode_step` 0 adds the start token's.
        return tuple((layer[0][:, :, :0], layer[1][:, :, :0], *layer[2:]) for layer in outputs.past_key_values)

    def start_tokens(self, state):
        """The decoder start token of every row, fed at step 0."""
        return tf.fill([tf.shape(state["source_mask"])[0]], self.bos_id)

    def context_ids(self, state):
        """What the output continues: the start token (the source is another text)."""
        return self.start_tokens(state)[:, None]

    def decode_step(self, token_ids, step, state, cache):
        """Next-token logits `[batch, vocab]` after `token_ids` `[batch]` (at position `step`, the
        cache holding the positions before), the cache with it, and its cross-attention
        `[batch, layers, heads, source_len]`."""
        outputs = self._decoder(token_ids[:, None], state, past_key_values=cache, use_cache=True)
        cache = tuple(tuple(layer) for layer in outputs.past_key_values)
        return self._logits(outputs), cache, _last_cross_attention(outputs)

    def decode_prefix(self, prefix_ids, state):
        """`decode_step`'s logits and cross-attention from the whole prefix `[batch, step + 1]`
        (the start token first), with no cache."""
        outputs = self._decoder(prefix_ids, state, use_cache=False)
        return self._logits(outputs), _last_cross_attention(outputs)

    def translate(self, texts, batch_size=32, prefix="", **decoding_options):
        """Translations of `texts` (strings), in their order.

        Args:
            texts: the sentences.
            batch_size: sentences decoded together (sorted by length, so a batch pads little).
            prefix: put before every text: T5's task prefix, e.g. "translate English to German: ".
            decoding_options: `tfattn.decoding.DecodingOptions` fields (`beam_width`,
                `max_length`, `sample`...).
        """
        from tfattn.decoding import DecodingOptions, decode_in_batches

        if self.tokenizer is None:
            raise ValueError("translate needs a tokenizer: pass tokenizer= or use HuggingFaceSeq2Seq.from_pretrained")
        tokenizer = self.tokenizer
        return decode_in_batches(
            self,
            [f"{prefix}{text}" for text in texts],
            DecodingOptions(**decoding_options),
            batch_size,
            encode=lambda batch: tf.constant(tokenizer(batch, padding=True, truncation=True)["input_ids"], tf.int32),
            detokenize=lambda token_ids: tokenizer.batch_decode(token_ids.numpy(), skip_special_tokens=True),
        )

    def _decoder(self, decoder_ids, state, past_key_values=None, use_cache=False):
        from transformers.modeling_tf_outputs import TFBaseModelOutput

        return self.model(
            input_ids=None,
            attention_mask=tf.cast(state["source_mask"], tf.int32),
            encoder_outputs=TFBaseModelOutput(last_hidden_state=state["encoder_output"]),
            decoder_input_ids=decoder_ids,
            past_key_values=past_key_values,
            use_cache=use_cache,
            output_attentions=True,
            return_dict=True,
            training=False,
        )

    def _logits(self, outputs):
        """The last position's logits, float32."""
        return tf.cast(outputs.logits[:, -1], tf.float32)


def _last_cross_attention(outputs):
    """The last position's cross-attention, `[batch, layers, heads, source_len]`, from one
    `[batch, heads, positions, source_len]` tensor per layer."""
    return tf.stack([layer[:, :, -1] for layer in outputs.cross_attentions], axis=1)
