"""The language-model task: train a GPT on plain text (`tfattn train lm`), continue prompts with it
(`tfattn generate`), and score any text file in loss, perplexity and bits per character.

The text (`.txt` files, or a text column of `.jsonl`/`.csv`/`.tsv`) becomes one stream of
SentencePiece ids with the end-of-text token before every document and after the last, cut into
blocks of `--block-size` tokens (the model's context). Every epoch logs the validation loss,
`val_nats_per_token`, `val_perplexity` and `val_bits_per_char`; the run folder is every tfattn
run's (`config.json`, `model/`, `history.csv`, `validation_scores.json`, `validation_report.txt`),
resumed after an interruption as every run is.

With `--stream`, .txt files larger than memory are read and tokenized by `tf.data` as training
goes (`tfattn.data.text.stream_token_blocks`); the vocabulary is learned from their first lines,
and an epoch is an estimated pass over them.
"""

import itertools
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfattn.data.examples import DataError
from tfattn.data.text import (
    StreamedText,
    TextCorpus,
    check_streamed_text,
    first_lines,
    read_text_corpus,
    split_validation,
    stream_token_blocks,
)
from tfattn.layer_arguments import POSITIONALS
from tfattn.runs.folders import MODEL_DIR
from tfattn.tasks.base import Task, numbered_path
from tfattn.tasks.config import FIELD_HELP, POSITIVE_INT, RunConfig, check_numeric_options, checked_option
from tfattn.tasks.generation import add_decoding_arguments, decoding_options

__all__ = ["LanguageModelConfig", "LanguageModelTask", "score_text"]

LM_HELP = {
    **FIELD_HELP,
    "data": "plain text: .txt files (each one document, or split at --separator), or the --text-column of "
    ".jsonl, .csv or .tsv files (a document per row); several files: comma-separated",
    "validation_data": "validation text, same formats (default: the last --validation-fraction of --data)",
    "limit": "train on the first this many characters of --data (smoke tests)",
    "validation_limit": "score on the first this many characters of the validation text",
    "max_length": "does not apply to lm: the context is --block-size",
    "stream": "stream the training text from --data (.txt files, a folder or a glob; each file one document) "
    "instead of reading it into memory; needs --validation-data; tfattn's GPT only",
    "shuffle_buffer": "with --stream: blocks in the shuffle buffer (default 10000)",
    "separator": "split .txt files into documents at this text, e.g. '\\n\\n' for blank lines (default: a file "
    "is one document); the end-of-text token goes between documents",
    "time_budget": "stop training after this many seconds",
}
SAMPLE_TOKENS = 60  # the greedy sample of the validation report
GENERATE_LENGTH_HELP = "most tokens generated per prompt (default: half the model's context)"


# The from-scratch GPT's sizes (the fields left at None), the learning rates and weight decays, and
# (in LanguageModelConfig) its dropout: chosen on the validation part of Tiny Shakespeare, where tied
# embeddings, dropout 0.2, weight decay 0.1 and the higher rate keep the small model from
# overfitting the small text (BENCHMARKS.md "Language model").
GPT_DEFAULTS = {
    "vocab_size": 2000,
    "embed_dim": 128,
    "num_heads": 4,
    "ff_dim": 512,
    "num_blocks": 4,
    "positional": "learned",
    "tie_embeddings": True,
}
LEARNING_RATES = {"gpt": 2e-3, "backbone": 5e-5}
WEIGHT_DECAYS = {"gpt": 0.1, "backbone": 0.01}
# The default warmup: 5% of the steps, but at least the 128 steps the 32-epoch Tiny Shakespeare run
# warmed up for (and at most half the run). An 8-epoch run warming up for 5% (32 steps) reached
# the peak rate 2e-3 too early and stalled near the unigram loss for epochs.
WARMUP_FRACTION, WARMUP_STEPS = 0.05, 128
LM_HELP.update(
    {
        "backbone": "fine-tune a Hugging Face TF causal LM (GPT-2 family; hub name or folder) instead of training "
        "tfattn's GPT from scratch",
        "learning_rate": f"peak AdamW learning rate (default {LEARNING_RATES['gpt']:g} from scratch, "
        f"{LEARNING_RATES['backbone']:g} with --backbone)",
        "warmup_fraction": f"share of the steps warming the learning rate up (default {WARMUP_FRACTION:g}, but at "
        f"least {WARMUP_STEPS} steps and at most half the run)",
        "weight_decay": f"AdamW weight decay (default {WEIGHT_DECAYS['gpt']:g} from scratch, "
        f"{WEIGHT_DECAYS['backbone']:g} with --backbone)",
        **{
            name: f"from scratch: {what} (default {GPT_DEFAULTS[name]})"
            for name, what in (
                ("vocab_size", "SentencePiece pieces learned from the training text, 256 byte pieces among them"),
                ("embed_dim", "embedding size"),
                ("num_heads", "attention heads"),
                ("ff_dim", "feed-forward size"),
                ("num_blocks", "decoder blocks"),
                ("positional", "learned or sinusoidal positions"),
                ("tie_embeddings", "logits from the token embedding table"),
            )
        },
    }
)


@dataclass
class LanguageModelConfig(RunConfig):
    """A language-model run: the shared run fields (`RunConfig`) and the model's section; saved
    as the run's `config.json`. The GPT's fields left at None take `GPT_DEFAULTS`."""

    task: str = "lm"
    run_dir: str = "runs/lm"
    text_column: str = "text"  # of .jsonl / .csv / .tsv files
    separator: str | None = None
    block_size: int = 128  # tokens per training block: the model's context length from scratch
    backbone: str | None = None
    vocab_size: int | None = None
    embed_dim: int | None = None
    num_heads: int | None = None
    ff_dim: int | None = None
    num_blocks: int | None = None
    positional: str | None = None
    tie_embeddings: bool | None = None
    dropout: float = 0.2
    weight_decay: float | None = None
    batch_size: int = 32
    epochs: int = 10
    learning_rate: float | None = None
    warmup_fraction: float | None = None
    patience: int = 3

    @classmethod
    def field_help(cls):
        return LM_HELP

    @staticmethod
    def field_choices():
        return {"positional": POSITIONALS}

    def resolve(self):
        """A checked copy with the defaults filled in (the separator's escapes read: '\\n' is a
        newline); refuses the GPT's options with --backbone."""
        if not self.data:
            raise ValueError("--data is required: a .txt file (or .jsonl, .csv, .tsv with a text column)")
        check_numeric_options(self)
        if self.max_length:
            raise ValueError("--max-length does not apply to lm; use --block-size")
        if self.stream:
            for option, value in (("backbone", self.backbone), ("separator", self.separator), ("limit", self.limit)):
                if value:
                    raise ValueError(f"--{option} reads the text into memory; it does not go with --stream")
            if not self.validation_data:
                raise ValueError(
                    "--stream needs --validation-data: a text file read into memory (streams are not split)"
                )
        if self.backbone:
            for name in GPT_DEFAULTS:
                if getattr(self, name) is not None:
                    raise ValueError(f"--{name.replace('_', '-')} applies to the from-scratch GPT, not --backbone")
            defaults = {}
        else:
            defaults = {name: value for name, value in GPT_DEFAULTS.items() if getattr(self, name) is None}
        family = "backbone" if self.backbone else "gpt"
        if self.learning_rate is None:
            defaults["learning_rate"] = LEARNING_RATES[family]
        if self.weight_decay is None:
            defaults["weight_decay"] = WEIGHT_DECAYS[family]
        config = replace(self, **defaults)
        if not self.backbone:
            if config.positional not in POSITIONALS:
                raise ValueError(f"--positional must be one of {', '.join(POSITIONALS)}, got {config.positional!r}")
            for name, low in (("vocab_size", 300), ("embed_dim", 2), ("num_heads", 1)):
                value = getattr(config, name)
                if int(value) < low:
                    raise ValueError(f"--{name.replace('_', '-')} must be at least {low}, got {value!r}")
            if config.embed_dim % config.num_heads:
                raise ValueError(f"--embed-dim {config.embed_dim} must be a multiple of --num-heads {config.num_heads}")
        if int(self.block_size) < 2:
            raise ValueError(f"--block-size must be at least 2, got {self.block_size!r}")
        if not 0 <= float(self.dropout) < 1:
            raise ValueError(f"--dropout must be in [0, 1), got {self.dropout!r}")
        separator = self.separator
        if separator is not None:
            separator = separator.replace("\\n", "\n").replace("\\t", "\t")
            if not separator:
                raise ValueError("--separator must not be empty")
        return replace(config, separator=separator)


def _data_files(spec):
    return [part for part in str(spec).split(",") if part]


def _head(corpus: TextCorpus, characters: int) -> TextCorpus:
    """The first `characters` characters of `corpus`, whole documents then a cut one."""
    documents, left = [], int(characters)
    for document in corpus.documents:
        if left <= 0:
            break
        documents.append(document[:left])
        left -= len(document)
    return TextCorpus(documents, corpus.source)


def score_text(model, corpus: TextCorpus, block_size, batch_size=32):
    """Loss, perplexity and bits per character of `model` on `corpus` (its documents as the
    training stream holds them), predicted in blocks of `block_size` tokens."""
    from tfattn.models.causal_lm import stream_cross_entropy

    ids = model.encode_stream(corpus.documents)
    nats, tokens = stream_cross_entropy(model, ids, block_size, batch_size)
    characters = corpus.characters
    per_token = nats / max(tokens, 1)
    return {
        "nats_per_token": round(per_token, 5),
        "perplexity": round(math.exp(per_token), 4),
        "bits_per_char": round(nats / characters / math.log(2), 5),
        "nats_per_char": round(nats / characters, 5),
        "tokens": tokens,
        "characters": characters,
    }


def _scores_text(scores, what):
    return (
        f"{what}: loss {scores['nats_per_token']:.4f} nats/token, perplexity {scores['perplexity']:.2f}, "
        f"{scores['bits_per_char']:.4f} bits/char ({scores['nats_per_char']:.4f} nats/char) over "
        f"{scores['characters']:,} characters, {scores['tokens']:,} tokens"
    )


class LanguageModelTask(Task):
    """Plain text -> a GPT (`tfattn.models.causal_lm`), scored in bits per character; prompts
    continued greedily, by beam search or by sampling (`tfattn.decoding`)."""

    name = "lm"
    summary = "Causal language model (GPT) on plain text"
    description = (
        "Language modelling. --data: plain text (.txt: a file is one document unless --separator splits it; or the "
        "--text-column of .jsonl/.csv/.tsv rows), learned as one stream of SentencePiece pieces (a lossless "
        "vocabulary learned from the training text) with an end-of-text token between documents, in blocks of "
        "--block-size tokens. Validation: --validation-data, or the last --validation-fraction of the text. Reports "
        "loss, perplexity and bits per character per epoch. Generate with 'tfattn generate --run RUN PROMPT'."
    )
    config_class = LanguageModelConfig
    serve_command = "generate"
    explorable = True
    serve_help = "continue prompts with a language-model run (greedy, beam search or sampling)"

    @classmethod
    def add_arguments(cls, command, parser):
        if command == "serve":
            add_decoding_arguments(parser, "--max-new-tokens", GENERATE_LENGTH_HELP)
        elif command == "export":
            group = parser.add_argument_group("language-model runs: the decoding serving_default does")
            add_decoding_arguments(group, "--max-new-tokens", "most tokens generated per prompt, fixed in the export")
        elif command == "attention":
            from tfattn.tasks.encoder_task import add_page_arguments

            add_page_arguments(parser)
            group = parser.add_argument_group("language-model runs")
            group.add_argument(
                "--max-new-tokens",
                type=checked_option("max_new_tokens", POSITIVE_INT),
                help="tokens generated after each prompt (default 20)",
            )
        elif command == "evaluate":
            group = parser.add_argument_group("language-model runs")
            group.add_argument("--batch-size", type=int, default=32, help="blocks scored at once (default 32)")

    # --- training
    def _read(self, spec):
        c = self.config
        return read_text_corpus(_data_files(spec), c.text_column, c.separator)

    def prepare_training(self):
        """The training and validation text, read and checked before the run folder is touched."""
        c = self.config
        if c.backbone:
            self._check_block_size(c.backbone, c.block_size)
        validation = self._read(c.validation_data) if c.validation_data else None
        if c.stream:
            from tfattn.data.streaming import expand_data_files

            files = expand_data_files(c.data)
            print(f"checking {len(files)} text file(s) before streaming them ...", flush=True)
            train = check_streamed_text(files)
            return train, _head(validation, c.validation_limit) if c.validation_limit else validation
        corpus = self._read(c.data)
        if c.limit:
            corpus = _head(corpus, c.limit)
        if validation is not None:
            train = corpus
        else:
            train, validation = split_validation(corpus, c.validation_fraction)
        return train, _head(validation, c.validation_limit) if c.validation_limit else validation

    def data_sources(self):
        c = self.config
        if c.stream:
            from tfattn.data.streaming import expand_data_files

            train_files = [str(path) for path in expand_data_files(c.data)]
        else:
            train_files = _data_files(c.data)
        return train_files + (_data_files(c.validation_data) if c.validation_data else [])

    def fit(self, run_dir, prepared, strategy, callbacks=()):
        """Learn the vocabulary, build the GPT in `strategy`'s scope, train it on the packed
        blocks, save it, and score the saved model on the validation text."""
        from tfattn.models.causal_lm import (
            GPT,
            VOCABULARY_LINES,
            LanguageModelPreprocessor,
            build_gpt,
            generate,
            packed_blocks,
            save_language_model,
        )
        from tfattn.runs.folders import finish_training, mark_trained, write_report
        from tfattn.training.losses import MaskedCrossEntropy
        from tfattn.training.metrics import LanguageModelScores, TokenCrossEntropy
        from tfattn.training.phases import compile_and_fit

        c = self.config
        train_text, validation_text = prepared
        if c.backbone:
            with strategy.scope():
                language_model = self._pretrained(c.backbone)
            trained = language_model.training_model()
            encode = language_model.encode_stream
        else:
            # Deterministic: a resumed run learns the same vocabulary again.
            vocabulary_text = (
                ["".join(first_lines(train_text.files, VOCABULARY_LINES))]
                if isinstance(train_text, StreamedText)
                else train_text.documents
            )
            preprocessor = LanguageModelPreprocessor.learn(vocabulary_text, c.vocab_size, c.block_size)
            with strategy.scope():
                trained = build_gpt(
                    GPT(
                        preprocessor,
                        embed_dim=c.embed_dim,
                        num_heads=c.num_heads,
                        ff_dim=c.ff_dim,
                        num_blocks=c.num_blocks,
                        dropout=c.dropout,
                        positional=c.positional,
                        tie_embeddings=c.tie_embeddings,
                    )
                )
            language_model, encode = trained, preprocessor.encode_stream
        validation_ids = encode(validation_text.documents)
        if isinstance(train_text, StreamedText):
            order, blocks, described = self._streamed_order(train_text, preprocessor, vocabulary_text[0])
        else:
            order, blocks, described = self._in_memory_order(encode(train_text.documents))
        print(
            f"lm: {train_text.characters:,} training characters ({described}) / "
            f"{validation_text.characters:,} validation characters ({len(validation_ids):,} tokens)"
        )
        validation_inputs, validation_labels = packed_blocks(validation_ids, c.block_size, keep_tail=True)
        validation_data = tf.data.Dataset.from_tensor_slices((validation_inputs, validation_labels)).batch(c.batch_size)
        tokens_per_character = (len(validation_ids) - 1) / validation_text.characters
        model = trained
        print(f"{c.backbone or 'GPT'}: {model.count_params():,} weights")
        if c.warmup_fraction is None:
            steps = c.epochs * order.batches_per_epoch
            c = replace(c, warmup_fraction=min(0.5, max(WARMUP_FRACTION, WARMUP_STEPS / steps)))
        compile_and_fit(
            model,
            order,
            run_dir,
            c,
            loss=MaskedCrossEntropy(c.label_smoothing, first_label=0),  # a pretrained vocabulary's id 0 is real
            make_metrics=lambda: [TokenCrossEntropy()],
            monitor=self.monitor,
            examples_per_epoch=blocks,
            strategy=strategy,
            validation_data=validation_data,
            validation_callback=LanguageModelScores(tokens_per_character),
            callbacks=callbacks,
            jit_compile=c.jit_compile,
        )
        mark_trained(run_dir)
        if c.backbone:
            language_model.save(run_dir / MODEL_DIR)
        else:
            save_language_model(model, run_dir / MODEL_DIR)
        saved = self.load_model(run_dir)  # scored as evaluate and generate will load it
        scores = score_text(saved, validation_text, c.block_size)
        (sample,) = generate(saved, [""], max_new_tokens=min(SAMPLE_TOKENS, saved.context_length))
        summary = _scores_text(scores, "validation")
        report = f"{summary}\n\ngreedy sample from an empty prompt:\n{sample}"
        write_report(run_dir, "validation", {"data": validation_text.source, **scores}, report)
        print(summary)
        finish_training(run_dir, summary)
        return scores

    def _in_memory_order(self, train_ids):
        """`(EpochOrder, blocks, description)` of the training stream's blocks.

        Every epoch cuts the stream at a new random offset (seeded), as nanoGPT draws random
        windows: a token is seen at other positions and after other contexts from epoch to epoch,
        instead of in the same block every time, which keeps a small model on a small text from
        learning its blocks by heart. The blocks are then shuffled; each epoch has as many.
        """
        from tfattn.training.phases import EpochOrder

        c = self.config
        size, predicted = c.block_size, len(train_ids) - 1
        full = predicted // size
        if not full:
            raise DataError(
                f"{c.data}: its {len(train_ids):,} tokens make no training block of --block-size {c.block_size}; "
                "lower --block-size or give more text"
            )
        # One block fewer than fit at offset 0, so every offset up to size - 1 gives as many.
        blocks = full - 1 if full > 1 else full
        offsets = min(size - 1, predicted - blocks * size) + 1
        ids, window = np.asarray(train_ids, np.int32), np.arange(size + 1)
        # Epochs are numbered as their iterators are read; a resumed run replays the iterators of
        # the epochs done unread (EpochOrder), counting them through `on_replay`, so it goes on
        # with the offsets the uninterrupted run drew.
        iterators = itertools.count()

        def epoch_batches():
            draw = np.random.default_rng([c.seed, next(iterators)])
            starts = int(draw.integers(offsets)) + size * draw.permutation(blocks)
            for first in range(0, blocks, c.batch_size):
                rows = ids[starts[first : first + c.batch_size, None] + window]
                yield rows[:, :-1], rows[:, 1:]

        # (Drawn in Python, where `on_replay` can count the epochs a resumed run skips; a batch is
        # one numpy fancy index.)
        spec = tf.TensorSpec([None, size], tf.int32)
        train_data = tf.data.Dataset.from_generator(epoch_batches, output_signature=(spec, spec))
        described = f"{len(train_ids):,} tokens, {blocks:,} blocks of {size} at a new offset each epoch"
        order = EpochOrder(train_data, math.ceil(blocks / c.batch_size), on_replay=lambda: next(iterators))
        return order, blocks, described

    def _streamed_order(self, text, preprocessor, sample):
        """`(StreamOrder, blocks, description)` of streamed .txt files: an epoch is one pass over
        them, its length estimated from the tokens per character of the vocabulary `sample`."""
        from tfattn.models.causal_lm import END_OF_TEXT
        from tfattn.training.phases import StreamOrder

        c = self.config
        tokens_per_character = len(preprocessor.tokenize([sample])[0]) / max(len(sample), 1)
        blocks = max(1, round(text.characters * tokens_per_character / (c.block_size + 1)))

        def make_dataset(input_context):
            stream = stream_token_blocks(
                text.files,
                preprocessor.vocabulary.tokenize,
                END_OF_TEXT,
                c.block_size,
                worker_index=input_context.input_pipeline_id,
                num_workers=input_context.num_input_pipelines,
            )
            batch_size = input_context.get_per_replica_batch_size(c.batch_size)
            shuffled = stream.shuffle(c.shuffle_buffer or 1, seed=c.seed)
            return shuffled.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)

        described = (
            f"streamed from {len(text.files)} file(s); a pass is about {blocks:,} blocks of {c.block_size}, "
            "estimated from the vocabulary's sample"
        )
        return StreamOrder(make_dataset, max(1, blocks // c.batch_size)), blocks, described

    @staticmethod
    def _check_block_size(backbone, block_size):
        """Refuse a block longer than the pretrained model's positions (its config, read alone)."""
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(str(backbone))
        except (OSError, ValueError) as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ValueError(f"--backbone {backbone}: cannot read its config ({reason})") from None
        names = ("n_positions", "max_position_embeddings")
        positions = next((getattr(config, name) for name in names if getattr(config, name, None)), None)
        if positions and block_size > positions:
            raise ValueError(
                f"--block-size {block_size} is above the {positions} positions of --backbone {backbone}; "
                f"use --block-size {positions} or less"
            )

    @staticmethod
    def _pretrained(name_or_folder):
        from tfattn.models.hf_causal_lm import HuggingFaceCausalLM

        return HuggingFaceCausalLM.from_pretrained(name_or_folder)

    # --- a finished run
    def load_model(self, run_dir):
        from tfattn.models.causal_lm import load_language_model

        self.run_dir = Path(run_dir)
        if self.config.backbone:  # what `save_pretrained` wrote: read by transformers' own config classes
            return self._pretrained(self.run_dir / MODEL_DIR)
        return load_language_model(self.run_dir / MODEL_DIR)

    def serve(self, model, texts, args):
        """Each prompt followed by its continuation."""
        options = decoding_options(args, length="max_new_tokens")
        continuations = model.generate(texts, max_new_tokens=options.pop("max_length"), **options)
        return [prompt + continuation for prompt, continuation in zip(texts, continuations)]

    def evaluate(self, model, args):
        """Loss, perplexity and bits per character of `args.data` (a whole text file; default:
        the run's validation text)."""
        c = self.config
        corpus = self._read(args.data) if args.data else self.prepare_training()[1]
        scores = score_text(model, corpus, c.block_size, batch_size=args.batch_size)
        text = _scores_text(scores, str(args.data or "validation"))

        def write(run_dir, prefix):
            from tfattn.runs.folders import write_report

            return write_report(run_dir, prefix, {"data": corpus.source, "block_size": c.block_size, **scores}, text)

        return text, write

    def export(self, model, args):
        from tfattn.decoding import DecodingOptions
        from tfattn.serving.language_models import export_language_model

        options = decoding_options(args, length="max_new_tokens")
        new_tokens = options.pop("max_length")
        path = export_language_model(
            model,
            args.out,
            DecodingOptions(**options),
            max_new_tokens=new_tokens,
            overwrite=args.overwrite,
            protected=(self.run_dir,),
        )
        if self.config.backbone:
            return path, "input_ids, attention_mask -> token_ids, scores, prompt_ids (and signature sample)"
        return path, "prompts -> continuations, token_ids, scores, prompt_ids (and signature sample)"

    def explain(self, model, text, name, text_pair=None, max_tokens=64):
        """The explorer's view of `text` continued greedily by 20 tokens."""
        from tfattn.explorer import explain_generation

        if text_pair is not None:
            raise ValueError("text_pair: a language model continues one prompt, not a sentence pair")
        return explain_generation(model, text, name=name, max_tokens=max_tokens)

    def attention(self, model, texts, args):
        """For each prompt, the greedy continuation, then the explorer page (`--html`) and/or two
        PNGs: the causal self-attention of prompt + continuation (per layer and head), and each
        generated token's attention over the prompt (per layer, mean of heads)."""
        from tfattn.explorer import explain_generation, explorer_page

        png = args.out or (None if args.html else "attention.png")  # the page alone when only --html is given
        written = []
        for index, text in enumerate(texts):
            explanation = explain_generation(
                model,
                text,
                name=self.run_dir.name,
                max_new_tokens=args.max_new_tokens or 20,
                max_tokens=args.max_tokens,
                layers=args.layers,
            )
            if args.html:
                written.append(explorer_page([explanation]).save(numbered_path(args.html, index, len(texts))))
            if png:
                written += _attention_pngs(explanation, Path(numbered_path(png, index, len(texts))), text)
            print(explanation.text)
        return written


def _attention_pngs(explanation, path, prompt):
    """The PNGs of a generation's explanation: the causal map at `path`, and beside it
    (`*_prompt.png`) each generated token's attention over the prompt: the row of the token fed
    just before it."""
    from tfattn.plotting import plot_alignment, plot_attention

    attention, tokens = explanation.views["raw"], explanation.tokens
    prompt_length = explanation.prediction["prompt_tokens"]
    title = f"{prompt!r} -> {explanation.text[len(prompt) :]!r}"
    layers = tuple(range(len(explanation.layers)))
    written = [plot_attention(attention, tokens, path, layers=layers, title=title, max_tokens=len(tokens))]
    if 0 < prompt_length < len(tokens):
        over_prompt = attention[:, :, prompt_length - 1 : len(tokens) - 1, :prompt_length]
        prompt_path = path.with_name(f"{path.stem}_prompt{path.suffix}")
        written.append(
            plot_alignment(over_prompt, tokens[:prompt_length], tokens[prompt_length:], prompt_path, title=title)
        )
    return written
