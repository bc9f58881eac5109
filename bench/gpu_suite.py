"""One prepared GPU benchmark: what tfattn does on a GPU, measured by one command in at most ~8 minutes.

Nothing in tfattn had run on a GPU, and a GPU machine is lent for minutes at a time, so every GPU
measurement is prepared here, in sections run one after the other:

- device: what TensorFlow sees (GPU name, compute capability, driver, the CUDA and cuDNN it was
  built for) and the dense matmul rate, TFLOP/s, in float32 (TF32 off), float32 with TF32 (the
  default on Ampere and later), float16 and bfloat16;
- minilm: MiniLM fine-tuning steps on AG News texts in float32, mixed_float16 (with Keras's loss
  scaling) and mixed_bfloat16, each without and with XLA: examples/s, peak GPU memory, the share
  of the matching matmul rate, and the loss after the steps against the same steps run on the CPU
  in float32 (in the same process, from the same weights, on the same batches, dropout off);
- scratch: one full `tfattn train agnews` run of the from-scratch classifier (default config):
  examples/s and validation accuracy against the CPU run's 0.8690;
- strategy: `--strategy mirrored` on the one GPU against the default strategy, per-epoch losses;
- translation: the transformer translator decoding sentences/s, greedy and beam 4, with and
  without the key/value cache;
- serving: SavedModel exports (from-scratch classifier, MiniLM classifier, MiniLM NER, translator)
  served at batch 64 (texts/s) and batch 1 (p50/p99 latency).

Each section runs in its own process under a time cap: a crash, a hang or an out-of-memory in one
is recorded in the results (its error text, or the end of its log) and the next one runs. The
results are rewritten after every section, in `--out`: `gpu_suite.json` and a Markdown table,
`gpu_suite.md`. Without a GPU the suite stops after the device section, unless `--smoke`.

    python bench/gpu_suite.py --data gpu_carry/data --backbone gpu_carry/minilm   # on a GPU machine
    python bench/gpu_suite.py --smoke --out /tmp/gpu_smoke    # same code paths, tiny sizes, CPU, minutes

`--smoke` writes `gpu_suite_smoke.json` / `.md` instead, so it never replaces real GPU results; it
trains a tiny random BERT (2 layers, width 32: the tests' `save_tiny_bert`) with the `--backbone`
tokenizer in place of MiniLM.
`--data` holds ag_news/train.csv, conll2003/valid.txt and translation/spa_eng_{train,valid}.tsv
(default ../shared/data; bench/gpu_carry.py prepares a copy that travels to a device machine).
BENCHMARKS.md ("### GPU") has the device call.
"""

import argparse
import csv
import gc
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Printed before every progress line; the parent shows a section's lines that start with it and
# keeps the rest (TensorFlow's and Keras's output) in the section's log.
PROGRESS = "gpu_suite"
# Seconds each section may take on the GPU (sum: the default --budget, 8 minutes) and in --smoke.
# The GPU caps are estimates made before any GPU run: MiniLM gets the most (7 models built, 3 XLA
# compilations, the CPU reference), serving the next (4 SavedModel exports, traced on the CPU).
SECTIONS = {
    "device": (35, 60),
    "minilm": (190, 150),
    "scratch": (55, 60),
    "strategy": (40, 60),
    "translation": (50, 60),
    "serving": (110, 180),
}
# Validation accuracy of `tfattn train agnews` on the CPU (seed 0: BENCHMARKS.md, first table) and
# the standard deviation over seeds 0-2 of the same recipe (BENCHMARKS.md, from-scratch recipes).
SCRATCH_CPU_ACCURACY = 0.8690
SCRATCH_SEED_SD = 0.0149
# MiniLM: how far the held-out loss after the steps may be from the CPU's float32 loss, as a share
# of how far the CPU's steps moved it (from the loss before any step): a run whose steps did
# nothing (say, every step skipped for an overflow) is off by the whole move. TF32 and float16
# round products to 10 mantissa bits, bfloat16 to 7 (sums and master weights stay float32). On a
# CPU, 23 steps of MiniLM in mixed_bfloat16 (with and without XLA) ended 0.5-0.6% of the move (the
# loss went from 1.4205 to 1.2966 in float32) away from float32; mixed_float16 within 5e-6.
LOSS_TOLERANCE = {"float32": 0.05, "mixed_float16": 0.1, "mixed_bfloat16": 0.1}
# `--strategy mirrored` on one device must give the default strategy's losses: the multi-worker
# test's tolerance (tests/test_multiworker.py).
STRATEGY_TOLERANCE = 1e-5
MIB = 2**20
STARTED = time.time()


@dataclass(frozen=True)
class Sizes:
    """How much each section measures: sized for about 8 minutes on one H100 (`GPU`), or for a
    smoke run of the same code on a shared CPU (`SMOKE`)."""

    matmul_sizes: tuple = (4096, 8192)
    matmul_seconds: float = 1.0
    minilm_batch: int = 32
    minilm_length: int = 64  # every batch padded to it: one shape, one XLA program
    minilm_warmup_steps: int = 3  # traced (and compiled by XLA), not timed
    minilm_timed_steps: int = 60
    minilm_eval_batches: int = 4
    # Policies also timed under XLA. The smoke run compiles only float32: XLA's CPU compilation of
    # the mixed policies took 30-50 s each, and their code path is float32's with another policy.
    minilm_xla_policies: tuple = ("float32", "mixed_float16", "mixed_bfloat16")
    scratch_limit: int | None = None  # None: every row, as the CPU run
    scratch_epochs: int | None = None  # None: the task's default (10, early stopping)
    strategy_limit: int = 2000
    strategy_epochs: int = 2
    translation_pairs: int = 20000  # they learn the vocabularies (bench/translation_speed.py)
    translation_vocab: int = 8000
    translation_sentences: int = 128
    translation_length: int = 20
    translation_rounds: int = 2
    serving_texts: int = 512
    serving_requests: int = 100
    serving_rounds: int = 2


GPU = Sizes()
SMOKE = Sizes(
    matmul_sizes=(128,),
    matmul_seconds=0.2,
    minilm_batch=4,
    minilm_length=16,
    minilm_warmup_steps=1,
    minilm_timed_steps=2,
    minilm_eval_batches=1,
    minilm_xla_policies=("float32",),
    scratch_limit=300,
    scratch_epochs=1,
    strategy_limit=200,
    strategy_epochs=1,
    translation_pairs=300,
    translation_vocab=150,
    translation_sentences=4,
    translation_length=4,
    translation_rounds=1,
    serving_texts=8,
    serving_requests=3,
    serving_rounds=1,
)


def progress(message):
    """A progress line, with the seconds since the suite started (the parent's start, passed to
    its children in GPU_SUITE_T0)."""
    started = float(os.environ.get("GPU_SUITE_T0", STARTED))
    print(f"{PROGRESS} [{time.time() - started:6.1f} s] {message}", flush=True)


def one_line(error):
    """`Type: first line` of an exception, for the results."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:500]


def plain(value):
    """numpy scalars as Python numbers, for json."""
    return value.item() if hasattr(value, "item") else str(value)


# --- the parent: runs each section in a process of its own --------------------------------------


def run_section_process(name, cap, args, work):
    """Run section `name` in a child process for at most `cap` seconds; its results, with
    `status` ("ok", "error", "timeout") and `seconds` added."""
    command = [sys.executable, str(Path(__file__).resolve()), "--section", name, "--work", str(work)]
    command += ["--data", str(args.data)] + (["--backbone", str(args.backbone)] if args.backbone else [])
    command += ["--smoke"] if args.smoke else []
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "HF_HUB_OFFLINE": "1"}
    log_path = work / f"{name}.log"
    started = time.perf_counter()
    # A session of its own, so that a timeout ends the child and anything it started.
    child = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
    )

    def copy_output():
        with open(log_path, "w", encoding="utf-8") as log:
            for line in child.stdout:
                log.write(line)
                if line.startswith(PROGRESS):
                    print(line, end="", flush=True)

    reader = threading.Thread(target=copy_output, daemon=True)
    reader.start()
    try:
        code = child.wait(timeout=cap)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        code = child.wait()
    reader.join(timeout=10)
    seconds = time.perf_counter() - started

    result_path = work / f"{name}.json"
    result = json.loads(result_path.read_text()) if result_path.is_file() else {}
    log_tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-12:]
    if code == -signal.SIGKILL and seconds >= cap:
        result["error"] = f"stopped at its time cap of {cap:.0f} s; last output: " + " | ".join(log_tail)
        status = "timeout"
    elif code != 0:
        result.setdefault("error", f"exit code {code}; last output: " + " | ".join(log_tail))
        status = "error"
    else:
        status = "ok"
    return {"status": status, "seconds": round(seconds, 1), "cap_seconds": round(cap), **result}


def run_suite(args):
    sizes = SMOKE if args.smoke else GPU
    os.environ.setdefault("GPU_SUITE_T0", str(time.time()))
    work = Path(args.work or tempfile.mkdtemp(prefix="gpu_suite_"))
    work.mkdir(parents=True, exist_ok=True)
    stem = "gpu_suite_smoke" if args.smoke else "gpu_suite"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    caps = {name: smoke if args.smoke else gpu for name, (gpu, smoke) in SECTIONS.items()}
    budget = args.budget if args.budget is not None else sum(caps[name] for name in args.sections)
    results = {
        "command": " ".join(["python", *sys.argv]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "smoke (CPU, tiny sizes: no figure here is a GPU figure)" if args.smoke else "gpu",
        "sizes": asdict(sizes),
        "budget_seconds": budget,
        "sections": {},
    }
    progress(f"work folder {work}; results in {out / stem}.json; budget {budget:.0f} s")
    started = time.perf_counter()
    for name in args.sections:
        left = budget - (time.perf_counter() - started)
        device = results["sections"].get("device")
        if name != "device" and device and not args.smoke and (device["status"] != "ok" or not device.get("gpus")):
            why = "TensorFlow sees no GPU" if device["status"] == "ok" else "the device section failed"
            results["sections"][name] = {"status": "skipped", "error": why}
        elif left < 5:
            results["sections"][name] = {"status": "skipped", "error": "the suite's time budget was spent"}
        else:
            progress(f"{name}: start (cap {min(caps[name], left):.0f} s)")
            results["sections"][name] = run_section_process(name, min(caps[name], left), args, work)
            section = results["sections"][name]
            progress(f"{name}: {section['status']} in {section['seconds']:.0f} s {section.get('error', '')[:300]}")
        results["seconds"] = round(time.perf_counter() - started, 1)
        (out / f"{stem}.json").write_text(json.dumps(results, indent=2, default=plain) + "\n")
        (out / f"{stem}.md").write_text(markdown(results))
    if not args.work:  # a folder of our own: exports and runs are not needed any more
        shutil.rmtree(work, ignore_errors=True)
    progress(f"done: {out / stem}.json, {out / stem}.md")
    failed = [name for name, section in results["sections"].items() if section["status"] != "ok"]
    return 1 if failed else 0


# --- the child: one section ----------------------------------------------------------------------


def run_section(args):
    """Run one section in this process, writing its results to `<work>/<section>.json` as they
    come (a section stopped at its cap keeps what it had measured)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = Path(args.work)
    path = work / f"{args.section}.json"
    result = {}

    def save():
        path.write_text(json.dumps(result, indent=2, default=plain) + "\n")

    sizes = SMOKE if args.smoke else GPU
    try:
        SECTION_FUNCTIONS[args.section](args, sizes, work, result, save)
    except Exception as error:  # noqa: BLE001  (recorded; the parent goes on with the next section)
        traceback.print_exc()
        result["error"] = one_line(error)
        save()
        return 1
    save()
    return 0


def data_file(args, relative):
    path = Path(args.data) / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (--data must hold {relative}; see bench/gpu_carry.py)")
    return path


def backbone_folder(args, work):
    """The MiniLM checkpoint folder; under --smoke a tiny random BERT with its tokenizer, made once."""
    if args.backbone:
        folder = Path(args.backbone)
    else:
        from tfattn.pretrained import offline_minilm_path

        folder = offline_minilm_path()
    if not args.smoke:
        return folder
    tiny = work / "tiny_bert"
    if not (tiny / "config.json").is_file():
        sys.path.insert(0, str(REPO / "tests"))
        from task_harness import save_tiny_bert  # the tests' tiny random BERT, with this tokenizer

        save_tiny_bert(folder, tiny)
    return tiny


def gpu_memory():
    """`(reset, peak_mib)`: reset the GPU allocator's peak, and read it (None without a GPU)."""
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        return (lambda: None), (lambda: None)

    def peak_mib():
        return round(tf.config.experimental.get_memory_info("GPU:0")["peak"] / MIB, 1)

    return (lambda: tf.config.experimental.reset_memory_stats("GPU:0")), peak_mib


def released():
    """Drop Keras's global state and collect garbage, so the next model's memory peak is its own."""
    import tf_keras as keras

    keras.backend.clear_session()
    gc.collect()


# --- device: what TensorFlow sees, and the matmul rate -------------------------------------------

# name -> (dtype, TF32 allowed)
MATMUL_DTYPES = {
    "float32": ("float32", False),
    "float32_tf32": ("float32", True),
    "float16": ("float16", False),
    "bfloat16": ("bfloat16", False),
}


def matmul_tflops(dtype, size, seconds, chain=8):
    """TFLOP/s of `chain` chained `size` x `size` products in `dtype`, in a `tf.function`, best
    of repeated calls over about `seconds` (after a warm-up call).

    Not bench/flops.py's `matmul_rate`, which fetches the whole product to the host after every
    call: on a GPU that copy takes longer than the products it times. Here one number is fetched,
    and `b` is scaled by 1/sqrt(size) so that entries stay near 1 along the chain: no overflow
    in float16, and no decay to zeros, which a GPU multiplies faster than random numbers."""
    import tensorflow as tf

    a = tf.cast(tf.random.stateless_normal([size, size], seed=[1, 2]), dtype)
    b = tf.cast(tf.random.stateless_normal([size, size], seed=[3, 4]) * size**-0.5, dtype)

    @tf.function
    def products():
        c = a
        for _ in range(chain):
            c = tf.linalg.matmul(c, b)
        return tf.reduce_sum(tf.cast(c, tf.float32))

    products().numpy()
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        products().numpy()
        best = max(best, 2.0 * size**3 * chain / (time.perf_counter() - start) / 1e12)
    return best


def nvidia_smi():
    """The GPU name, driver and memory as nvidia-smi reports them (None where it cannot run)."""
    try:
        answer = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return answer.stdout.strip() or None


def device_section(args, sizes, work, result, save):
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    build = tf.sysconfig.get_build_info()
    result.update(
        tensorflow=tf.__version__,
        built_for={"cuda": build.get("cuda_version"), "cudnn": build.get("cudnn_version")},
        gpus=[{"name": gpu.name, **tf.config.experimental.get_device_details(gpu)} for gpu in gpus],
        nvidia_smi=nvidia_smi(),
        tf32_enabled_by_default=tf.config.experimental.tensor_float_32_execution_enabled(),
        cpus=os.cpu_count(),
    )
    save()
    progress(f"device: {result['nvidia_smi'] or 'no nvidia-smi'}; TensorFlow {tf.__version__} sees {len(gpus)} GPU(s)")
    if not gpus and not args.smoke:
        return  # the parent stops here: no GPU figures without a GPU
    by_size = {name: {} for name in MATMUL_DTYPES}
    default_tf32 = tf.config.experimental.tensor_float_32_execution_enabled()
    try:
        for size in sizes.matmul_sizes:
            for name, (dtype, tf32) in MATMUL_DTYPES.items():
                tf.config.experimental.enable_tensor_float_32_execution(tf32)
                by_size[name][str(size)] = round(matmul_tflops(dtype, size, sizes.matmul_seconds), 4)
                progress(f"matmul {name} {size}: {by_size[name][str(size)]:.4g} TFLOP/s")
                result["matmul_tflops_by_size"] = by_size
                save()
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(default_tf32)
    result["matmul_tflops"] = {name: max(rates.values()) for name, rates in by_size.items()}


# --- minilm: fine-tuning steps in three precisions, with and without XLA -------------------------

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


def matmul_rate_of(policy, work):
    """`(name, TFLOP/s)` of the device section's matmul rate that `policy` computes with: float32
    runs on TF32 where TensorFlow allows it (its default on a GPU), mixed policies in 16 bits."""
    device = json.loads((work / "device.json").read_text()) if (work / "device.json").is_file() else {}
    rates = device.get("matmul_tflops", {})
    name = {"mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}.get(policy)
    if name is None:
        name = "float32_tf32" if device.get("gpus") and device.get("tf32_enabled_by_default") else "float32"
    return name, rates.get(name)


def minilm_section(args, sizes, work, result, save):
    import numpy as np
    import tensorflow as tf
    import tf_keras as keras

    from bench.training_precision import flops_per_example, minilm_parts, token_lengths
    from tfattn.data.agnews import read_agnews_csv
    from tfattn.data.pipelines import make_dataset
    from tfattn.models import HuggingFaceEncoder, TextClassifier
    from tfattn.models.wordpiece import bert_preprocessor_from_pretrained
    from tfattn.pretrained import load_backbone, load_tokenizer, tokenize_texts

    backbone = backbone_folder(args, work)
    batch, length = sizes.minilm_batch, sizes.minilm_length
    warmup, timed = sizes.minilm_warmup_steps * batch, sizes.minilm_timed_steps * batch
    evaluated = sizes.minilm_eval_batches * batch
    examples = read_agnews_csv(data_file(args, "ag_news/train.csv"))
    rows = np.random.default_rng(0).permutation(len(examples.texts))[: warmup + timed + evaluated]
    texts, labels = [examples.texts[i] for i in rows], np.asarray(examples.labels)[rows]
    features = tokenize_texts(load_tokenizer(str(backbone)), texts, max_length=length)

    def batches(start, stop):
        # In order, every batch padded to `length` (pad_to_multiple): one batch shape in all.
        part = {name: value[start:stop] for name, value in features.items()}
        return make_dataset(part, labels[start:stop], batch, pad_to_multiple=length)

    warmup_data, timed_data = batches(0, warmup), batches(warmup, warmup + timed)
    eval_data = batches(warmup + timed, warmup + timed + evaluated)
    sample = next(iter(eval_data))[0]
    num_classes = len(examples.label_names)
    total_steps = sizes.minilm_warmup_steps + sizes.minilm_timed_steps
    _, compile_model = minilm_parts(str(backbone), length, num_classes, total_steps)
    loss_of = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def build(policy, weights=None):
        # Dropout off everywhere: the GPU and the CPU would draw different masks, and their
        # losses could not be compared.
        keras.mixed_precision.set_global_policy(policy)
        try:
            keras.utils.set_random_seed(0)
            encoder = HuggingFaceEncoder(
                backbone=load_backbone(str(backbone), hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
            )
            model = TextClassifier(
                bert_preprocessor_from_pretrained(backbone, length), encoder, num_classes, pooling="cls", dropout=0.0
            )
            model(sample)
        finally:
            keras.mixed_precision.set_global_policy("float32")
        if weights is not None:
            model.set_weights(weights)
        return model

    def held_out_loss(model):
        @tf.function
        def batch_loss(features, labels):
            return loss_of(labels, model(features, training=False))

        return float(np.mean([batch_loss(x, y).numpy() for x, y in eval_data]))

    def steps(model, jit):
        """Compile, trace on the warm-up steps, time the timed ones; the loss after them."""
        compile_model(model, jit=jit)
        model.fit(warmup_data, verbose=0)
        start = time.perf_counter()
        history = model.fit(timed_data, verbose=0)
        seconds = time.perf_counter() - start
        eval_loss = held_out_loss(model)
        scale = getattr(model.optimizer, "loss_scale", None)
        return {
            "examples_per_second": round(timed / seconds, 2),
            "train_loss": round(float(history.history["loss"][-1]), 6),
            "eval_loss": round(eval_loss, 6),
            "optimizer": type(model.optimizer).__name__,
            **({"final_loss_scale": float(scale)} if scale is not None else {}),
        }

    lengths = token_lengths({name: value[warmup : warmup + timed] for name, value in features.items()})
    result.update(
        backbone=str(backbone),
        batch_size=batch,
        tokens_per_batch_row=length,
        mean_real_tokens=round(float(lengths.mean()), 2),
        steps={"warmup": sizes.minilm_warmup_steps, "timed": sizes.minilm_timed_steps},
        eval_examples=evaluated,
        loss_tolerance_share_of_cpu_move=LOSS_TOLERANCE,
        runs={},
    )

    # The reference: float32 on the CPU, in this process, from the same weights.
    progress("minilm: CPU reference (float32)")
    with tf.device("/CPU:0"):
        model = build("float32")
        initial = model.get_weights()
        initial_loss = held_out_loss(model)
        config = model.encoder.backbone.config
        shape = {
            "num_layers": config.num_hidden_layers,
            "hidden": config.hidden_size,
            "ff_dim": config.intermediate_size,
        }
        reference = steps(model, jit=False)
        reference["devices"] = {
            "weights": model.weights[0].device,
            "optimizer_step": model.optimizer.iterations.device,
        }
    del model
    released()
    flops = flops_per_example(lengths, **shape)
    move = abs(reference["eval_loss"] - initial_loss)
    result.update(
        training_gflop_per_example=round(flops / 1e9, 4),
        eval_loss_before_steps=round(initial_loss, 6),
        cpu_reference=reference,
    )
    save()
    progress(
        f"minilm: CPU reference {reference['examples_per_second']:.1f} examples/s, loss {reference['eval_loss']:.4f}"
    )

    reset_peak, peak_mib = gpu_memory()
    for policy in PRECISIONS:
        for jit in (False, True) if policy in sizes.minilm_xla_policies else (False,):
            key = policy + (" xla" if jit else "")
            model = None
            try:
                reset_peak()
                model = build(policy, initial)
                run = steps(model, jit)
                run["peak_gpu_memory_mib"] = peak_mib()
                rate_name, rate = matmul_rate_of(policy, work)
                achieved = run["examples_per_second"] * flops / 1e12
                run.update(model_tflops=round(achieved, 5), matmul_rate=rate_name)
                run["fraction_of_matmul_rate"] = round(achieved / rate, 4) if rate else None
                difference = abs(run["eval_loss"] - reference["eval_loss"])
                run["eval_loss_relative_difference_from_cpu"] = round(difference / reference["eval_loss"], 6)
                run["eval_loss_difference_share_of_cpu_move"] = round(difference / move, 4) if move else None
                run["train_loss_relative_difference_from_cpu"] = round(
                    abs(run["train_loss"] - reference["train_loss"]) / reference["train_loss"], 6
                )
                run["loss_matches_cpu"] = difference <= LOSS_TOLERANCE[policy] * move
            except Exception as error:  # noqa: BLE001  (one configuration's failure; the others go on)
                traceback.print_exc()
                run = {"error": one_line(error)}
            model = None
            released()
            result["runs"][key] = run
            save()
            if "error" in run:
                progress(f"minilm {key}: {run['error']}")
            else:
                speed, loss = run["examples_per_second"], run["eval_loss"]
                progress(f"minilm {key}: {speed:.1f} examples/s, loss {loss:.4f} (CPU {reference['eval_loss']:.4f})")


# --- scratch: one full training run of the from-scratch AG News classifier -----------------------


def history_rows(run_dir):
    with open(Path(run_dir) / "history.csv", newline="", encoding="utf-8") as file:
        return [
            {key: float(value) for key, value in row.items() if value not in ("", None)} for row in csv.DictReader(file)
        ]


def scratch_section(args, sizes, work, result, save):
    from tfattn.tasks.config import TrainConfig
    from tfattn.training.loop import train

    run_dir = work / "scratch_run"
    config = TrainConfig(
        task="agnews",
        data=str(data_file(args, "ag_news/train.csv")),
        run_dir=str(run_dir),
        limit=sizes.scratch_limit,
        epochs=sizes.scratch_epochs,
    )
    reset_peak, peak_mib = gpu_memory()
    reset_peak()
    progress("scratch: tfattn train agnews (default config, seed 0)")
    start = time.perf_counter()
    report = train(config, overwrite=True)
    seconds = time.perf_counter() - start
    rows = history_rows(run_dir)
    speeds = [row["examples_per_second"] for row in rows]
    accuracy = float(report.accuracy)
    result.update(
        run_seconds=round(seconds, 1),
        epochs_run=len(rows),
        examples_per_second_by_epoch=[round(speed, 1) for speed in speeds],
        # The first epoch traces the training step; the others are the steady speed.
        examples_per_second_steady=round(statistics.median(speeds[1:] or speeds), 1),
        validation_accuracy=round(accuracy, 4),
        validation_macro_f1=round(float(report.macro_f1), 4),
        peak_gpu_memory_mib=peak_mib(),
        cpu_validation_accuracy=SCRATCH_CPU_ACCURACY,
        seed_sd=SCRATCH_SEED_SD,
        accuracy_within_seed_sd_of_cpu=abs(accuracy - SCRATCH_CPU_ACCURACY) <= SCRATCH_SEED_SD,
    )
    progress(
        f"scratch: accuracy {accuracy:.4f} (CPU {SCRATCH_CPU_ACCURACY}), {result['examples_per_second_steady']} ex/s"
    )


# --- strategy: MirroredStrategy on the one GPU against the default strategy ----------------------


def strategy_section(args, sizes, work, result, save):
    import tensorflow as tf

    from tfattn.tasks.config import TrainConfig
    from tfattn.training.loop import train

    def losses(strategy, tag):
        # Dropout off: a replica draws its own masks (as in bench/multiworker.py).
        config = TrainConfig(
            task="agnews",
            data=str(data_file(args, "ag_news/train.csv")),
            run_dir=str(work / f"strategy_{tag}"),
            limit=sizes.strategy_limit,
            epochs=sizes.strategy_epochs,
            patience=sizes.strategy_epochs,
            dropout=0.0,
            strategy=strategy,
        )
        train(config, overwrite=True)
        rows = history_rows(config.run_dir)
        progress(f"strategy {tag}: loss by epoch {[round(row['loss'], 6) for row in rows]}")
        return {"loss": [row["loss"] for row in rows], "val_loss": [row["val_loss"] for row in rows]}

    def largest_difference(a, b):
        pairs = [(x, y) for key in ("loss", "val_loss") for x, y in zip(a[key], b[key])]
        return max(abs(x - y) / abs(x) for x, y in pairs)

    # Deterministic ops, so that a difference is the strategy's and not the GPU's reduction
    # order. Without a deterministic kernel for some op, the runs are repeated without, and the
    # default strategy twice, to show the GPU's own run-to-run difference.
    tf.config.experimental.enable_op_determinism()
    try:
        runs = {name: losses(name, name) for name in ("default", "mirrored")}
        result["deterministic_ops"] = True
    except tf.errors.UnimplementedError as error:
        result["determinism_error"] = one_line(error)
        from tensorflow.python.framework.config import disable_op_determinism  # TF 2.20 exports no public one

        disable_op_determinism()
        runs = {name: losses(name, name + "_nondeterministic") for name in ("default", "mirrored")}
        runs["default_again"] = losses("default", "default_again")
        result["deterministic_ops"] = False
        result["default_rerun_relative_difference"] = largest_difference(runs["default"], runs["default_again"])
    difference = largest_difference(runs["default"], runs["mirrored"])
    result.update(
        training_texts_limit=sizes.strategy_limit,
        epochs=sizes.strategy_epochs,
        runs=runs,
        max_relative_difference=difference,
        tolerance=STRATEGY_TOLERANCE,
        same_losses=difference <= STRATEGY_TOLERANCE,
    )
    progress(f"strategy: mirrored vs default, largest relative difference {difference:.2e}")


# --- translation: decoding speed with and without the cache --------------------------------------


def translation_section(args, sizes, work, result, save):
    import numpy as np
    import tf_keras as keras

    from bench.translation_speed import build_model, decoding_round
    from tfattn.data.translation import read_translation_pairs
    from tfattn.decoding import DecodingOptions
    from tfattn.models.translation import TranslationPreprocessor

    keras.utils.set_random_seed(0)
    train = read_translation_pairs(data_file(args, "translation/spa_eng_train.tsv"), limit=sizes.translation_pairs)
    valid = read_translation_pairs(data_file(args, "translation/spa_eng_valid.tsv"), limit=sizes.translation_sentences)
    preprocessor = TranslationPreprocessor.learn(train.sources, train.targets, vocab_size=sizes.translation_vocab)
    # Randomly initialised (speed does not depend on the weights), every sentence forced to
    # exactly `translation_length` tokens, as bench/translation_speed.py.
    model = build_model("transformer", preprocessor)
    batches = [preprocessor.pad_sources(valid.sources[i : i + 32]) for i in range(0, len(valid), 32)]
    n = sizes.translation_length
    variants = {
        "greedy": DecodingOptions(max_length=n, min_length=n),
        "greedy_no_cache": DecodingOptions(max_length=n, min_length=n, use_cache=False),
        "beam4": DecodingOptions(max_length=n, min_length=n, beam_width=4),
        "beam4_no_cache": DecodingOptions(max_length=n, min_length=n, beam_width=4, use_cache=False),
    }
    result.update(
        weights=model.count_params(), sentences=len(valid), batch_size=32, output_tokens=n, sentences_per_second={}
    )
    rates, tokens = {name: [] for name in variants}, {}
    for name, options in variants.items():
        decoding_round(model, batches[:1], options)  # traces the decoding loop
        progress(f"translation: {name} traced")
    for _ in range(sizes.translation_rounds):
        for name, options in variants.items():
            rate, tokens[name] = decoding_round(model, batches, options)
            rates[name].append(rate)
    for name in variants:
        result["sentences_per_second"][name] = round(statistics.median(rates[name]), 1)
    for name in ("greedy", "beam4"):
        cached, uncached = result["sentences_per_second"][name], result["sentences_per_second"][name + "_no_cache"]
        result[f"{name}_cache_speedup"] = round(cached / uncached, 2)
        result[f"{name}_same_tokens_with_and_without_cache"] = all(
            np.array_equal(a, b) for a, b in zip(tokens[name], tokens[name + "_no_cache"])
        )
    progress(f"translation: {result['sentences_per_second']}")


# --- serving: the SavedModel exports at batch 64 and batch 1 -------------------------------------


def serving_section(args, sizes, work, result, save):
    import tensorflow as tf
    import tf_keras as keras

    from bench.serving import (
        agnews_sample,
        batches,
        conll_sample,
        percentile_ms,
        request_latencies,
        savedmodel_path,
        timed_pass,
    )
    from bench.translation_speed import build_model
    from tfattn.data import AGNEWS_LABELS, NER_LABELS
    from tfattn.data.translation import read_translation_pairs
    from tfattn.decoding import DecodingOptions
    from tfattn.models import HuggingFaceEncoder, TextClassifier, TokenClassifier
    from tfattn.models.translation import TranslationPreprocessor
    from tfattn.models.wordpiece import bert_preprocessor_from_pretrained
    from tfattn.serving.classifiers import export_model
    from tfattn.serving.translators import export_translator
    from tfattn.tasks.encoder_task import load_run

    backbone = backbone_folder(args, work)
    exports = work / "exports"
    count = sizes.serving_texts
    news = agnews_sample(data_file(args, "ag_news/train.csv"), count, 0)
    sentences = conll_sample(data_file(args, "conll2003/valid.txt"), count, 0)
    spanish = read_translation_pairs(data_file(args, "translation/spa_eng_valid.tsv"), limit=count).sources

    def scratch():
        if not (work / "scratch_run" / "run.json").is_file():
            raise FileNotFoundError("no from-scratch run to export: the scratch section did not finish")
        model, label_names, _ = load_run(work / "scratch_run")
        return export_model(model, label_names, exports / "scratch", overwrite=True)

    def minilm():
        keras.utils.set_random_seed(0)  # the head is untrained: speed does not depend on it
        preprocessor = bert_preprocessor_from_pretrained(backbone, 128)
        model = TextClassifier(preprocessor, HuggingFaceEncoder.from_pretrained(backbone), len(AGNEWS_LABELS))
        model(tf.constant(["build"]))
        return export_model(model, AGNEWS_LABELS, exports / "minilm", overwrite=True)

    def ner():
        keras.utils.set_random_seed(0)
        preprocessor = bert_preprocessor_from_pretrained(backbone, 128)
        # word_shape as `tfattn train ner` trains it by default
        model = TokenClassifier(preprocessor, HuggingFaceEncoder.from_pretrained(backbone), NER_LABELS, word_shape=True)
        model(tf.constant(["build"]))
        return export_model(model, NER_LABELS, exports / "ner", overwrite=True)

    def translator():
        keras.utils.set_random_seed(0)
        pairs = read_translation_pairs(data_file(args, "translation/spa_eng_train.tsv"), limit=sizes.translation_pairs)
        preprocessor = TranslationPreprocessor.learn(pairs.sources, pairs.targets, vocab_size=sizes.translation_vocab)
        n = sizes.translation_length  # a random model: forced to n tokens, as in the translation section
        options = DecodingOptions(max_length=n, min_length=n)
        return export_translator(
            build_model("transformer", preprocessor), exports / "translator", options, overwrite=True
        )

    paths = {
        "from-scratch classifier": (scratch, news),
        "MiniLM classifier": (minilm, news),
        "MiniLM NER": (ner, [" ".join(words) for words in sentences.words]),
        "translator (greedy)": (translator, spanish),
    }
    result.update(texts=count, batch_size=64, batch_one_requests=sizes.serving_requests, paths={})
    for name, (export, texts) in paths.items():
        try:
            start = time.perf_counter()
            folder = export()
            released()
            run = savedmodel_path(folder)
            run_batches = batches(texts, 64)
            for batch in run_batches[:2]:  # warm-up
                run(batch)
            run(texts[:1])
            export_seconds = time.perf_counter() - start
            speeds, cpu_ms, latencies = [], [], []
            for _ in range(sizes.serving_rounds):
                speed, cpu, _ = timed_pass(run, run_batches)
                speeds.append(speed)
                cpu_ms.append(cpu)
                latencies += request_latencies(run, texts[: sizes.serving_requests])
            entry = {
                "texts_per_second_batch_64": round(statistics.median(speeds), 1),
                "cpu_ms_per_text_batch_64": round(statistics.median(cpu_ms), 3),
                "latency_ms_p50_batch_1": percentile_ms(latencies, 50),
                "latency_ms_p99_batch_1": percentile_ms(latencies, 99),
                "export_and_load_seconds": round(export_seconds, 1),
            }
        except Exception as error:  # noqa: BLE001  (one export's failure; the others go on)
            traceback.print_exc()
            entry = {"error": one_line(error)}
        result["paths"][name] = entry
        save()
        if "error" in entry:
            progress(f"serving {name}: {entry['error']}")
        else:
            progress(
                f"serving {name}: {entry['texts_per_second_batch_64']} texts/s at batch 64, batch 1 p50 "
                f"{entry['latency_ms_p50_batch_1']} ms, p99 {entry['latency_ms_p99_batch_1']} ms"
            )


SECTION_FUNCTIONS = {
    "device": device_section,
    "minilm": minilm_section,
    "scratch": scratch_section,
    "strategy": strategy_section,
    "translation": translation_section,
    "serving": serving_section,
}


# --- the Markdown table --------------------------------------------------------------------------


def number(value, digits=1):
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:,.{digits}f}" if isinstance(value, (int, float)) else str(value)


def markdown(results):
    """The results as Markdown: a table per section, and what failed."""
    sections = results["sections"]
    lines = [f"# GPU suite, {results['date']}: {results['mode']}", ""]
    device = sections.get("device", {})
    if device.get("tensorflow"):
        lines += [
            f"TensorFlow {device['tensorflow']} (built for CUDA {device['built_for']['cuda']}, cuDNN "
            f"{device['built_for']['cudnn']}); nvidia-smi: {device.get('nvidia_smi') or '-'}; "
            f"GPUs seen: {', '.join(gpu.get('device_name', gpu['name']) for gpu in device['gpus']) or 'none'}; "
            f"TF32 on by default: {number(device.get('tf32_enabled_by_default'))}",
            "",
        ]
    if device.get("matmul_tflops_by_size"):
        by_size = device["matmul_tflops_by_size"]
        sizes = list(next(iter(by_size.values())))
        lines += ["| matmul TFLOP/s | " + " | ".join(sizes) + " |", "|---|" + "---:|" * len(sizes)]
        for name, rates in by_size.items():
            lines.append(f"| {name} | " + " | ".join(f"{rates[s]:.4g}" if s in rates else "-" for s in sizes) + " |")
        lines.append("")
    minilm = sections.get("minilm", {})
    if minilm.get("runs") or minilm.get("cpu_reference"):
        reference = minilm.get("cpu_reference", {})
        lines += [
            f"MiniLM fine-tuning steps: batch {minilm['batch_size']} x {minilm['tokens_per_batch_row']} tokens "
            f"({minilm['mean_real_tokens']} real), {minilm['steps']['timed']} timed steps after "
            f"{minilm['steps']['warmup']}; loss on {minilm['eval_examples']} held-out texts after the steps, "
            f"against float32 on the CPU: {number(minilm.get('eval_loss_before_steps'), 4)} before the steps, "
            f"{number(reference.get('eval_loss'), 4)} after ({number(reference.get('examples_per_second'))} "
            "examples/s there). Off the CPU's: the loss difference as a share of the CPU's move.",
            "",
            "| precision | examples/s | peak GPU MiB | of the matmul rate | loss | off the CPU's | within tolerance |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for key, run in minilm.get("runs", {}).items():
            if "error" in run:
                lines.append(f"| {key} | error: {run['error']} | | | | | |")
                continue
            fraction = run.get("fraction_of_matmul_rate")
            share = f"{100 * fraction:.1f}% of {run['matmul_rate']}" if fraction is not None else "-"
            tolerance = LOSS_TOLERANCE[key.split()[0]]
            lines.append(
                f"| {key} | {number(run['examples_per_second'])} | {number(run.get('peak_gpu_memory_mib'), 0)} | "
                f"{share} | {run['eval_loss']:.4f} | {number(run['eval_loss_difference_share_of_cpu_move'], 4)} | "
                f"{number(run['loss_matches_cpu'])} (<= {tolerance:g}) |"
            )
        lines.append("")
    scratch = sections.get("scratch", {})
    if "validation_accuracy" in scratch:
        lines += [
            "| from-scratch AG News run | examples/s (steady) | epochs | validation accuracy | CPU "
            "| within one seed sd |",
            "|---|---:|---:|---:|---:|---|",
            f"| tfattn train agnews | {number(scratch['examples_per_second_steady'])} | {scratch['epochs_run']} | "
            f"{scratch['validation_accuracy']:.4f} | {SCRATCH_CPU_ACCURACY} | "
            f"{number(scratch['accuracy_within_seed_sd_of_cpu'])} (sd {SCRATCH_SEED_SD}) |",
            "",
        ]
    strategy = sections.get("strategy", {})
    if "max_relative_difference" in strategy:
        lines += [
            f"`--strategy mirrored` vs default on one device: largest relative difference of the per-epoch "
            f"losses {strategy['max_relative_difference']:.2e} (tolerance {STRATEGY_TOLERANCE:g}): same losses "
            f"{number(strategy['same_losses'])}; deterministic ops {number(strategy['deterministic_ops'])}"
            + (
                f" ({strategy['determinism_error']}; the default strategy differs from its own rerun by "
                f"{strategy['default_rerun_relative_difference']:.2e})"
                if "determinism_error" in strategy
                else ""
            ),
            "",
        ]
    translation = sections.get("translation", {})
    if translation.get("sentences_per_second"):
        rates = translation["sentences_per_second"]
        lines += [
            f"Translation decoding, sentences/s ({translation['output_tokens']} tokens each, batches of 32):",
            "",
            "| | cache | no cache | cache speed-up | same tokens |",
            "|---|---:|---:|---:|---|",
        ]
        for name in ("greedy", "beam4"):
            if f"{name}_cache_speedup" in translation:
                lines.append(
                    f"| {name} | {number(rates[name])} | {number(rates[name + '_no_cache'])} | "
                    f"{translation[name + '_cache_speedup']:.2f}x | "
                    f"{number(translation[name + '_same_tokens_with_and_without_cache'])} |"
                )
        lines.append("")
    serving = sections.get("serving", {})
    if serving.get("paths"):
        lines += [
            "| SavedModel export | texts/s, batch 64 | p50 ms, batch 1 | p99 ms, batch 1 |",
            "|---|---:|---:|---:|",
        ]
        for name, entry in serving["paths"].items():
            if "error" in entry:
                lines.append(f"| {name} | error: {entry['error']} | | |")
            else:
                lines.append(
                    f"| {name} | {number(entry['texts_per_second_batch_64'])} | "
                    f"{number(entry['latency_ms_p50_batch_1'], 2)} | {number(entry['latency_ms_p99_batch_1'], 2)} |"
                )
        lines.append("")
    lines += ["| section | status | seconds (cap) | error |", "|---|---|---:|---|"]
    for name, section in sections.items():
        seconds = f"{section['seconds']:.0f} ({section['cap_seconds']})" if "seconds" in section else "-"
        error = section.get("error", "").replace("|", "/")  # a log line's pipes would split the row
        lines.append(f"| {name} | {section['status']} | {seconds} | {error[:300]} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on any device (CPU): tests the code paths")
    parser.add_argument("--out", default=str(REPO / "bench" / "results"), help="where the JSON and Markdown go")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"), help="corpora folder")
    parser.add_argument("--backbone", default=None, help="MiniLM checkpoint folder (default: the offline MiniLM)")
    parser.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--budget", type=float, default=None, help="seconds for all sections (default: their caps)")
    parser.add_argument("--work", default=None, help="scratch folder for runs and exports (default: a new temp one)")
    parser.add_argument("--section", choices=list(SECTIONS), help=argparse.SUPPRESS)  # a child process's one section
    args = parser.parse_args()
    sys.exit(run_section(args) if args.section else run_suite(args))


if __name__ == "__main__":
    main()
