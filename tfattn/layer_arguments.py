"""The constructor arguments of tfattn's layers, checked once for both Kerases (`tfattn.layers`,
`tfattn.keras3.layers`): each `*_arguments` function returns the values a layer keeps as its
attributes and writes to its config, or raises a ValueError that names the argument. Nothing here
imports a framework."""

__all__ = [
    "POSITIONALS",
    "additive_arguments",
    "bigram_arguments",
    "block_arguments",
    "check_decoder_block",
    "config_of",
    "embedding_arguments",
    "fresh_initializer",
    "keep_arguments",
]

POSITIONALS = ("learned", "sinusoidal")


def _counts(**values):
    """Each value as an int, at least 1."""
    for name, value in values.items():
        if int(value) < 1:
            raise ValueError(f"{name} must be at least 1, got {value!r}")
    return {name: int(value) for name, value in values.items()}


def embedding_arguments(vocab_size, max_length, embed_dim, positional, mask_zero):
    """`TokenAndPositionEmbedding`'s arguments."""
    if positional not in POSITIONALS:
        raise ValueError(f"positional must be 'learned' or 'sinusoidal', got {positional!r}")
    counts = _counts(vocab_size=vocab_size, max_length=max_length, embed_dim=embed_dim)
    return {**counts, "positional": positional, "mask_zero": bool(mask_zero)}


def bigram_arguments(buckets, embed_dim):
    """`HashedBigramEmbedding`'s arguments."""
    return _counts(buckets=buckets, embed_dim=embed_dim)


def block_arguments(
    embed_dim, num_heads, ff_dim, dropout, key_dim, layer_norm_epsilon, normalize_first=False, locality=False
):
    """`TransformerBlock`'s (and the decoder block's) arguments; `key_dim` defaults to
    `embed_dim // num_heads`."""
    counts = _counts(embed_dim=embed_dim, num_heads=num_heads, ff_dim=ff_dim)
    key_dim = int(key_dim) if key_dim is not None else counts["embed_dim"] // counts["num_heads"]
    if key_dim < 1:
        raise ValueError(f"key_dim must be >= 1 (embed_dim={embed_dim}, num_heads={num_heads})")
    if not 0 <= float(dropout) < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    for name, value in (("normalize_first", normalize_first), ("locality", locality)):
        if value not in (True, False):
            raise ValueError(f"{name} must be True or False, got {value!r}")
    return {
        **counts,
        "dropout": float(dropout),
        "key_dim": key_dim,
        "layer_norm_epsilon": float(layer_norm_epsilon),
        "normalize_first": bool(normalize_first),
        "locality": bool(locality),
    }


def check_decoder_block(block):
    """Refuses the encoder block's `normalize_first` and `locality` in a decoder block (either
    Keras): its cached decoding projects keys from the inputs as they come, and its causal mask
    is its own."""
    for name in ("normalize_first", "locality"):
        if getattr(block, name):
            raise ValueError(f"{type(block).__name__} has no {name} option: it is TransformerBlock's (an encoder's)")


def additive_arguments(units):
    """`AdditiveAttention`'s arguments."""
    return _counts(units=units)


def keep_arguments(layer, arguments):
    """Sets the checked `arguments` as the layer's attributes, for `config_of` to give back."""
    for name, value in arguments.items():
        setattr(layer, name, value)
    layer._argument_names = tuple(arguments)


def config_of(layer):
    """The layer's kept arguments (their current values), for its `get_config`."""
    return {name: getattr(layer, name) for name in layer._argument_names}


def fresh_initializer(initializer):
    """A new instance of a Keras initializer (either Keras): one per weight, because a reused
    unseeded instance repeats its values."""
    return initializer.__class__.from_config(initializer.get_config())
