"""The attention explorer: one self-contained HTML page per text, every family.

The page (all JavaScript and CSS inlined, no network request, opens from disk) shows a head view,
a model view (layers x heads), a heatmap with token labels, the prediction, and four views of the
attention: raw per head, mean over heads, rollout and gradient-weighted
(`tfattn.explorer.explain`). Two runs on the same text are drawn side by side with their
difference. Every map shows how far it is from uniform (`tfattn.attention.attention_uniformity`,
1 = uniform) and is coloured on an absolute scale (0 to 1 for attention weights) unless the
page's "Colour" control asks for each map stretched over its own range.

Example:
>>> from tfattn.explorer import explore
>>> page = explore("runs/agnews", "Oil prices rose", compare="runs/agnews_other")  # doctest: +SKIP
>>> page.save("oil.html")  # doctest: +SKIP

In a notebook, a page displays itself inline (`page` as the cell's last line).

Images: `explain_image` and `image_explorer_page` (`tfattn.explorer.images`) draw a Vision
Transformer's class-token attention over the image's patches (raw per head, rollout,
gradient-weighted) and each head's mean attention distance in the same page;
`plot_image_attention` writes the same as a PNG.

The command line: `tfattn attention --run RUN "text" --html out.html [--compare OTHER_RUN]`.
"""

import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tfattn.explorer.explain import VIEW_LABELS, Explanation, explain, explain_generation, family_name
from tfattn.explorer.images import (
    IMAGE_VIEW_LABELS,
    ImageExplanation,
    explain_image,
    image_explorer_page,
    mean_attention_distance,
    plot_image_attention,
)
from tfattn.explorer.page import PAYLOAD_FORMAT, render_page, write_page
from tfattn.models.task_models import TaskModel

__all__ = [
    "FAITHFULNESS",
    "IMAGE_VIEW_LABELS",
    "VIEW_LABELS",
    "Explanation",
    "ExplorerPage",
    "ImageExplanation",
    "explain",
    "explain_generation",
    "explain_image",
    "explore",
    "explorer_page",
    "faithfulness_legend",
    "family_name",
    "image_explorer_page",
    "mean_attention_distance",
    "plot_image_attention",
]

# AOPC comprehensiveness of each token ranking per family, on 500 AG News validation texts
# (`bench/attention_faithfulness.py`, BENCHMARKS.md "Attention faithfulness"): how much deleting
# the tokens a view ranks first lowers the predicted probability. A test checks these against
# bench/results/attention_faithfulness.json.
FAITHFULNESS = {
    "from scratch": {"raw": 0.0886, "rollout": 0.0886, "gradient": 0.3862, "random": 0.0374},
    "Hugging Face": {"raw": 0.1004, "rollout": 0.1062, "gradient": 0.2591, "random": 0.0247},
    "TF-Hub": {"raw": 0.1893, "rollout": 0.0688, "random": 0.02},
}
_RANKING_NAMES = {"raw": "raw last-layer attention", "rollout": "rollout", "gradient": "gradient-weighted attention"}


def faithfulness_legend(family: str) -> str | None:
    """The page's legend: which view ranked tokens best for this family, with the figures."""
    figures = FAITHFULNESS.get(family)
    if not figures:
        return None
    ranked = sorted((method for method in figures if method != "random"), key=figures.get, reverse=True)
    others = ", ".join(f"{_RANKING_NAMES[method]} {figures[method]:.3f}" for method in ranked[1:])
    missing = "" if "gradient" in figures else " (this family has no gradient view)"
    return (
        f"Which view to trust: for the {family} family on AG News, {_RANKING_NAMES[ranked[0]]} ranked tokens "
        f"best{missing}. "
        f"Deleting its top tokens lowered the predicted probability by {figures[ranked[0]]:.3f} on average "
        f"(AOPC comprehensiveness, 500 validation texts), against {others} and {figures['random']:.3f} for a "
        "random order (BENCHMARKS.md, bench/attention_faithfulness.py)."
    )


@dataclass
class ExplorerPage:
    """An explorer page: its payload (`tfattn/explorer/page.py` documents the format), its HTML,
    and saving; shown inline in a notebook."""

    payload: dict

    @property
    def html(self) -> str:
        return render_page(self.payload)

    def save(self, path: str | Path) -> Path:
        """Write the page to `path` (one self-contained .html file) and return the path."""
        return write_page(self.payload, path)

    def _repr_html_(self):
        # An iframe keeps the page's script and styles apart from the notebook's own.
        return f'<iframe srcdoc="{html.escape(self.html)}" style="width:100%;height:900px;border:0"></iframe>'


def explore(
    run: str | Path | TaskModel,
    text: str,
    compare: str | Path | TaskModel | None = None,
    text_pair: str | None = None,
    layers: Sequence[int] | None = None,
    max_tokens: int = 64,
    label_names: Sequence[str] | None = None,
    title: str | None = None,
) -> ExplorerPage:
    """The explorer page of `text` for a run (a run folder or a task model), optionally beside a
    second one (`compare`): e.g. a frozen and a fine-tuned backbone, or two seeds.

    Args:
        run, compare: run folders written by `tfattn train`, or task models (a language model's
            run: the page of its greedy continuation of `text`, see `explain_generation`).
        text, text_pair: the text (and a second one, for a BERT sentence pair).
        layers: layer indices to include (default all; fewer layers make a smaller file).
        max_tokens: show at most this many tokens; the page says what was cropped.
        label_names: class names of a task model passed directly (run folders have their own).
        title: the page title (default: the start of the text).
    """
    explanations = [
        _explain_one(source, text, text_pair, layers, max_tokens, label_names)
        for source in ([run] if compare is None else [run, compare])
    ]
    return explorer_page(explanations, title)


def explorer_page(explanations: Sequence[Explanation], title: str | None = None) -> ExplorerPage:
    """The page of one explanation, or of two of the same text side by side: their difference is
    drawn when both have the same tokens, layers and heads. The title defaults to the text's
    first 80 characters."""
    main = explanations[0]
    if title is None:
        title = main.text if len(main.text) <= 80 else main.text[:77] + "..."
    same_grid = all(
        (other.tokens, other.layers, other.num_heads) == (main.tokens, main.layers, main.num_heads)
        for other in explanations[1:]
    )
    return ExplorerPage(
        {
            "format": PAYLOAD_FORMAT,
            "title": title,
            # The figures are AG News classifiers': a language model's page has no legend.
            "legend": None if main.prediction["type"] == "generation" else faithfulness_legend(main.family),
            "runs": [explanation.to_payload() for explanation in explanations],
            "difference": len(explanations) == 2 and same_grid,
        }
    )


def _explain_one(source, text, text_pair, layers, max_tokens, label_names) -> Explanation:
    if isinstance(source, TaskModel):
        return explain(source, text, label_names, text_pair, layers, max_tokens, name=source.name)
    from tfattn.tasks.base import open_run, wrong_command

    task, model = open_run(source, "tfattn attention")
    if not task.explorable:
        raise wrong_command(source, type(task), "tfattn attention --html")
    explanation = task.explain(model, text, Path(source).name, text_pair, max_tokens)
    return explanation if layers is None else explanation.with_layers(layers)
