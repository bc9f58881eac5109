"""Translation end to end: decoding strategies on both translators, and the `tfattn` commands
(train translate, translate, evaluate, attention, export) on a slice of the Tatoeba pairs."""

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from task_harness import run_translator_test

from tfattn.cli import main
from tfattn.data.translation import read_translation_pairs
from tfattn.decoding import DecodingOptions, decode, filter_logits
from tfattn.models.translation import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    RnnTranslator,
    TransformerTranslator,
    TranslationPreprocessor,
    WordVocabulary,
    build_sample,
    load_translator,
    save_translator,
)
from tfattn.tasks.translation import TranslationConfig

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "translation"
TINY = {
    "transformer": (TransformerTranslator, {"embed_dim": 16, "num_heads": 2, "ff_dim": 32, "num_blocks": 2}),
    "rnn": (RnnTranslator, {"embed_dim": 16, "units": 16}),
    # The same decoding tests with word vocabularies:
    "transformer-words": (TransformerTranslator, {"embed_dim": 16, "num_heads": 2, "ff_dim": 32, "num_blocks": 2}),
}


@pytest.fixture(scope="module")
def pairs():
    return read_translation_pairs(DATA / "spa_eng_valid.tsv", limit=300)


@pytest.fixture(scope="module")
def preprocessors(pairs):
    """`{"subword": ..., "words": ...}`, learned from the pairs."""
    # Seeded before the vocabularies exist: reseeding TensorFlow later drops tensorflow_text's
    # SentencePiece resources (tensorflow_text's kernel-owned resources do not survive it).
    tf.random.set_seed(0)
    return {
        vocabulary: TranslationPreprocessor.learn(pairs.sources, pairs.targets, vocab_size=120, vocabulary=vocabulary)
        for vocabulary in ("subword", "words")
    }


@pytest.fixture(scope="module", params=sorted(TINY))
def model(request, preprocessors):
    cls, kwargs = TINY[request.param]
    return build_sample(cls(preprocessors["words" if request.param.endswith("-words") else "subword"], **kwargs))


def _ids(model, options, pairs, count=6):
    return decode(model, model.preprocessor.pad_sources(pairs.sources[:count]), options)


@pytest.mark.slow
def test_beam_width_one_and_top_k_one_equal_greedy(model, pairs):
    greedy = _ids(model, DecodingOptions(max_length=12), pairs)
    beam_one = _ids(model, DecodingOptions(max_length=12, beam_width=1), pairs)
    top_k_one = _ids(model, DecodingOptions(max_length=12, sample=True, top_k=1, seed=5), pairs)
    np.testing.assert_array_equal(greedy.token_ids, beam_one.token_ids)
    np.testing.assert_array_equal(greedy.token_ids, top_k_one.token_ids)
    np.testing.assert_allclose(greedy.scores, top_k_one.scores, rtol=1e-6)


@pytest.mark.slow
def test_seeded_sampling_is_reproducible_and_seeds_differ(model, pairs):
    options = DecodingOptions(max_length=12, sample=True, temperature=1.5, top_p=0.95, seed=7)
    first, again = _ids(model, options, pairs), _ids(model, options, pairs)
    np.testing.assert_array_equal(first.token_ids, again.token_ids)
    other = _ids(model, DecodingOptions(max_length=12, sample=True, temperature=1.5, top_p=0.95, seed=8), pairs)
    assert not np.array_equal(first.token_ids, other.token_ids)


@pytest.mark.slow
def test_cached_decoding_scores_what_the_full_decoder_computes(model, pairs):
    """Decoding from the key/value cache computes what the decoder computes over every position
    at once (the path `use_cache=False` re-runs at each step): each row's greedy score equals the
    log-probabilities of its tokens under the full forward pass. Compared as numbers, not as
    tokens: an untrained model's near-ties may pick another token when floats are summed in
    another order (another CPU, another thread count)."""
    cached = _ids(model, DecodingOptions(max_length=10, return_attention=True), pairs)
    ids = cached.token_ids.numpy()
    source = model.preprocessor.pad_sources(pairs.sources[: len(ids)])
    inputs = np.concatenate([np.full((len(ids), 1), BOS_ID), ids[:, :-1]], axis=1).astype(np.int32)
    logits = model({"source_ids": source, "target_ids": tf.constant(inputs)}, training=False)
    chosen = np.take_along_axis(tf.nn.log_softmax(logits).numpy(), ids[..., None], axis=-1)[..., 0]
    scored = np.cumsum(ids == EOS_ID, axis=1) - (ids == EOS_ID) == 0  # up to and including the end token
    np.testing.assert_allclose((chosen * scored).sum(axis=1), cached.scores.numpy(), atol=1e-3)
    layers, heads = model.attention_shape()
    assert cached.cross_attention.shape[2:4] == (layers, heads)
    uncached = _ids(model, DecodingOptions(max_length=10, beam_width=3, use_cache=False), pairs)
    assert uncached.token_ids.shape[0] == len(ids) and np.all(np.isfinite(uncached.scores.numpy()))


@pytest.mark.slow
def test_min_length_forbids_an_early_end(model, pairs):
    decoded = _ids(model, DecodingOptions(max_length=9, min_length=9), pairs)
    assert decoded.token_ids.shape[1] == 9
    assert not np.any(decoded.token_ids.numpy()[:, :8] == model.eos_id)


@pytest.mark.slow
def test_padding_and_the_start_token_are_never_generated(model, pairs):
    # Fed back, a generated padding token would be masked out of the decoder's attention, and
    # the full decoder would score another sentence than the one decoded.
    bias = model.output_layer.bias
    saved = bias.numpy()
    favoured = saved.copy()
    favoured[[PAD_ID, BOS_ID]] += 100.0  # the most likely tokens by far, at every step
    bias.assign(favoured)
    try:
        for options in (
            DecodingOptions(max_length=6),
            DecodingOptions(max_length=6, beam_width=3),
            DecodingOptions(max_length=6, sample=True, seed=1),
        ):
            ids = _ids(model, options, pairs).token_ids.numpy()
            before_end = np.cumsum(ids == EOS_ID, axis=1) == 0
            assert not np.any(np.isin(ids, [PAD_ID, BOS_ID]) & before_end), options
    finally:
        bias.assign(saved)


def test_teacher_forcing_and_step_decoding_give_the_same_logits(model, pairs):
    preprocessor = model.preprocessor
    source = preprocessor.pad_sources(pairs.sources[:3])
    target_ids = preprocessor.encode_targets(pairs.targets[:3])[0].to_tensor()
    forced = model({"source_ids": source, "target_ids": target_ids})
    state = model.encode(source)
    cache = model.start_cache(state)
    for step in range(target_ids.shape[1]):
        logits, cache, _ = model.decode_step(target_ids[:, step], step, state, cache)
        np.testing.assert_allclose(logits, forced[:, step], atol=1e-4)


@pytest.mark.slow
def test_save_and_load_give_the_same_translations(model, pairs, tmp_path):
    loaded = load_translator(save_translator(model, tmp_path / "model"))
    texts = pairs.sources[:5]
    assert loaded.translate(texts, max_length=8) == model.translate(texts, max_length=8)


def test_word_vocabulary_splits_marks_and_rebuilds_their_spacing(pairs):
    vocabulary = WordVocabulary.learn(pairs.targets, vocab_size=5000)  # every word of the pairs
    text = "Where's the library? I don't know, he said: \"Go (now).\""
    assert [word.decode() for word in WordVocabulary.split([text]).flat_values.numpy()] == [
        "Where's", "the", "library", "?", "I", "don't", "know", ",", "he", "said", ":",
        '"', "Go", "(", "now", ")", ".", '"',
    ]  # fmt: skip
    # The words of the pairs come back exactly, spacing rules included, for nearly every sentence
    # (the rules cannot tell e.g. "3.5" from "3. 5").
    ids = vocabulary.tokenize(pairs.targets).to_tensor()
    assert not (ids.numpy() == 1).any()  # no unknown word
    back = [text.decode() for text in vocabulary.detokenize(ids).numpy()]
    assert np.mean([a == b for a, b in zip(back, pairs.targets)]) >= 0.98
    # A word the training sentences never had is unknown, and decodes as <unk>.
    assert {"Tom", "the", "."} <= set(vocabulary.words)
    ids = vocabulary.tokenize(["Tom saw the zyzzyva."]).to_tensor()
    assert [text.decode() for text in vocabulary.detokenize(ids).numpy()] == ["Tom saw the <unk>."]


def test_word_vocabulary_ranks_by_count_then_word_and_survives_save_and_load(preprocessors, tmp_path):
    vocabulary = WordVocabulary.learn(["b a c", "c b", "c", "¿d?"], vocab_size=7)
    assert vocabulary.words == ("<pad>", "<unk>", "<s>", "</s>", "c", "b", "?")  # c 3, b 2, then ties by word
    preprocessor = preprocessors["words"]
    preprocessor.save(tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["source.words", "target.words"]
    loaded = TranslationPreprocessor.load(tmp_path, preprocessor.get_config())
    assert (loaded.source.words, loaded.target.words) == (preprocessor.source.words, preprocessor.target.words)
    with pytest.raises(ValueError, match="source and target vocabularies differ in kind: words and subword"):
        TranslationPreprocessor(preprocessor.source, preprocessors["subword"].target)


def test_translation_config_defaults_the_vocabulary_size_per_kind():
    assert TranslationConfig(data="pairs.tsv").resolve().vocab_size == 8000
    assert TranslationConfig(data="pairs.tsv", vocabulary="words").resolve().vocab_size == 20000
    assert TranslationConfig(data="pairs.tsv", vocabulary="words", vocab_size=500).resolve().vocab_size == 500
    with pytest.raises(ValueError, match="--vocabulary must be one of subword, words, got 'bpe'"):
        TranslationConfig(data="pairs.tsv", vocabulary="bpe").resolve()


@pytest.mark.slow
def test_translate_keeps_the_order_of_the_texts_and_refuses_an_empty_batch_size(model, pairs):
    texts = pairs.sources[:7]
    one_by_one = [model.translate([text], max_length=6)[0] for text in texts]
    assert model.translate(texts, batch_size=3, max_length=6) == one_by_one  # sorted into batches, put back
    with pytest.raises(ValueError, match="batch_size must be at least 1, got 0"):
        model.translate(texts, batch_size=0)


def test_nucleus_keeps_the_smallest_set_reaching_top_p():
    logits = tf.math.log(tf.constant([[0.5, 0.3, 0.15, 0.05]]))
    kept = np.isfinite(filter_logits(logits, top_p=0.8).numpy())
    np.testing.assert_array_equal(kept, [[True, True, False, False]])
    kept = np.isfinite(filter_logits(logits, top_k=3, top_p=0.99).numpy())
    np.testing.assert_array_equal(kept, [[True, True, True, False]])


@pytest.mark.parametrize(
    "options, message",
    [
        ({"beam_width": 0}, "beam_width must be at least 1"),
        ({"top_p": 0}, "top_p must be in (0, 1]"),
        ({"temperature": 0}, "temperature must be above 0"),
        ({"repetition_penalty": 0}, "repetition_penalty must be above 0 (1.0: off), got 0"),
        ({"no_repeat_ngram_size": -1}, "no_repeat_ngram_size must be 0 (off) or more"),
    ],
)
def test_bad_decoding_options_are_named(options, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        DecodingOptions(**options)


SMALL = ["--vocab-size", "200", "--embed-dim", "16", "--batch-size", "32", "--limit", "400"]


@pytest.fixture(scope="module", params=["subword", "words"])
def translation_run(request, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / f"translate_{request.param}"
    argv = ["train", "translate", "--data", str(DATA / "spa_eng_train.tsv"), "--run-dir", str(run_dir)]
    argv += ["--validation-data", str(DATA / "spa_eng_valid.tsv"), "--validation-limit", "40"]
    argv += ["--model", "rnn", "--units", "16", "--epochs", "1", "--vocabulary", request.param] + SMALL
    assert main(argv) == 0
    return run_dir


@pytest.mark.slow
def test_cli_trains_translates_evaluates_plots_and_exports(translation_run, tmp_path, capsys):
    scores = json.loads((translation_run / "validation_scores.json").read_text())
    assert scores["sentences"] == 40 and 0 <= scores["bleu"] <= 100
    vocabulary = json.loads((translation_run / "config.json").read_text())["vocabulary"]
    suffix = {"subword": "spm", "words": "words"}[vocabulary]
    assert sorted(path.name for path in (translation_run / "model").glob("*.*") if "weights" not in path.name) == [
        "model.json",
        f"source.{suffix}",
        f"target.{suffix}",
    ]
    capsys.readouterr()
    assert main(["translate", "--run", str(translation_run), "Hola.", "¿Dónde está la biblioteca?", "--beam", "2"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert main(["evaluate", "--run", str(translation_run), "--beam", "2"]) == 0
    beam = json.loads((translation_run / "validation_beam_scores.json").read_text())
    assert beam["sentences"] == 40 and beam["decoding"]["beam_width"] == 2
    assert len((translation_run / "validation_beam_translations.txt").read_text().splitlines()) == 40
    png = tmp_path / "alignment.png"
    assert main(["attention", "--run", str(translation_run), "Hola.", "--out", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    export = tmp_path / "export"
    assert main(["export", "--run", str(translation_run), "--out", str(export)]) == 0
    assert (export / "saved_model.pb").is_file()


@pytest.mark.slow
def test_cli_samples_inside_beams_with_repetition_controls_and_names_a_bad_tsv_line(translation_run, tmp_path, capsys):
    controls = ["--beam", "2", "--top-p", "0.9", "--no-repeat-ngram-size", "2", "--repetition-penalty", "1.2"]
    assert main(["translate", "--run", str(translation_run), "Hola.", *controls]) == 0
    assert capsys.readouterr().out.strip()
    with pytest.raises(SystemExit) as refused:  # as the flag is read
        main(["translate", "--run", str(translation_run), "Hola.", "--repetition-penalty", "0"])
    assert refused.value.code == 2
    assert "argument --repetition-penalty: must be a positive number, got '0'" in capsys.readouterr().err
    bad = tmp_path / "bad.tsv"
    bad.write_text("Hi.\tHola.\nno tab here\n", encoding="utf-8")
    assert main(["evaluate", "--run", str(translation_run), "--data", str(bad)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {bad}:2: expected two tab-separated sentences, found 1 column"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["transformer", "rnn"])
def test_translators_pass_the_task_harness(kind, pairs, tmp_path):
    """The battery every tfattn model passes (`task_harness.run_translator_test`); the export in a
    fresh interpreter for the transformer (tests/test_translation_export.py serves both kinds)."""
    cls, kwargs = TINY[kind]
    # Word vocabularies (lookup tables), learned here: the module's SentencePiece ones lose their
    # tensorflow_text resources when an earlier test reseeds TensorFlow (see `preprocessors`).
    preprocessor = TranslationPreprocessor.learn(pairs.sources, pairs.targets, vocab_size=120, vocabulary="words")
    init_kwargs = {"preprocessor": preprocessor, **kwargs}
    run_translator_test(cls, init_kwargs, pairs.head(6), tmp_path=tmp_path, export=kind == "transformer")
