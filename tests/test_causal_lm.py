"""The causal language model (`tfattn.models.causal_lm`): a lossless vocabulary, a GPT whose cached
generation computes what its full forward pass computes, left-padded batches that decode as each
prompt alone, seeded sampling, prompts cut to the context, and the saved model."""

import numpy as np
import pytest
import tensorflow as tf
from conftest import shared_data_dir

from tfattn.decoding import DecodingOptions, decode
from tfattn.models.causal_lm import (
    END_OF_TEXT,
    GPT,
    LanguageModelPreprocessor,
    build_gpt,
    generate,
    left_pad,
    load_language_model,
    save_language_model,
)

PROMPTS = ["ROMEO:\nO, she doth", "", "First Citizen:\nBefore we proceed any further, hear me"]


@pytest.fixture(scope="module")
def text():
    return (shared_data_dir() / "text" / "tiny_shakespeare_train.txt").read_text(encoding="utf-8")[:60_000]


@pytest.fixture(scope="module")
def preprocessor(text):
    tf.random.set_seed(0)  # before the vocabulary: reseeding drops tensorflow_text's resources
    return LanguageModelPreprocessor.learn([text], vocab_size=400, context_length=48)


@pytest.fixture(scope="module", params=["learned", "tied-sinusoidal"])
def model(request, preprocessor):
    tied = request.param == "tied-sinusoidal"
    positional = "sinusoidal" if tied else "learned"
    return build_gpt(
        GPT(
            preprocessor, embed_dim=16, num_heads=2, ff_dim=32, num_blocks=2, positional=positional, tie_embeddings=tied
        )
    )


def test_the_vocabulary_gives_back_any_text_exactly(preprocessor, text):
    samples = [text[-2000:], "  two  spaces\n\ttab\n\nend ", "héllo wörld ☃ 日本\r\n", "\n\n", "x"]
    for sample in samples:
        (ids,) = preprocessor.tokenize([sample])
        assert preprocessor.detokenize(ids[None]) == [sample]
    # A stream: end-of-text before each document and after the last.
    stream = preprocessor.encode_stream(["ab", "c"])
    assert stream[0] == END_OF_TEXT and stream[-1] == END_OF_TEXT and np.sum(stream == END_OF_TEXT) == 3


@pytest.mark.slow
def test_cached_generation_scores_what_the_full_forward_pass_computes(model, preprocessor):
    """Each greedy row's score is the sum of its tokens' log-probabilities under one forward pass
    over prompt + continuation, and the uncached path decodes the same tokens."""
    prompt_ids = left_pad(preprocessor.tokenize_prompts(PROMPTS), model.pad_id)
    cached = decode(model, prompt_ids, DecodingOptions(max_length=8))
    uncached = decode(model, prompt_ids, DecodingOptions(max_length=8, use_cache=False))
    np.testing.assert_array_equal(cached.token_ids, uncached.token_ids)
    np.testing.assert_allclose(cached.scores, uncached.scores, atol=1e-4)
    for row, prompt in enumerate(PROMPTS):
        ids = cached.token_ids[row].numpy()
        ended = np.flatnonzero(ids == END_OF_TEXT)
        ids = ids[: ended[0] + 1] if ended.size else ids
        full = np.array(preprocessor.tokenize_prompts([prompt])[0] + ids.tolist())
        log_probs = tf.nn.log_softmax(model(full[None, :-1])).numpy()[0]
        chosen = log_probs[np.arange(len(full) - 1), full[1:]][-len(ids) :]
        np.testing.assert_allclose(chosen.sum(), cached.scores[row], atol=1e-3)


@pytest.mark.slow
def test_a_left_padded_batch_decodes_as_each_prompt_alone(model):
    together = generate(model, PROMPTS, max_new_tokens=6, batch_size=3)
    alone = [generate(model, [prompt], max_new_tokens=6)[0] for prompt in PROMPTS]
    assert together == alone


@pytest.mark.slow
def test_beam_search_and_seeded_sampling(model):
    beam = generate(model, PROMPTS, max_new_tokens=6, beam_width=3)
    assert len(beam) == 3 and all(isinstance(text, str) for text in beam)
    options = {"max_new_tokens": 8, "sample": True, "temperature": 1.5, "top_p": 0.95}
    first, again = generate(model, PROMPTS, seed=1, **options), generate(model, PROMPTS, seed=1, **options)
    assert first == again
    assert generate(model, PROMPTS, seed=2, **options) != first
    # Sampling inside beams: seeded too.
    options = {"max_new_tokens": 8, "beam_width": 3, "sample": True, "temperature": 1.5}
    first = generate(model, PROMPTS, seed=1, **options)
    assert first == generate(model, PROMPTS, seed=1, **options) != generate(model, PROMPTS, seed=2, **options)


class _Repetitive:
    """`model` whose decoding steps favour three tokens by 8 logits: it repeats itself."""

    def __init__(self, model):
        self.model = model
        self.bias = tf.constant(np.isin(np.arange(model.preprocessor.vocab_size), [40, 41, 42]) * 8.0, tf.float32)

    def __getattr__(self, name):
        return getattr(self.model, name)

    def decode_step(self, token_ids, step, state, cache):
        logits, cache, attention = self.model.decode_step(token_ids, step, state, cache)
        return logits + self.bias, cache, attention


def _bigram_repeats(model, preprocessor, **options):
    """Per prompt: how many bigrams of prompt + output tokens occur again later."""
    prompts = preprocessor.tokenize_prompts(PROMPTS)
    decoded = decode(_Repetitive(model), left_pad(prompts, model.pad_id), DecodingOptions(max_length=16, **options))
    repeats = []
    for prompt, row in zip(prompts, decoded.token_ids.numpy().tolist()):
        tokens = prompt + row[: row.index(END_OF_TEXT) + 1 if END_OF_TEXT in row else None]
        bigrams = list(zip(tokens, tokens[1:]))
        repeats.append(len(bigrams) - len(set(bigrams)))
    return repeats


@pytest.mark.slow
@pytest.mark.parametrize(
    "strategy",
    [{}, {"beam_width": 3}, {"sample": True, "seed": 4}, {"beam_width": 2, "sample": True}],
    ids=["greedy", "beam", "sample", "beam-sample"],
)
def test_no_repeat_ngram_size_leaves_no_repeated_ngram(model, preprocessor, strategy):
    # The prompts repeat no bigram: the repeats are the output's.
    assert min(_bigram_repeats(model, preprocessor, **strategy)) > 0
    assert _bigram_repeats(model, preprocessor, no_repeat_ngram_size=2, **strategy) == [0, 0, 0]


@pytest.mark.slow
def test_a_prompt_longer_than_the_context_keeps_its_last_tokens(model, preprocessor):
    long_prompt = "word " * 200
    with pytest.warns(UserWarning, match=r"only their last 41 tokens are kept"):
        (text,) = generate(model, [long_prompt], max_new_tokens=8)
    assert isinstance(text, str)
    with pytest.raises(ValueError, match="--max-new-tokens 49 leaves no room .* ask for at most 48"):
        generate(model, ["a"], max_new_tokens=49)
    with pytest.raises(ValueError, match="--max-new-tokens must be at least 1"):
        generate(model, ["a"], max_new_tokens=0)


@pytest.mark.slow
def test_save_and_load_give_the_same_logits_and_generations(model, tmp_path):
    loaded = load_language_model(save_language_model(model, tmp_path / "model"))
    ids = tf.constant([[END_OF_TEXT, 40, 41, 42]])
    np.testing.assert_allclose(loaded(ids), model(ids), atol=1e-5)
    assert generate(loaded, PROMPTS, max_new_tokens=5) == generate(model, PROMPTS, max_new_tokens=5)
