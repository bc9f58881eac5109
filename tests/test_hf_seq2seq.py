"""Tests of `tfattn.models.hf_seq2seq`: tfattn's decoding of a Hugging Face TF encoder-decoder
gives what the library's own `generate` gives.

No pretrained weights are reachable offline, so the model is a tiny random T5 built here, with
its end token's output weights fitted to score just below the best token: hypotheses then end
at different lengths, and beam search's ended-hypothesis path, `early_stopping` and the length
penalty all change results.
"""

import itertools
import re
from dataclasses import replace

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tfattn.decoding import DecodingOptions, decode
from tfattn.models.hf_seq2seq import HuggingFaceSeq2Seq

transformers = pytest.importorskip("transformers")

VOCAB, PAD, EOS, START = 64, 0, 1, 0
MAX_LENGTH = 10  # generated tokens; `generate`'s max_length is one more (the start token)
BEAM_CASES = list(itertools.product([2, 4], [1.0, 2.0], [True, False]))


def _sources(rng):
    """Three padded sources `[3, 7]` ending in the end token, two of them padded."""
    ids = rng.integers(2, VOCAB, size=(3, 7)).astype(np.int32)
    ids[:, -1] = EOS
    ids[1, 3], ids[1, 4:] = EOS, PAD
    ids[2, 5], ids[2, 6:] = EOS, PAD
    return tf.constant(ids)


@pytest.fixture(scope="module")
def t5():
    """A random 2-layer T5 whose end token is fitted to score about 1 below the best other
    token, and the sources it decodes."""
    config = transformers.T5Config(
        vocab_size=VOCAB,
        d_model=16,
        d_ff=32,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=2,
        d_kv=8,
        dropout_rate=0.0,
        tie_word_embeddings=False,
        decoder_start_token_id=START,
        pad_token_id=PAD,
        eos_token_id=EOS,
    )
    keras.utils.set_random_seed(0)
    model = transformers.TFT5ForConditionalGeneration(config)
    # Seeds, scales and margin chosen so that rows end at different lengths, some not at all
    # (`test_beam_cases_exercise_ended_hypotheses` checks that they still do).
    rng = np.random.default_rng(0)
    sources = _sources(rng)
    decoder_ids = tf.constant(rng.integers(2, VOCAB, size=(3, 12)), tf.int32)
    outputs = model(sources, attention_mask=_mask(sources), decoder_input_ids=decoder_ids, output_hidden_states=True)
    hidden = outputs.decoder_hidden_states[-1].numpy().reshape(-1, config.d_model)
    # Flatter distributions (more competing beams), and an end token fitted (least squares over
    # the decoder's states) to score 1 below each state's best token: likely, rarely the best.
    kernel = model.lm_head.kernel.numpy() * 0.5
    target = np.delete(hidden @ kernel, EOS, axis=1).max(axis=1) - 1.0
    kernel[:, EOS] = np.linalg.lstsq(hidden, target, rcond=None)[0]
    model.lm_head.kernel.assign(kernel)
    return model, sources


@pytest.fixture(scope="module")
def wrapped(t5):
    """The T5 behind the step interface, one for the module: it keeps its compiled decoders."""
    return HuggingFaceSeq2Seq(t5[0], max_output_length=MAX_LENGTH)


def _mask(source_ids):
    return tf.cast(tf.not_equal(source_ids, PAD), tf.int32)


def _until_end(token_ids, length=MAX_LENGTH):
    """Each row's tokens up to and including its first end token, padded to `length`."""
    rows = np.full((len(token_ids), length), PAD, np.int32)
    for index, row in enumerate(np.asarray(token_ids).tolist()):
        row = row[: row.index(EOS) + 1] if EOS in row else row
        rows[index, : len(row)] = row
    return rows


def _ended_lengths(token_ids):
    """Per row: how many tokens up to its end token (None: no end token)."""
    return [row.index(EOS) + 1 if EOS in row else None for row in np.asarray(token_ids).tolist()]


def _generate(model, sources, **options):
    return model.generate(
        sources,
        attention_mask=_mask(sources),
        max_length=MAX_LENGTH + 1,
        do_sample=False,
        return_dict_in_generate=True,
        output_scores=True,
        **options,
    )


@pytest.mark.slow
def test_beam_width_one_is_greedy(t5, wrapped):
    _, sources = t5
    greedy = decode(wrapped, sources, DecodingOptions())
    beam_one = decode(wrapped, sources, DecodingOptions(beam_width=1))
    np.testing.assert_array_equal(greedy.token_ids.numpy(), beam_one.token_ids.numpy())
    np.testing.assert_allclose(greedy.scores.numpy(), beam_one.scores.numpy())


@pytest.mark.slow
def test_greedy_matches_generate(t5, wrapped):
    model, sources = t5
    ours = decode(wrapped, sources, DecodingOptions(max_length=MAX_LENGTH))
    theirs = _generate(model, sources, num_beams=1).sequences
    np.testing.assert_array_equal(theirs[:, 0].numpy(), [START] * 3)
    np.testing.assert_array_equal(_until_end(ours.token_ids), _until_end(theirs[:, 1:]))
    # Both end and non-ending rows: the comparison covers stopping and padding after the end.
    lengths = _ended_lengths(ours.token_ids)
    assert any(length is None for length in lengths) and any(length is not None for length in lengths), lengths


@pytest.mark.slow
@pytest.mark.parametrize("width,length_penalty,early_stopping", BEAM_CASES)
def test_beam_search_matches_generate(t5, wrapped, width, length_penalty, early_stopping):
    model, sources = t5
    options = DecodingOptions(beam_width=width, length_penalty=length_penalty, early_stopping=early_stopping)
    ours = decode(wrapped, sources, options)
    theirs = _generate(model, sources, num_beams=width, length_penalty=length_penalty, early_stopping=early_stopping)
    np.testing.assert_array_equal(_until_end(ours.token_ids), _until_end(theirs.sequences[:, 1:]))
    np.testing.assert_allclose(ours.scores.numpy(), theirs.sequences_scores.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_beam_cases_exercise_ended_hypotheses(t5, wrapped):
    """The comparisons above mean something: hypotheses end early, and `early_stopping` and the
    length penalty change which translation wins."""
    _, sources = t5
    results = {
        case: _ended_lengths(
            decode(
                wrapped, sources, DecodingOptions(beam_width=case[0], length_penalty=case[1], early_stopping=case[2])
            ).token_ids
        )
        for case in BEAM_CASES
    }
    assert any(length is not None and length < MAX_LENGTH for lengths in results.values() for length in lengths)
    assert any(results[(width, penalty, True)] != results[(width, penalty, False)] for width, penalty, _ in BEAM_CASES)
    assert any(results[(width, 1.0, stop)] != results[(width, 2.0, stop)] for width, _, stop in BEAM_CASES)


@pytest.mark.slow
@pytest.mark.parametrize("beam_width", [1, 4])
def test_cached_and_uncached_decoding_agree(t5, wrapped, beam_width):
    _, sources = t5
    options = DecodingOptions(beam_width=beam_width, early_stopping=False, return_attention=True)
    cached = decode(wrapped, sources, options)
    uncached = decode(wrapped, sources, replace(options, use_cache=False))
    np.testing.assert_array_equal(cached.token_ids.numpy(), uncached.token_ids.numpy())
    np.testing.assert_allclose(cached.scores.numpy(), uncached.scores.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(cached.cross_attention.numpy(), uncached.cross_attention.numpy(), atol=1e-5)

    steps = cached.token_ids.shape[1]
    attention = cached.cross_attention.numpy()
    assert attention.shape == (3, steps, 2, 2, sources.shape[1])
    # Padded source positions get no attention; the first token's attention sums to 1.
    padded = (sources.numpy() == PAD)[:, None, None, None, :]
    assert np.abs(attention * padded).max() < 1e-6
    np.testing.assert_allclose(attention[:, 0].sum(axis=-1), 1.0, rtol=1e-5)


@pytest.mark.slow
def test_single_token_bad_words_are_never_generated(t5, wrapped, monkeypatch):
    model, sources = t5
    favourite = int(decode(wrapped, sources).token_ids[0, 0])
    monkeypatch.setattr(model.generation_config, "bad_words_ids", [[favourite]])
    banning = HuggingFaceSeq2Seq(model, max_output_length=MAX_LENGTH)  # reads bad_words_ids
    ours = decode(banning, sources, DecodingOptions(beam_width=2))
    theirs = _generate(model, sources, num_beams=2, early_stopping=True).sequences
    assert favourite not in ours.token_ids.numpy()
    np.testing.assert_array_equal(_until_end(ours.token_ids), _until_end(theirs[:, 1:]))


def _word_tokenizer():
    """A whitespace word tokenizer over `w3`...`w63`: `<pad>` 0, `</s>` 1 (appended), `<unk>` 2."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {"<pad>": PAD, "</s>": EOS, "<unk>": 2, **{f"w{index}": index for index in range(3, VOCAB)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", EOS)])
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )


@pytest.mark.slow
def test_translate_from_a_saved_folder(t5, tmp_path):
    model, _ = t5
    model.save_pretrained(tmp_path)
    _word_tokenizer().save_pretrained(tmp_path)
    loaded = HuggingFaceSeq2Seq.from_pretrained(tmp_path, max_output_length=MAX_LENGTH)
    assert (loaded.bos_id, loaded.eos_id, loaded.pad_id, loaded.max_output_length) == (START, EOS, PAD, MAX_LENGTH)

    texts = ["w5 w9 w40 w7", "w12", "w33 w3 w60"]
    prefix = "w4 "
    translations = loaded.translate(texts, batch_size=2, prefix=prefix, beam_width=2)
    tokenizer = loaded.tokenizer
    expected = []
    for text in texts:  # one at a time: no padding, and the order of `texts`
        source = tf.constant(tokenizer([prefix + text])["input_ids"], tf.int32)
        generated = _generate(model, source, num_beams=2, early_stopping=True).sequences
        expected += tokenizer.batch_decode(generated.numpy(), skip_special_tokens=True)
    assert translations == expected
    assert any(translations), translations


def test_loading_errors_name_the_folder(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        HuggingFaceSeq2Seq.from_pretrained(missing)
    with pytest.raises(FileNotFoundError, match=f"{re.escape(str(tmp_path))}.*config.json"):
        HuggingFaceSeq2Seq.from_pretrained(tmp_path)
    # Tests run with HF_HUB_OFFLINE (conftest): a hub name fails in one line that names it.
    with pytest.raises(ValueError, match="'google-t5/t5-small'") as raised:
        HuggingFaceSeq2Seq.from_pretrained("google-t5/t5-small")
    assert "\n" not in str(raised.value)


def test_translate_needs_a_tokenizer(t5):
    model, _ = t5
    with pytest.raises(ValueError, match="tokenizer"):
        HuggingFaceSeq2Seq(model).translate(["w5"])
