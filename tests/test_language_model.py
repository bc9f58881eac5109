"""The language-model task end to end through the command line: `tfattn train lm` on a slice of Tiny
Shakespeare, then `generate`, `evaluate` and `attention` on the run, and bad input refused in one line."""

import csv
import json
import math
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import shared_data_dir

from tfattn.cli import main
from tfattn.explorer import explore
from tfattn.explorer.page import decode_view

TINY = ["--vocab-size", "400", "--block-size", "32", "--embed-dim", "16", "--num-heads", "2", "--ff-dim", "32"]
TINY += ["--num-blocks", "1", "--batch-size", "16", "--epochs", "2"]


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "shakespeare.txt"
    text = (shared_data_dir() / "text" / "tiny_shakespeare_train.txt").read_text(encoding="utf-8")
    path.write_text(text[:24_000], encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def lm_run(text_file, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "lm"
    assert main(["train", "lm", "--data", str(text_file), "--run-dir", str(run_dir), *TINY]) == 0
    return run_dir


@pytest.mark.slow
def test_each_epoch_logs_what_the_saved_model_scores(lm_run):
    """The epoch logs' bits per character (a metric summed over the epoch) equal the saved
    model's score of the validation text (summed afresh, block by block)."""
    with open(lm_run / "history.csv", newline="") as handle:
        history = list(csv.DictReader(handle))
    assert len(history) == 2
    best = min(history, key=lambda row: float(row["val_loss"]))
    scores = json.loads((lm_run / "validation_scores.json").read_text())
    assert scores["bits_per_char"] == pytest.approx(float(best["val_bits_per_char"]), abs=1e-3)
    assert scores["perplexity"] == pytest.approx(float(best["val_perplexity"]), rel=1e-3)
    assert scores["nats_per_char"] == pytest.approx(scores["bits_per_char"] * math.log(2), abs=1e-4)
    # The last tenth of the text, cut at a line start.
    assert 2300 <= scores["characters"] <= 2500
    assert "greedy sample from an empty prompt" in (lm_run / "validation_report.txt").read_text()


@pytest.mark.slow
def test_generate_evaluate_and_attention_on_a_run(lm_run, text_file, tmp_path, capsys):
    capsys.readouterr()
    sampled = ["generate", "--run", str(lm_run), "ROMEO:", "", "--max-new-tokens", "12", "--top-p", "0.9"]
    assert main([*sampled, "--seed", "4"]) == 0
    first = capsys.readouterr().out
    assert first.startswith("ROMEO:")
    assert main([*sampled, "--seed", "4"]) == 0
    assert capsys.readouterr().out == first  # a seeded sample is reproducible
    assert main(["generate", "--run", str(lm_run), "ROMEO:", "--beam", "3", "--max-new-tokens", "6"]) == 0
    capsys.readouterr()
    # Sampling inside beams, with both repetition controls.
    controls = ["--repetition-penalty", "1.3", "--no-repeat-ngram-size", "2", "--beam", "2", "--temperature", "0.9"]
    assert main(["generate", "--run", str(lm_run), "ROMEO:", "--max-new-tokens", "6", *controls]) == 0
    assert capsys.readouterr().out.startswith("ROMEO:")

    rows = tmp_path / "lines.jsonl"
    rows.write_text("".join(json.dumps({"text": line}) + "\n" for line in ["To be, or not to be", "ROMEO:\nAy."]))
    assert main(["evaluate", "--run", str(lm_run), "--data", str(rows)]) == 0
    scores = json.loads((lm_run / "test_scores.json").read_text())
    assert scores["characters"] == len("To be, or not to be") + len("ROMEO:\nAy.") and scores["bits_per_char"] > 0
    trained = json.loads((lm_run / "validation_scores.json").read_text())
    assert main(["evaluate", "--run", str(lm_run)]) == 0  # the run's validation text, scored again
    assert json.loads((lm_run / "validation_scores.json").read_text())["bits_per_char"] == trained["bits_per_char"]

    png = tmp_path / "attention.png"
    assert main(["attention", "--run", str(lm_run), "ROMEO:", "--out", str(png), "--max-new-tokens", "5"]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG" and (tmp_path / "attention_prompt.png").read_bytes()[:4] == b"\x89PNG"

    # The explorer page: the causal map of prompt + continuation, the prompt's tokens marked.
    page = tmp_path / "romeo.html"
    assert main(["attention", "--run", str(lm_run), "ROMEO:", "--html", str(page), "--max-new-tokens", "5"]) == 0
    embedded = re.search(r'id="tfattn-explorer-data">(.*?)</script>', page.read_text(encoding="utf-8"), re.S)
    (run,) = json.loads(embedded.group(1))["runs"]
    prompt_tokens = run["prediction"]["prompt_tokens"]
    assert run["prediction"] == {"type": "generation", "prompt_tokens": prompt_tokens, "strategy": "greedy"}
    assert run["query_tokens"][0] == "</s>" and "".join(run["query_tokens"][1:prompt_tokens]) == "ROMEO:"
    assert 1 <= len(run["query_tokens"]) - prompt_tokens <= 5  # the continuation, its end token included
    raw = decode_view(run["views"]["raw"], len(run["key_tokens"]))
    assert np.abs(np.triu(raw, k=1)).max() == 0  # causal: no token attends to a later one
    np.testing.assert_allclose(raw.sum(axis=-1), 1.0, atol=0.02)  # rows are distributions (bytes round them)
    assert sorted(run["views"]) == ["mean", "raw", "rollout"] and "gradient" in run["unavailable"]
    assert (
        explore(lm_run, "ROMEO:").payload["runs"][0]["query_tokens"][:prompt_tokens]
        == run["query_tokens"][:prompt_tokens]
    )


@pytest.mark.slow
def test_bad_generation_options_are_one_line(lm_run, capsys):
    for options, message in [
        (["--top-p", "0"], "--top-p must be in (0, 1], got 0"),
        (["--temperature", "0"], "--temperature must be above 0, got 0; for the most likely token"),
        (["--max-new-tokens", "40"], "--max-new-tokens 40 leaves no room for a prompt in the model's context of 32"),
        (["--length-penalty", "2", "--sample"], None),
    ]:
        code = main(["generate", "--run", str(lm_run), "ROMEO:", *options])
        err = capsys.readouterr().err.strip()
        if message is None:
            assert code == 0
            continue
        assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    with pytest.raises(SystemExit) as parse_error:  # refused as the flag is read
        main(["generate", "--run", str(lm_run), "ROMEO:", "--max-new-tokens", "0"])
    assert parse_error.value.code == 2
    assert "argument --max-new-tokens: must be a positive integer, got '0'" in capsys.readouterr().err


def test_empty_or_unreadable_text_is_refused_before_a_run_folder_exists(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n\n", encoding="utf-8")
    run_dir = tmp_path / "run"
    assert main(["train", "lm", "--data", str(empty), "--run-dir", str(run_dir)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {empty}: no text (the file is empty or holds only whitespace)"
    rows = tmp_path / "rows.csv"
    rows.write_text("title,body\nA,some text\nB,\n", encoding="utf-8")
    assert main(["train", "lm", "--data", str(rows), "--text-column", "body", "--run-dir", str(run_dir)]) == 2
    assert f"{rows}, row 3 (line 3): empty or missing text in column 'body'" in capsys.readouterr().err
    assert main(["train", "lm", "--data", str(rows), "--block-size", "1", "--run-dir", str(run_dir)]) == 2
    assert "--block-size must be at least 2, got 1" in capsys.readouterr().err
    assert not run_dir.exists()


_SERVE_SCRIPT = """
import json, sys
import tensorflow as tf
import tensorflow_text  # registers the SentencePiece ops, nothing else
folder, prompts = sys.argv[1], json.loads(sys.argv[2])
model = tf.saved_model.load(folder)
greedy = model.signatures["serving_default"](prompts=tf.constant(prompts))
sampled = model.signatures["sample"](
    prompts=tf.constant(prompts), temperature=tf.constant(0.8), top_k=tf.constant(0), top_p=tf.constant(0.9),
    seed=tf.constant(3),
)
empty = model.signatures["serving_default"](prompts=tf.constant([], tf.string))
imported = sorted(name for name in sys.modules if name.split(".")[0] == "tfattn")
assert not imported, f"serving the export imported {imported}"
print(json.dumps({
    "greedy": [text.decode() for text in greedy["continuations"].numpy()],
    "sampled": [text.decode() for text in sampled["continuations"].numpy()],
    "empty": empty["token_ids"].shape.as_list(),
}))
"""


@pytest.mark.slow
def test_the_export_generates_in_a_fresh_interpreter_without_tfattn(lm_run, tmp_path, capsys):
    export = tmp_path / "export"
    assert main(["export", "--run", str(lm_run), "--out", str(export), "--max-new-tokens", "10"]) == 0
    # Shortest first: `generate` batches prompts by length, and a row's draws depend on its place.
    prompts = ["", "ROMEO:", "First Citizen:\nWe are accounted poor citizens, the patricians good." * 3]
    capsys.readouterr()
    served = subprocess.run(
        [sys.executable, "-c", _SERVE_SCRIPT, str(export), json.dumps(prompts)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert served.returncode == 0, served.stderr[-3000:]
    result = json.loads(served.stdout.strip().splitlines()[-1])
    base = ["generate", "--run", str(lm_run), *prompts, "--max-new-tokens", "10"]
    for key, options in (("greedy", []), ("sampled", ["--temperature", "0.8", "--top-p", "0.9", "--seed", "3"])):
        with pytest.warns(UserWarning, match="only their last 23 tokens are kept"):  # the long prompt
            assert main([*base, *options]) == 0
        printed = capsys.readouterr().out
        assert printed == "".join(prompt + text + "\n" for prompt, text in zip(prompts, result[key])), key
    assert result["empty"][0] == 0


_SERVE_IDS_SCRIPT = """
import json, sys
import tensorflow as tf
from transformers import AutoTokenizer
folder, tokenizer_folder = sys.argv[1], sys.argv[2]
tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder)
tokenizer.pad_token = tokenizer.eos_token
inputs = tokenizer(["The tide", "And the tide rises, the"], padding=True, return_tensors="tf")  # padded on the right
served = tf.saved_model.load(folder).signatures["serving_default"](
    input_ids=tf.cast(inputs["input_ids"], tf.int32), attention_mask=tf.cast(inputs["attention_mask"], tf.int32)
)
imported = sorted(name for name in sys.modules if name.split(".")[0] == "tfattn")
assert not imported, f"serving the export imported {imported}"
print(json.dumps(served["token_ids"].numpy().tolist()))
"""


POEM = """The tide rises, the tide falls,
The twilight darkens, the curlew calls;
Along the sea-sands damp and brown
The traveller hastens toward the town,
And the tide rises, the tide falls.
"""


@pytest.mark.slow
def test_fine_tuning_a_hugging_face_gpt2_on_a_poem(tmp_path, capsys):
    """The course's case on a tiny random GPT-2 saved by the test: one short text, blocks of 16
    tokens with the end token after it; the loss falls, and the run generates and scores like any."""
    from task_harness import save_tiny_gpt2

    backbone = save_tiny_gpt2([POEM] * 5, tmp_path / "tiny-gpt2", n_positions=32)
    poem = tmp_path / "poem.txt"
    poem.write_text(POEM * 3, encoding="utf-8")
    run_dir = tmp_path / "poem_run"
    argv = ["train", "lm", "--data", str(poem), "--backbone", str(backbone), "--run-dir", str(run_dir)]
    argv += ["--block-size", "16", "--batch-size", "4", "--epochs", "3", "--learning-rate", "1e-3"]
    assert main(argv) == 0
    with open(run_dir / "history.csv", newline="") as handle:
        losses = [float(row["loss"]) for row in csv.DictReader(handle)]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert (run_dir / "model" / "config.json").is_file()  # save_pretrained's folder
    capsys.readouterr()
    assert main(["generate", "--run", str(run_dir), "The tide", "--max-new-tokens", "8"]) == 0
    assert capsys.readouterr().out.startswith("The tide")
    assert main(["evaluate", "--run", str(run_dir), "--data", str(poem)]) == 0
    assert json.loads((run_dir / "test_scores.json").read_text())["characters"] == len(POEM) * 3
    # Attention and export work as for tfattn's GPT (the export: token ids in and out).
    page = tmp_path / "tide.html"
    assert main(["attention", "--run", str(run_dir), "The tide", "--html", str(page), "--max-new-tokens", "4"]) == 0
    assert page.is_file() and "Hugging Face causal LM" in page.read_text(encoding="utf-8")
    export = tmp_path / "export"
    assert main(["export", "--run", str(run_dir), "--out", str(export), "--max-new-tokens", "6"]) == 0
    assert "input_ids, attention_mask -> token_ids" in capsys.readouterr().out
    served = subprocess.run(
        [sys.executable, "-c", _SERVE_IDS_SCRIPT, str(export), str(backbone)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert served.returncode == 0, served.stderr[-3000:]
    from tfattn.models.hf_causal_lm import HuggingFaceCausalLM

    model = HuggingFaceCausalLM.from_pretrained(run_dir / "model")
    prompts = ["The tide", "And the tide rises, the"]
    tokens = [row.tolist() for row in model.generate(prompts, max_new_tokens=6, return_ids=True)[1]]
    assert json.loads(served.stdout.strip().splitlines()[-1]) == tokens
    too_long = [*argv[:-8], "--block-size", "64", "--run-dir", str(tmp_path / "other")]
    assert main(too_long) == 2
    assert "--block-size 64 is above the 32 positions of --backbone" in capsys.readouterr().err
    assert main([*argv, "--embed-dim", "8", "--overwrite"]) == 2
    assert "--embed-dim applies to the from-scratch GPT, not --backbone" in capsys.readouterr().err


def test_the_validation_part_is_the_end_of_the_text_or_its_own_file(text_file, tmp_path):
    from dataclasses import replace

    from tfattn.tasks.language_model import LanguageModelConfig, LanguageModelTask

    text = text_file.read_text(encoding="utf-8")
    config = LanguageModelConfig(data=str(text_file)).resolve()
    train, validation = LanguageModelTask(config).prepare_training()
    assert "".join(train.documents) + "".join(validation.documents) == text  # the end; nothing lost
    limited = LanguageModelTask(replace(config, validation_limit=500)).prepare_training()[1]
    assert "".join(limited.documents) == "".join(validation.documents)[:500]
    other = tmp_path / "valid.txt"
    other.write_text("ROMEO:\nAy.\n", encoding="utf-8")
    config = LanguageModelConfig(data=str(text_file), validation_data=str(other)).resolve()
    train, validation = LanguageModelTask(config).prepare_training()
    assert "".join(train.documents) == text and validation.documents == ["ROMEO:\nAy.\n"]


def test_each_epoch_cuts_the_training_stream_at_a_new_offset():
    """The in-memory blocks: consecutive tokens (labels one ahead), as many every epoch, starting at
    a seeded random offset that changes from epoch to epoch, the same offsets for the same seed."""
    from tfattn.tasks.language_model import LanguageModelConfig, LanguageModelTask

    ids = np.arange(1, 108, dtype=np.int32)  # 106 predicted tokens: 13 blocks of 8 fit at offset 0
    task = LanguageModelTask(LanguageModelConfig(data="unused.txt", block_size=8, batch_size=4, seed=3).resolve())

    def epochs(count):
        order, blocks, _ = task._in_memory_order(ids)
        assert blocks == 12 and order.batches_per_epoch == 3
        drawn = []
        for _ in range(count):
            inputs, labels = (np.concatenate(part) for part in zip(*[(x.numpy(), y.numpy()) for x, y in order.dataset]))
            np.testing.assert_array_equal(labels, inputs + 1)
            np.testing.assert_array_equal(inputs - inputs[:, :1], np.tile(np.arange(8), (12, 1)))
            starts = np.sort(inputs[:, 0])
            np.testing.assert_array_equal(np.diff(starts), 8)  # every block of the epoch, none twice
            drawn.append(int(starts[0]) - 1)
        return drawn

    offsets = epochs(6)
    assert all(0 <= offset < 8 for offset in offsets) and len(set(offsets)) > 1
    assert epochs(6) == offsets  # seeded


@pytest.mark.slow
def test_an_interrupted_lm_run_resumes_to_the_uninterrupted_result(text_file, tmp_path, capsys):
    """In memory, each epoch's offset is drawn per iterator: the resumed run replays the finished
    epochs' iterators, so it trains on the same blocks and logs the same losses."""
    from conftest import InterruptTraining

    from tfattn.tasks.language_model import LanguageModelConfig
    from tfattn.training.loop import train

    def config(run_dir):
        return LanguageModelConfig(
            data=str(text_file),
            run_dir=str(run_dir),
            vocab_size=400,
            block_size=32,
            embed_dim=16,
            num_heads=2,
            ff_dim=32,
            num_blocks=1,
            batch_size=16,
            epochs=3,
            dropout=0.0,  # (a resumed run draws other dropout masks)
        )

    def losses(run_dir):
        with open(run_dir / "history.csv", newline="") as handle:
            return [(float(row["loss"]), float(row["val_loss"])) for row in csv.DictReader(handle)]

    train(config(tmp_path / "whole"))
    with pytest.raises(KeyboardInterrupt):
        train(config(tmp_path / "resumed"), callbacks=[InterruptTraining(1)])  # after epoch 2, before its backup
    train(config(tmp_path / "resumed"))
    assert "resuming the interrupted run" in capsys.readouterr().out
    assert losses(tmp_path / "resumed") == [pytest.approx(row, rel=1e-5) for row in losses(tmp_path / "whole")]
