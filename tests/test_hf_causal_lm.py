"""Tests of `tfattn.models.hf_causal_lm`: tfattn's decoding of a Hugging Face TF causal language
model gives what the library's own `generate` gives, on left-padded prompts.

No pretrained weights are reachable offline, so the model is a tiny random GPT-2 built here, with
a byte-level BPE tokenizer trained here on made-up text, both saved to a folder and loaded back
through `HuggingFaceCausalLM.from_pretrained`. Its weights are drawn wider than GPT-2's default
(varied continuations rather than one token repeated), and its end token's embedding is fitted
to score about half a logit below the best token: rows end at different lengths, so the
comparisons cover stopping, padding after the end and beam search's ended hypotheses.
"""

import re
from dataclasses import replace

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from task_harness import tiny_bpe_tokenizer

from tfattn.decoding import DecodingOptions, decode
from tfattn.models.causal_lm import left_pad
from tfattn.models.hf_causal_lm import HuggingFaceCausalLM

transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

END = "<|endoftext|>"
MAX_NEW = 8
PROMPTS = ["The model decodes", "", "Attention maps of a small transformer are"]
WORDS = (
    "the a model attention head layer token prompt decoder encoder beam search greedy sample text word "
    "transformer small large maps weights cache key value query step batch padding left right end start "
    "of to in on with from and or is are was were reads writes learns decodes keeps sees gives takes"
).split()


def _corpus():
    """A few hundred made-up words in sentences, the same on every run."""
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(WORDS, size=rng.integers(4, 12))).capitalize() + "." for _ in range(60)]


def _fit_end_token(model, end_id, margin=0.5, rounds=2, seed=0):
    """Set the end token's embedding (GPT-2 ties input and output embeddings) so that its logit is
    about `margin` below the best other token's, by ridge regression over the final hidden states
    of random texts (plain least squares blows the row up, and with it every prompt holding the
    token). A few rounds: the row is also an input embedding, so the states move with it."""
    rng = np.random.default_rng(seed)
    embeddings = model.transformer.wte.embeddings
    for _ in range(rounds):
        texts = tf.constant(rng.integers(1, model.config.vocab_size, size=(8, 16)), tf.int32)
        hidden = model(texts, output_hidden_states=True).hidden_states[-1].numpy().reshape(-1, model.config.n_embd)
        table = embeddings.numpy()
        target = np.delete(hidden @ table.T, end_id, axis=1).max(axis=1) - margin
        gram = hidden.T @ hidden
        ridge = 0.01 * np.trace(gram) / len(gram)
        table[end_id] = np.linalg.solve(gram + ridge * np.eye(len(gram)), hidden.T @ target)
        embeddings.assign(table)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The folder of the tiny GPT-2 and its tokenizer, as `save_pretrained` writes them."""
    tokenizer = tiny_bpe_tokenizer(_corpus())
    config = transformers.GPT2Config(
        n_layer=2,
        n_embd=32,
        n_head=2,
        n_positions=64,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        initializer_range=0.3,
    )
    keras.utils.set_random_seed(0)
    model = transformers.TFGPT2LMHeadModel(config)
    model(model.dummy_inputs)
    _fit_end_token(model, tokenizer.eos_token_id)
    folder = tmp_path_factory.mktemp("tiny-gpt2")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def lm(saved):
    """The loaded model behind the step interface, one for the module: it keeps its compiled decoders."""
    return HuggingFaceCausalLM.from_pretrained(saved, max_output_length=MAX_NEW)


@pytest.fixture(scope="module")
def prompt_ids(lm):
    return left_pad(lm.tokenize_prompts(PROMPTS), lm.pad_id)


def _until_end(token_ids, end_id, length=MAX_NEW, filler=-1):
    """Each row's tokens up to and including its first end token, then `filler`, `length` wide."""
    rows = np.full((len(token_ids), length), filler, np.int32)
    for index, row in enumerate(np.asarray(token_ids).tolist()):
        row = row[: row.index(end_id) + 1] if end_id in row else row
        rows[index, : len(row)] = row
    return rows


def _generate(lm, prompt_ids, **options):
    """Hugging Face's `generate` on tfattn's left-padded prompts: the padding fed as the end
    token (GPT-2 has no padding token) and masked out. Returns `(new tokens, scores)`."""
    prompt_ids = np.asarray(prompt_ids)
    mask = (prompt_ids != lm.pad_id).astype(np.int32)
    outputs = lm.model.generate(
        tf.constant(np.where(mask == 1, prompt_ids, lm.eos_id)),
        attention_mask=tf.constant(mask),
        max_new_tokens=MAX_NEW,
        do_sample=False,
        pad_token_id=lm.eos_id,
        return_dict_in_generate=True,
        output_scores=True,
        **options,
    )
    return outputs.sequences[:, prompt_ids.shape[1] :].numpy(), getattr(outputs, "sequences_scores", None)


def _ended_lengths(token_ids, end_id):
    """Per row: how many tokens up to its end token (None: no end token)."""
    return [row.index(end_id) + 1 if end_id in row else None for row in np.asarray(token_ids).tolist()]


def test_loads_from_a_folder_with_gpt2_ids(lm, prompt_ids):
    end = lm.tokenizer.eos_token_id
    assert (lm.eos_id, lm.pad_id, lm.context_length, lm.attention_shape()) == (end, 400, 64, (2, 2))
    assert lm.tokenize_prompts(["", "The"])[0] == [end]
    # Prompts of different lengths, left-padded with an id outside the vocabulary.
    lengths = (prompt_ids != lm.pad_id).sum(axis=1)
    assert len(set(lengths.tolist())) == 3 and lengths[1] == 1
    assert (prompt_ids[:, -1] != lm.pad_id).all()


def test_greedy_matches_generate(lm, prompt_ids):
    ours = decode(lm, prompt_ids, DecodingOptions(max_length=MAX_NEW))
    theirs, _ = _generate(lm, prompt_ids)
    np.testing.assert_array_equal(_until_end(ours.token_ids, lm.eos_id), _until_end(theirs, lm.eos_id))
    # Both ending and non-ending rows: the comparison covers stopping and padding after the end.
    lengths = _ended_lengths(ours.token_ids, lm.eos_id)
    assert any(length is None for length in lengths) and any(length is not None for length in lengths), lengths


@pytest.mark.slow
def test_beam_search_matches_generate(lm, prompt_ids):
    options = DecodingOptions(max_length=MAX_NEW, beam_width=3, early_stopping=False, length_penalty=1.0)
    ours = decode(lm, prompt_ids, options)
    theirs, scores = _generate(lm, prompt_ids, num_beams=3, early_stopping=False, length_penalty=1.0)
    np.testing.assert_array_equal(_until_end(ours.token_ids, lm.eos_id), _until_end(theirs, lm.eos_id))
    np.testing.assert_allclose(ours.scores.numpy(), scores.numpy(), rtol=1e-4, atol=1e-5)
    # Winning hypotheses that ended at different lengths, before the last step: the comparison
    # covers beam search's set-aside ended hypotheses and their length normalization.
    lengths = _ended_lengths(ours.token_ids, lm.eos_id)
    assert len({length for length in lengths if length is not None and length < MAX_NEW}) >= 2, lengths


@pytest.mark.slow
def test_cached_and_uncached_decoding_agree(lm, prompt_ids):
    options = DecodingOptions(max_length=MAX_NEW, return_attention=True)
    cached = decode(lm, prompt_ids, options)
    uncached = decode(lm, prompt_ids, replace(options, use_cache=False))
    np.testing.assert_array_equal(cached.token_ids.numpy(), uncached.token_ids.numpy())
    np.testing.assert_allclose(cached.scores.numpy(), uncached.scores.numpy(), atol=1e-4)
    np.testing.assert_allclose(cached.cross_attention.numpy(), uncached.cross_attention.numpy(), atol=1e-5)


@pytest.mark.slow
def test_batched_prompts_decode_as_each_alone(lm, prompt_ids):
    options = DecodingOptions(max_length=MAX_NEW)
    batched = _until_end(decode(lm, prompt_ids, options).token_ids, lm.eos_id)
    for index, prompt in enumerate(lm.tokenize_prompts(PROMPTS)):
        alone = decode(lm, np.array([prompt], np.int32), options).token_ids
        np.testing.assert_array_equal(batched[index], _until_end(alone, lm.eos_id)[0], err_msg=PROMPTS[index])


@pytest.mark.slow
def test_seeded_sampling_is_reproducible(lm, prompt_ids):
    options = DecodingOptions(max_length=MAX_NEW, sample=True, temperature=0.8, top_p=0.9, seed=3)
    first = decode(lm, prompt_ids, options).token_ids.numpy()
    again = decode(lm, prompt_ids, options).token_ids.numpy()
    other = decode(lm, prompt_ids, replace(options, seed=4)).token_ids.numpy()
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(_until_end(first, lm.eos_id), _until_end(other, lm.eos_id))
    assert (first < lm.pad_id).any() and (first <= lm.pad_id).all()


@pytest.mark.slow
def test_attention_over_the_prompt(lm, prompt_ids):
    decoded = decode(lm, prompt_ids, DecodingOptions(max_length=MAX_NEW, return_attention=True))
    steps = decoded.token_ids.shape[1]
    attention = decoded.cross_attention.numpy()
    assert attention.shape == (3, steps, 2, 2, prompt_ids.shape[1])
    # Padding columns get no attention; at step 0 (the last prompt token) the query sees only the
    # prompt, so its attention over the prompt columns sums to 1; later steps also see the
    # generated tokens, so theirs sums to at most 1.
    padded = (prompt_ids == lm.pad_id)[:, None, None, None, :]
    assert np.abs(attention * padded).max() < 1e-6
    np.testing.assert_allclose(attention[:, 0].sum(axis=-1), 1.0, rtol=1e-5)
    assert (attention.sum(axis=-1) <= 1.0 + 1e-5).all()


@pytest.mark.slow
def test_generate_texts_match_hugging_face(lm):
    texts = lm.generate(PROMPTS, max_new_tokens=MAX_NEW, batch_size=2)
    expected = []
    for prompt in lm.tokenize_prompts(PROMPTS):  # one at a time: no padding, and the order of PROMPTS
        tokens, _ = _generate(lm, np.array([prompt], np.int32))
        expected += lm.tokenizer.batch_decode(_until_end(tokens, lm.eos_id, filler=lm.eos_id), skip_special_tokens=True)
    assert texts == expected
    assert any(texts), texts


def test_detokenize_cuts_at_the_end_and_drops_padding(lm):
    end, pad = lm.eos_id, lm.pad_id
    first, second = lm.tokenize_prompts(["model sees", "a text"])
    ended = first + [end] + second  # cut at its end token
    padded = second + [pad] * (len(ended) - len(second))  # no end token: the padding dropped
    rows = np.array([ended, padded])
    assert lm.detokenize(rows) == ["model sees", "a text"]


@pytest.mark.slow
def test_long_prompts_keep_their_last_tokens(lm):
    long_prompt = " ".join(["the model reads the prompt"] * 20)
    with pytest.warns(UserWarning, match=r"1 of 1 prompts .* last 57 tokens"):
        (text,) = lm.generate([long_prompt], max_new_tokens=MAX_NEW)
    assert isinstance(text, str)
    with pytest.raises(ValueError, match="--max-new-tokens 65 leaves no room"):
        lm.generate(["hi"], max_new_tokens=65)


def test_loading_errors_name_the_folder(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        HuggingFaceCausalLM.from_pretrained(missing)
    with pytest.raises(FileNotFoundError, match=f"{re.escape(str(tmp_path))}.*config.json"):
        HuggingFaceCausalLM.from_pretrained(tmp_path)
    # Tests run with HF_HUB_OFFLINE (conftest): a hub name fails in one line that names it.
    with pytest.raises(ValueError, match="'openai-community/gpt2'") as raised:
        HuggingFaceCausalLM.from_pretrained("openai-community/gpt2")
    assert "\n" not in str(raised.value)


def test_text_needs_a_tokenizer(lm):
    with pytest.raises(ValueError, match="tokenizer"):
        HuggingFaceCausalLM(lm.model).generate(["hi"])


@pytest.mark.parametrize(
    "beams, controls",
    [
        pytest.param(1, {"repetition_penalty": 1.8}, marks=pytest.mark.slow),
        pytest.param(1, {"no_repeat_ngram_size": 2}, marks=pytest.mark.slow),
        pytest.param(3, {"repetition_penalty": 1.3, "no_repeat_ngram_size": 3}, marks=pytest.mark.slow),
    ],
    ids=["greedy-penalty", "greedy-ngram", "beam-both"],
)
def test_repetition_controls_match_generate(lm, prompt_ids, controls, beams):
    # Hugging Face counts a left-padded prompt's padding as tokens, and a beam search runs until
    # no row of its batch can improve: each prompt goes alone on both sides.
    options = DecodingOptions(max_length=MAX_NEW, beam_width=beams, early_stopping=False, **controls)
    plain = replace(options, repetition_penalty=1.0, no_repeat_ngram_size=0)
    changed = False
    for prompt in lm.tokenize_prompts(PROMPTS):
        ours = _until_end(decode(lm, np.array([prompt]), options).token_ids, lm.eos_id)
        theirs, _ = _generate(lm, np.array([prompt], np.int32), num_beams=beams, early_stopping=False, **controls)
        np.testing.assert_array_equal(ours, _until_end(theirs, lm.eos_id), err_msg=str(prompt))
        changed |= not np.array_equal(ours, _until_end(decode(lm, np.array([prompt]), plain).token_ids, lm.eos_id))
    assert changed, "the controls changed no output: the comparison would not see them"


@pytest.mark.slow
@pytest.mark.parametrize("options", [{"return_attention": True}, {"beam_width": 3}], ids=["greedy", "beam"])
def test_xla_decoding_from_a_fixed_size_cache_gives_the_same_tokens(lm, prompt_ids, options):
    graph = decode(lm, prompt_ids, DecodingOptions(max_length=MAX_NEW, **options))
    xla = decode(lm, prompt_ids, DecodingOptions(max_length=MAX_NEW, jit_compile=True, **options))
    np.testing.assert_array_equal(xla.token_ids.numpy(), graph.token_ids.numpy())
    np.testing.assert_allclose(xla.scores.numpy(), graph.scores.numpy(), atol=1e-4)
    if options.get("return_attention"):
        np.testing.assert_allclose(xla.cross_attention.numpy(), graph.cross_attention.numpy(), atol=1e-5)


@pytest.mark.slow
def test_xla_sampling_is_seeded(lm, prompt_ids):
    # XLA draws other random numbers than TensorFlow's kernels: reproducible, not the same draws.
    options = DecodingOptions(max_length=MAX_NEW, sample=True, top_p=0.9, top_k=50, jit_compile=True, seed=3)
    first, again = (decode(lm, prompt_ids, options).token_ids.numpy() for _ in range(2))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, decode(lm, prompt_ids, replace(options, seed=4)).token_ids.numpy())


def test_xla_decoding_needs_a_fixed_size_cache(lm, prompt_ids):
    from tfattn.models.causal_lm import GPT, LanguageModelPreprocessor

    preprocessor = LanguageModelPreprocessor.learn(["to be or not to be\n"] * 50, vocab_size=300, context_length=16)
    gpt = GPT(preprocessor, embed_dim=8, num_heads=2, ff_dim=16, num_blocks=1)
    with pytest.raises(ValueError, match="jit_compile needs a model with a fixed-size cache; GPT has none"):
        decode(gpt, prompt_ids[:, -2:] % 300, DecodingOptions(max_length=2, jit_compile=True))
    with pytest.raises(ValueError, match="jit_compile decodes from the cache: use_cache must be True"):
        decode(lm, prompt_ids, DecodingOptions(max_length=2, jit_compile=True, use_cache=False))
