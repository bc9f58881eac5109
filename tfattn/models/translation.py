"""Translation models: a preprocessor for both languages and two encoder-decoders that decode
one token at a time (`tfattn.decoding`), saved to and loaded from one folder format.

- `SubwordVocabulary` (the default): a SentencePiece model learned from one language's training
  sentences, applied in the TensorFlow graph (tensorflow_text), lossless: detokenizing gives back
  the text with its case, spacing and punctuation (what cased BLEU scores).
- `WordVocabulary`: the most frequent cased words and punctuation marks of the training
  sentences, everything else unknown; pure TensorFlow ops (the classic word-level baseline;
  BENCHMARKS.md "Translation" compares the two).
- `TranslationPreprocessor`: source and target vocabularies; strings to ids and back.
- `TransformerTranslator`: `TransformerEncoder` + `TransformerDecoderBlock`s, decoding from a
  key/value cache.
- `RnnTranslator`: the course's system, a bidirectional GRU encoder and a GRU decoder with
  additive (Bahdanau) attention.

Both take a feature dict (`source_ids`, `target_ids`: the target shifted right, starting with
the begin token) and return float32 logits `[batch, target_len, target_vocab]` (teacher forcing);
for decoding they share one step interface: `encode`, `start_cache`, `decode_step` (and
`decode_prefix`, the same step without a cache).

Example:
>>> preprocessor = TranslationPreprocessor.learn(["hola", "adiós"] * 20, ["hello", "goodbye"] * 20, vocab_size=16)
>>> model = TransformerTranslator(preprocessor, embed_dim=8, num_heads=2, ff_dim=16, num_blocks=1)
>>> features = preprocessor.encode_pairs(["hola"], ["hello"])[0]
>>> model(features).shape[-1] == preprocessor.target.vocab_size
True
"""

import hashlib
import io
from pathlib import Path

import tensorflow as tf
import tensorflow_text as tf_text
import tf_keras as keras

from tfattn.layers import AdditiveAttention, TokenAndPositionEmbedding, TransformerDecoderBlock
from tfattn.models.encoders import TransformerEncoder
from tfattn.models.task_models import WEIGHTS_PREFIX, read_weights

__all__ = [
    "RnnTranslator",
    "SubwordVocabulary",
    "TransformerTranslator",
    "TranslationPreprocessor",
    "Translator",
    "WordVocabulary",
    "load_translator",
    "save_translator",
]

# Ids fixed in every learned vocabulary: padding 0 (what batches pad with), unknown 1.
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
CONFIG_FILE = "model.json"  # the name of every tfattn model description
SIDES = ("source", "target")  # a saved vocabulary's file name: side + its kind's file_suffix


class SubwordVocabulary(tf.Module):
    """One language's SentencePiece (unigram) model, applied with tensorflow_text ops.

    Seed TensorFlow (`keras.utils.set_random_seed`) before creating one, not after: reseeding
    clears the kernel cache, which holds tensorflow_text's SentencePiece resource, and later
    calls then fail with "Resource ... SentencepieceOp ... does not exist".

    Args:
        model_proto: the serialized SentencePiece model (`learn` makes one).
    """

    kind = "subword"  # as `tfattn train translate --vocabulary` names it
    file_suffix = ".spm"  # saved as source.spm / target.spm
    default_vocab_size = 8000

    def __init__(self, model_proto: bytes, name=None):
        super().__init__(name=name)
        self.model_proto = bytes(model_proto)
        # Named after its model: a SavedModel's loader names each tokenizer resource after its
        # op, so two tokenizers of one name (the default) would load as one, the first.
        name = f"sentencepiece_{hashlib.sha256(self.model_proto).hexdigest()[:16]}"
        self.tokenizer = tf_text.SentencepieceTokenizer(model=self.model_proto, out_type=tf.int32, name=name)
        self.vocab_size = int(self.tokenizer.vocab_size())

    @classmethod
    def learn(cls, texts, vocab_size=None, lossless=False):
        """Learn a vocabulary of `vocab_size` pieces (default `default_vocab_size`) from `texts`
        (deterministic: same texts, same vocabulary). Ids 0-3 are padding, unknown, begin and end.

        `lossless`: a language model's vocabulary, which must give back any text exactly: no
        Unicode normalization, spaces and newlines kept as written (a newline is a piece of its
        own), and a character never seen in `texts` spelled as its UTF-8 bytes (256 byte pieces,
        counted in `vocab_size`) instead of the unknown id."""
        import sentencepiece  # only needed to learn one; applying it is tensorflow_text's

        vocab_size = cls.default_vocab_size if vocab_size is None else vocab_size
        text_options = {}
        if lossless:
            text_options = {
                "normalization_rule_name": "identity",
                "remove_extra_whitespaces": False,
                "add_dummy_prefix": False,
                "byte_fallback": True,
                "user_defined_symbols": ["\n"],
                "allow_whitespace_only_pieces": True,
            }

        model = io.BytesIO()
        try:
            sentencepiece.SentencePieceTrainer.train(
                sentence_iterator=iter(texts),
                model_writer=model,
                vocab_size=int(vocab_size),
                model_type="unigram",
                pad_id=PAD_ID,
                unk_id=UNK_ID,
                bos_id=BOS_ID,
                eos_id=EOS_ID,
                character_coverage=1.0,
                # The vocabulary is capped by what the texts hold (a small corpus, a test slice).
                hard_vocab_limit=False,
                num_threads=2,
                minloglevel=2,
                **text_options,
            )
        except RuntimeError as error:
            # e.g. fewer pieces asked for than the texts have distinct characters
            raise ValueError(f"cannot learn a vocabulary of vocab_size={vocab_size}: {error}") from None
        return cls(model.getvalue())

    def tokenize(self, texts):
        """Ragged ids `[batch, (pieces)]` of strings `[batch]`."""
        return self.tokenizer.tokenize(tf.convert_to_tensor(texts, tf.string))

    def detokenize(self, ids):
        """Strings `[batch]` of ids `[batch, len]`; padding, begin and end ids give no text."""
        return self.tokenizer.detokenize(ids)

    def pieces(self, ids):
        """The piece of each id (`▁` marks a word start)."""
        return self.tokenizer.id_to_string(ids)

    @classmethod
    def from_bytes(cls, data: bytes):
        return cls(data)

    def to_bytes(self):
        return self.model_proto


# Word tokenization: a word is a run of letters, digits and apostrophes ("don't", "Tom's");
# every other visible character (punctuation, symbols, "¿") is a word of its own.
_SEPARATE_MARKS = (r"([^\pL\pN\s'])", r" \1 ")
# Detokenization: no space before closing marks or after opening ones, and a pair of double
# quotes hugs what it quotes ("Go." rather than " Go . ").
_JOIN_MARKS = (
    (r" ([.,!?;:%)\]}»…])", r"\1"),
    (r"([¿¡(\[{«$]) ", r"\1"),
    (r'" ([^"]*?) "', r'"\1"'),
)
SPECIAL_WORDS = ("<pad>", "<unk>", "<s>", "</s>")  # ids 0-3; the splitter never yields them


class WordVocabulary(tf.Module):
    """One language's word vocabulary: the `vocab_size - 4` most frequent cased words and marks
    of the training sentences, in the TensorFlow graph (a lookup table), others unknown.

    Unlike `SubwordVocabulary`, it is lossy: an unknown word decodes as `<unk>`, and the
    spacing around marks is rebuilt by rule ("Where is it ?" -> "Where is it?").

    Args:
        words: the vocabulary, id order; the first four are `SPECIAL_WORDS`.

    Example:
    >>> vocabulary = WordVocabulary.learn(["¿Dónde está la casa?", "La casa está aquí."], vocab_size=9)
    >>> vocabulary.words[4:]
    ('casa', 'está', '.', '?', 'Dónde')
    >>> ids = vocabulary.tokenize(["¿Dónde está la casa?"])
    >>> ids.to_list()
    [[1, 8, 5, 1, 4, 7]]
    >>> vocabulary.detokenize(ids.to_tensor()).numpy()[0].decode()
    '<unk> Dónde está <unk> casa?'
    """

    kind = "words"
    file_suffix = ".words"  # one word per line
    default_vocab_size = 20000

    def __init__(self, words, name=None):
        super().__init__(name=name)
        words = [str(word) for word in words]
        if tuple(words[:4]) != SPECIAL_WORDS:
            raise ValueError(f"a word vocabulary starts with {', '.join(SPECIAL_WORDS)}; got {words[:4]}")
        if len(set(words)) != len(words):
            raise ValueError("a word vocabulary lists each word once")
        self.words = tuple(words)
        self.vocab_size = len(words)
        self._strings = tf.constant(words)
        self._ids = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(self._strings, tf.range(len(words), dtype=tf.int32)),
            default_value=UNK_ID,
        )

    @staticmethod
    def split(texts):
        """Ragged words `[batch, (words)]` of strings `[batch]`."""
        spaced = tf.strings.regex_replace(tf.convert_to_tensor(texts, tf.string), *_SEPARATE_MARKS)
        return tf.strings.split(spaced)

    @classmethod
    def learn(cls, texts, vocab_size=None):
        """The `vocab_size - 4` most frequent words of `texts` (default `default_vocab_size`
        entries; ties by word: deterministic)."""
        from collections import Counter

        vocab_size = cls.default_vocab_size if vocab_size is None else vocab_size
        if int(vocab_size) < 5:
            raise ValueError(f"cannot learn a vocabulary of vocab_size={vocab_size}: it needs at least 5 entries")
        counts = Counter()
        texts = list(texts)
        for start in range(0, len(texts), 10_000):
            words = cls.split(texts[start : start + 10_000]).flat_values.numpy()
            counts.update(word.decode("utf-8") for word in words)
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        return cls(list(SPECIAL_WORDS) + [word for word, _ in ranked[: int(vocab_size) - len(SPECIAL_WORDS)]])

    @classmethod
    def from_bytes(cls, data: bytes):
        return cls(data.decode("utf-8").split("\n"))

    def to_bytes(self):
        return "\n".join(self.words).encode("utf-8")

    def tokenize(self, texts):
        """Ragged ids `[batch, (words)]` of strings `[batch]`."""
        return tf.ragged.map_flat_values(self._ids.lookup, self.split(texts))

    def detokenize(self, ids):
        """Strings `[batch]` of ids `[batch, len]`; padding, begin and end ids give no text."""
        ids = tf.convert_to_tensor(ids, tf.int32)
        shown = tf.ragged.boolean_mask(self.pieces(ids), (ids != PAD_ID) & (ids != BOS_ID) & (ids != EOS_ID))
        text = tf.strings.reduce_join(shown, axis=-1, separator=" ")
        for pattern, rewrite in _JOIN_MARKS:
            text = tf.strings.regex_replace(text, pattern, rewrite)
        return text

    def pieces(self, ids):
        """The word of each id."""
        return tf.gather(self._strings, ids)


VOCABULARIES = {cls.kind: cls for cls in (SubwordVocabulary, WordVocabulary)}
# Entries per language when `vocab_size` is not given.
DEFAULT_VOCAB_SIZES = {kind: cls.default_vocab_size for kind, cls in VOCABULARIES.items()}


class TranslationPreprocessor(tf.Module):
    """Source and target vocabularies (`SubwordVocabulary`s or `WordVocabulary`s) and the length
    limits: strings in, ids out, and generated ids back to strings.

    Args:
        source, target: the two vocabularies, of one kind.
        max_source_length: source sentences are cut to this many tokens (the end id included).
        max_target_length: target sentences likewise (the begin or end id included); also
            the longest translation decoded by default.
    """

    def __init__(self, source, target, max_source_length=64, max_target_length=64, name=None):
        super().__init__(name=name)
        if source.kind != target.kind:
            raise ValueError(f"source and target vocabularies differ in kind: {source.kind} and {target.kind}")
        for option, value in (("max_source_length", max_source_length), ("max_target_length", max_target_length)):
            if int(value) < 2:
                raise ValueError(f"{option} must be at least 2, got {value!r}")
        self.source, self.target = source, target
        self.max_source_length, self.max_target_length = int(max_source_length), int(max_target_length)

    bos_id, eos_id, pad_id = BOS_ID, EOS_ID, PAD_ID

    @classmethod
    def learn(cls, sources, targets, vocab_size=None, vocabulary="subword", **kwargs):
        """Vocabularies of one kind (`vocabulary`: "subword" or "words") and of `vocab_size`
        entries each (default `DEFAULT_VOCAB_SIZES`), learned from the training sentences."""
        if vocabulary not in VOCABULARIES:
            raise ValueError(f"vocabulary must be one of {', '.join(VOCABULARIES)}, got {vocabulary!r}")
        kind = VOCABULARIES[vocabulary]
        return cls(kind.learn(sources, vocab_size), kind.learn(targets, vocab_size), **kwargs)

    def encode_sources(self, texts):
        """Source ids, ragged `[batch, (len)]`: the pieces, cut to fit, then the end id."""
        return self._source_ids(self.source.tokenize(texts))

    def pad_sources(self, texts):
        """`encode_sources` padded with 0 to the longest row: `[batch, len]`."""
        return self.encode_sources(texts).to_tensor(default_value=PAD_ID)

    def pad_source_pieces(self, pieces):
        """`pad_sources` of texts tokenized already: `pieces` holds each text's piece ids (lists,
        as `source.tokenize(texts).to_list()` gives them)."""
        ragged = tf.ragged.constant(pieces, tf.int32, ragged_rank=1)
        return self._source_ids(ragged).to_tensor(default_value=PAD_ID)

    def _source_ids(self, pieces):
        """Source ids of ragged piece ids: cut to fit, then the end id."""
        return _append(pieces[:, : self.max_source_length - 1], EOS_ID)

    def encode_targets(self, texts):
        """`(target_ids, labels)`, ragged: the decoder's input (begin id, pieces) and what it
        must predict at each position (the same pieces, then the end id)."""
        pieces = self.target.tokenize(texts)[:, : self.max_target_length - 1]
        return _prepend(pieces, BOS_ID), _append(pieces, EOS_ID)

    def encode_pairs(self, sources, targets):
        """`(features, labels)` of sentence pairs, padded: what a translator trains on."""
        target_ids, labels = self.encode_targets(targets)
        features = {"source_ids": self.pad_sources(sources), "target_ids": target_ids.to_tensor(PAD_ID)}
        return features, labels.to_tensor(PAD_ID)

    def decode_targets(self, ids):
        """Strings of generated target ids `[batch, len]` (everything from the first end id on is dropped)."""
        ids = tf.convert_to_tensor(ids, tf.int32)
        ended = tf.cumsum(tf.cast(tf.equal(ids, EOS_ID), tf.int32), axis=1) > 0
        return self.target.detokenize(tf.where(ended, PAD_ID, ids))

    def get_config(self):
        return {
            "vocabulary": self.source.kind,
            "max_source_length": self.max_source_length,
            "max_target_length": self.max_target_length,
        }

    def save(self, folder):
        """Write the two vocabularies to `folder` (source.spm and target.spm, or .words)."""
        folder = Path(folder)
        for side, vocabulary in zip(SIDES, (self.source, self.target)):
            (folder / f"{side}{vocabulary.file_suffix}").write_bytes(vocabulary.to_bytes())

    @classmethod
    def load(cls, folder, config):
        config = dict(config)
        kind = VOCABULARIES[config.pop("vocabulary", "subword")]  # translators saved before words: subword
        source, target = (kind.from_bytes((Path(folder) / f"{side}{kind.file_suffix}").read_bytes()) for side in SIDES)
        return cls(source, target, **config)


def _append(ids, value):
    column = tf.fill([ids.nrows(), 1], tf.constant(value, ids.dtype))
    return tf.concat([ids, tf.RaggedTensor.from_tensor(column)], axis=1)


def _prepend(ids, value):
    column = tf.fill([ids.nrows(), 1], tf.constant(value, ids.dtype))
    return tf.concat([tf.RaggedTensor.from_tensor(column), ids], axis=1)


class Translator(keras.Model):
    """What both translators share: teacher-forced logits for training, the decoding step
    interface, and translating strings (`translate`, through `tfattn.decoding`).

    The step interface (`tfattn.decoding` calls only these):
    - `encode(source_ids)` -> `state`, a dict of batch-major tensors the decoder reads;
    - `start_cache(state)` -> `cache`, a nest of batch-major tensors (the decoder's memory);
    - `decode_step(token_ids, step, state, cache)` -> `(logits, cache, cross_attention)`:
      the next-token logits `[batch, vocab]` after `token_ids` `[batch]` at position `step`,
      and that step's attention over the source, `[batch, layers, heads, source_len]`;
    - `start_tokens(state)` -> the start token `[batch]`, fed at step 0;
    - `decode_prefix(prefix_ids, state)`: the same logits and attention computed from the
      whole prefix `[batch, step + 1]`, with no cache (for comparison and tests).
    """

    kind = None  # "transformer" or "rnn", as `tfattn train translate --model` names it

    def __init__(self, preprocessor, dropout=0.1, **kwargs):
        super().__init__(**kwargs)
        self.preprocessor = preprocessor
        self.dropout_rate = float(dropout)
        self.source_vocab_size = preprocessor.source.vocab_size
        self.target_vocab_size = preprocessor.target.vocab_size

    bos_id, eos_id, pad_id = BOS_ID, EOS_ID, PAD_ID
    # Padding is masked out of the decoder's attention and the start token only begins a
    # target: a decoded sentence holding either would mean something else when fed back.
    never_generated = (PAD_ID, BOS_ID)

    @property
    def max_output_length(self):
        return self.preprocessor.max_target_length

    def call(self, features, training=None):
        return self.forward(features, training=training)["logits"]

    def forward(self, features, training=None):
        """Teacher forcing: `logits` `[batch, target_len, vocab]` of `features` (`source_ids`,
        `target_ids`) and `cross_attention` `[batch, layers, heads, target_len, source_len]`."""
        raise NotImplementedError

    def encode(self, source_ids, training=False):
        raise NotImplementedError

    def start_cache(self, state):
        raise NotImplementedError

    def decode_step(self, token_ids, step, state, cache):
        raise NotImplementedError

    def start_tokens(self, state):
        return tf.fill([tf.shape(state["source_mask"])[0]], BOS_ID)

    def context_ids(self, state):
        # The output continues the start token only: the source is in another vocabulary.
        return self.start_tokens(state)[:, None]

    def decode_prefix(self, prefix_ids, state):
        outputs = self.forward({"state": state, "target_ids": prefix_ids}, training=False)
        return outputs["logits"][:, -1], outputs["cross_attention"][:, :, :, -1]

    def attention_shape(self):
        """`(layers, heads)` of the cross-attention `decode_step` returns."""
        raise NotImplementedError

    def translate(self, texts, **options):
        """Translations of `texts` (a list of strings), decoded with `tfattn.decoding.decode`'s
        `options` (greedy by default); warns about sources cut to `max_source_length`."""
        from tfattn.decoding import translate

        return translate(self, texts, **options)

    def weight_layers(self):
        """The layers whose weights a saved translator keeps, by name."""
        raise NotImplementedError

    def get_config(self):
        return {"dropout": self.dropout_rate}


class TransformerTranslator(Translator):
    """A transformer encoder-decoder: `TransformerEncoder` over the source, then `num_blocks`
    `TransformerDecoderBlock`s over the target, and a softmax layer over the target vocabulary.

    Args:
        preprocessor: a `TranslationPreprocessor`.
        embed_dim, num_heads, ff_dim, num_blocks, dropout: sizes of both stacks (per block as
            `TransformerBlock`), with `num_blocks` blocks in the encoder and in the decoder.

    Example:
    >>> preprocessor = TranslationPreprocessor.learn(["hola"] * 20, ["hello"] * 20, vocab_size=16)
    >>> model = TransformerTranslator(preprocessor, embed_dim=8, num_heads=2, ff_dim=16, num_blocks=1)
    >>> state = model.encode(preprocessor.pad_sources(["hola"]))
    >>> logits, cache, attention = model.decode_step(tf.constant([2]), 0, state, model.start_cache(state))
    >>> logits.shape[0], attention.shape[1:3]
    (1, TensorShape([1, 2]))
    """

    kind = "transformer"

    def __init__(self, preprocessor, embed_dim=256, num_heads=4, ff_dim=1024, num_blocks=3, dropout=0.1, **kwargs):
        super().__init__(preprocessor, dropout=dropout, **kwargs)
        self.embed_dim, self.num_heads, self.ff_dim = int(embed_dim), int(num_heads), int(ff_dim)
        self.num_blocks = int(num_blocks)
        self.encoder = TransformerEncoder(
            self.source_vocab_size,
            preprocessor.max_source_length,
            embed_dim=self.embed_dim,
            num_heads=self.num_heads,
            ff_dim=self.ff_dim,
            num_blocks=self.num_blocks,
            dropout=self.dropout_rate,
            name="encoder",
        )
        # No Keras mask: the blocks get the padding mask explicitly, and a mask riding on the
        # logits would make Keras weight the (already token-averaged) loss by it once more.
        self.target_embedding = TokenAndPositionEmbedding(
            self.target_vocab_size,
            preprocessor.max_target_length,
            self.embed_dim,
            mask_zero=False,
            name="target_embedding",
        )
        self.embedding_dropout = keras.layers.Dropout(self.dropout_rate)
        self.decoder_blocks = [
            TransformerDecoderBlock(
                self.embed_dim, self.num_heads, self.ff_dim, dropout=self.dropout_rate, name=f"decoder_block_{index}"
            )
            for index in range(self.num_blocks)
        ]
        self.output_layer = keras.layers.Dense(self.target_vocab_size, name="logits", dtype="float32")

    def encode(self, source_ids, training=False):
        source_ids = tf.cast(source_ids, tf.int32)
        mask = tf.not_equal(source_ids, PAD_ID)
        outputs = self.encoder({"input_word_ids": source_ids, "input_mask": mask}, training=training)
        return {"encoder_outputs": outputs["sequence_output"], "source_mask": mask}

    def forward(self, features, training=None):
        state = features.get("state") or self.encode(features["source_ids"], training=training)
        target_ids = tf.cast(features["target_ids"], tf.int32)
        x = self.embedding_dropout(self.target_embedding(target_ids), training=training)
        target_mask = tf.not_equal(target_ids, PAD_ID)
        cross = []
        for block in self.decoder_blocks:
            x, _, scores = block(
                x,
                state["encoder_outputs"],
                padding_mask=target_mask,
                encoder_padding_mask=state["source_mask"],
                training=training,
                return_attention_scores=True,
            )
            cross.append(scores)
        return {"logits": self.output_layer(x), "cross_attention": tf.stack(cross, axis=1)}

    def start_cache(self, state):
        return [block.start_cache(state["encoder_outputs"]) for block in self.decoder_blocks]

    def decode_step(self, token_ids, step, state, cache):
        x = self.target_embedding(tf.cast(token_ids, tf.int32)[:, None], start_position=step)
        new_cache, cross = [], []
        for block, block_cache in zip(self.decoder_blocks, cache):
            x, block_cache, scores = block.decode_step(x, block_cache, state["source_mask"])
            new_cache.append(block_cache)
            cross.append(scores[:, :, 0])
        return self.output_layer(x[:, 0]), new_cache, tf.stack(cross, axis=1)

    def attention_shape(self):
        return self.num_blocks, self.num_heads

    def weight_layers(self):
        layers = {"encoder": self.encoder, "target_embedding": self.target_embedding, "logits": self.output_layer}
        layers.update({block.name: block for block in self.decoder_blocks})
        return layers

    def get_config(self):
        return {
            **super().get_config(),
            "embed_dim": self.embed_dim,
            "num_heads": self.num_heads,
            "ff_dim": self.ff_dim,
            "num_blocks": self.num_blocks,
        }


class _AttentionGRUCell(keras.layers.Layer):
    """One step of the course's attention decoder: attend to the source with the previous state
    as query, then update the GRU state from the token embedding and the context; the output is
    `[new_state, context]` (what the softmax layer reads) and the attention weights.

    `constants` carries the source: encoder outputs, their `AdditiveAttention` key projection
    (computed once per sentence) and the source mask. Training scans it over the target
    positions (`RnnTranslator.forward`); decoding calls it once per step (`decode_step`).
    """

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.attention = AdditiveAttention(self.units, name="attention")
        self.gru = keras.layers.GRUCell(self.units, name="gru")

    def build_for(self, embed_dim, encoder_width):
        """Create the weights before a loop calls the cell (variables cannot be created in one)."""
        if not self.attention.built:
            self.attention.build(tf.TensorShape([None, self.units]))
        if not self.gru.built:
            self.gru.build(tf.TensorShape([None, embed_dim + encoder_width]))
        self.built = True

    def call(self, inputs, states, constants, training=None):
        state = states[0] if isinstance(states, (list, tuple)) else states
        encoder_outputs, projected_keys, source_mask = constants
        context, weights = self.attention(
            state, encoder_outputs, key_mask=source_mask > 0, projected_keys=projected_keys
        )
        output, _ = self.gru(tf.concat([inputs, context], axis=-1), [state], training=training)
        return (tf.concat([output, context], axis=-1), weights), [output]


class RnnTranslator(Translator):
    """Bidirectional GRU encoder, GRU decoder with additive (Bahdanau) attention.

    At each target step the decoder's previous state attends to the encoder outputs
    (`AdditiveAttention`); the GRU reads the token embedding with that context; the next
    token's logits are computed from the new state and the context. The decoder starts from
    the encoder's final forward and backward states, through a tanh layer.

    Args:
        preprocessor: a `TranslationPreprocessor`.
        embed_dim: size of the token embeddings (both languages).
        units: GRU size (each direction of the encoder, and the decoder) and attention size.
        dropout: rate on the embeddings and before the softmax layer.
    """

    kind = "rnn"

    def __init__(self, preprocessor, embed_dim=256, units=256, dropout=0.1, **kwargs):
        super().__init__(preprocessor, dropout=dropout, **kwargs)
        self.embed_dim, self.units = int(embed_dim), int(units)
        self.source_embedding = keras.layers.Embedding(self.source_vocab_size, self.embed_dim, name="source_embedding")
        self.encoder_rnn = keras.layers.Bidirectional(
            keras.layers.GRU(self.units, return_sequences=True, return_state=True), name="encoder"
        )
        self.bridge = keras.layers.Dense(self.units, activation="tanh", name="bridge")
        self.target_embedding = keras.layers.Embedding(self.target_vocab_size, self.embed_dim, name="target_embedding")
        self.cell = _AttentionGRUCell(self.units, name="decoder")
        self.embedding_dropout = keras.layers.Dropout(self.dropout_rate)
        self.output_dropout = keras.layers.Dropout(self.dropout_rate)
        self.output_layer = keras.layers.Dense(self.target_vocab_size, name="logits", dtype="float32")

    def encode(self, source_ids, training=False):
        source_ids = tf.cast(source_ids, tf.int32)
        mask = tf.not_equal(source_ids, PAD_ID)
        embedded = self.embedding_dropout(self.source_embedding(source_ids), training=training)
        outputs, forward_state, backward_state = self.encoder_rnn(embedded, mask=mask, training=training)
        self.cell.build_for(self.embed_dim, outputs.shape[-1])
        return {
            "encoder_outputs": outputs,
            "projected_keys": self.cell.attention.project_keys(outputs),
            "source_mask": mask,
            "initial_state": self.bridge(tf.concat([forward_state, backward_state], axis=-1)),
        }

    def _constants(self, state):
        return [state["encoder_outputs"], state["projected_keys"], tf.cast(state["source_mask"], tf.float32)]

    def forward(self, features, training=None):
        state = features.get("state") or self.encode(features["source_ids"], training=training)
        target_ids = tf.cast(features["target_ids"], tf.int32)
        embedded = self.embedding_dropout(self.target_embedding(target_ids), training=training)
        constants = self._constants(state)

        def step(hidden, token_vectors):
            (output, weights), new_state = self.cell(token_vectors, [hidden[0]], constants, training=training)
            return new_state[0], output, weights

        # Time-major scan over the target positions: each step's query is the previous state.
        steps = tf.transpose(embedded, [1, 0, 2])
        _, outputs, weights = tf.scan(
            lambda carry, x: step(carry, x),
            steps,
            initializer=(state["initial_state"], self._output_placeholder(state), self._weights_placeholder(state)),
        )
        outputs = tf.transpose(outputs, [1, 0, 2])
        logits = self.output_layer(self.output_dropout(outputs, training=training))
        # [target, batch, source] -> [batch, 1 (layer), 1 (head), target, source]
        cross = tf.transpose(weights, [1, 0, 2])[:, None, None]
        return {"logits": logits, "cross_attention": cross}

    def _output_placeholder(self, state):
        batch = tf.shape(state["initial_state"])[0]
        return tf.zeros([batch, self.units + state["encoder_outputs"].shape[-1]], state["encoder_outputs"].dtype)

    def _weights_placeholder(self, state):
        return tf.zeros(tf.shape(state["source_mask"]), tf.float32)

    def start_cache(self, state):
        return {"state": state["initial_state"]}

    def decode_step(self, token_ids, step, state, cache):
        embedded = self.target_embedding(tf.cast(token_ids, tf.int32))
        (output, weights), new_state = self.cell(embedded, [cache["state"]], self._constants(state))
        return self.output_layer(output), {"state": new_state[0]}, weights[:, None, None]

    def attention_shape(self):
        return 1, 1

    def weight_layers(self):
        return {
            "source_embedding": self.source_embedding,
            "encoder": self.encoder_rnn,
            "bridge": self.bridge,
            "target_embedding": self.target_embedding,
            "decoder": self.cell,
            "logits": self.output_layer,
        }

    def get_config(self):
        return {**super().get_config(), "embed_dim": self.embed_dim, "units": self.units}


TRANSLATORS = {cls.kind: cls for cls in (TransformerTranslator, RnnTranslator)}


def build_sample(model):
    """Run `model` once on a tiny batch, creating every variable (before loading weights or
    restoring a training backup)."""
    features, _ = model.preprocessor.encode_pairs(["a"], ["a"])
    model(features, training=False)
    return model


def _checkpoint(model):
    return tf.train.Checkpoint(**model.weight_layers())


def save_translator(model: Translator, folder) -> Path:
    """Write a translator to `folder` (created; its files replaced): `model.json`, the two
    vocabularies and a TensorFlow checkpoint of the weights. Refuses non-finite weights."""
    return write_model_folder(model, folder)


def write_model_folder(model, folder) -> Path:
    """The folder of every tfattn model that brings its own preprocessor (translators, the GPT):
    `model.json` (`kind`, `get_config()`, the preprocessor's config), the preprocessor's files
    (`preprocessor.save`) and a checkpoint of `weight_layers()`. Refuses non-finite weights."""
    from tfattn.files import write_json
    from tfattn.models.weights import check_finite_weights

    check_finite_weights(model)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.preprocessor.save(folder)
    write_json(
        folder / CONFIG_FILE,
        {"model": model.kind, "config": model.get_config(), "preprocessor": model.preprocessor.get_config()},
    )
    tf.train.Checkpoint(**model.weight_layers()).write(str(folder / WEIGHTS_PREFIX))
    return folder


def load_translator(folder) -> Translator:
    """A translator written by `save_translator`. Its classes come from fixed tables
    (`TRANSLATORS`, `VOCABULARIES`), never from names in the files; a damaged or foreign file
    is named in one line (`tfattn.runs.manifest.DamagedRun`)."""
    from tfattn.runs.manifest import DamagedRun, read_json_file

    folder = Path(folder)
    config_file = folder / CONFIG_FILE
    if not config_file.is_file():
        raise FileNotFoundError(f"{folder}: no {CONFIG_FILE}; not a translator saved by tfattn")
    saved = read_json_file(config_file)
    advice = "train the run again with --overwrite"
    if not isinstance(saved, dict) or saved.get("model") not in TRANSLATORS:
        kind = saved.get("model") if isinstance(saved, dict) else None
        known = ", ".join(TRANSLATORS)
        raise DamagedRun(f"{config_file}: unknown translator model {kind!r} (known: {known}); {advice}")
    try:
        preprocessor = TranslationPreprocessor.load(folder, saved["preprocessor"])
        model = build_sample(TRANSLATORS[saved["model"]](preprocessor, **saved["config"]))
    except (KeyError, TypeError, OSError) as error:
        what = f"{type(error).__name__}: {error}"
        raise DamagedRun(f"{config_file}: not a translator tfattn saved ({what}); {advice}") from None
    read_weights(_checkpoint(model), folder / WEIGHTS_PREFIX, expect_partial=True)
    return model
