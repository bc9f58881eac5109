"""Classification metrics of a run: accuracy, per-class scores, confusion matrix, and the files they go to.

No TensorFlow here: predictions come in as integer class ids, so evaluation can be rerun on
saved predictions without loading a model.
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support


@dataclass
class ClassificationReport:
    """Scores of one evaluation; `confusion[true][predicted]` counts examples."""

    accuracy: float
    macro_f1: float
    per_class: dict[str, dict]  # label name -> {"precision", "recall", "f1", "support"}
    confusion: list[list[int]]
    label_names: list[str]
    num_examples: int

    def to_dict(self):
        """Plain python types only, so the result goes straight into `json.dump`."""
        return asdict(self)

    def format_text(self, digits=4):
        """A table of per-class precision/recall/F1/support followed by accuracy and macro-F1."""
        name_width = max(len(name) for name in self.label_names)
        number_width = max(digits + 3, len("precision"))
        columns = ("precision", "recall", "f1", "support")
        lines = [" " * name_width + "".join(f"  {column:>{number_width}}" for column in columns)]
        for name in self.label_names:
            scores = self.per_class[name]
            cells = [f"{scores[key]:.{digits}f}" for key in ("precision", "recall", "f1")]
            cells.append(str(scores["support"]))
            lines.append(f"{name:>{name_width}}" + "".join(f"  {cell:>{number_width}}" for cell in cells))
        lines.append("")
        lines.append(
            f"accuracy {self.accuracy:.{digits}f}  macro-F1 {self.macro_f1:.{digits}f}  examples {self.num_examples}"
        )
        return "\n".join(lines)


def classification_metrics(y_true, y_pred, label_names):
    """Scores of predicted class ids `y_pred` against `y_true` (both ints in 0..len(label_names)-1).

    Every class is reported, also one that never occurs (its support is 0 and its scores 0),
    so reports of different data sets line up.
    """
    y_true = np.asarray(y_true).reshape(-1)
    y_pred = np.asarray(y_pred).reshape(-1)
    label_names = [str(name) for name in label_names]
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} labels but y_pred has {len(y_pred)}")
    if len(y_true) == 0:
        raise ValueError("no examples to evaluate")
    num_classes = len(label_names)
    for name, values in (("y_true", y_true), ("y_pred", y_pred)):
        # sklearn silently drops ids outside `labels`, which would hide a label-mapping bug.
        if values.min() < 0 or values.max() >= num_classes:
            raise ValueError(f"{name} has class ids outside 0..{num_classes - 1} ({num_classes} label names)")

    labels = list(range(num_classes))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    per_class = {
        name: {
            "precision": float(precision[index]),
            "recall": float(recall[index]),
            "f1": float(f1[index]),
            "support": int(support[index]),
        }
        for index, name in enumerate(label_names)
    }
    return ClassificationReport(
        accuracy=float(accuracy_score(y_true, y_pred)),
        macro_f1=float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        per_class=per_class,
        confusion=confusion_matrix(y_true, y_pred, labels=labels).astype(int).tolist(),
        label_names=label_names,
        num_examples=int(len(y_true)),
    )


def save_confusion_matrix_png(confusion, label_names, path, title=None, normalize=True):
    """Draw the confusion matrix as an annotated heatmap (rows true, columns predicted) into a PNG.

    With `normalize`, colours show each row's share (recall per true class) so that rare and
    frequent classes are equally readable, and cells show the share next to the count.
    """
    counts = np.asarray(confusion, dtype=np.int64)
    num_classes = len(label_names)
    if counts.shape != (num_classes, num_classes):
        raise ValueError(f"confusion has shape {counts.shape}, expected ({num_classes}, {num_classes})")
    row_totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, row_totals, out=np.zeros(counts.shape), where=row_totals > 0)
    colours = shares if normalize else counts

    side = 1.5 + 0.6 * max(num_classes, 3)
    figure = Figure(figsize=(side + 1.0, side), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    image = axes.imshow(colours, cmap="Blues", vmin=0, vmax=1 if normalize else max(int(counts.max()), 1))
    figure.colorbar(image, ax=axes, label="share of true class" if normalize else "count")

    ticks = np.arange(num_classes)
    axes.set_xticks(ticks, labels=label_names, rotation=45, ha="right", rotation_mode="anchor")
    axes.set_yticks(ticks, labels=label_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    if title:
        axes.set_title(title)

    font_size = 9 if num_classes <= 10 else 6
    # Switch the text to white where the cell is dark enough that black would vanish.
    dark_threshold = 0.5 * (1 if normalize else counts.max())
    for row in range(num_classes):
        for column in range(num_classes):
            text = str(counts[row, column])
            if normalize:
                text += f"\n{shares[row, column]:.0%}"
            colour = "white" if colours[row, column] > dark_threshold else "black"
            axes.text(column, row, text, ha="center", va="center", color=colour, fontsize=font_size)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


def write_evaluation(report, run_dir, prefix="eval", config=None):
    """Write `{prefix}_scores.json`, `{prefix}_report.txt` (`tfattn.runs.folders.write_report`,
    as every task) and `{prefix}_confusion.png` into `run_dir`.

    `config` (e.g. the run's settings or which data was evaluated) is stored in the JSON under
    "config" so the scores file says what it measured. Returns {"scores", "report", "confusion"} paths.
    """
    from tfattn.runs.folders import write_report

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    scores = report.to_dict()
    if config is not None:
        # Through JSON with default=str: paths and similar values in a config do not fail the write.
        scores["config"] = json.loads(json.dumps(config, default=str))
    scores_path, report_path = write_report(run_dir, prefix, scores, report.format_text())
    paths = {"scores": scores_path, "report": report_path, "confusion": run_dir / f"{prefix}_confusion.png"}
    save_confusion_matrix_png(
        report.confusion,
        report.label_names,
        paths["confusion"],
        title=f"{prefix}: accuracy {report.accuracy:.3f}, macro-F1 {report.macro_f1:.3f}",
    )
    return paths
