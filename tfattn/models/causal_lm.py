"""Causal language models: a lossless SentencePiece vocabulary learned from the text, a GPT
(decoder blocks with causal self-attention, no cross-attention) and generation from prompts.

- `LanguageModelPreprocessor`: the vocabulary and the context length; documents to one stream
  of ids with the end-of-text token before each document and after the last (what the model
  learns that a document starts and ends), prompts to ids, generated ids back to text.
- `GPT`: `TokenAndPositionEmbedding` -> `TransformerDecoderBlock(cross_attention=False)` x N ->
  a softmax layer over the vocabulary (or the token embeddings themselves, `tie_embeddings`).
  Trained on packed blocks (`call`: next-token logits at every position); generates through
  `tfattn.decoding` (the module's step interface: the prompt is the "source", prefilled into
  the key/value cache by `encode`).
- `generate(model, prompts, ...)`: prompts of any lengths, batched and left-padded, for any
  model on that interface (tfattn's GPT, `tfattn.models.hf_causal_lm`).

Example:
>>> preprocessor = LanguageModelPreprocessor.learn(["to be or not to be\\n"] * 50, vocab_size=300, context_length=16)
>>> model = GPT(preprocessor, embed_dim=8, num_heads=2, ff_dim=16, num_blocks=1)
>>> model(tf.constant([[3, 40, 41]])).shape[-1] == preprocessor.vocab_size
True
>>> len(generate(model, ["to be", ""], max_new_tokens=3))
2
"""

import warnings
from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfattn.layers import TokenAndPositionEmbedding, TransformerDecoderBlock
from tfattn.models.task_models import WEIGHTS_PREFIX, read_weights
from tfattn.models.translation import BOS_ID, CONFIG_FILE, EOS_ID, PAD_ID, UNK_ID, SubwordVocabulary, write_model_folder

__all__ = [
    "GPT",
    "LanguageModelPreprocessor",
    "VOCABULARY_LINES",
    "generate",
    "load_language_model",
    "packed_blocks",
    "save_language_model",
    "stream_cross_entropy",
]

# The end-of-text token separates documents, begins every prompt and ends generation (GPT-2's
# <|endoftext|> plays all three parts too); SentencePiece's end id.
END_OF_TEXT = EOS_ID
VOCABULARY_FILE = "vocabulary.spm"
DEFAULT_VOCAB_SIZE = 2000
# Lines the vocabulary is learned from: enough to learn pieces from (streamed text: its first lines).
VOCABULARY_LINES = 200_000


class LanguageModelPreprocessor(tf.Module):
    """A lossless SentencePiece vocabulary (`SubwordVocabulary.learn(..., lossless=True)`) and the
    context length: the most positions the model reads at once.

    Args:
        vocabulary: a `SubwordVocabulary`.
        context_length: the model's positions (training blocks and prompt plus generated text
            fit in it).
    """

    def __init__(self, vocabulary, context_length, name=None):
        super().__init__(name=name)
        if int(context_length) < 2:
            raise ValueError(f"context_length must be at least 2, got {context_length!r}")
        self.vocabulary = vocabulary
        self.context_length = int(context_length)
        self.vocab_size = vocabulary.vocab_size

    @classmethod
    def learn(cls, texts, vocab_size=DEFAULT_VOCAB_SIZE, context_length=256, max_lines=None):
        """Learn the vocabulary from the lines of `texts` (at most `max_lines` of them: enough
        to learn pieces from; deterministic)."""
        lines = [line for text in texts for line in text.split("\n") if line.strip()][: max_lines or VOCABULARY_LINES]
        if not lines:
            raise ValueError("cannot learn a vocabulary: the texts hold no characters")
        return cls(SubwordVocabulary.learn(lines, vocab_size, lossless=True), context_length)

    def tokenize(self, texts):
        """Ids (a list of numpy arrays) of each text, without end-of-text tokens. A text is
        tokenized a line at a time (the same pieces: a newline is a piece of its own), so a
        whole book costs no more memory than its longest line."""
        ids = []
        for text in texts:
            lines = text.splitlines(keepends=True) or [""]
            ids.append(self.vocabulary.tokenize(lines).flat_values.numpy().astype(np.int32))
        return ids

    def encode_stream(self, documents):
        """One stream of ids for `documents`: end-of-text, then each document followed by
        end-of-text (int32 numpy)."""
        parts = [np.array([END_OF_TEXT], np.int32)]
        for ids in self.tokenize(documents):
            parts += [ids, np.array([END_OF_TEXT], np.int32)]
        return np.concatenate(parts)

    def tokenize_prompts(self, texts):
        """The ids each prompt is fed as: end-of-text (a document begins) then its pieces."""
        return [[END_OF_TEXT, *ids.tolist()] for ids in self.tokenize(texts)]

    def detokenize(self, token_ids):
        """Text of each row of generated ids `[batch, steps]`, up to its first end-of-text."""
        rows = []
        for row in np.asarray(token_ids):
            ended = np.flatnonzero(row == END_OF_TEXT)
            row = row[: ended[0]] if ended.size else row
            rows.append(row[row != PAD_ID])
        width = max((len(row) for row in rows), default=0)
        padded = np.zeros([len(rows), max(width, 1)], np.int32)
        for index, row in enumerate(rows):
            padded[index, : len(row)] = row
        return [text.decode("utf-8") for text in self.vocabulary.detokenize(padded).numpy()]

    def pieces(self, ids):
        """The piece of each id, as text (`▁` marks a space, "\\n" a newline)."""
        return [piece.decode("utf-8") for piece in self.vocabulary.pieces(tf.constant(ids, tf.int32)).numpy()]

    def get_config(self):
        return {"context_length": self.context_length}

    def save(self, folder):
        (Path(folder) / VOCABULARY_FILE).write_bytes(self.vocabulary.to_bytes())

    @classmethod
    def load(cls, folder, config):
        return cls(SubwordVocabulary.from_bytes((Path(folder) / VOCABULARY_FILE).read_bytes()), **config)


class _TiedLogits(keras.layers.Layer):
    """Logits from the token embedding table itself (`x @ embeddings^T + bias`): GPT-2's tied
    input and output embeddings, one table fewer to learn."""

    def __init__(self, embedding, **kwargs):
        super().__init__(dtype="float32", **kwargs)
        self.embedding = embedding

    def build(self, input_shape):
        self.bias = self.add_weight(name="bias", shape=(self.embedding.vocab_size,), initializer="zeros")
        super().build(input_shape)

    def call(self, x):
        table = tf.cast(self.embedding.token_embeddings, x.dtype)
        return tf.cast(tf.matmul(x, table, transpose_b=True), tf.float32) + self.bias


class GPT(keras.Model):
    """A decoder-only transformer language model (the course's miniature GPT).

    Args:
        preprocessor: a `LanguageModelPreprocessor` (vocabulary size and context length).
        embed_dim, num_heads, ff_dim, num_blocks, dropout: sizes of the decoder blocks
            (`TransformerDecoderBlock` without cross-attention).
        positional: "learned" or "sinusoidal" position embeddings.
        tie_embeddings: compute the logits with the token embedding table (no output layer).

    Call: token ids `[batch, length]` (packed text, padding id 0 masked out) -> float32 logits
    `[batch, length, vocab]`, position i predicting token i + 1.
    """

    kind = "gpt"
    family_name = "GPT (from scratch)"  # as the attention explorer names it
    pad_id, eos_id = PAD_ID, END_OF_TEXT
    # Padding is masked out of attention, and unknown and start ids never occur in the lossless
    # vocabulary's output: none of them is a token to generate.
    never_generated = (PAD_ID, UNK_ID, BOS_ID)

    def __init__(
        self,
        preprocessor,
        embed_dim=128,
        num_heads=4,
        ff_dim=512,
        num_blocks=4,
        dropout=0.1,
        positional="learned",
        tie_embeddings=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.preprocessor = preprocessor
        self.embed_dim, self.num_heads, self.ff_dim = int(embed_dim), int(num_heads), int(ff_dim)
        self.num_blocks, self.dropout_rate = int(num_blocks), float(dropout)
        self.positional, self.tie_embeddings = positional, bool(tie_embeddings)
        self.context_length = preprocessor.context_length
        self.embedding = TokenAndPositionEmbedding(
            preprocessor.vocab_size,
            self.context_length,
            self.embed_dim,
            positional=positional,
            mask_zero=False,  # the blocks get the padding mask explicitly
            embeddings_initializer=keras.initializers.RandomNormal(stddev=0.02),
            name="embedding",
        )
        self.embedding_dropout = keras.layers.Dropout(self.dropout_rate)
        self.blocks = [
            TransformerDecoderBlock(
                self.embed_dim,
                self.num_heads,
                self.ff_dim,
                cross_attention=False,
                dropout=self.dropout_rate,
                activation="gelu",
                name=f"block_{index}",
            )
            for index in range(self.num_blocks)
        ]
        if self.tie_embeddings:
            self.output_layer = _TiedLogits(self.embedding, name="logits")
        else:
            self.output_layer = keras.layers.Dense(preprocessor.vocab_size, name="logits", dtype="float32")

    # --- training and scoring
    def call(self, token_ids, training=None):
        return self.forward(token_ids, training=training)[0]

    def forward(self, token_ids, padding_mask=None, positions=None, training=None):
        """`(logits [batch, length, vocab], self-attention [batch, layers, heads, length, length])`
        of `token_ids`; positions count from 0 unless `positions` gives each token's own."""
        token_ids = tf.cast(token_ids, tf.int32)
        if padding_mask is None:
            padding_mask = tf.not_equal(token_ids, PAD_ID)
        x = self.embedding_dropout(self.embedding(token_ids, positions=positions), training=training)
        attention = []
        for block in self.blocks:
            x, scores, _ = block(x, padding_mask=padding_mask, training=training, return_attention_scores=True)
            attention.append(scores)
        return self.output_layer(x), tf.stack(attention, axis=1)

    def self_attention(self, token_ids):
        """The causal self-attention `[batch, layers, heads, length, length]` over unpadded ids."""
        return self.forward(token_ids, training=False)[1]

    def pieces(self, token_ids):
        """Each id's piece, as text (`▁` marks a space)."""
        return self.preprocessor.pieces(token_ids)

    # --- the decoding step interface (`tfattn.decoding`); the prompt plays the source
    @property
    def max_output_length(self):
        return self.context_length // 2

    def encode(self, prompt_ids):
        """Prefill: run the blocks over every prompt column but the last (which `decode_step` 0
        feeds). `prompt_ids` `[batch, P]` are left-padded with `pad_id`: each row's positions
        count from its first real token."""
        prompt_ids = tf.cast(prompt_ids, tf.int32)
        mask = tf.not_equal(prompt_ids, PAD_ID)
        lengths = tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)
        body, body_mask = prompt_ids[:, :-1], mask[:, :-1]
        positions = tf.maximum(tf.cumsum(tf.cast(body_mask, tf.int32), axis=1, exclusive=True), 0)
        x = self.embedding(body, positions=positions)
        batch = tf.shape(prompt_ids)[0]
        prefill = []
        for block in self.blocks:
            x, cache, _ = block.decode_step(x, block.start_cache(batch_size=batch), padding_mask=body_mask)
            prefill.append(cache)
        return {"prompt_ids": prompt_ids, "source_mask": mask, "lengths": lengths, "prefill": prefill}

    def start_tokens(self, state):
        return state["prompt_ids"][:, -1]

    def context_ids(self, state):
        return state["prompt_ids"]

    def start_cache(self, state):
        return state["prefill"]

    def _step_mask(self, state, new):
        """Keys a step may attend to: the prompt's real tokens, then every fed token (`new` of them)."""
        rows = tf.shape(state["source_mask"])[0]
        return tf.concat([state["source_mask"][:, :-1], tf.ones([rows, new], tf.bool)], axis=1)

    def decode_step(self, token_ids, step, state, cache):
        """Logits after `token_ids` `[batch]` (step 0: the last prompt token), the cache with it,
        and the step's attention over the prompt `[batch, layers, heads, P]`."""
        positions = (state["lengths"] - 1 + step)[:, None]
        x = self.embedding(tf.cast(token_ids, tf.int32)[:, None], positions=positions)
        key_mask = self._step_mask(state, step + 1)
        prompt_length = tf.shape(state["source_mask"])[1]
        new_cache, attention = [], []
        for block, block_cache in zip(self.blocks, cache):
            x, block_cache, scores = block.decode_step(x, block_cache, padding_mask=key_mask)
            new_cache.append(block_cache)
            attention.append(scores[:, :, 0, :prompt_length])
        return self.output_layer(x[:, 0]), new_cache, tf.stack(attention, axis=1)

    def decode_prefix(self, prefix_ids, state):
        """`decode_step`'s logits and attention from the whole text, with no cache."""
        token_ids = tf.concat([state["prompt_ids"][:, :-1], tf.cast(prefix_ids, tf.int32)], axis=1)
        mask = self._step_mask(state, tf.shape(prefix_ids)[1])
        positions = tf.maximum(tf.cumsum(tf.cast(mask, tf.int32), axis=1, exclusive=True), 0)
        logits, attention = self.forward(token_ids, padding_mask=mask, positions=positions, training=False)
        prompt_length = tf.shape(state["source_mask"])[1]
        return logits[:, -1], attention[:, :, :, -1, :prompt_length]

    def attention_shape(self):
        return self.num_blocks, self.num_heads

    # --- text in, text out
    def encode_stream(self, documents):
        return self.preprocessor.encode_stream(documents)

    def tokenize_prompts(self, texts):
        return self.preprocessor.tokenize_prompts(texts)

    def detokenize(self, token_ids):
        return self.preprocessor.detokenize(token_ids)

    def generate(self, prompts, max_new_tokens=None, batch_size=16, **options):
        """Continuations of `prompts` (strings); see `generate`."""
        return generate(self, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, **options)

    def weight_layers(self):
        layers = {"embedding": self.embedding, "logits": self.output_layer}
        layers.update({block.name: block for block in self.blocks})
        return layers

    def get_config(self):
        return {
            "embed_dim": self.embed_dim,
            "num_heads": self.num_heads,
            "ff_dim": self.ff_dim,
            "num_blocks": self.num_blocks,
            "dropout": self.dropout_rate,
            "positional": self.positional,
            "tie_embeddings": self.tie_embeddings,
        }


def fit_prompts(prompt_ids, context_length, max_new_tokens):
    """The prompts' ids cut to what fits before `max_new_tokens` new tokens in the context: a
    longer prompt keeps its last tokens (a warning says how many). ValueError when no prompt
    token would fit."""
    room = int(context_length) - int(max_new_tokens) + 1  # the last fed token sits at position context - 1
    if room < 1:
        raise ValueError(
            f"--max-new-tokens {max_new_tokens} leaves no room for a prompt in the model's context of "
            f"{context_length} tokens; ask for at most {context_length}"
        )
    cut = [index for index, ids in enumerate(prompt_ids) if len(ids) > room]
    if cut:
        warnings.warn(
            f"{len(cut)} of {len(prompt_ids)} prompts are longer than the {room} tokens that fit before "
            f"{max_new_tokens} new ones in the context of {context_length}; only their last {room} tokens are kept",
            stacklevel=3,
        )
    return [ids[-room:] for ids in prompt_ids]


def left_pad(prompt_ids, pad_id):
    """`[batch, longest]` int32: each prompt's ids at the right end of its row."""
    width = max(len(ids) for ids in prompt_ids)
    padded = np.full([len(prompt_ids), width], pad_id, np.int32)
    for row, ids in enumerate(prompt_ids):
        padded[row, width - len(ids) :] = ids
    return padded


def generate(model, prompts, max_new_tokens=None, batch_size=16, return_ids=False, **options):
    """Continue each prompt (a string; "" starts a new document) with `model`, decoding with
    `tfattn.decoding.DecodingOptions(**options)` (greedy by default; beam search, sampling) up to
    `max_new_tokens` tokens (default: the model's `max_output_length`), `batch_size` prompts at a
    time (similar lengths together, left-padded). Returns the continuations in order (with
    `return_ids`, also each row's generated ids and score)."""
    from tfattn.decoding import DecodingOptions, decode

    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings, not one string")
    new_tokens = model.max_output_length if max_new_tokens is None else int(max_new_tokens)
    if new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be at least 1, got {max_new_tokens!r}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size!r}")
    decoding = DecodingOptions(max_length=new_tokens, **options)
    prompt_ids = fit_prompts(model.tokenize_prompts(list(prompts)), model.context_length, new_tokens)
    order = sorted(range(len(prompt_ids)), key=lambda index: len(prompt_ids[index]))
    texts, ids, scores = [None] * len(order), [None] * len(order), [None] * len(order)
    for start in range(0, len(order), int(batch_size)):
        chunk = order[start : start + int(batch_size)]
        decoded = decode(model, left_pad([prompt_ids[index] for index in chunk], model.pad_id), decoding)
        token_ids = decoded.token_ids.numpy()
        for row, (index, text) in enumerate(zip(chunk, model.detokenize(token_ids))):
            texts[index], ids[index], scores[index] = text, token_ids[row], float(decoded.scores[row])
    return (texts, ids, scores) if return_ids else texts


# Label of a padded position: below every id, so no vocabulary's real token is masked.
PADDING_LABEL = -100


def packed_blocks(ids, block_size, keep_tail=False):
    """`(inputs, labels)` `[blocks, block_size]` int32 of one stream of ids: consecutive blocks,
    each label the token after its input. `keep_tail` keeps a last, shorter block, padded after
    its tokens (input 0, label `PADDING_LABEL`, scored as nothing; causal attention keeps the
    padding from every real token), so every token after the first is predicted once
    (scoring); training drops it (every block full)."""
    ids = np.asarray(ids, np.int32)
    predicted = len(ids) - 1
    blocks = predicted // block_size + (1 if keep_tail and predicted % block_size else 0)
    inputs = np.zeros([blocks, block_size], np.int32)
    labels = np.full([blocks, block_size], PADDING_LABEL, np.int32)
    for block in range(blocks):
        start = block * block_size
        stop = min(start + block_size, predicted)
        inputs[block, : stop - start] = ids[start:stop]
        labels[block, : stop - start] = ids[start + 1 : stop + 1]
    return inputs, labels


def stream_cross_entropy(model, ids, block_size, batch_size=32):
    """`(nats, tokens)`: the summed negative log-likelihood of every token of the stream `ids`
    after the first, predicted in consecutive blocks of `block_size` (as the validation loss
    is), and how many tokens that is. `model`: token ids in, logits out."""
    inputs, labels = packed_blocks(ids, block_size, keep_tail=True)
    total = 0.0

    @tf.function(reduce_retracing=True)
    def batch_nats(batch_inputs, batch_labels):
        logits = tf.cast(model(batch_inputs, training=False), tf.float32)
        real = batch_labels >= 0
        nll = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.maximum(batch_labels, 0), logits)
        return tf.reduce_sum(tf.where(real, tf.cast(nll, tf.float64), 0.0))

    for start in range(0, len(inputs), int(batch_size)):
        total += float(batch_nats(inputs[start : start + batch_size], labels[start : start + batch_size]))
    return total, int(np.sum(labels >= 0))


def build_gpt(model):
    """Run `model` once on a tiny batch, creating every variable."""
    model(tf.constant([[END_OF_TEXT, END_OF_TEXT]]), training=False)
    return model


def _checkpoint(model):
    return tf.train.Checkpoint(**model.weight_layers())


def save_language_model(model: GPT, folder) -> Path:
    """Write a GPT to `folder` (created; its files replaced): `model.json`, the vocabulary and a
    TensorFlow checkpoint of the weights (`translation.write_model_folder`). Refuses non-finite
    weights."""
    return write_model_folder(model, folder)


def load_language_model(folder) -> GPT:
    """A GPT written by `save_language_model`; the class is fixed, never named by the files; a
    damaged or foreign file is named in one line (`tfattn.runs.manifest.DamagedRun`)."""
    from tfattn.runs.manifest import DamagedRun, read_json_file

    folder = Path(folder)
    config_file = folder / CONFIG_FILE
    if not config_file.is_file():
        raise FileNotFoundError(f"{folder}: no {CONFIG_FILE}; not a language model saved by tfattn")
    saved = read_json_file(config_file)
    advice = "train the run again with --overwrite"
    if not isinstance(saved, dict) or saved.get("model") != GPT.kind:
        kind = saved.get("model") if isinstance(saved, dict) else None
        raise DamagedRun(f"{config_file}: unknown language model {kind!r} (known: {GPT.kind}); {advice}")
    try:
        preprocessor = LanguageModelPreprocessor.load(folder, saved["preprocessor"])
        model = build_gpt(GPT(preprocessor, **saved["config"]))
    except (KeyError, TypeError, ValueError, OSError) as error:
        what = f"{type(error).__name__}: {error}"
        raise DamagedRun(f"{config_file}: not a language model tfattn saved ({what}); {advice}") from None
    read_weights(_checkpoint(model), folder / WEIGHTS_PREFIX, expect_partial=True)
    return model
