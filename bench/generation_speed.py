"""Generation speed, side by side in one process: tokens per second of `tfattn.decoding` (greedy,
beam search, nucleus sampling; with and without the key/value cache) against Hugging Face's own
`TFGPT2LMHeadModel.generate`, eager and XLA-compiled, on the same random GPT-2 weights.

tfattn decodes the Hugging Face model through `tfattn.models.hf_causal_lm.HuggingFaceCausalLM`,
so both sides run the very same network and only the generation loops differ: tfattn's graph loop
(from its cache, or without one) and the same loop XLA-compiled from a fixed-size cache
(`DecodingOptions(jit_compile=True)`). Every run makes
exactly `--new-tokens` tokens (the end token is held back until then: tfattn's `min_length`,
Hugging Face's `min_new_tokens`), from prompts of `--prompt-tokens` random ids. Each figure is the
median of `--repeats` timed calls after one untimed call (tracing, XLA compilation).

    python bench/generation_speed.py --json /tmp/generation_speed.json
    python bench/generation_speed.py --layers 2 --width 64 --new-tokens 8 --repeats 1   # a smoke run
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import cpu_model  # noqa: E402

METHODS = {
    "greedy": {},
    "beam 4": {"beam_width": 4},
    "top-p 0.9": {"sample": True, "top_p": 0.9, "seed": 1},
}


def random_gpt2(layers, width, heads, vocab, positions):
    import tf_keras as keras
    import transformers

    config = transformers.GPT2Config(
        n_layer=layers,
        n_embd=width,
        n_head=heads,
        vocab_size=vocab,
        n_positions=positions,
        bos_token_id=0,
        eos_token_id=0,
    )
    keras.utils.set_random_seed(0)
    model = transformers.TFGPT2LMHeadModel(config)
    model(model.dummy_inputs)
    return model


def timed(call, repeats):
    """Median seconds of `repeats` calls after one untimed call."""
    call()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def measure(model, wrapped, xla_generate, prompts, new, options, repeats):
    """`{generator: median seconds}` of one batch of prompts and one decoding method."""
    import tensorflow as tf

    from tfattn.decoding import DecodingOptions, decode

    hf_options = {"max_new_tokens": new, "min_new_tokens": new, "pad_token_id": 0}
    if options.get("beam_width"):
        hf_options.update(num_beams=options["beam_width"], do_sample=False)
    elif options.get("sample"):
        hf_options.update(do_sample=True, top_p=options["top_p"], top_k=0)
    else:
        hf_options.update(do_sample=False)
    ids, mask = tf.constant(prompts), tf.ones_like(tf.constant(prompts))
    runs = {}
    variants = {"tfattn, XLA": {"jit_compile": True}, "tfattn": {}, "tfattn (no cache)": {"use_cache": False}}
    for name, variant in variants.items():
        decoding = DecodingOptions(max_length=new, min_length=new, **variant, **options)
        runs[name] = timed(lambda decoding=decoding: decode(wrapped, prompts, decoding).token_ids.numpy(), repeats)
    runs["HF generate, eager"] = timed(lambda: model.generate(ids, attention_mask=mask, **hf_options), repeats)
    runs["HF generate, XLA"] = timed(lambda: xla_generate(ids, attention_mask=mask, **hf_options), repeats)
    return runs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)

    import numpy as np
    import tensorflow as tf

    from tfattn.models.hf_causal_lm import HuggingFaceCausalLM

    model = random_gpt2(args.layers, args.width, args.heads, args.vocab, args.prompt_tokens + args.new_tokens + 8)
    wrapped = HuggingFaceCausalLM(model, max_output_length=args.new_tokens)
    xla_generate = tf.function(model.generate, jit_compile=True)
    new = args.new_tokens
    rows = []
    print(f"GPT-2 {args.layers} layers x {args.width}, vocab {args.vocab}; {new} new tokens after {args.prompt_tokens}")
    for batch in args.batches:
        prompts = (
            np.random.default_rng(batch).integers(1, args.vocab, size=(batch, args.prompt_tokens)).astype(np.int32)
        )
        for method, options in METHODS.items():
            for name, seconds in measure(model, wrapped, xla_generate, prompts, new, options, args.repeats).items():
                row = {"batch": batch, "method": method, "generator": name, "seconds": round(seconds, 4)}
                row["tokens_per_second"] = round(batch * new / seconds, 1)
                rows.append(row)
                print(f"batch {batch:>2}  {method:<10} {name:<22} {row['tokens_per_second']:>9.1f} tokens/s")
    if args.json:
        report = {
            "config": vars(args),
            "cpu": cpu_model(),
            "tensorflow": tf.__version__,
            "rows": rows,
        }
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
