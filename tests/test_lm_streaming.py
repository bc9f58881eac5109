"""Language models on streamed text (`tfattn train lm --stream`): the streamed blocks are the
in-memory token stream, each worker reads its own files, an interrupted run resumes to the
uninterrupted result, and options that need the text in memory stop in one line."""

import csv

import numpy as np
import pytest
from conftest import InterruptTraining, shared_data_dir

from tfattn.cli import main
from tfattn.data.examples import DataError
from tfattn.data.text import read_text_corpus, stream_token_blocks
from tfattn.models.causal_lm import END_OF_TEXT, LanguageModelPreprocessor
from tfattn.tasks.language_model import LanguageModelConfig
from tfattn.training.loop import train

TINY = dict(vocab_size=400, block_size=16, embed_dim=16, num_heads=2, ff_dim=32, num_blocks=1, batch_size=8)


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """Three .txt files of Tiny Shakespeare (each ending with a newline, as the stream reads
    lines), and a validation file."""
    text = (shared_data_dir() / "text" / "tiny_shakespeare_train.txt").read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    folder = tmp_path_factory.mktemp("parts")
    for index in range(3):
        (folder / f"part-{index}.txt").write_text("".join(lines[index * 150 : (index + 1) * 150]), encoding="utf-8")
    (folder / "valid.txt").write_text("".join(lines[450:520]), encoding="utf-8")
    return folder


def test_streamed_blocks_are_the_in_memory_token_stream_repeated(parts):
    files = sorted(parts.glob("part-*.txt"))
    documents = read_text_corpus(files).documents
    preprocessor = LanguageModelPreprocessor.learn(documents, vocab_size=400)
    one_pass = preprocessor.encode_stream(documents)  # end-of-text, each file, end-of-text after each
    expected = np.concatenate([one_pass, one_pass[1:], one_pass[1:]])  # the files over and over
    blocks = stream_token_blocks(files, preprocessor.vocabulary.tokenize, END_OF_TEXT, block_size=15)
    count = (2 * len(one_pass)) // 16
    inputs, labels = zip(*[(i.numpy(), y.numpy()) for i, y in blocks.take(count)])
    np.testing.assert_array_equal(
        np.concatenate([np.append(i, y[-1]) for i, y in zip(inputs, labels)]), expected[: count * 16]
    )
    np.testing.assert_array_equal(np.stack(inputs)[:, 1:], np.stack(labels)[:, :-1])  # labels: the next token

    # Worker 1 of 2 reads the second file only (files[1::2]).
    second = preprocessor.encode_stream([documents[1]])
    worker = stream_token_blocks(
        files, preprocessor.vocabulary.tokenize, END_OF_TEXT, 15, worker_index=1, num_workers=2
    )
    first_block = next(iter(worker))
    np.testing.assert_array_equal(np.append(first_block[0].numpy(), first_block[1].numpy()[-1]), second[:16])
    with pytest.raises(DataError, match="4 workers but 3 data files: sharding is by file"):
        stream_token_blocks(files, preprocessor.vocabulary.tokenize, END_OF_TEXT, 15, num_workers=4)


def losses(run_dir):
    with open(run_dir / "history.csv", newline="") as handle:
        return [(int(row["epoch"]), float(row["loss"]), float(row["val_loss"])) for row in csv.DictReader(handle)]


@pytest.mark.slow
def test_a_streamed_lm_run_resumes_to_the_uninterrupted_result(parts, tmp_path, capsys):
    def config(run_dir):
        return LanguageModelConfig(
            data=str(parts / "part-*.txt"),
            validation_data=str(parts / "valid.txt"),
            stream=True,
            shuffle_buffer=50,
            dropout=0.0,  # (a resumed run draws other dropout masks)
            epochs=3,
            run_dir=str(run_dir),
            **TINY,
        )

    whole = train(config(tmp_path / "whole"))
    assert "streamed from 3 file(s)" in capsys.readouterr().out
    with pytest.raises(KeyboardInterrupt):
        train(config(tmp_path / "resumed"), callbacks=[InterruptTraining(1)])  # after epoch 2, before its backup
    resumed = train(config(tmp_path / "resumed"))
    assert "resuming the interrupted run" in capsys.readouterr().out
    # The stream is rebuilt and the consumed batches skipped: the same batches, the same losses.
    assert [row[0] for row in losses(tmp_path / "resumed")] == [0, 1, 2]
    assert [row[1:] for row in losses(tmp_path / "resumed")] == [
        pytest.approx(row[1:], rel=1e-5) for row in losses(tmp_path / "whole")
    ]
    assert resumed["bits_per_char"] == pytest.approx(whole["bits_per_char"], rel=1e-5)
    assert main(["generate", "--run", str(tmp_path / "whole"), "ROMEO:", "--max-new-tokens", "4"]) == 0
    assert capsys.readouterr().out.startswith("ROMEO:")


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "--stream needs --validation-data: a text file read into memory (streams are not split)"),
        (["--validation-data", "V", "--separator", "\\n\\n"], "--separator reads the text into memory"),
        (["--validation-data", "V", "--backbone", "gpt2"], "--backbone reads the text into memory"),
        (["--validation-data", "V", "--limit", "100"], "--limit reads the text into memory"),
    ],
)
def test_options_that_need_the_text_in_memory_are_refused_with_stream(parts, tmp_path, capsys, extra, message):
    extra = [str(parts / "valid.txt") if value == "V" else value for value in extra]
    run_dir = tmp_path / "run"
    assert main(["train", "lm", "--stream", "--data", str(parts), "--run-dir", str(run_dir), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not run_dir.exists()


def test_a_streamed_file_that_is_not_text_is_named(parts, tmp_path, capsys):
    rows = tmp_path / "rows.csv"
    rows.write_text("text\nsome words\n", encoding="utf-8")
    run_dir = tmp_path / "run"
    validation = ["--validation-data", str(parts / "valid.txt")]
    assert main(["train", "lm", "--stream", "--data", str(rows), *validation, "--run-dir", str(run_dir)]) == 2
    assert f"{rows}: --stream reads .txt files (each one document), not '.csv'" in capsys.readouterr().err
    assert not run_dir.exists()
