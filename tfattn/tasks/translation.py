"""The translation task: train a translator on sentence pairs with `model.fit`, score it with
sacreBLEU and chrF, and save the run (`tfattn train translate`, `tfattn translate`).

A run folder holds `config.json`, `model/` (`save_translator`), `history.csv`, and
`validation_scores.json` and `validation_report.txt`; training resumes after an interruption as every tfattn run does
(`tfattn.training`: backups per epoch, best epoch by validation loss, early stopping).
"""

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfattn.data.translation import SOURCE_COLUMNS, read_translation_pairs
from tfattn.families.translators import TRANSLATOR_FAMILIES, pretrained_translator, translation_field_help
from tfattn.models.translation import DEFAULT_VOCAB_SIZES, VOCABULARIES  # "subword" (the default) or "words"
from tfattn.runs.folders import MODEL_DIR
from tfattn.tasks.base import Task, numbered_path
from tfattn.tasks.config import FIELD_HELP, RunConfig, check_numeric_options
from tfattn.tasks.generation import add_decoding_arguments, decoding_options
from tfattn.training.losses import MaskedCrossEntropy

__all__ = [
    "TranslationConfig",
    "TranslationTask",
    "alignment",
    "bleu_and_chrf",
    "evaluate_translations",
    "load_run_translator",
    "train_translation",
    "validation_pairs",
]

# Where a translation option means something else than the classifier option of the same name (the
# translator families add their own options' help: `tfattn.families.translators`).
TRANSLATION_HELP = {
    **FIELD_HELP,
    "data": "sentence pairs: an Anki-format file (English TAB other language TAB attribution) or a two-column TSV",
    "validation_data": "validation pairs, same format (default: --validation-fraction of --data, by target sentence)",
    "limit": "train on the first this many pairs (smoke tests)",
    "validation_limit": "validate (loss and BLEU) on the first this many pairs",
    "vocab_size": "entries per language learned from the training pairs (default 8000 subword, 20000 words)",
    "time_budget": "stop training after this many seconds",
}


MAX_LENGTH_HELP = "most tokens generated per sentence (default: the model's longest target)"


@dataclass
class TranslationConfig(RunConfig):
    """A translation run: the shared run fields (`RunConfig`, some defaults changed here) and the
    translator's section; saved as the run's `config.json`."""

    task: str = "translate"
    run_dir: str = "runs/translate"
    # data: an Anki-format file or two-column TSV (with --stream: files, a folder or a glob)
    validation_fraction: float = 0.05  # split by target sentence
    source_column: int = 2  # 1 or 2: the column translated from (Anki files: 1 English, 2 the other)
    model: str = "transformer"
    vocabulary: str = "subword"
    vocab_size: int | None = None  # entries per language (default DEFAULT_VOCAB_SIZES of vocabulary)
    max_length: int = 64  # pieces per sentence, both languages (longer ones are cut)
    embed_dim: int | None = None
    num_heads: int | None = None
    ff_dim: int | None = None
    num_blocks: int | None = None
    units: int | None = None
    dropout: float = 0.1
    label_smoothing: float = 0.1
    batch_size: int = 64
    epochs: int = 10
    warmup_fraction: float = 0.05
    patience: int = 2

    @classmethod
    def field_help(cls):
        return {**TRANSLATION_HELP, **translation_field_help()}

    @staticmethod
    def field_choices():
        """Fields that take one of a few words."""
        return {"model": tuple(TRANSLATOR_FAMILIES), "source_column": SOURCE_COLUMNS, "vocabulary": VOCABULARIES}

    def resolve(self):
        """A copy with the model's defaults filled in; refuses options the model does not have."""
        if self.model not in TRANSLATOR_FAMILIES:
            raise ValueError(f"--model must be one of {', '.join(TRANSLATOR_FAMILIES)}, got {self.model!r}")
        family = TRANSLATOR_FAMILIES[self.model]
        if self.vocabulary not in VOCABULARIES:
            raise ValueError(f"--vocabulary must be one of {', '.join(VOCABULARIES)}, got {self.vocabulary!r}")
        if self.source_column not in SOURCE_COLUMNS:
            raise ValueError(f"--source-column must be 1 or 2, got {self.source_column!r}")
        if not self.data:
            raise ValueError("--data is required: an Anki-format file or a two-column TSV of sentence pairs")
        check_numeric_options(self)
        if self.jit_compile:
            raise ValueError("--jit-compile applies to the encoder tasks, not to translation")
        if self.stream:
            if not self.validation_data:
                raise ValueError("--stream needs --validation-data: sentence pairs read into memory")
            if self.limit:
                raise ValueError("--limit subsets data read into memory; with --stream, give a smaller file instead")
        for other in TRANSLATOR_FAMILIES.values():
            if other is not family:
                other.refuse_options(self)
        vocab_size = DEFAULT_VOCAB_SIZES[self.vocabulary] if self.vocab_size is None else self.vocab_size
        for name, value, low in (
            ("vocab_size", vocab_size, 8),
            ("max_length", self.max_length, 2),
            ("batch_size", self.batch_size, 1),
            ("epochs", self.epochs, 1),
            ("patience", self.patience, 1),
        ):
            if int(value) < low:
                raise ValueError(f"--{name.replace('_', '-')} must be at least {low}, got {value!r}")
        for name, value in (("dropout", self.dropout), ("label_smoothing", self.label_smoothing)):
            if not 0 <= float(value) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1), got {value!r}")
        defaults = {k: v for k, v in family.defaults.items() if getattr(self, k) is None}
        return replace(self, vocab_size=vocab_size, **defaults)


def bleu_and_chrf(hypotheses, references):
    """Corpus sacreBLEU (13a tokenization, cased) and chrF of `hypotheses` against one reference each."""
    import sacrebleu

    return {
        "bleu": round(sacrebleu.corpus_bleu(hypotheses, [references]).score, 2),
        "chrf": round(sacrebleu.corpus_chrf(hypotheses, [references]).score, 2),
    }


def evaluate_translations(model, pairs, batch_size=64, **options):
    """Translate `pairs.sources` with `model` (`tfattn.decoding` `options`) and score them against
    `pairs.targets`: `{"bleu", "chrf", "sentences", "seconds", "translations"}`."""
    started = time.perf_counter()
    translations = model.translate(pairs.sources, batch_size=batch_size, **options)
    seconds = time.perf_counter() - started
    scores = bleu_and_chrf(translations, pairs.targets)
    return {**scores, "sentences": len(translations), "seconds": round(seconds, 1), "translations": translations}


def alignment(model, text, **options):
    """The cross-attention of `model` translating `text` (`tfattn.decoding` `options`, greedy by
    default): `(translation, source_tokens, target_tokens, attention [layers, heads, target,
    source])`, the tokens being the vocabulary's pieces or words (the end token shown as `</s>`)."""
    from tfattn.decoding import DecodingOptions, decode

    preprocessor = model.preprocessor
    source_ids = preprocessor.pad_sources([text])
    decoded = decode(model, source_ids, DecodingOptions(**options, return_attention=True))
    target_ids = decoded.token_ids[0].numpy()
    ended = np.flatnonzero(target_ids == model.eos_id)
    steps = int(ended[0]) + 1 if ended.size else len(target_ids)
    pieces = [piece.decode("utf-8") for piece in preprocessor.source.pieces(source_ids[0]).numpy()]
    target_pieces = [piece.decode("utf-8") for piece in preprocessor.target.pieces(target_ids[:steps]).numpy()]
    attention = decoded.cross_attention[0, :steps].numpy().transpose(1, 2, 0, 3)  # [layers, heads, target, source]
    translation = preprocessor.decode_targets(decoded.token_ids[:1]).numpy()[0].decode("utf-8")
    return translation, pieces, target_pieces, attention


def _split_validation(pairs, config):
    """Training and validation pairs: `validation_data`, or a seeded share of `data` grouped by
    target sentence (all translations of one sentence fall on one side, as in the shared split)."""
    if config.validation_data:
        validation = read_translation_pairs(config.validation_data, config.source_column)
        return pairs, validation.head(config.validation_limit)
    targets = sorted(set(pairs.targets))
    rng = np.random.default_rng(config.seed)
    held_out = set(rng.choice(targets, size=max(1, int(len(targets) * config.validation_fraction)), replace=False))
    train, validation = (type(pairs)(path=pairs.path) for _ in range(2))
    for source, target in zip(pairs.sources, pairs.targets):
        side = validation if target in held_out else train
        side.sources.append(source)
        side.targets.append(target)
    return train, validation.head(config.validation_limit)


def validation_pairs(config):
    """The validation pairs a run with this (resolved) config scored itself on."""
    pairs = read_translation_pairs(config.data, config.source_column, config.limit)
    return _split_validation(pairs, config)[1]


def load_run_translator(run_dir, command=""):
    """The translator a finished `tfattn train translate` run saved (the folder checked by
    `tfattn.tasks.base.open_run`)."""
    from tfattn.tasks.base import open_run

    return open_run(run_dir, command, expect=TranslationTask)[1]


class TranslationTask(Task):
    """Sentence pairs -> a translator (`tfattn.models.translation`), scored by sacreBLEU and chrF;
    decoded greedily, by beam search or by sampling (`tfattn.decoding`)."""

    name = "translate"
    summary = "Translation of sentence pairs"
    description = (
        "Translation. --data: sentence pairs, an Anki-format file (spa.txt, rus.txt: English, the translation, "
        "attribution) or a two-column TSV; --source-column says which column is translated (default 2: into "
        "English). --model transformer (encoder-decoder) or rnn (bidirectional GRU + GRU with additive attention). "
        "--vocabulary subword (SentencePiece pieces) or words (the most frequent cased words), learned from the "
        "training pairs."
    )
    config_class = TranslationConfig
    serve_command = "translate"
    serve_help = "translate texts with a translation run or a Hugging Face seq2seq model"

    @classmethod
    def add_run_argument(cls, parser, help_text):
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--run", help="a run folder written by 'tfattn train translate'")
        source.add_argument(
            "--model", help="a Hugging Face TF encoder-decoder (TFAutoModelForSeq2SeqLM): hub name or local folder"
        )

    @classmethod
    def add_arguments(cls, command, parser):
        if command == "serve":
            parser.add_argument(
                "--prefix", default="", help="--model: text put before each input (T5: 'translate English to German: ')"
            )
            add_decoding_arguments(parser, length_help=MAX_LENGTH_HELP)
        elif command in ("evaluate", "export"):
            what = "decoding" if command == "evaluate" else "decoding the export serves"
            add_decoding_arguments(parser.add_argument_group(f"translation runs: {what}"), length_help=MAX_LENGTH_HELP)

    def prepare_training(self):
        """The training and validation pairs, read and checked before the run folder is touched
        (streamed pairs: every line of the files checked and counted)."""
        c = self.config
        if not c.stream:
            return _split_validation(read_translation_pairs(c.data, c.source_column, c.limit), c)
        from tfattn.data.streaming import expand_data_files
        from tfattn.data.translation import count_translation_pairs

        files = expand_data_files(c.data)
        print(f"checking {len(files)} data file(s) before streaming them ...", flush=True)
        train = StreamedPairs(files, count_translation_pairs(files, c.source_column))
        return train, read_translation_pairs(c.validation_data, c.source_column).head(c.validation_limit)

    def data_sources(self):
        c = self.config
        if not c.stream:
            return [c.data] + ([c.validation_data] if c.validation_data else [])
        from tfattn.data.streaming import expand_data_files

        return [str(path) for path in expand_data_files(c.data)] + [c.validation_data]

    def fit(self, run_dir, prepared, strategy, callbacks=()):
        """Learn the vocabularies, build the translator in `strategy`'s scope, train it, then
        save it and score the saved translator on the validation pairs (greedy decoding)."""
        from tfattn.data.pipelines import count_batches, make_dataset
        from tfattn.models.translation import TranslationPreprocessor, save_translator
        from tfattn.runs.folders import finish_training, mark_trained, write_report
        from tfattn.training.metrics import masked_token_accuracy
        from tfattn.training.phases import EpochOrder, compile_and_fit

        c = self.config
        train_pairs, validation_pairs = prepared
        print(
            f"translate: {len(train_pairs)} training / {len(validation_pairs)} validation pairs from {c.data}; "
            f"model: {c.model}"
        )
        if isinstance(train_pairs, StreamedPairs):
            from itertools import chain, islice

            from tfattn.data.streaming import VOCABULARY_SAMPLE
            from tfattn.data.translation import iter_translation_pairs

            pairs = chain.from_iterable(iter_translation_pairs(path, c.source_column) for path in train_pairs.files)
            sources, targets = zip(*islice(pairs, VOCABULARY_SAMPLE))
        else:
            sources, targets = train_pairs.sources, train_pairs.targets
        # Deterministic: a resumed run learns the same vocabularies again.
        preprocessor = TranslationPreprocessor.learn(
            sources,
            targets,
            vocab_size=c.vocab_size,
            vocabulary=c.vocabulary,
            max_source_length=c.max_length,
            max_target_length=c.max_length,
        )

        def dataset(split, shuffle):
            target_ids, labels = preprocessor.encode_targets(split.targets)
            features = {"source_ids": preprocessor.encode_sources(split.sources), "target_ids": target_ids}
            return make_dataset(features, labels, c.batch_size, shuffle=shuffle, seed=c.seed)

        if isinstance(train_pairs, StreamedPairs):
            order = _streamed_order(c, preprocessor, train_pairs)
        else:
            train_data = dataset(train_pairs, shuffle=True)
            order = EpochOrder(train_data, count_batches(train_data))
        with strategy.scope():
            model = TRANSLATOR_FAMILIES[c.model].build(preprocessor, c)
        print(f"{c.model} translator: {model.count_params():,} weights")
        compile_and_fit(
            model,
            order,
            run_dir,
            c,
            loss=MaskedCrossEntropy(c.label_smoothing),
            make_metrics=lambda: [masked_token_accuracy],
            monitor=self.monitor,
            examples_per_epoch=len(train_pairs),
            strategy=strategy,
            validation_data=dataset(validation_pairs, shuffle=False),
            callbacks=callbacks,
        )
        mark_trained(run_dir)
        save_translator(model, run_dir / MODEL_DIR)
        saved = self.load_model(run_dir)  # scored as evaluate, translate and export will load it
        result = evaluate_translations(saved, validation_pairs)
        scores = {key: result[key] for key in ("bleu", "chrf", "sentences", "seconds")}
        summary = (
            f"validation BLEU {scores['bleu']:.2f}, chrF {scores['chrf']:.2f} (greedy, {scores['sentences']} pairs)"
        )
        write_report(run_dir, "validation", {"decoding": "greedy", **scores}, summary)
        print(summary)
        finish_training(run_dir, summary)
        return scores

    def load_model(self, run_dir):
        from tfattn.models.translation import load_translator

        self.run_dir = Path(run_dir)
        return load_translator(self.run_dir / MODEL_DIR)

    def serve(self, model, texts, args):
        options = decoding_options(args)
        if model is None:  # --model: a Hugging Face seq2seq model instead of a run
            return pretrained_translator(args.model).translate(texts, prefix=args.prefix, **options)
        return model.translate(texts, **options)

    def evaluate(self, model, args):
        """sacreBLEU and chrF of the translations of `args.data` (default: the run's validation pairs)."""
        c = self.config
        pairs = read_translation_pairs(args.data, c.source_column) if args.data else validation_pairs(c)
        options = decoding_options(args)
        result = evaluate_translations(model, pairs, **options)
        strategy = "beam" if options["beam_width"] > 1 else "sample" if options["sample"] else "greedy"
        scores = {key: result[key] for key in ("bleu", "chrf", "sentences", "seconds")}

        def write(run_dir, prefix):
            from tfattn.runs.folders import write_report

            # The decoding names the files too: greedy and beam scores of one run sit side by side.
            stem = f"{prefix}_{strategy}"
            paths = write_report(run_dir, stem, {"data": pairs.path, "decoding": options, **scores}, text)
            translations = Path(run_dir) / f"{stem}_translations.txt"
            translations.write_text("".join(line + "\n" for line in result["translations"]), encoding="utf-8")
            return [*paths, translations]

        text = (
            f"BLEU {scores['bleu']:.2f}  chrF {scores['chrf']:.2f}  ({scores['sentences']} pairs, {strategy}, "
            f"{scores['sentences'] / max(result['seconds'], 1e-9):.1f} sentences/s)"
        )
        return text, write

    def attention(self, model, texts, args):
        """The cross-attention of each translation, source pieces x generated pieces, as a PNG
        (one panel per layer)."""
        from tfattn.plotting import plot_alignment

        out = args.out or "attention.png"
        written = []
        for index, text in enumerate(texts):
            translation, source_tokens, target_tokens, attention = alignment(model, text)
            title = f"{text}\n-> {translation}"
            path = numbered_path(out, index, len(texts))
            written.append(plot_alignment(attention, source_tokens, target_tokens, path, title=title))
            print(translation)
        return written

    def export(self, model, args):
        from tfattn.decoding import DecodingOptions
        from tfattn.serving.translators import export_translator

        options = DecodingOptions(**decoding_options(args))
        path = export_translator(model, args.out, options=options, overwrite=args.overwrite, protected=(self.run_dir,))
        return path, "texts -> translations, cross_attention"


def train_translation(config: TranslationConfig, overwrite=False, callbacks=()):
    """Train a translator, score it on the validation pairs (greedy decoding, sacreBLEU and
    chrF) and save everything under `config.run_dir` (`tfattn.training.loop.train`, as every
    task trains). Returns the scores dict."""
    from tfattn.training.loop import train

    return train(config, callbacks=callbacks, overwrite=overwrite)


@dataclass
class StreamedPairs:
    """Training pairs streamed from files: checked and counted, not loaded."""

    files: list
    count: int

    def __len__(self):
        return self.count


def _streamed_order(config, preprocessor, pairs):
    """`StreamOrder` of streamed pairs: each worker reads its share of the files, shuffled in a
    buffer, batched and tokenized in the input pipeline."""
    from tfattn.data.translation import stream_translation_pairs
    from tfattn.models.translation import PAD_ID
    from tfattn.tagging import IGNORE_INDEX
    from tfattn.training.phases import StreamOrder

    def encode(sources, targets):
        target_ids, labels = preprocessor.encode_targets(targets)
        features = {"source_ids": preprocessor.pad_sources(sources), "target_ids": target_ids.to_tensor(PAD_ID)}
        return features, labels.to_tensor(IGNORE_INDEX)  # as make_dataset pads labels

    def make_dataset(input_context):
        pairs_of_worker = stream_translation_pairs(
            pairs.files,
            config.source_column,
            worker_index=input_context.input_pipeline_id,
            num_workers=input_context.num_input_pipelines,
        )
        batch_size = input_context.get_per_replica_batch_size(config.batch_size)
        shuffled = pairs_of_worker.shuffle(config.shuffle_buffer or 1, seed=config.seed).repeat()
        return shuffled.batch(batch_size, drop_remainder=True).map(encode).prefetch(tf.data.AUTOTUNE)

    return StreamOrder(make_dataset, max(1, len(pairs) // config.batch_size))
