"""The decoding options of every command that generates text (`tfattn translate`, `tfattn generate`,
and `evaluate` and `export` of their runs): one table of flags, read into
`tfattn.decoding.DecodingOptions` keywords."""

import argparse

from tfattn.tasks.config import FINITE_FLOAT, NON_NEGATIVE_INT, POSITIVE_FLOAT, POSITIVE_INT, checked_option

__all__ = ["DECODING_FLAGS", "add_decoding_arguments", "decoding_options"]

# Greedy by default, --beam N, or sampling; the length flag is each task's own (add_decoding_arguments).
DECODING_FLAGS = {
    "--beam": {"type": checked_option("beam", POSITIVE_INT), "default": 1, "help": "beam width (default 1: greedy)"},
    "--length-penalty": {
        "type": checked_option("length_penalty", FINITE_FLOAT),
        "default": 1.0,
        "help": "beam search: a hypothesis scores log p / length ** this (default 1.0; above 0 favours longer ones)",
    },
    "--early-stopping": {
        "action": argparse.BooleanOptionalAction,
        "default": True,
        "help": "beam search: stop once --beam hypotheses have ended (default on)",
    },
    "--sample": {"action": "store_true", "help": "draw tokens at random (implied by the next three)"},
    "--temperature": {"type": float, "help": "sampling: divide the logits by this, above 0 (default 1.0)"},
    "--top-k": {"type": checked_option("top_k", POSITIVE_INT), "help": "sampling: only the k most likely tokens"},
    "--top-p": {
        "type": float,
        "help": "sampling: only the most likely tokens whose probability reaches p, in (0, 1] (nucleus)",
    },
    "--seed": {"type": int, "default": 0, "help": "sampling seed (default 0: the same draws every run)"},
    "--repetition-penalty": {
        "type": checked_option("repetition_penalty", POSITIVE_FLOAT),
        "default": 1.0,
        "help": "above 1 discourages tokens already in the prompt or output (default 1.0: off)",
    },
    "--no-repeat-ngram-size": {
        "type": checked_option("no_repeat_ngram_size", NON_NEGATIVE_INT),
        "default": 0,
        "help": "no n-gram of this many tokens occurs twice in the prompt and output (default 0: off)",
    },
}


def add_decoding_arguments(parser, length_flag="--max-length", length_help="most tokens generated per text"):
    """Add `DECODING_FLAGS` and the task's length flag to `parser` (or an argument group)."""
    for flag, spec in DECODING_FLAGS.items():
        parser.add_argument(flag, **spec)
    parser.add_argument(
        length_flag, type=checked_option(length_flag[2:].replace("-", "_"), POSITIVE_INT), help=length_help
    )


def decoding_options(args, length="max_length"):
    """`DecodingOptions` keywords from `add_decoding_arguments`' flags, checked; `max_length` is
    read from the task's length flag (`length`: its destination)."""
    from tfattn.decoding import DecodingOptions

    if args.temperature is not None and args.temperature <= 0:
        raise ValueError(
            f"--temperature must be above 0, got {args.temperature:g}; for the most likely token at every step "
            "(what temperature 0 would mean), leave the sampling options out: decoding is greedy by default"
        )
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise ValueError(f"--top-p must be in (0, 1], got {args.top_p:g} (1 keeps every token; 0 would keep none)")
    # With --beam, sampling draws the beams' candidates (sampling inside beams).
    sample = args.sample or any(value is not None for value in (args.temperature, args.top_k, args.top_p))
    options = {
        "beam_width": args.beam,
        "length_penalty": args.length_penalty,
        "early_stopping": args.early_stopping,
        "max_length": getattr(args, length),
        "sample": sample,
        "seed": args.seed,
        "repetition_penalty": args.repetition_penalty,
        "no_repeat_ngram_size": args.no_repeat_ngram_size,
    }
    for name in ("temperature", "top_k", "top_p"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    DecodingOptions(**options)  # checks the values, naming the option
    return options
