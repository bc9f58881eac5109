"""The language-model task: train a GPT on plain text (`tfattn train lm`), continue prompts with it
(`tfattn generate`), and score any text file in loss, perplexity and bits per character.

The text (`.txt` files, or a text column of `.jsonl`/`.csv`/`.tsv`) becomes one stream of
SentencePiece ids with the end-of-text token before every document and after the last, cut into
blocks of `--block-size` tokens (the model's context). Every epoch logs the validation loss,
`val_nats_per_token`, `val_perplexity` and `val_bits_per_char`; the run folder is every tfattn
run's (`config.json`, `model/`, `history.csv`, `validation_scores.json`, `validation_report.txt`),
resumed after an interruption as every run is.
"""

import math
from dataclasses import dataclass, replace
from pathlib import Path

import tensorflow as tf

from tfattn.data.examples import DataError
from tfattn.data.text import TextCorpus, read_text_corpus, split_validation
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
    "stream": "does not apply to lm yet: the text is read into memory",
    "shuffle_buffer": "does not apply to lm (streaming only)",
    "separator": "split .txt files into documents at this text, e.g. '\\n\\n' for blank lines (default: a file "
    "is one document); the end-of-text token goes between documents",
    "time_budget": "stop training after this many seconds",
}
POSITIONALS = ("learned", "sinusoidal")
SAMPLE_TOKENS = 60  # the greedy sample of the validation report
GENERATE_LENGTH_HELP = "most tokens generated per prompt (default: half the model's context)"


# The from-scratch GPT's sizes (the fields left at None), and the learning rates. Chosen on the
# validation part of Tiny Shakespeare (BENCHMARKS.md "Language model").
GPT_DEFAULTS = {
    "vocab_size": 2000,
    "embed_dim": 128,
    "num_heads": 4,
    "ff_dim": 512,
    "num_blocks": 4,
    "positional": "learned",
    "tie_embeddings": False,
}
LEARNING_RATES = {"gpt": 1e-3, "backbone": 5e-5}
LM_HELP.update(
    {
        "backbone": "fine-tune a Hugging Face TF causal LM (GPT-2 family; hub name or folder) instead of training "
        "tfattn's GPT from scratch",
        "learning_rate": f"peak AdamW learning rate (default {LEARNING_RATES['gpt']:g} from scratch, "
        f"{LEARNING_RATES['backbone']:g} with --backbone)",
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
    dropout: float = 0.1
    batch_size: int = 32
    epochs: int = 10
    learning_rate: float | None = None
    warmup_fraction: float = 0.05
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
        for option, value in (("max_length", self.max_length), ("stream", self.stream)):
            if value:
                other = "--block-size" if option == "max_length" else "files read into memory"
                raise ValueError(f"--{option.replace('_', '-')} does not apply to lm; use {other}")
        if self.backbone:
            for name in GPT_DEFAULTS:
                if getattr(self, name) is not None:
                    raise ValueError(f"--{name.replace('_', '-')} applies to the from-scratch GPT, not --backbone")
            defaults = {}
        else:
            defaults = {name: value for name, value in GPT_DEFAULTS.items() if getattr(self, name) is None}
        rate = LEARNING_RATES["backbone" if self.backbone else "gpt"] if self.learning_rate is None else None
        config = replace(self, **defaults, **({"learning_rate": rate} if rate else {}))
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
        corpus = self._read(c.data)
        if c.limit:
            corpus = _head(corpus, c.limit)
        if c.validation_data:
            train, validation = corpus, self._read(c.validation_data)
        else:
            train, validation = split_validation(corpus, c.validation_fraction)
        return train, _head(validation, c.validation_limit) if c.validation_limit else validation

    def data_sources(self):
        c = self.config
        return _data_files(c.data) + (_data_files(c.validation_data) if c.validation_data else [])

    def fit(self, run_dir, prepared, strategy, callbacks=()):
        """Learn the vocabulary, build the GPT in `strategy`'s scope, train it on the packed
        blocks, save it, and score the saved model on the validation text."""
        from tfattn.models.causal_lm import (
            GPT,
            LanguageModelPreprocessor,
            build_gpt,
            generate,
            packed_blocks,
            save_language_model,
        )
        from tfattn.runs.folders import finish_training, mark_trained, write_report
        from tfattn.training.losses import MaskedCrossEntropy
        from tfattn.training.metrics import LanguageModelScores, TokenCrossEntropy
        from tfattn.training.phases import EpochOrder, compile_and_fit

        c = self.config
        train_text, validation_text = prepared
        if c.backbone:
            with strategy.scope():
                language_model = self._pretrained(c.backbone)
            trained = language_model.training_model()
            encode = language_model.encode_stream
        else:
            # Deterministic: a resumed run learns the same vocabulary again.
            preprocessor = LanguageModelPreprocessor.learn(train_text.documents, c.vocab_size, c.block_size)
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
        train_ids, validation_ids = encode(train_text.documents), encode(validation_text.documents)
        inputs, labels = packed_blocks(train_ids, c.block_size)
        if not len(inputs):
            raise DataError(
                f"{c.data}: its {len(train_ids):,} tokens make no training block of --block-size {c.block_size}; "
                "lower --block-size or give more text"
            )
        print(
            f"lm: {train_text.characters:,} training characters ({len(train_ids):,} tokens, {len(inputs):,} blocks of "
            f"{c.block_size}) / {validation_text.characters:,} validation characters ({len(validation_ids):,} tokens)"
        )
        train_data = (
            tf.data.Dataset.from_tensor_slices((inputs, labels))
            .shuffle(len(inputs), seed=c.seed, reshuffle_each_iteration=True)
            .batch(c.batch_size)
        )
        validation_inputs, validation_labels = packed_blocks(validation_ids, c.block_size, keep_tail=True)
        validation_data = tf.data.Dataset.from_tensor_slices((validation_inputs, validation_labels)).batch(c.batch_size)
        tokens_per_character = (len(validation_ids) - 1) / validation_text.characters
        model = trained
        print(f"{c.backbone or 'GPT'}: {model.count_params():,} weights")
        compile_and_fit(
            model,
            EpochOrder(train_data, math.ceil(len(inputs) / c.batch_size)),
            run_dir,
            c,
            loss=MaskedCrossEntropy(c.label_smoothing, first_label=0),  # a pretrained vocabulary's id 0 is real
            make_metrics=lambda: [TokenCrossEntropy()],
            monitor=self.monitor,
            examples_per_epoch=len(inputs),
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
