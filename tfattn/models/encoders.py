"""Encoders: Keras layers from the feature dict to contextual vectors, and attention on request.

Every encoder takes the dict a preprocessor makes (`input_word_ids`, `input_mask`,
`input_type_ids`; int32 `[batch, seq]`) and returns a dict, as TF Model Garden's encoders do:
- `sequence_output` `[batch, seq, hidden]`, one vector per token;
- `pooled_output` `[batch, hidden]`: BERT's pooler (tanh dense over `[CLS]`) for pretrained
  encoders, the mean of real tokens for the from-scratch one;
- with `output_attentions=True`, `attention_scores`: a list with each layer's attention
  `[batch, heads, query, key]`.

- `TransformerEncoder`: tfattn's own embedding + transformer blocks, trained from scratch.
- `HuggingFaceEncoder`: a Hugging Face transformers TF backbone (BERT family).
- `tfattn.models.hub.HubEncoder`: a TF-Hub BERT encoder; attention only where the module returns
  `attention_probs` (those written by `tfattn export-hub` do, tfhub.dev ones do not).
"""

from pathlib import Path

import tensorflow as tf
import tf_keras as keras

from tfattn.layers import HashedBigramEmbedding, TokenAndPositionEmbedding, TransformerBlock
from tfattn.pretrained import HF_FEATURE_NAMES

__all__ = ["Encoder", "HuggingFaceEncoder", "TransformerEncoder", "masked_mean"]


def masked_mean(sequence: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Mean of `sequence` `[batch, seq, hidden]` over the positions where `mask` is set, in the
    dtype of `sequence` (summed in float32: a bfloat16 sum of a hundred vectors keeps 8 bits)."""
    values = tf.cast(sequence, tf.float32)
    mask = tf.cast(mask, tf.float32)[:, :, None]
    mean = tf.reduce_sum(values * mask, axis=1) / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)
    return tf.cast(mean, sequence.dtype)


# Hugging Face TF self-attention layers that are copies of BERT's ("Copied from
# transformers.models.bert.modeling_tf_bert.TFBertSelfAttention"): the ones whose softmax
# `HuggingFaceEncoder` moves to float32 under mixed precision.
BERT_SELF_ATTENTION_CLASSES = frozenset(
    f"TF{name}SelfAttention"
    for name in "Bert Roberta RobertaPreLayerNorm XLMRoberta Camembert Electra LayoutLM RemBert Tapas".split()
)


class _Float32SoftmaxSelfAttention:
    """Mixin over a BERT-copy TF self-attention layer (`BERT_SELF_ATTENTION_CLASSES`): the same
    computation, but the attention softmax and dropout in float32, and the attention
    probabilities it returns float32 (those of the softmax, before attention dropout).

    Transformers computes it in the compute dtype: under mixed_float16, scores past 65504
    overflow to inf and the softmax to NaN, and under mixed_bfloat16 each probability keeps 8
    bits, so a row sums to 1 only within about 0.4%.

    Only an encoder's self-attention gets it (`float32_attention_softmax` leaves decoder layers,
    and with them cross-attention and cached keys and values, to transformers' own code), so
    `encoder_hidden_states`, `encoder_attention_mask` and `past_key_value` are never given here;
    they stay in the signature, which is transformers'."""

    def call(
        self,
        hidden_states,
        attention_mask,
        head_mask,
        encoder_hidden_states,
        encoder_attention_mask,
        past_key_value,
        output_attentions,
        training=False,
    ):
        if encoder_hidden_states is not None or past_key_value is not None:
            raise ValueError(f"{self.name}: an encoder's self-attention takes no encoder states or cached keys")
        from transformers.tf_utils import stable_softmax

        batch_size = tf.shape(hidden_states)[0]
        query = self.transpose_for_scores(self.query(inputs=hidden_states), batch_size)
        key = self.transpose_for_scores(self.key(inputs=hidden_states), batch_size)
        value = self.transpose_for_scores(self.value(inputs=hidden_states), batch_size)
        if query.dtype == tf.float16:
            # Scores past float16's 65504 would be inf before the softmax could see them.
            query, key = tf.cast(query, tf.float32), tf.cast(key, tf.float32)
        scores = tf.cast(tf.matmul(query, key, transpose_b=True), tf.float32) / self.sqrt_att_head_size
        if attention_mask is not None:
            scores = scores + tf.cast(attention_mask, tf.float32)
        # transformers' softmax (a workaround of an XLA CPU bug), on float32 scores.
        probabilities = stable_softmax(logits=scores, axis=-1)
        dropped = probabilities
        if training and self.dropout.rate > 0:
            # On the float32 probabilities, so not through the Keras layer, which would cast them
            # to the compute dtype first (and TensorFlow's CPU dropout is slower in bfloat16).
            dropped = tf.nn.dropout(probabilities, rate=self.dropout.rate)
        if head_mask is not None:
            dropped = dropped * tf.cast(head_mask, dropped.dtype)
        attention_output = tf.matmul(tf.cast(dropped, value.dtype), value)
        attention_output = tf.transpose(attention_output, perm=[0, 2, 1, 3])
        attention_output = tf.reshape(attention_output, (batch_size, -1, self.all_head_size))
        return (attention_output, probabilities) if output_attentions else (attention_output,)


_FLOAT32_SOFTMAX_CLASSES = {}


def float32_attention_softmax(backbone) -> int:
    """Give every BERT-copy self-attention layer of a transformers TF `backbone` that computes
    in 16 bits (built under a mixed precision policy) its softmax and attention dropout in
    float32 (`_Float32SoftmaxSelfAttention`), in place; returns how many layers were changed.
    Layers computing in float32, and those of a decoder, keep transformers' code, bit for bit."""
    changed = 0
    for layer in backbone._flatten_layers(include_self=False, recursive=True):
        cls = type(layer)
        if cls.__name__ not in BERT_SELF_ATTENTION_CLASSES or isinstance(layer, _Float32SoftmaxSelfAttention):
            continue
        if layer.is_decoder:
            # Decoder attention reads cached keys and values, or the encoder's states.
            continue
        if tf.as_dtype(layer.compute_dtype) == tf.float32:
            continue
        if cls not in _FLOAT32_SOFTMAX_CLASSES:
            bases = (_Float32SoftmaxSelfAttention, cls)
            _FLOAT32_SOFTMAX_CLASSES[cls] = type(f"Float32Softmax{cls.__name__}", bases, {})
        # Only the class changes: the layer keeps its weights, names and checkpoint keys.
        layer.__class__ = _FLOAT32_SOFTMAX_CLASSES[cls]
        changed += 1
    return changed


class Encoder(keras.layers.Layer):
    """What every encoder shares: `call(features, training, output_attentions) -> dict`."""

    # The model family as pages and reports name it; empty: the class name stands in.
    family_name = ""

    def use_pooler(self, used: bool) -> None:
        """Whether the task reads `pooled_output`: an encoder with a trainable pooler keeps it out
        of training when it is not read (it would get no gradient). Default: nothing to do."""

    def head_initializer(self) -> keras.initializers.Initializer:
        """The initializer of a task head on this encoder: Keras's default (Glorot uniform) here;
        pretrained encoders use their own checkpoint's recipe."""
        return keras.initializers.GlorotUniform()


@keras.saving.register_keras_serializable(package="tfattn")
class TransformerEncoder(Encoder):
    """Token and position embeddings followed by `num_blocks` post-norm transformer blocks.

    Args:
        vocab_size: size of the token table (id 0 is padding).
        max_length: longest accepted input.
        embed_dim, num_heads, ff_dim, dropout: per-block sizes (see `TransformerBlock`).
        num_blocks: number of stacked blocks.
        positional: `"learned"` or `"sinusoidal"` position embeddings.
        bigram_buckets: when positive, a `HashedBigramEmbedding` of this many rows is added to
            the token embeddings (each token also sees the one before it).
        token_dropout: in training, the rate at which whole token vectors (word and position
            embedding) are zeroed before the first block, as if the word were missing; the rest
            are scaled up to keep the expected sum. A regulariser for small data.

    Example:
    >>> encoder = TransformerEncoder(vocab_size=50, max_length=8, embed_dim=8, num_heads=2, ff_dim=16)
    >>> ids = tf.constant([[5, 6, 0]])
    >>> outputs = encoder({"input_word_ids": ids, "input_mask": tf.sign(ids)}, output_attentions=True)
    >>> outputs["sequence_output"].shape, outputs["attention_scores"][0].shape
    (TensorShape([1, 3, 8]), TensorShape([1, 2, 3, 3]))
    """

    family_name = "from scratch"

    def __init__(
        self,
        vocab_size,
        max_length,
        embed_dim=64,
        num_heads=2,
        ff_dim=128,
        num_blocks=1,
        dropout=0.1,
        positional="learned",
        token_dropout=0.0,
        bigram_buckets=0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not 0 <= float(token_dropout) < 1:
            raise ValueError(f"token_dropout must be in [0, 1), got {token_dropout!r}")
        if int(embed_dim) % int(num_heads):
            raise ValueError(f"embed_dim ({embed_dim}) must be a multiple of num_heads ({num_heads})")
        if int(num_blocks) < 1:
            raise ValueError(f"num_blocks must be at least 1, got {num_blocks!r}")
        self.vocab_size, self.max_length = int(vocab_size), int(max_length)
        self.embed_dim, self.num_heads, self.ff_dim = int(embed_dim), int(num_heads), int(ff_dim)
        self.num_blocks, self.dropout, self.positional = int(num_blocks), float(dropout), positional
        self.token_dropout = float(token_dropout)
        self.bigram_buckets = int(bigram_buckets)
        self.bigrams = (
            HashedBigramEmbedding(self.bigram_buckets, self.embed_dim, name="bigrams", dtype=self.dtype_policy)
            if self.bigram_buckets
            else None
        )
        self.embedding = TokenAndPositionEmbedding(
            self.vocab_size,
            self.max_length,
            self.embed_dim,
            positional=positional,
            name="embedding",
            dtype=self.dtype_policy,
        )
        self.blocks = [
            TransformerBlock(
                self.embed_dim,
                self.num_heads,
                self.ff_dim,
                dropout=self.dropout,
                name=f"block_{index}",
                dtype=self.dtype_policy,
            )
            for index in range(self.num_blocks)
        ]
        # One draw per token, shared by its embed_dim features: a token is kept or dropped whole.
        self.token_dropout_layer = keras.layers.Dropout(
            self.token_dropout, noise_shape=(None, None, 1), name="token_dropout", dtype=self.dtype_policy
        )

    def build(self, input_shape):
        shape = tf.TensorShape(input_shape["input_word_ids"] if isinstance(input_shape, dict) else input_shape)
        with tf.name_scope(self.embedding.name):
            self.embedding.build(shape)
        if self.bigrams is not None:
            with tf.name_scope(self.bigrams.name):
                self.bigrams.build(shape)
        for block in self.blocks:
            with tf.name_scope(block.name):
                block.build(shape.concatenate([self.embed_dim]))
        super().build(input_shape)

    def call(self, features, training=None, output_attentions=False):
        mask = tf.cast(features["input_mask"], tf.bool)
        x = self.embedding(features["input_word_ids"])
        if self.bigrams is not None:
            x = x + self.bigrams(features["input_word_ids"])
        x = self.token_dropout_layer(x, training=training)
        scores = []
        for block in self.blocks:
            x, layer_scores = block(x, padding_mask=mask, training=training, return_attention_scores=True)
            scores.append(layer_scores)
        outputs = {"sequence_output": x, "pooled_output": masked_mean(x, mask)}
        if output_attentions:
            outputs["attention_scores"] = scores
        return outputs

    def get_config(self):
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size,
            "max_length": self.max_length,
            "embed_dim": self.embed_dim,
            "num_heads": self.num_heads,
            "ff_dim": self.ff_dim,
            "num_blocks": self.num_blocks,
            "dropout": self.dropout,
            "positional": self.positional,
            "token_dropout": self.token_dropout,
            "bigram_buckets": self.bigram_buckets,
        }


@keras.saving.register_keras_serializable(package="tfattn")
class HuggingFaceEncoder(Encoder):
    """A Hugging Face transformers TF backbone (`TFAutoModel`, BERT family) as an encoder.

    Args:
        backbone: a transformers TF model; or, instead,
        hf_config: its `config.to_dict()`, to build the architecture with fresh weights (how a
            saved model is rebuilt before its trained weights are loaded, with no download).

    Build one from a hub name or a checkpoint folder with `HuggingFaceEncoder.from_pretrained`.

    Under a mixed precision policy (set before the backbone is built), the attention softmax of
    BERT-family backbones (`BERT_SELF_ATTENTION_CLASSES`) is computed in float32 and their
    `attention_scores` are float32 (`float32_attention_softmax`); their layer norms already
    compute in float32 (Keras casts 16-bit inputs up when epsilon is below 1e-5, as BERT's
    1e-12 is).
    """

    family_name = "Hugging Face"

    def __init__(self, backbone=None, hf_config=None, **kwargs):
        super().__init__(**kwargs)
        if (backbone is None) == (hf_config is None):
            raise ValueError("pass exactly one of backbone and hf_config")
        if backbone is None:
            from transformers import AutoConfig, TFAutoModel

            hf_config = dict(hf_config)
            backbone = TFAutoModel.from_config(AutoConfig.for_model(hf_config.pop("model_type"), **hf_config))
        float32_attention_softmax(backbone)
        self.backbone = backbone
        self._pooler_used = True

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, **kwargs) -> "HuggingFaceEncoder":
        """The pretrained backbone of a hub name or a local checkpoint folder."""
        from tfattn.pretrained import load_backbone

        return cls(backbone=load_backbone(name_or_path), **kwargs)

    @property
    def main_layer(self):
        return getattr(self.backbone, self.backbone.base_model_prefix)

    def head_initializer(self):
        # As Hugging Face initializes the heads it adds to a checkpoint.
        return keras.initializers.TruncatedNormal(stddev=getattr(self.backbone.config, "initializer_range", 0.02))

    def use_pooler(self, used):
        self._pooler_used = bool(used)
        pooler = getattr(self.main_layer, "pooler", None)
        if pooler is not None:
            pooler.trainable = self.trainable and self._pooler_used

    def call(self, features, training=None, output_attentions=False):
        inputs = {HF_FEATURE_NAMES[name]: value for name, value in features.items() if name in HF_FEATURE_NAMES}
        outputs = self.backbone(**inputs, output_attentions=output_attentions, training=training, return_dict=True)
        sequence = outputs.last_hidden_state
        pooled = getattr(outputs, "pooler_output", None)
        result = {"sequence_output": sequence, "pooled_output": sequence[:, 0] if pooled is None else pooled}
        if output_attentions:
            result["attention_scores"] = list(outputs.attentions)
        return result

    def get_config(self):
        return {**super().get_config(), "hf_config": self.backbone.config.to_dict()}
