"""Decoding for every model that generates tokens: greedy, beam search and sampling, batched and
in the graph.

One module serves tfattn's translators (`tfattn.models.translation`), Hugging Face TF seq2seq
models (`tfattn.models.hf_seq2seq`) and causal language models (`tfattn.models.causal_lm`, whose
"source" is the prompt): all it calls is their step interface,
- `encode(source_ids)` -> `state`, batch-major tensors, with `source_mask` `[batch, source_len]`;
- `start_tokens(state)` -> the ids `[batch]` fed at step 0 (a translator's start token, a
  language model's last prompt token);
- `context_ids(state)` -> the ids `[batch, context_len]` the output continues (a translator's
  start token, a language model's prompt; `pad_id` where a row has none), which the repetition
  controls count as already generated;
- `start_cache(state)`, `decode_step` (the next token's logits from a cache of the past keys and
  values, and the step's attention over the source) and `decode_prefix` (the same from the whole
  prefix, no cache);
- the ids `eos_id` (ends a row), `pad_id` (fills a row after its end) and `never_generated`
  (tokens no step may choose), and `max_output_length`;
- optionally `start_cache(state, max_steps=N)`, a cache of fixed size with room for N steps,
  written in place (a model that offers it sets `fixed_size_cache = True`): every loop variable
  then keeps its shape, and `jit_compile=True` compiles the whole decoding with XLA (the same
  tokens as without; a seeded sample is reproducible, but XLA draws other random numbers).
Each strategy is one `tf.while_loop` inside a `tf.function`, so a SavedModel can serve it.

- Greedy: the most likely token at every step.
- Beam search (`beam_width` > 1): the `beam_width` best partial translations by summed log
  probability; a hypothesis that ends (end token) is scored `sum / length ** length_penalty`;
  with `early_stopping` the search ends once `beam_width` hypotheses have ended, without it once
  no running one can beat the ended ones. The algorithm is Hugging Face's (2 x width candidates
  per step, ended ones set aside), so beam width 1 equals greedy and tfattn decodes a Hugging
  Face model as its own `generate` does.
- Sampling (`sample=True`): each token drawn from the softmax of `logits / temperature`,
  keeping only the `top_k` most likely tokens and the smallest set whose probability reaches
  `top_p`; draws are seeded per step (`seed`), so a sampled translation is reproducible.
- Sampling inside beams (`sample=True` and `beam_width` > 1): beam search whose 2 x width
  candidates per step are drawn without replacement (the Gumbel top-k trick) from the
  temperature-, top-k- and top-p-shaped step distribution plus each beam's score, instead of
  taken best first; scores sum the shaped log probabilities (Hugging Face's beam sampling).
- Repetition controls, for every strategy: `repetition_penalty` divides the positive and
  multiplies the negative scores of every token already in the context or the output (CTRL's
  penalty: greedy and sampling penalize the logits, beam search the log probabilities, as
  Hugging Face does), and `no_repeat_ngram_size` n forbids any token that would repeat an
  n-gram of the context and output.

Example:
>>> from tfattn.models.translation import TranslationPreprocessor, TransformerTranslator
>>> preprocessor = TranslationPreprocessor.learn(["hola"] * 20, ["hello"] * 20, vocab_size=16)
>>> model = TransformerTranslator(preprocessor, embed_dim=8, num_heads=2, ff_dim=16, num_blocks=1)
>>> source = preprocessor.pad_sources(["hola"])
>>> greedy = decode(model, source, DecodingOptions(max_length=5))
>>> beam_one = decode(model, source, DecodingOptions(max_length=5, beam_width=1))
>>> bool(tf.reduce_all(greedy.token_ids == beam_one.token_ids))
True
"""

from dataclasses import dataclass, replace

import tensorflow as tf

__all__ = ["DecodedBatch", "DecodingOptions", "decode", "decode_in_batches", "translate"]

# A log probability no real hypothesis reaches (an empty or excluded slot's score).
_NEVER = -1.0e9


@dataclass(frozen=True)
class DecodingOptions:
    """How to decode.

    Args:
        max_length: most tokens generated per sentence (the end token included); None: the
            model's `max_output_length`.
        min_length: fewest tokens generated per sentence (the end token included): the end
            token cannot come earlier (benchmarks use it to decode a fixed length).
        beam_width: beams of beam search; 1 is greedy (or sampling, with `sample`).
        length_penalty: beam search scores an ended hypothesis `log p / length ** length_penalty`
            (above 0 favours longer translations).
        early_stopping: beam search ends once `beam_width` hypotheses have ended.
        sample: draw tokens at random instead of taking the most likely one.
        temperature: sampling divides the logits by it (below 1 sharpens, above 1 flattens).
        top_k: sampling keeps only the `top_k` most likely tokens (0: all).
        top_p: sampling keeps the smallest set of most likely tokens whose probability reaches
            `top_p` (nucleus sampling; 1.0: all).
        seed: seed of the sampling draws.
        repetition_penalty: above 1 discourages tokens already in the context or output (1.0: off).
        no_repeat_ngram_size: no n-gram of this size occurs twice in the context and output (0: off).
        use_cache: decode each step from the cache of past keys and values (False re-runs
            the decoder over the whole prefix at every step: the same output, for comparison).
        return_attention: also return each step's attention over the source.
        jit_compile: compile the whole decoding with XLA, from a fixed-size cache (models with
            `fixed_size_cache`; one program per batch shape, so pad prompts to a few lengths).
    """

    max_length: int | None = None
    min_length: int = 0
    beam_width: int = 1
    length_penalty: float = 1.0
    early_stopping: bool = True
    sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    use_cache: bool = True
    return_attention: bool = False
    jit_compile: bool = False

    def __post_init__(self):
        # A SavedModel may take the sampling options as inputs: tensors, checked by the caller.
        if any(tf.is_tensor(value) for value in (self.temperature, self.top_k, self.top_p, self.seed)):
            return
        checks = (
            ("max_length", self.max_length is None or int(self.max_length) >= 1, "at least 1"),
            ("min_length", int(self.min_length) >= 0, "0 or more"),
            ("beam_width", int(self.beam_width) >= 1, "at least 1"),
            ("temperature", float(self.temperature) > 0, "above 0"),
            ("top_k", int(self.top_k) >= 0, "0 (all tokens) or more"),
            ("top_p", 0 < float(self.top_p) <= 1, "in (0, 1]"),
            ("repetition_penalty", float(self.repetition_penalty) > 0, "above 0 (1.0: off)"),
            ("no_repeat_ngram_size", int(self.no_repeat_ngram_size) >= 0, "0 (off) or more"),
        )
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"{name} must be {expected}, got {getattr(self, name)!r}")

    @property
    def strategy(self):
        if self.beam_width > 1:
            return "beam sample" if self.sample else "beam"
        return "sample" if self.sample else "greedy"


@dataclass
class DecodedBatch:
    """What `decode` returns, for a batch of sources.

    `token_ids` `[batch, steps]`: the generated tokens (the end token included, then padding);
    `scores` `[batch]`: summed log probabilities (beam search: length-normalized);
    `cross_attention` `[batch, steps, layers, heads, source_len]` with `return_attention`.
    """

    token_ids: tf.Tensor
    scores: tf.Tensor
    cross_attention: tf.Tensor | None = None


def decode(model, source_ids, options: DecodingOptions = DecodingOptions()) -> DecodedBatch:
    """Decode a batch of padded source ids `[batch, source_len]` with `model` (its step
    interface, see the module docstring) as `options` say, in one compiled graph per model and
    options."""
    if options.max_length is None:
        options = replace(options, max_length=model.max_output_length)
    token_ids, scores, attention, steps = _compiled(model, options)(tf.convert_to_tensor(source_ids, tf.int32))
    # Cut to the steps taken outside the compiled graph: XLA programs have fixed output shapes.
    return DecodedBatch(token_ids[:, :steps], scores, None if attention is None else attention[:, :steps])


def decoding_function(model, options: DecodingOptions):
    """A plain function of what `decode` does: source ids -> `(token_ids, scores,
    cross_attention or None)`; for a `tf.Module` (a SavedModel export) to wrap in its own
    `tf.function`."""
    search = _search_function(model, options)

    def decoded(source_ids):
        token_ids, scores, attention, steps = search(source_ids)
        return token_ids[:, :steps], scores, None if attention is None else attention[:, :steps]

    return decoded


def _search_function(model, options):
    """source ids -> `(token_ids [batch, max_length], scores, attention [batch, max_length, ...]
    or None, steps taken)`: the strategy's loop, its buffers at full length."""
    if options.max_length is None:
        options = replace(options, max_length=model.max_output_length)
    if options.jit_compile and not getattr(model, "fixed_size_cache", False):
        raise ValueError(f"jit_compile needs a model with a fixed-size cache; {type(model).__name__} has none")
    if options.jit_compile and not options.use_cache:
        raise ValueError("jit_compile decodes from the cache: use_cache must be True")
    search = _beam_search if options.beam_width > 1 else _greedy_or_sample
    return lambda source_ids: search(model, source_ids, options)


def _compiled(model, options):
    # One tf.function per model and options, kept on the model: retracing each call would
    # rebuild the loop's graph every time.
    functions = model.__dict__.setdefault("_tfattn_decoders", {})
    if options not in functions:
        functions[options] = tf.function(
            _search_function(model, options), reduce_retracing=True, jit_compile=options.jit_compile
        )
    return functions[options]


def _start_cache(model, state, options):
    """The cache before step 0: none without `use_cache`, of fixed size under `jit_compile`."""
    if not options.use_cache:
        return ()
    return model.start_cache(state, max_steps=options.max_length) if options.jit_compile else model.start_cache(state)


def translate(model, texts, batch_size=64, **options):
    """Translations of `texts` (strings) by a translator with a `preprocessor`, decoded with
    `DecodingOptions(**options)`, `batch_size` sentences per batch (sorted by length, so a batch
    pads little); returned in the order of `texts`. Sources longer than the preprocessor's
    `max_source_length` are cut to fit, with a warning that counts them."""
    from tfattn.data.pipelines import warn_about_texts

    preprocessor = model.preprocessor
    texts = [str(text) for text in texts]
    # Tokenized once, up front: the same pieces count the sources that are cut and are decoded.
    pieces = preprocessor.source.tokenize(texts).to_list() if texts else []
    limit = preprocessor.max_source_length - 1  # the end id takes the last place
    warn_about_texts(
        len(texts),
        truncated=sum(len(row) > limit for row in pieces),
        max_length=limit,
        advice=f"only their first {limit} tokens were translated",
    )
    return decode_in_batches(
        model,
        pieces,
        DecodingOptions(**options),
        batch_size,
        encode=preprocessor.pad_source_pieces,
        detokenize=lambda token_ids: [text.decode("utf-8") for text in preprocessor.decode_targets(token_ids).numpy()],
    )


def decode_in_batches(model, texts, options, batch_size, encode, detokenize):
    """Decode `texts` `batch_size` at a time, in order of length (a batch pads little), and
    return the strings in the order of `texts`: `encode(texts)` gives a batch's padded source ids,
    `detokenize(token_ids)` its strings (each model family brings its own tokenizer). `texts` may
    also be already tokenized, each a sequence of pieces for `encode`."""
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size!r}")
    order = sorted(range(len(texts)), key=lambda index: len(texts[index]))
    translations = [None] * len(texts)
    for start in range(0, len(order), int(batch_size)):
        chunk = order[start : start + int(batch_size)]
        decoded = decode(model, encode([texts[index] for index in chunk]), options)
        for index, text in zip(chunk, detokenize(decoded.token_ids)):
            translations[index] = text
    return translations


def _relaxed(structure):
    """Shape invariants for a loop variable whose dimensions may change across steps (a
    cache growing along its time axis, a batch): all but the last (feature) dimension."""
    return tf.nest.map_structure(
        lambda tensor: (
            tf.TensorShape([None] * (tensor.shape.rank - 1) + tensor.shape[-1:]) if tensor.shape.rank else tensor.shape
        ),
        structure,
    )


def _next_log_probs(model, tokens, step, state, cache, generated, options, beams=False):
    """One decoder step after `tokens` `[n]` at position `step` (`generated` `[n, max_length]`
    holds the tokens so far): `(ranked, log_probs, cache, attention [n, layers, heads, src])`.

    `log_probs` `[n, vocab]` float32 are the model's, so a greedy or sampled score is the model's
    log probability of the tokens chosen, as Hugging Face scores them; `ranked` are what the
    strategy chooses from: the same, or under `repetition_penalty` the penalized logits' (the
    penalized log probabilities for `beams`). In both, tokens a step may not choose (the model's
    `never_generated`, the end token before `min_length`, a repeated n-gram's end) are -inf."""
    if options.use_cache:
        logits, cache, attention = model.decode_step(tokens, step, state, cache)
    else:
        begin = model.start_tokens(state)[:, None]
        logits, attention = model.decode_prefix(tf.concat([begin, generated[:, :step]], axis=1), state)
    logits = tf.cast(logits, tf.float32)
    log_probs = tf.nn.log_softmax(logits)
    vocab_size = tf.shape(log_probs)[-1]
    vocabulary = tf.range(vocab_size)
    excluded = tf.zeros_like(vocabulary, tf.bool)[None, :]
    for token in model.never_generated:
        excluded = tf.logical_or(excluded, tf.equal(vocabulary, token))
    if options.min_length:
        excluded = tf.logical_or(excluded, tf.logical_and(step < options.min_length - 1, vocabulary == model.eos_id))
    ranked = log_probs
    if options.repetition_penalty != 1.0 or options.no_repeat_ngram_size:
        sequence, valid, length = _sequence_so_far(model, state, generated, step)
        if options.repetition_penalty != 1.0:
            seen = _token_set(sequence, valid, vocab_size)
            if beams:
                ranked = _penalized(log_probs, seen, options.repetition_penalty)
            else:
                ranked = tf.nn.log_softmax(_penalized(logits, seen, options.repetition_penalty))
        if options.no_repeat_ngram_size:
            excluded = tf.logical_or(
                excluded, _repeated_ngram_ends(sequence, valid, length, options.no_repeat_ngram_size, vocab_size)
            )
    never = float("-inf")
    return tf.where(excluded, never, ranked), tf.where(excluded, never, log_probs), cache, attention


def _sequence_so_far(model, state, generated, step):
    """The context and the tokens generated before `step`, `[n, context_len + max_length]`;
    which of its places hold a token (not padding, not after `step`); and its length so far,
    `context_len + step` (prompts are left-padded: every row's tokens end there)."""
    context = tf.cast(model.context_ids(state), tf.int32)
    sequence = tf.concat([context, generated], axis=1)
    so_far = tf.range(tf.shape(generated)[1])[None, :] < step
    valid = tf.not_equal(sequence, model.pad_id) & tf.concat(
        [tf.ones_like(context, tf.bool), tf.broadcast_to(so_far, tf.shape(generated))], axis=1
    )
    return sequence, valid, tf.shape(context)[1] + step


def _token_set(tokens, counted, vocab_size):
    """`[n, vocab_size]` bool: which ids occur in row n of `tokens` at the places `counted`."""
    rows, places = tf.shape(tokens)[0], tf.shape(tokens)[1]
    row_index = tf.broadcast_to(tf.range(rows)[:, None], [rows, places])
    # Uncounted places (padding may lie outside the vocabulary) scatter a 0 onto id 0.
    indices = tf.stack([row_index, tf.where(counted, tokens, 0)], axis=-1)
    updates = tf.cast(counted, tf.int32)
    return (
        tf.tensor_scatter_nd_max(
            tf.zeros([rows, vocab_size], tf.int32), tf.reshape(indices, [-1, 2]), tf.reshape(updates, [-1])
        )
        > 0
    )


def _penalized(scores, seen, penalty):
    """CTRL's repetition penalty: seen tokens' positive scores divided by `penalty`, negative
    ones multiplied by it."""
    penalized = tf.where(scores > 0, scores / penalty, scores * penalty)
    return tf.where(seen, penalized, scores)


def _repeated_ngram_ends(sequence, valid, length, size, vocab_size):
    """`[n, vocab_size]` bool: the tokens that would end an n-gram of `size` tokens already in
    the valid places of `sequence[:, :length]` (those that follow an earlier occurrence of its
    last `size - 1` tokens)."""
    before = size - 1
    # `before` empty places on the left: the last `before` tokens always have a place.
    sequence = tf.pad(sequence, [[0, 0], [before, 0]])
    valid = tf.pad(valid, [[0, 0], [before, 0]])
    end = length + before
    suffix = sequence[:, end - before : end]
    suffix_whole = tf.reduce_all(valid[:, end - before : end], axis=1, keepdims=True)
    starts = tf.shape(sequence)[1] - before
    matches = suffix_whole
    for offset in range(size):
        matches = tf.logical_and(matches, valid[:, offset : offset + starts])
        if offset < before:
            matches = tf.logical_and(
                matches, tf.equal(sequence[:, offset : offset + starts], suffix[:, offset : offset + 1])
            )
    return _token_set(sequence[:, before : before + starts], matches, vocab_size)


def _write_column(buffer, step, column, axis=1):
    """`buffer` with index `step` along `axis` (its time axis) replaced by `column` (the
    buffer's shape without that axis)."""
    one_hot = tf.one_hot(step, tf.shape(buffer)[axis], dtype=buffer.dtype)
    one_hot = tf.reshape(one_hot, [1] * axis + [-1] + [1] * (buffer.shape.rank - axis - 1))
    return buffer * (1 - one_hot) + tf.expand_dims(column, axis) * one_hot


def filter_logits(logits, top_k=0, top_p=1.0):
    """Logits with every token outside the `top_k` most likely, and outside the smallest set
    of most likely tokens whose probability reaches `top_p`, set to -inf (never drawn)."""
    if tf.is_tensor(top_k) or top_k:
        vocabulary = tf.shape(logits)[-1]
        k = tf.minimum(tf.cast(top_k, tf.int32), vocabulary)
        k = tf.where(k > 0, k, vocabulary)  # 0: every token (an input tensor may say 0)
        kth = tf.math.top_k(logits, k=k).values[:, -1:]
        logits = tf.where(logits < kth, float("-inf"), logits)
    if tf.is_tensor(top_p) or top_p < 1.0:
        # The nucleus is every token whose probability reaches the largest threshold t at which
        # the tokens of probability >= t still hold top_p of the mass: found by bisection (32
        # halvings, float32's precision) rather than a sort, which XLA compiles slowly on CPUs.
        probabilities = tf.nn.softmax(logits)
        low = tf.zeros_like(probabilities[:, :1])
        high = tf.reduce_max(probabilities, axis=-1, keepdims=True)

        def halve(low, high):
            middle = (low + high) / 2
            mass = tf.reduce_sum(tf.where(probabilities >= middle, probabilities, 0.0), axis=-1, keepdims=True)
            enough = mass >= top_p
            return tf.where(enough, middle, low), tf.where(enough, high, middle)

        low, _ = tf.while_loop(lambda low, high: True, halve, (low, high), maximum_iterations=32)
        logits = tf.where(probabilities < low, float("-inf"), logits)
    return logits


def _greedy_or_sample(model, source_ids, options):
    batch = tf.shape(source_ids)[0]
    state = model.encode(source_ids)
    cache = _start_cache(model, state, options)
    length = options.max_length
    tokens = model.start_tokens(state)
    generated = tf.fill([batch, length], tf.constant(model.pad_id, tf.int32))
    scores = tf.zeros([batch], tf.float32)
    finished = tf.zeros([batch], tf.bool)
    attention = _empty_attention(model, state, batch, options)

    def body(step, tokens, cache, generated, scores, finished, attention):
        ranked, log_probs, cache, step_attention = _next_log_probs(
            model, tokens, step, state, cache, generated, options
        )
        if options.sample:
            # Log probabilities are the logits less a constant per row: the same distribution.
            filtered = filter_logits(ranked / options.temperature, options.top_k, options.top_p)
            drawn = tf.random.stateless_categorical(filtered, 1, seed=[options.seed, step], dtype=tf.int32)
            next_tokens = drawn[:, 0]
        else:
            next_tokens = tf.argmax(ranked, axis=-1, output_type=tf.int32)
        token_log_probs = tf.gather(log_probs, next_tokens, batch_dims=1)
        scores += tf.where(finished, 0.0, token_log_probs)
        # After its end a row holds padding (`pad_id` need not be an id of the vocabulary).
        next_tokens = tf.where(finished, model.pad_id, next_tokens)
        generated = _write_column(generated, step, next_tokens)
        if options.return_attention:
            flat = tf.reshape(tf.cast(step_attention, tf.float32), [batch, -1])
            attention = _write_column(attention, step, tf.where(finished[:, None], 0.0, flat))
        finished = tf.logical_or(finished, tf.equal(next_tokens, model.eos_id))
        return step + 1, next_tokens, cache, generated, scores, finished, attention

    def cond(step, tokens, cache, generated, scores, finished, attention):
        return tf.logical_not(tf.reduce_all(finished))

    steps, (generated, scores, _, attention) = _run_steps(
        cond,
        body,
        tokens,
        cache,
        buffers=(generated, scores, finished, attention),
        buffer_shapes=(
            tf.TensorShape([None, length]),
            tf.TensorShape([None]),
            tf.TensorShape([None]),
            _attention_shape(options),
        ),
        max_steps=length,
    )
    return generated, scores, _shaped_attention(attention, state, model, options), steps


def _run_steps(cond, body, tokens, cache, buffers, buffer_shapes, max_steps):
    """Run a strategy's `tf.while_loop` from step 0 for at most `max_steps` steps; return the
    steps taken and the final `buffers`.

    Both strategies loop over the same variables: the step, the last tokens `[n]` and the cache,
    then their own `buffers` (with `buffer_shapes` as their shape invariants); `cond` and `body`
    take all of them, and `body` returns them, in that order.
    """
    final_step, _, _, *final_buffers = tf.while_loop(
        cond,
        body,
        (tf.constant(0), tokens, cache, *buffers),
        shape_invariants=(tf.TensorShape([]), tf.TensorShape([None]), _relaxed(cache), *buffer_shapes),
        maximum_iterations=max_steps,
    )
    return final_step, final_buffers


def _empty_attention(model, state, rows, options):
    """`[rows, max_length, layers * heads * source_len]` zeros; without `return_attention`, an
    empty tuple (a loop variable that holds nothing)."""
    if not options.return_attention:
        return ()
    layers, heads = model.attention_shape()
    size = layers * heads * tf.shape(state["source_mask"])[1]
    return tf.zeros([rows, options.max_length, size], tf.float32)


def _attention_shape(options):
    """The shape invariant of an `_empty_attention` buffer (its time axis stays `max_length`)."""
    return tf.TensorShape([None, options.max_length, None]) if options.return_attention else ()


def _shaped_attention(attention, state, model, options):
    """The attention buffer `[batch, max_length, flat]` unflattened to `[batch, max_length,
    layers, heads, source_len]`."""
    if not options.return_attention:
        return None
    layers, heads = model.attention_shape()
    source_len = tf.shape(state["source_mask"])[1]
    return tf.reshape(attention, [tf.shape(attention)[0], options.max_length, layers, heads, source_len])


def _repeat_beams(structure, width):
    """Every batch-major tensor of `structure` with each row repeated `width` times (row b's
    beams at rows b * width ... b * width + width - 1)."""
    return tf.nest.map_structure(lambda tensor: tf.repeat(tensor, width, axis=0), structure)


def _gather_beams(structure, flat_indices):
    return tf.nest.map_structure(lambda tensor: tf.gather(tensor, flat_indices, axis=0), structure)


def _beam_search(model, source_ids, options):
    width, length = options.beam_width, options.max_length
    batch = tf.shape(source_ids)[0]
    state = _repeat_beams(model.encode(source_ids), width)
    cache = _start_cache(model, state, options)
    rows = batch * width
    penalty = float(options.length_penalty)

    tokens = model.start_tokens(state)
    running = tf.fill([batch, width, length], tf.constant(model.pad_id, tf.int32))
    # Only the first beam is live at the start: the others would repeat it.
    running_scores = tf.tile(tf.constant([[0.0] + [_NEVER] * (width - 1)]), [batch, 1])
    ended = tf.fill([batch, width, length], tf.constant(model.pad_id, tf.int32))
    ended_scores = tf.fill([batch, width], _NEVER)
    ended_any = tf.zeros([batch, width], tf.bool)  # which slots of `ended` hold a hypothesis
    attention = _empty_attention(model, state, rows, options)
    ended_attention = tf.zeros_like(attention) if options.return_attention else ()

    def body(step, tokens, cache, running, running_scores, ended, ended_scores, ended_any, attention, ended_attention):
        step_log_probs, _, cache, step_attention = _next_log_probs(
            model, tokens, step, state, cache, tf.reshape(running, [rows, length]), options, beams=True
        )
        vocab = tf.shape(step_log_probs)[-1]
        if options.sample:
            # Scores sum the shaped distribution's log probabilities (the step's own row softmax).
            shaped = filter_logits(step_log_probs / options.temperature, options.top_k, options.top_p)
            step_log_probs = tf.nn.log_softmax(shaped)
        log_probs = tf.reshape(step_log_probs, [batch, width, vocab]) + running_scores[:, :, None]
        log_probs = tf.reshape(log_probs, [batch, width * vocab])
        # 2 x width continuations, so that even if `width` of them end here, `width` go on: the
        # best ones, or drawn without replacement (Gumbel top-k) in the order drawn.
        if options.sample:
            uniform = tf.random.stateless_uniform(
                tf.shape(log_probs), seed=[options.seed, step], minval=1e-20, maxval=1.0
            )
            _, top_indices = tf.math.top_k(log_probs - tf.math.log(-tf.math.log(uniform)), k=2 * width)
            top_scores = tf.gather(log_probs, top_indices, batch_dims=1)
        else:
            top_scores, top_indices = tf.math.top_k(log_probs, k=2 * width)
        origin = top_indices // vocab  # the beam each continues, [batch, 2 * width]
        new_tokens = top_indices % vocab
        candidates = _write_column(tf.gather(running, origin, batch_dims=1), step, new_tokens, axis=2)
        is_end = tf.equal(new_tokens, model.eos_id)

        # Running beams: the best `width` candidates that did not end.
        running_choice = tf.math.top_k(top_scores + tf.cast(is_end, tf.float32) * _NEVER, k=width).indices
        next_running = tf.gather(candidates, running_choice, batch_dims=1)
        next_running_scores = tf.gather(top_scores + tf.cast(is_end, tf.float32) * _NEVER, running_choice, batch_dims=1)
        next_origin = tf.gather(origin, running_choice, batch_dims=1)
        flat_origin = tf.reshape(next_origin + tf.range(batch)[:, None] * width, [rows])

        # Ended hypotheses: only an end among the best `width` candidates counts; merged with
        # those that ended before, best `width` kept, scored by length-normalized log probability.
        ends_here = tf.logical_and(is_end, tf.range(2 * width)[None, :] < width)
        if options.early_stopping:
            # Once `width` hypotheses have ended, a row takes no more.
            ends_here = tf.logical_and(ends_here, tf.logical_not(tf.reduce_all(ended_any, axis=1, keepdims=True)))
        normalized = top_scores / tf.cast(step + 1, tf.float32) ** penalty
        normalized = tf.where(ends_here, normalized, _NEVER)
        merged_scores = tf.concat([ended_scores, normalized], axis=1)
        keep = tf.math.top_k(merged_scores, k=width).indices
        next_ended = tf.gather(tf.concat([ended, candidates], axis=1), keep, batch_dims=1)
        next_ended_scores = tf.gather(merged_scores, keep, batch_dims=1)
        next_ended_any = tf.gather(tf.concat([ended_any, ends_here], axis=1), keep, batch_dims=1)

        if options.return_attention:
            flat = tf.reshape(tf.cast(step_attention, tf.float32), [batch, width, -1])
            beam_attention = tf.reshape(attention, [batch, width, length, -1])
            candidate_attention = _write_column(
                tf.reshape(tf.gather(beam_attention, origin, batch_dims=1), [batch * 2 * width, length, -1]),
                step,
                tf.reshape(tf.gather(flat, origin, batch_dims=1), [batch * 2 * width, -1]),
            )
            candidate_attention = tf.reshape(candidate_attention, [batch, 2 * width, length, -1])
            attention = tf.reshape(tf.gather(candidate_attention, running_choice, batch_dims=1), [rows, length, -1])
            merged = tf.concat([tf.reshape(ended_attention, [batch, width, length, -1]), candidate_attention], axis=1)
            ended_attention = tf.reshape(tf.gather(merged, keep, batch_dims=1), [rows, length, -1])

        next_tokens = tf.reshape(tf.gather(new_tokens, running_choice, batch_dims=1), [rows])
        if options.use_cache:
            cache = _gather_beams(cache, flat_origin)
        return (
            step + 1,
            next_tokens,
            cache,
            next_running,
            next_running_scores,
            next_ended,
            next_ended_scores,
            next_ended_any,
            attention,
            ended_attention,
        )

    def cond(step, tokens, cache, running, running_scores, ended, ended_scores, ended_any, attention, ended_attention):
        # Can a running hypothesis still beat the worst ended one (scored at today's length)?
        best_running = running_scores[:, :1] / tf.cast(tf.maximum(step, 1), tf.float32) ** penalty
        worst_ended = tf.where(ended_any, tf.reduce_min(ended_scores, axis=1, keepdims=True), _NEVER)
        improvable = tf.reduce_any(best_running > worst_ended)
        if options.early_stopping:
            return tf.logical_and(improvable, tf.logical_not(tf.reduce_all(ended_any)))
        return improvable

    # Per row: width hypotheses of max_length tokens, and one score or flag per hypothesis.
    hypotheses, per_hypothesis = tf.TensorShape([None, width, length]), tf.TensorShape([None, width])
    steps, (running, running_scores, ended, ended_scores, ended_any, attention, ended_attention) = _run_steps(
        cond,
        body,
        tokens,
        cache,
        buffers=(running, running_scores, ended, ended_scores, ended_any, attention, ended_attention),
        buffer_shapes=(
            hypotheses,
            per_hypothesis,
            hypotheses,
            per_hypothesis,
            per_hypothesis,
            _attention_shape(options),
            _attention_shape(options),
        ),
        max_steps=length,
    )
    # A row where no hypothesis ended in time answers with its best running one.
    none_ended = tf.logical_not(tf.reduce_any(ended_any, axis=1))
    running_scores = running_scores / tf.cast(tf.maximum(steps, 1), tf.float32) ** penalty
    best = tf.where(none_ended[:, None], running[:, 0], ended[:, 0])
    scores = tf.where(none_ended, running_scores[:, 0], ended_scores[:, 0])
    if options.return_attention:
        first = tf.range(batch) * width
        attention = tf.where(none_ended[:, None, None], tf.gather(attention, first), tf.gather(ended_attention, first))
    return best, scores, _shaped_attention(attention, state, model, options), steps
