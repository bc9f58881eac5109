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

import numpy as np
import tensorflow as tf

from tfattn.data.examples import DataError
from tfattn.data.text import TextCorpus, read_text_corpus, split_validation
from tfattn.runs.folders import MODEL_DIR
from tfattn.tasks.base import Task, numbered_path
from tfattn.tasks.config import FIELD_HELP, RunConfig, check_numeric_options
from tfattn.tasks.generation import add_decoding_arguments, decoding_options

__all__ = ["LanguageModelConfig", "LanguageModelTask", "score_text"]

LM_HELP = {
    **FIELD_HELP,
    "data": "plain text: .txt files (each one document, or split at --separator), or the --text-column of "
    ".jsonl, .csv or .tsv files (a document per row); several files: comma-separated",
    "validation_data": "validation text, same formats (default: the last --validation-fraction of --data)",
    "limit": "train on the first this many characters of --data (smoke tests)",
    "separator": "split .txt files into documents at this text, e.g. '\\n\\n' for blank lines (default: a file "
    "is one document); the end-of-text token goes between documents",
    "time_budget": "stop training after this many seconds",
}
POSITIONALS = ("learned", "sinusoidal")
SAMPLE_TOKENS = 60  # the greedy sample of the validation report
GENERATE_LENGTH_HELP = "most tokens generated per prompt (default: half the model's context)"


@dataclass
class LanguageModelConfig(RunConfig):
    """A language-model run: the shared run fields (`RunConfig`) and the GPT's section; saved as
    the run's `config.json`."""

    task: str = "lm"
    run_dir: str = "runs/lm"
    text_column: str = "text"  # of .jsonl / .csv / .tsv files
    separator: str | None = None
    vocab_size: int = 2000  # SentencePiece pieces, 256 byte pieces among them
    block_size: int = 128  # tokens per training block: the model's context length
    embed_dim: int = 128
    num_heads: int = 4
    ff_dim: int = 512
    num_blocks: int = 4
    positional: str = "learned"
    tie_embeddings: bool = False
    dropout: float = 0.1
    batch_size: int = 32
    epochs: int = 10
    learning_rate: float = 1e-3
    warmup_fraction: float = 0.05
    patience: int = 3

    @classmethod
    def field_help(cls):
        return LM_HELP

    @staticmethod
    def field_choices():
        return {"positional": POSITIONALS}

    def resolve(self):
        """A checked copy (the separator's escapes read: '\\n' is a newline)."""
        if not self.data:
            raise ValueError("--data is required: a .txt file (or .jsonl, .csv, .tsv with a text column)")
        check_numeric_options(self)
        for option, value in (("max_length", self.max_length), ("stream", self.stream)):
            if value:
                other = "--block-size" if option == "max_length" else "files read into memory"
                raise ValueError(f"--{option.replace('_', '-')} does not apply to lm; use {other}")
        if self.positional not in POSITIONALS:
            raise ValueError(f"--positional must be one of {', '.join(POSITIONALS)}, got {self.positional!r}")
        for name, low in (("vocab_size", 300), ("block_size", 2), ("embed_dim", 2), ("num_heads", 1)):
            if int(getattr(self, name)) < low:
                raise ValueError(f"--{name.replace('_', '-')} must be at least {low}, got {getattr(self, name)!r}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"--embed-dim {self.embed_dim} must be a multiple of --num-heads {self.num_heads}")
        if not 0 <= float(self.dropout) < 1:
            raise ValueError(f"--dropout must be in [0, 1), got {self.dropout!r}")
        separator = self.separator
        if separator is not None:
            separator = separator.replace("\\n", "\n").replace("\\t", "\t")
            if not separator:
                raise ValueError("--separator must not be empty")
        return replace(self, separator=separator)


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


def score_text(model, corpus: TextCorpus, batch_size=32):
    """Loss, perplexity and bits per character of `model` on `corpus` (its documents as the
    training stream holds them), predicted in blocks of the model's context."""
    from tfattn.models.causal_lm import stream_cross_entropy

    ids = model.preprocessor.encode_stream(corpus.documents)
    nats, tokens = stream_cross_entropy(model, ids, batch_size)
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
    serve_help = "continue prompts with a language-model run (greedy, beam search or sampling)"

    @classmethod
    def add_arguments(cls, command, parser):
        if command == "serve":
            add_decoding_arguments(parser, "--max-new-tokens", GENERATE_LENGTH_HELP)
        elif command == "export":
            group = parser.add_argument_group("language-model runs: the decoding serving_default does")
            add_decoding_arguments(group, "--max-new-tokens", "most tokens generated per prompt, fixed in the export")
        elif command == "attention":
            group = parser.add_argument_group("language-model runs")
            group.add_argument("--max-new-tokens", type=int, help="tokens generated after each prompt (default 20)")
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
        corpus = self._read(c.data)
        if c.limit:
            corpus = _head(corpus, c.limit)
        if c.validation_data:
            return corpus, self._read(c.validation_data)
        return split_validation(corpus, c.validation_fraction)

    def data_sources(self):
        c = self.config
        return _data_files(c.data) + (_data_files(c.validation_data) if c.validation_data else [])

    def fit(self, run_dir, prepared, strategy, callbacks=()):
        """Learn the vocabulary, build the GPT in `strategy`'s scope, train it on the packed
        blocks, save it, and score the saved model on the validation text."""
        from tfattn.models.causal_lm import (
            GPT,
            LanguageModelPreprocessor,
            build_sample,
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
        # Deterministic: a resumed run learns the same vocabulary again.
        preprocessor = LanguageModelPreprocessor.learn(train_text.documents, c.vocab_size, context_length=c.block_size)
        train_ids = preprocessor.encode_stream(train_text.documents)
        validation_ids = preprocessor.encode_stream(validation_text.documents)
        inputs, labels = packed_blocks(train_ids, c.block_size)
        if not len(inputs):
            raise DataError(
                f"{c.data}: its {len(train_ids):,} tokens make no training block of --block-size {c.block_size}; "
                "lower --block-size or give more text"
            )
        print(
            f"lm: {train_text.characters:,} training characters ({len(train_ids):,} tokens, {len(inputs):,} blocks of "
            f"{c.block_size}) / {validation_text.characters:,} validation characters ({len(validation_ids):,} tokens); "
            f"vocabulary {preprocessor.vocab_size}"
        )
        train_data = (
            tf.data.Dataset.from_tensor_slices((inputs, labels))
            .shuffle(len(inputs), seed=c.seed, reshuffle_each_iteration=True)
            .batch(c.batch_size)
        )
        validation_inputs, validation_labels = packed_blocks(validation_ids, c.block_size, keep_tail=True)
        validation_data = tf.data.Dataset.from_tensor_slices((validation_inputs, validation_labels)).batch(c.batch_size)
        tokens_per_character = (len(validation_ids) - 1) / validation_text.characters
        with strategy.scope():
            model = build_sample(
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
        print(f"GPT: {model.count_params():,} weights")
        compile_and_fit(
            model,
            EpochOrder(train_data, math.ceil(len(inputs) / c.batch_size)),
            run_dir,
            c,
            loss=MaskedCrossEntropy(c.label_smoothing),
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
        save_language_model(model, run_dir / MODEL_DIR)
        saved = self.load_model(run_dir)  # scored as evaluate and generate will load it
        scores = score_text(saved, validation_text)
        (sample,) = generate(saved, [""], max_new_tokens=min(SAMPLE_TOKENS, saved.context_length))
        summary = _scores_text(scores, "validation")
        report = f"{summary}\n\ngreedy sample from an empty prompt:\n{sample}"
        write_report(run_dir, "validation", {"data": validation_text.source, **scores}, report)
        print(summary)
        finish_training(run_dir, summary)
        return scores

    # --- a finished run
    def load_model(self, run_dir):
        from tfattn.models.causal_lm import load_language_model

        self.run_dir = Path(run_dir)
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
        scores = score_text(model, corpus, batch_size=args.batch_size)
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
        return path, "continuations, token_ids, scores, prompt_ids (and signature sample)"

    def attention(self, model, texts, args):
        """For each prompt, the greedy continuation, then two PNGs: the causal self-attention
        of prompt + continuation (per layer and head), and each generated token's attention
        over the prompt (per layer, mean of heads)."""
        from tfattn.decoding import DecodingOptions, decode
        from tfattn.models.causal_lm import left_pad
        from tfattn.plotting import plot_alignment, plot_attention

        out = args.out or "attention.png"
        new_tokens = args.max_new_tokens or 20
        written = []
        for index, text in enumerate(texts):
            prompt_ids = model.tokenize_prompts([text])
            options = DecodingOptions(max_length=new_tokens, return_attention=True)
            decoded = decode(model, left_pad(prompt_ids, model.pad_id), options)
            generated = decoded.token_ids[0].numpy()
            ended = np.flatnonzero(generated == model.eos_id)
            generated = generated[: ended[0] + 1] if ended.size else generated
            steps = len(generated)
            full = np.array(prompt_ids[0] + generated.tolist())
            _, attention = model.forward(full[None], training=False)
            tokens = model.preprocessor.pieces(full)
            continuation = model.detokenize(generated[None])[0]
            title = f"{text!r} -> {continuation!r}"
            path = Path(numbered_path(out, index, len(texts)))
            written.append(
                plot_attention(attention[0].numpy(), tokens, path, layers=tuple(range(model.num_blocks)), title=title)
            )
            over_prompt = decoded.cross_attention[0, :steps].numpy().transpose(1, 2, 0, 3)  # [layers, heads, steps, P]
            prompt_tokens = model.preprocessor.pieces(prompt_ids[0])
            generated_tokens = model.preprocessor.pieces(generated)
            prompt_path = path.with_name(f"{path.stem}_prompt{path.suffix}")
            written.append(plot_alignment(over_prompt, prompt_tokens, generated_tokens, prompt_path, title=title))
            print(text + continuation)
        return written
