"""Tests of tfattn.evaluation: metric values on a hand-checked example and the files written to a run."""

import json

import numpy as np
import pytest
from matplotlib.image import imread

from tfattn.evaluation import ClassificationReport, classification_metrics, write_evaluation

LABELS = ["world", "sports", "business", "sci/tech"]
# Class 3 ("sci/tech") never occurs in y_true and is never predicted.
Y_TRUE = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
Y_PRED = [0, 0, 0, 1, 1, 1, 0, 2, 2, 1]


@pytest.fixture
def report():
    return classification_metrics(Y_TRUE, Y_PRED, LABELS)


def test_metrics_match_hand_computed_values(report):
    assert isinstance(report, ClassificationReport)
    assert report.num_examples == 10
    assert report.accuracy == pytest.approx(0.7)
    assert report.confusion == [
        [3, 1, 0, 0],
        [1, 2, 0, 0],
        [0, 1, 2, 0],
        [0, 0, 0, 0],
    ]
    # world: P 3/4, R 3/4; sports: P 2/4, R 2/3; business: P 2/2, R 2/3; sci/tech: all 0.
    f1_world = 0.75
    f1_sports = 2 * 0.5 * (2 / 3) / (0.5 + 2 / 3)
    f1_business = 2 * 1.0 * (2 / 3) / (1.0 + 2 / 3)
    assert report.per_class["world"] == pytest.approx({"precision": 0.75, "recall": 0.75, "f1": 0.75, "support": 4})
    assert report.per_class["sports"]["precision"] == pytest.approx(0.5)
    assert report.per_class["sports"]["recall"] == pytest.approx(2 / 3)
    assert report.per_class["business"]["f1"] == pytest.approx(0.8)
    assert report.macro_f1 == pytest.approx((f1_world + f1_sports + f1_business + 0.0) / 4)


def test_absent_class_is_reported_with_zero_support(report):
    assert report.label_names == LABELS
    assert report.per_class["sci/tech"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_format_text_lists_every_class_and_the_summary(report):
    text = report.format_text()
    for name in LABELS:
        assert name in text
    assert "accuracy 0.7000" in text
    assert f"macro-F1 {report.macro_f1:.4f}" in text


def test_length_mismatch_and_empty_input_raise():
    with pytest.raises(ValueError, match="10 labels but y_pred has 9"):
        classification_metrics(Y_TRUE, Y_PRED[:-1], LABELS)
    with pytest.raises(ValueError, match="no examples"):
        classification_metrics([], [], LABELS)


def test_class_id_outside_label_names_raises():
    with pytest.raises(ValueError, match="y_pred"):
        classification_metrics([0, 1], [0, 4], LABELS)


def test_write_evaluation_writes_scores_report_and_confusion_png(report, tmp_path):
    run_dir = tmp_path / "run" / "nested"
    config = {"epochs": 3, "data": tmp_path / "test.csv"}
    paths = write_evaluation(report, run_dir, prefix="test", config=config)

    assert set(paths) == {"scores", "report", "confusion"}
    assert paths["scores"] == run_dir / "test_scores.json"
    assert paths["report"] == run_dir / "test_report.txt"
    assert paths["confusion"] == run_dir / "test_confusion.png"

    metrics = json.loads(paths["scores"].read_text(encoding="utf-8"))
    saved_config = metrics.pop("config")
    assert saved_config == {"epochs": 3, "data": str(tmp_path / "test.csv")}
    assert metrics == report.to_dict()
    assert paths["report"].read_text(encoding="utf-8").strip() == report.format_text().strip()

    png = paths["confusion"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 5_000
    pixels = imread(png)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 10


def test_write_evaluation_without_config_keeps_plain_report(report, tmp_path):
    paths = write_evaluation(report, tmp_path)
    assert paths["scores"].name == "eval_scores.json"
    assert json.loads(paths["scores"].read_text(encoding="utf-8")) == report.to_dict()
