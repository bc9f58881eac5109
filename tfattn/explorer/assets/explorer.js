/*
 * The tfattn attention explorer: draws the payload embedded in this page (format
 * "tfattn-attention-explorer/1", documented in tfattn/explorer/page.py).
 *
 * Plain JavaScript, no library and no network: everything comes from the JSON block of the page.
 * Per run it draws a head view (lines from query to key tokens), a model view (a thumbnail per
 * layer and head) and a heatmap; with two runs that line up cell by cell, also their difference.
 *
 * Every map is coloured on an absolute scale by default (0 to 1 for attention weights), so a
 * near-uniform map looks as even as it is; the "Colour" control stretches each map to its own
 * range instead. Each map's uniformity (row entropy over log n, averaged over rows: 1 = uniform)
 * is shown beside it, computed here on the values drawn, as `attention_uniformity` in
 * tfattn/plotting.py computes it.
 *
 * Runs of kind "image" (a Vision Transformer's view of one image) get their own page
 * (ImageExplorer): the image with the class token's attention over its patches laid on it, a
 * thumbnail per layer and head, and each head's mean attention distance.
 *
 * One `state` object holds what the controls say; any change redraws everything from it
 * (Explorer.render, ImageExplorer.render). Hovering a token only toggles CSS classes, so it
 * stays fast with thousands of lines. Text from the payload is only ever set as text, never
 * parsed as HTML.
 */
"use strict";

const PAYLOAD_FORMAT = "tfattn-attention-explorer/1";

// The SVG namespace, taken from the HTML parser instead of written out: the page holds no URL.
const SVG_NS = (() => {
  const template = document.createElement("template");
  template.innerHTML = "<svg></svg>";
  return template.content.firstChild.namespaceURI;
})();

// Head view: lines weaker than this fraction of their matrix's maximum are left out, as clutter.
const LINE_THRESHOLD = 0.02;
const ROW_HEIGHT = 18; // head view: pixels per token
const LINE_SPAN = 160; // head view: pixels between the query and the key column
const LABEL_FONT = "12px system-ui, sans-serif"; // the font of SVG token labels (explorer.css)
// Measures label widths, so that token columns are as wide as their longest label.
const measure = document.createElement("canvas").getContext("2d");
const MAX_LABEL_CHARS = 20; // longer tokens are cut with "…"; their tooltip has them whole
const THUMB_SIZE = 64; // model view: pixels per thumbnail
// Heatmap cells aim to fill this many pixels, within these bounds (small cells stay legible).
const HEATMAP_TARGET = 560;
const MIN_CELL = 13;
const MAX_CELL = 36;

// Names of views that have no VIEW object to take a label from (unavailable ones).
const VIEW_NAMES = {
  raw: "Raw attention (per head)",
  mean: "Mean over heads",
  rollout: "Attention rollout",
  gradient: "Gradient-weighted attention (per head)",
};

// Colour scales as RGB stops: white to dark blue for weights, blue-white-red for differences.
const SEQUENTIAL = [
  [255, 255, 255],
  [198, 219, 239],
  [107, 174, 214],
  [33, 113, 181],
  [8, 48, 107],
];
const DIVERGING = [
  [33, 102, 172],
  [146, 197, 222],
  [255, 255, 255],
  [244, 165, 130],
  [178, 24, 43],
];
// The colour scales the "Colour" control offers, with the names it shows.
const SCALES = {
  absolute: "absolute (0 to 1)",
  stretched: "stretched (min to max)",
};
// Colours of the entity types of a "tags" prediction, in the order their labels first appear.
const TAG_COLORS = ["#8dd3c7", "#fdb462", "#bebada", "#fb8072", "#80b1d3", "#b3de69", "#fccde5", "#ffed6f"];

/** Draw the page, or say why not (in the page and in the console). */
function main() {
  const root = document.getElementById("explorer");
  try {
    const payload = JSON.parse(document.getElementById("tfattn-explorer-data").textContent);
    if (payload.format !== PAYLOAD_FORMAT) {
      throw new Error(`the payload's format is ${payload.format}; this page reads ${PAYLOAD_FORMAT}`);
    }
    // A page shows runs of one kind: texts (Explorer) or images (ImageExplorer).
    const images = payload.runs.filter((run) => run.kind === "image").length;
    if (images && images !== payload.runs.length) throw new Error("the payload mixes image and text runs");
    (images ? new ImageExplorer(root, payload) : new Explorer(root, payload)).render();
    document.body.dataset.ready = "true";
  } catch (error) {
    root.replaceChildren(el("p", { class: "error" }, `The explorer could not draw this page: ${error.message}`));
    document.body.dataset.ready = "error";
    throw error;
  }
}

/** The page: header, controls, one panel per run, the difference map; `render` redraws them. */
class Explorer {
  constructor(root, payload) {
    this.payload = payload;
    this.runs = payload.runs.map(decodeRun);
    this.layers = [...new Set(this.runs.flatMap((run) => run.layers))].sort((a, b) => a - b);
    this.viewNames = [
      ...new Set(this.runs.flatMap((run) => [...Object.keys(run.views), ...Object.keys(run.unavailable)])),
    ];
    this.numHeads = Math.max(...this.runs.map((run) => run.num_heads));
    this.state = {
      layer: this.layers[0],
      // The first view some run has; else the first missing one, whose panels then say why.
      view: this.viewNames.find((name) => this.runs.some((run) => run.views[name])) ?? this.viewNames[0],
      heads: new Set(range(this.numHeads)),
      hideSpecial: false,
      scale: "absolute", // "absolute" or "stretched" (SCALES)
      shown: this.runs.length === 2 ? "compare" : "0", // "compare", or the index of the one run shown
    };
    document.title = payload.title;
    root.replaceChildren(this.buildHeader(), this.buildControls(), this.buildPanels(), this.buildDifference());
  }

  /** Title, legend, and per run its name, text, prediction and notes. */
  buildHeader() {
    const header = el("header", { class: "page-header" }, el("h1", {}, this.payload.title));
    if (this.payload.legend) {
      header.append(el("p", { class: "legend", "data-testid": "legend" }, this.payload.legend));
    }
    header.append(el("div", { class: "summaries" }, ...this.runs.map(runSummary)));
    return header;
  }

  /** Layer, view, heads, special tokens, colour scale and (with two runs) which runs to show. */
  buildControls() {
    const state = this.state;
    this.layerSelect = el(
      "select",
      { id: "layer-select" },
      ...this.layers.map((layer) => el("option", { value: layer }, `layer ${layer}`)),
    );
    this.layerSelect.addEventListener("change", () => {
      state.layer = Number(this.layerSelect.value);
      this.render();
    });

    const views = viewOptions(this.runs, this.viewNames, VIEW_NAMES);
    this.viewSelect = el("select", { id: "view-select" }, ...views.options);
    this.viewSelect.addEventListener("change", () => {
      state.view = this.viewSelect.value;
      this.render();
    });

    this.headToggles = range(this.numHeads).map((head) => {
      const toggle = el(
        "button",
        {
          type: "button",
          class: "head-toggle",
          "data-testid": "head-toggle",
          "data-head": head,
          title: `head ${head}`,
        },
        `${head}`,
      );
      toggle.style.setProperty("--head-color", headColor(head));
      toggle.addEventListener("click", () => {
        if (!state.heads.delete(head)) state.heads.add(head);
        this.render();
      });
      return toggle;
    });

    this.hideSpecialBox = el("input", { type: "checkbox", id: "hide-special" });
    this.hideSpecialBox.addEventListener("change", () => {
      state.hideSpecial = this.hideSpecialBox.checked;
      this.render();
    });

    this.scaleSelect = el(
      "select",
      { id: "scale-select", title: "absolute: a near-uniform map looks even; stretched: small differences look large" },
      ...Object.entries(SCALES).map(([name, label]) => el("option", { value: name }, label)),
    );
    this.scaleSelect.addEventListener("change", () => {
      state.scale = this.scaleSelect.value;
      this.render();
    });

    const controls = el(
      "div",
      { class: "controls" },
      el("label", {}, "Layer ", this.layerSelect),
      el("label", {}, "View ", this.viewSelect),
      el("span", { class: "heads" }, "Heads ", ...this.headToggles),
      el("label", {}, this.hideSpecialBox, " hide special tokens"),
      el("label", {}, "Colour ", this.scaleSelect),
    );
    if (this.runs.length === 2) {
      this.runSelect = el(
        "select",
        { id: "run-select" },
        el("option", { value: "compare" }, "compare: both side by side"),
        ...this.runs.map((run, index) => el("option", { value: index }, `only ${run.name}`)),
      );
      this.runSelect.addEventListener("change", () => {
        state.shown = this.runSelect.value;
        this.render();
      });
      controls.append(el("label", {}, "Runs ", this.runSelect));
    }
    return el("section", { class: "controls-bar" }, controls, ...views.notes);
  }

  /** One panel per run, each with its head view, model view and heatmap. */
  buildPanels() {
    this.panels = this.runs.map((run, index) => {
      const panel = {
        run,
        message: el("p", { class: "panel-message", "data-testid": "panel-message" }),
        uniformity: el("p", { class: "uniformity", "data-testid": "uniformity" }),
        headView: svgEl("svg", { class: "head-view", "data-testid": "head-view" }),
        modelView: el("div", { class: "model-view", "data-testid": "model-view" }),
        caption: el("p", { class: "caption", "data-testid": "heatmap-caption" }),
        heatmap: svgEl("svg", { class: "heatmap", "data-testid": "heatmap" }),
      };
      const figure = (title, note, content) =>
        el("div", { class: "figure" }, el("h3", {}, title), note, el("div", { class: "scroll" }, content));
      panel.figures = el(
        "div",
        { class: "figures" },
        figure(
          "Head view",
          el("p", { class: "hint" }, "Queries left, keys right. Hover a token to see only its lines."),
          panel.headView,
        ),
        figure(
          "Model view",
          el(
            "p",
            { class: "hint" },
            "Every layer and head of this view, each with its uniformity (1 = uniform); click one to enlarge it.",
          ),
          panel.modelView,
        ),
        figure("Heatmap", panel.caption, panel.heatmap),
      );
      panel.element = el(
        "section",
        { class: "run-panel", "data-testid": "run-panel", "data-run": index },
        el("h2", {}, run.name, " ", el("span", { class: "family" }, run.family)),
        panel.message,
        panel.uniformity,
        panel.figures,
      );
      return panel;
    });
    this.panelsElement = el("div", { class: "panels" }, ...this.panels.map((panel) => panel.element));
    return this.panelsElement;
  }

  /** The difference map of two runs (drawn only in compare mode). */
  buildDifference() {
    this.differenceNote = el("p", { class: "note", "data-testid": "difference-note" });
    this.differenceCaption = el("p", { class: "caption", "data-testid": "difference-caption" });
    this.differenceMap = svgEl("svg", { class: "heatmap", "data-testid": "difference-map" });
    this.differenceFigure = el("div", {}, this.differenceCaption, el("div", { class: "scroll" }, this.differenceMap));
    this.differenceSection = el(
      "section",
      { class: "difference", "data-testid": "difference-section" },
      el("h2", {}, "Difference"),
      this.differenceNote,
      this.differenceFigure,
    );
    return this.differenceSection;
  }

  /** Redraw everything from `this.state`. */
  render() {
    const state = this.state;
    this.layerSelect.value = state.layer;
    this.viewSelect.value = state.view;
    this.hideSpecialBox.checked = state.hideSpecial;
    this.scaleSelect.value = state.scale;
    // Views with one map per layer (mean, rollout) have no heads to choose.
    const perHead = this.runs.some((run) => run.views[state.view]?.heads > 1);
    for (const toggle of this.headToggles) {
      toggle.disabled = !perHead;
      toggle.setAttribute("aria-pressed", perHead && state.heads.has(Number(toggle.dataset.head)));
    }
    if (this.runSelect) this.runSelect.value = state.shown;
    this.panelsElement.classList.toggle("side-by-side", state.shown === "compare");
    this.panels.forEach((panel, index) => {
      panel.element.hidden = state.shown !== "compare" && state.shown !== String(index);
      if (!panel.element.hidden) this.renderPanel(panel);
    });
    this.renderDifference();
  }

  /** One run's figures for the current state, or a line saying why they cannot be drawn. */
  renderPanel(panel) {
    const run = panel.run;
    const view = run.views[this.state.view];
    if (!view) {
      const reason = run.unavailable[this.state.view] ?? "it was not computed";
      showMessage(panel, `${this.viewLabel(this.state.view)} is not available for this run: ${reason}.`);
      panel.figures.hidden = true;
      panel.uniformity.hidden = true;
      return;
    }
    panel.figures.hidden = false;
    drawModelView(panel.modelView, run, view, this.state, (layer, head) => this.pick(panel, layer, head));
    const selection = this.selection(run, view);
    showMessage(panel, selection.problem ?? "");
    panel.uniformity.hidden = Boolean(selection.problem);
    if (selection.problem) {
      panel.headView.replaceChildren();
      panel.heatmap.replaceChildren();
      panel.caption.textContent = "";
      return;
    }
    drawHeadView(panel.headView, run, view, selection.layerIndex, selection.heads, this.state.hideSpecial);
    const matrix = shownMatrix(run, view, selection.layerIndex, selection.heads, this.state.hideSpecial);
    const value = uniformity(matrix);
    panel.uniformity.dataset.value = value.toFixed(6);
    panel.uniformity.textContent =
      `Uniformity of this map: ${value.toFixed(3)} (its ${matrix.rows.length} query rows' entropy over ` +
      `log n, n = ${matrix.cols.length} keys, averaged; 1 = every row spread evenly, 0 = every row on one key).`;
    const { low, high } = colourRange(view, matrix, this.state);
    panel.caption.textContent =
      `${view.label}, layer ${this.state.layer}, ${headsText(view, selection.heads)}; ` +
      `rows are queries, columns keys; ${scaleText(view, matrix, this.state)}` +
      (this.state.hideSpecial ? "; special tokens hidden, rows renormalized to sum 1." : ".");
    drawHeatmap(panel.heatmap, run, matrix, (cell) => rgb(SEQUENTIAL, position(cell, low, high)));
  }

  /** runs[0] - runs[1] on a blue-white-red scale symmetric around 0, or why there is none. */
  renderDifference() {
    const [first, second] = this.runs;
    this.differenceSection.hidden = this.runs.length < 2 || this.state.shown !== "compare";
    if (this.differenceSection.hidden) return;
    const views = [first.views[this.state.view], second.views[this.state.view]];
    const selections = views.map((view, index) => view && this.selection(this.runs[index], view));
    let problem = null;
    if (!this.payload.difference) {
      problem =
        "No difference map: the two runs tokenize the text differently or include different layers, " +
        "so their attention matrices do not line up cell by cell.";
    } else if (!views[0] || !views[1]) {
      problem = `No difference map: ${this.viewLabel(this.state.view)} is not available for both runs.`;
    } else if (selections.some((selection) => selection.problem)) {
      problem = `No difference map: ${selections.find((selection) => selection.problem).problem}`;
    }
    this.differenceNote.textContent = problem ?? "";
    this.differenceNote.hidden = !problem;
    this.differenceFigure.hidden = Boolean(problem);
    if (problem) {
      this.differenceMap.replaceChildren();
      return;
    }
    const [a, b] = selections.map((selection, index) =>
      shownMatrix(this.runs[index], views[index], selection.layerIndex, selection.heads, this.state.hideSpecial),
    );
    const values = a.values.map((value, index) => value - b.values[index]);
    // Absolute: as far as either map's absolute scale reaches; stretched: the largest difference.
    const stretched = this.state.scale === "stretched";
    const limit = stretched
      ? values.reduce((largest, value) => Math.max(largest, Math.abs(value)), 0)
      : Math.max(...views.map((view) => absoluteTop(view, this.state.hideSpecial)));
    const scale = stretched
      ? `stretched to the largest difference, -${format(limit)} to +${format(limit)}: small differences look large`
      : `absolute scale, -${format(limit)} to +${format(limit)}`;
    this.differenceCaption.textContent =
      `${first.name} minus ${second.name}: ${views[0].label}, layer ${this.state.layer}, ` +
      `${headsText(views[0], selections[0].heads)}. Red where ${first.name} attends more, blue where ` +
      `${second.name} does; colour on the ${scale}.`;
    drawHeatmap(
      this.differenceMap,
      first,
      { rows: a.rows, cols: a.cols, values },
      (value) => rgb(DIVERGING, limit > 0 ? (value / limit + 1) / 2 : 0.5),
      (value) => (value >= 0 ? "+" : "") + format(value),
    );
  }

  /** The layer index and heads a run draws for the current state, or {problem} saying why none. */
  selection(run, view) {
    const layerIndex = run.layers.indexOf(this.state.layer);
    if (layerIndex < 0) {
      return { problem: `${run.name} has no layer ${this.state.layer} (it has layers ${run.layers.join(", ")}).` };
    }
    const heads =
      view.heads === 1 ? [0] : [...this.state.heads].filter((head) => head < view.heads).sort((a, b) => a - b);
    if (!heads.length) return { problem: "No head selected: pick one with the head buttons above." };
    return { layerIndex, heads };
  }

  /** A model-view thumbnail was clicked: select its layer and head, and show its heatmap. */
  pick(panel, layer, head) {
    this.state.layer = layer;
    if (panel.run.views[this.state.view].heads > 1) this.state.heads = new Set([head]);
    this.render();
    flash(panel.heatmap);
  }

  viewLabel(name) {
    return viewLabel(this.runs, name, VIEW_NAMES);
  }
}

/** The label of view `name`: its VIEW's own, else `defaults`' name for it (views no run has). */
function viewLabel(runs, name, defaults) {
  const view = runs.map((run) => run.views[name]).find(Boolean);
  return view ? view.label : (defaults[name] ?? name);
}

/**
 * The view select's options, each disabled where no run has its view, and `notes`: a list of
 * the views some run lacks, with its reasons (no list when every run has every view).
 */
function viewOptions(runs, names, defaults) {
  const missing = [];
  const options = names.map((name) => {
    const option = el("option", { value: name }, viewLabel(runs, name, defaults));
    const reasons = runs
      .filter((run) => run.unavailable[name] !== undefined)
      .map((run) => (runs.length > 1 ? `${run.name}: ${run.unavailable[name]}` : run.unavailable[name]));
    if (reasons.length) missing.push(`${viewLabel(runs, name, defaults)} is not available (${reasons.join("; ")}).`);
    if (!runs.some((run) => run.views[name])) {
      option.disabled = true;
      option.title = reasons.join("; ");
    }
    return option;
  });
  const notes = missing.length
    ? [el("ul", { class: "notes", "data-testid": "unavailable-views" }, ...missing.map((line) => el("li", {}, line)))]
    : [];
  return { options, notes };
}

/** Bring a picked map into view and play its highlight, restarted so that it plays on every click. */
function flash(element) {
  element.scrollIntoView({ block: "nearest" });
  element.classList.remove("flash");
  void element.getBoundingClientRect();
  element.classList.add("flash");
}

/** A run of the payload with each VIEW's base64 data decoded to bytes once. */
function decodeRun(run) {
  const views = {};
  for (const [name, view] of Object.entries(run.views)) views[name] = { ...view, bytes: base64Bytes(view.data) };
  return { ...run, views };
}

/** The bytes a base64 string stands for. */
function base64Bytes(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let index = 0; index < binary.length; index++) bytes[index] = binary.charCodeAt(index);
  return bytes;
}

/** One stored [Tq, Tk] matrix as floats: value = byte / 255 * its scale. */
function storedMatrix(run, view, layerIndex, head) {
  const size = run.query_tokens.length * run.key_tokens.length;
  const matrix = layerIndex * view.heads + head;
  const step = view.scales[matrix] / 255;
  return Float32Array.from(view.bytes.subarray(matrix * size, (matrix + 1) * size), (byte) => byte * step);
}

/**
 * How close a shown matrix is to uniform: each row's entropy over log n (n = its number of keys),
 * averaged over the rows that have any weight; 1 = every row spread evenly, 0 = every row on one
 * key. A matrix with one key, or with no weight at all, scores 1. The same measure as
 * `attention_uniformity` in tfattn/plotting.py.
 */
function uniformity(matrix) {
  const numKeys = matrix.cols.length;
  if (numKeys <= 1) return 1;
  let total = 0;
  let counted = 0;
  for (let row = 0; row < matrix.rows.length; row++) {
    const cells = matrix.values.subarray(row * numKeys, (row + 1) * numKeys);
    const sum = cells.reduce((total, value) => total + value, 0);
    if (!(sum > 0)) continue; // a row with no weight has no distribution to measure
    let entropy = 0;
    for (const value of cells) if (value > 0) entropy -= (value / sum) * Math.log(value / sum);
    total += entropy / Math.log(numKeys);
    counted += 1;
  }
  return counted ? Math.min(1, total / counted) : 1;
}

/**
 * The top of a view's absolute colour scale: the payload's absolute_max (1 for attention weights,
 * the largest value for gradient-weighted attention), or 1 once hidden special tokens have made
 * every row sum to 1.
 */
function absoluteTop(view, hideSpecial) {
  return hideSpecial ? 1 : (view.absolute_max ?? 1);
}

/** {low, high}: the values the colour scale's white and dark-blue ends stand for. */
function colourRange(view, matrix, state) {
  return state.scale === "stretched"
    ? { low: matrix.min, high: matrix.max }
    : { low: 0, high: absoluteTop(view, state.hideSpecial) };
}

/** The caption's words for the colour scale of a matrix: which scale, and what its ends mean. */
function scaleText(view, matrix, state) {
  const { low, high } = colourRange(view, matrix, state);
  const [min, max] = formatRange(matrix.min, matrix.max);
  if (state.scale === "stretched") {
    return (
      `colour stretched to this map's own range, ${min} (white) to ${max} (dark blue): ` +
      "small differences look large"
    );
  }
  const top = high === 1 ? "" : ", the largest value of this view over its layers and heads";
  return (
    `colour on the absolute scale, 0 (white) to ${high === 1 ? "1" : format(high)} (dark blue)${top}; ` +
    `this map's values run from ${min} to ${max}`
  );
}

/** Where value lies between low and high, as a fraction in [0, 1] (0 when the range is empty). */
function position(value, low, high) {
  return high > low ? (value - low) / (high - low) : 0;
}

/** Original indices of the query rows and key columns shown (special tokens left out when hidden). */
function shownTokens(run, hideSpecial) {
  const kept = (special) => range(special.length).filter((index) => !(hideSpecial && special[index]));
  return { rows: kept(run.query_special), cols: kept(run.key_special) };
}

/**
 * What the page draws of a run at one layer: the mean of `heads`, and with `hideSpecial` the
 * special rows and columns removed and each row renormalized to sum 1 (a row summing to 0 stays 0).
 * Returns {rows, cols, values (row-major, rows x cols), max}; rows and cols are original indices.
 */
function shownMatrix(run, view, layerIndex, heads, hideSpecial) {
  const { rows, cols } = shownTokens(run, hideSpecial);
  const numKeys = run.key_tokens.length;
  const values = new Float32Array(rows.length * cols.length);
  for (const head of heads) {
    const full = storedMatrix(run, view, layerIndex, head);
    rows.forEach((query, row) => {
      cols.forEach((key, col) => {
        values[row * cols.length + col] += full[query * numKeys + key] / heads.length;
      });
    });
  }
  if (hideSpecial) {
    for (let row = 0; row < rows.length; row++) {
      const cells = values.subarray(row * cols.length, (row + 1) * cols.length);
      const sum = cells.reduce((total, value) => total + value, 0);
      if (sum > 0) cells.forEach((value, col) => (cells[col] = value / sum));
    }
  }
  // The smallest and largest value shown: the ends of the stretched colour scale.
  const max = values.reduce((largest, value) => Math.max(largest, value), 0);
  const min = values.reduce((smallest, value) => Math.min(smallest, value), max);
  return { rows, cols, values, min, max };
}

/**
 * The head view: query tokens left, key tokens right, one line per (query, key, head) above
 * LINE_THRESHOLD of its matrix's max, opacity by weight, colour by head. Hovering (or focusing) a
 * token shows only its lines.
 */
function drawHeadView(svg, run, view, layerIndex, heads, hideSpecial) {
  const { rows, cols } = shownTokens(run, hideSpecial);
  const queryWidth = labelWidth(rows.map((query) => run.query_tokens[query]));
  const keyWidth = labelWidth(cols.map((key) => run.key_tokens[key]));
  const left = queryWidth + 12;
  const right = left + LINE_SPAN;
  const longest = Math.max(rows.length, cols.length);
  // Queries and keys may differ in number: the shorter column is centred beside the longer one.
  const queryY = (row) => 4 + ((longest - rows.length) / 2 + row + 0.5) * ROW_HEIGHT;
  const keyY = (col) => 4 + ((longest - cols.length) / 2 + col + 0.5) * ROW_HEIGHT;
  svg.setAttribute("width", right + keyWidth + 12);
  svg.setAttribute("height", longest * ROW_HEIGHT + 8);

  const lines = svgEl("g", { class: "lines" });
  const linesOfRow = rows.map(() => []);
  const linesOfCol = cols.map(() => []);
  for (const head of heads) {
    const matrix = shownMatrix(run, view, layerIndex, [head], hideSpecial);
    matrix.values.forEach((weight, cell) => {
      if (weight <= LINE_THRESHOLD * matrix.max) return;
      const row = Math.floor(cell / cols.length);
      const col = cell % cols.length;
      const line = svgEl("line", {
        x1: left,
        y1: queryY(row),
        x2: right,
        y2: keyY(col),
        stroke: headColor(head),
        "stroke-opacity": (weight / matrix.max).toFixed(3),
        "data-weight": weight.toFixed(4),
        "data-query": rows[row],
        "data-key": cols[col],
        "data-head": head,
      });
      lines.append(line);
      linesOfRow[row].push(line);
      linesOfCol[col].push(line);
    });
  }

  // A token: its label, a transparent box that catches the pointer, and its lines to highlight.
  const token = (kind, index, text, x, y, width, related) => {
    const anchor = kind === "query" ? "end" : "start";
    const group = svgEl(
      "g",
      { class: "token", "data-testid": `${kind}-token`, "data-index": index, tabindex: 0 },
      svgEl("rect", {
        class: "token-box",
        x: kind === "query" ? x - width : x,
        y: y - ROW_HEIGHT / 2,
        width,
        height: ROW_HEIGHT,
      }),
      svgEl("text", { x, y, "text-anchor": anchor, "dominant-baseline": "central" }, shortLabel(text)),
      svgEl("title", {}, text),
    );
    const highlight = (on) => {
      svg.classList.toggle("focused", on);
      group.classList.toggle("hovered", on);
      for (const line of related) line.classList.toggle("active", on);
    };
    group.addEventListener("mouseenter", () => highlight(true));
    group.addEventListener("mouseleave", () => highlight(false));
    group.addEventListener("focus", () => highlight(true));
    group.addEventListener("blur", () => highlight(false));
    return group;
  };
  svg.replaceChildren(
    lines,
    ...rows.map((query, row) =>
      token("query", query, run.query_tokens[query], left - 6, queryY(row), queryWidth + 6, linesOfRow[row]),
    ),
    ...cols.map((key, col) =>
      token("key", key, run.key_tokens[key], right + 6, keyY(col), keyWidth + 6, linesOfCol[col]),
    ),
  );
}

/** The model view: a grid of layers x heads thumbnails; clicking one calls onPick(layer, head). */
function drawModelView(container, run, view, state, onPick) {
  drawThumbGrid(container, run, view, [THUMB_SIZE, THUMB_SIZE], onPick, {
    testid: "model-thumb",
    even: "uniform",
    selected: (layer, head) => layer === state.layer && (view.heads === 1 || state.heads.has(head)),
    paint(canvas, layerIndex, head) {
      const matrix = shownMatrix(run, view, layerIndex, [head], state.hideSpecial);
      const { low, high } = colourRange(view, matrix, state);
      paintThumbnail(canvas, matrix, low, high);
      return uniformity(matrix);
    },
  });
}

/**
 * A grid of layers x heads thumbnails, each with its uniformity (the text page's model view, the
 * image page's small overlays): `paint(canvas, layerIndex, head)` draws one and returns its
 * uniformity, `selected(layer, head)` marks the chosen ones, `even` says what uniformity 1 means,
 * and clicking one calls onPick(layer, head).
 */
function drawThumbGrid(container, run, view, [width, height], onPick, { testid, even, selected, paint }) {
  container.style.gridTemplateColumns = `auto repeat(${view.heads}, ${width + 6}px)`;
  const cells = [el("span")];
  for (const head of range(view.heads)) {
    cells.push(el("span", { class: "grid-label" }, view.heads === 1 ? "all heads" : `head ${head}`));
  }
  run.layers.forEach((layer, layerIndex) => {
    cells.push(el("span", { class: "grid-label" }, `layer ${layer}`));
    for (const head of range(view.heads)) {
      const canvas = el("canvas", { width, height });
      const value = paint(canvas, layerIndex, head);
      const thumb = el(
        "button",
        {
          type: "button",
          class: selected(layer, head) ? "thumb selected" : "thumb",
          "data-testid": testid,
          "data-layer": layer,
          "data-head": head,
          "data-uniformity": value.toFixed(6),
          title:
            `layer ${layer}, ${view.heads === 1 ? "all heads" : `head ${head}`}: uniformity ` +
            `${value.toFixed(3)} (1 = ${even}); click to enlarge`,
        },
        canvas,
        el("span", { class: "thumb-uniformity" }, value.toFixed(3)),
      );
      thumb.addEventListener("click", () => onPick(layer, head));
      cells.push(thumb);
    }
  });
  container.replaceChildren(...cells);
}

/** Paint a matrix on a canvas, low white to high dark blue, one pixel per cell scaled up without smoothing. */
function paintThumbnail(canvas, matrix, low, high) {
  const height = matrix.rows.length;
  const width = matrix.cols.length;
  if (!height || !width) return;
  const image = new ImageData(width, height);
  matrix.values.forEach((value, cell) => {
    image.data.set([...rgbValues(SEQUENTIAL, position(value, low, high)), 255], cell * 4);
  });
  const source = document.createElement("canvas");
  source.width = width;
  source.height = height;
  source.getContext("2d").putImageData(image, 0, 0);
  const context = canvas.getContext("2d");
  context.imageSmoothingEnabled = false;
  context.drawImage(source, 0, 0, canvas.width, canvas.height);
}

/**
 * A heatmap: rows are queries, columns keys (labels rotated), one rect per cell coloured by
 * colorOf(value), with a tooltip "query -> key: value".
 */
function drawHeatmap(svg, run, matrix, colorOf, formatValue = format) {
  const queries = matrix.rows.map((query) => run.query_tokens[query]);
  const keys = matrix.cols.map((key) => run.key_tokens[key]);
  const cell = Math.max(
    MIN_CELL,
    Math.min(MAX_CELL, Math.floor(HEATMAP_TARGET / Math.max(queries.length, keys.length, 1))),
  );
  const left = labelWidth(queries) + 8;
  const top = labelWidth(keys) + 8;
  svg.setAttribute("width", left + keys.length * cell + 4);
  svg.setAttribute("height", top + queries.length * cell + 4);
  const parts = [];
  queries.forEach((query, row) => {
    parts.push(
      svgEl(
        "text",
        { x: left - 4, y: top + (row + 0.5) * cell, "text-anchor": "end", "dominant-baseline": "central" },
        shortLabel(query),
      ),
    );
    keys.forEach((key, col) => {
      const value = matrix.values[row * keys.length + col];
      parts.push(
        svgEl(
          "rect",
          {
            x: left + col * cell,
            y: top + row * cell,
            width: cell,
            height: cell,
            fill: colorOf(value),
            "data-query": matrix.rows[row],
            "data-key": matrix.cols[col],
            "data-value": value.toFixed(4),
          },
          svgEl("title", {}, `${query} -> ${key}: ${formatValue(value)}`),
        ),
      );
    });
  });
  keys.forEach((key, col) => {
    const x = left + (col + 0.5) * cell;
    parts.push(
      svgEl(
        "text",
        { x, y: top - 4, transform: `rotate(-90 ${x} ${top - 4})`, "dominant-baseline": "central" },
        shortLabel(key),
      ),
    );
  });
  svg.replaceChildren(...parts);
}

/*
 * Image runs: a Vision Transformer's class-token attention over the patches of one image.
 */

// The image is drawn at a whole multiple of its size near this many pixels (a 32x32 image 8x),
// without smoothing, so each pixel and patch stays a sharp square.
const IMAGE_TARGET = 256;
// The overlay: clear at 0, yellow to dark red towards the top of the colour scale, at most this opaque.
const HEAT = [
  [255, 255, 178],
  [254, 204, 92],
  [253, 141, 60],
  [240, 59, 32],
  [189, 0, 38],
];
const OVERLAY_ALPHA = 0.75;
// The mean attention distance chart: its size and the margins its axes' labels take.
const CHART_WIDTH = 380;
const CHART_HEIGHT = 240;
const CHART_MARGIN = { left: 52, right: 12, top: 12, bottom: 40 };
// The colour scales of the overlays: the absolute one's top is the view's largest value, since
// the class token's weights are spread over many patches (1/64 each, evenly, on an 8x8 grid).
const IMAGE_SCALES = {
  absolute: "absolute (0 to the view's largest value)",
  stretched: SCALES.stretched,
};
const IMAGE_VIEW_NAMES = {
  raw: "Raw attention of the class token (per head)",
  rollout: "Attention rollout of the class token",
  gradient: "Gradient-weighted attention of the class token (per head)",
};

/** The page of image runs: header, controls, one panel per run; `render` redraws them from `state`. */
class ImageExplorer {
  constructor(root, payload) {
    this.payload = payload;
    this.runs = payload.runs.map(decodeImageRun);
    this.layers = [...new Set(this.runs.flatMap((run) => run.layers))].sort((a, b) => a - b);
    this.viewNames = [
      ...new Set(this.runs.flatMap((run) => [...Object.keys(run.views), ...Object.keys(run.unavailable)])),
    ];
    this.numHeads = Math.max(...this.runs.map((run) => run.num_heads));
    this.state = {
      // The last layer: the one the class token leaves for the classifier.
      layer: this.layers[this.layers.length - 1],
      view: this.viewNames.find((name) => this.runs.some((run) => run.views[name])) ?? this.viewNames[0],
      head: "mean", // "mean" (of every head) or a head's index as a string
      scale: "absolute", // "absolute" or "stretched" (SCALES)
    };
    document.title = payload.title;
    root.replaceChildren(this.buildHeader(), this.buildControls(), this.buildPanels());
  }

  /** Title, and per run its name, prediction and notes. */
  buildHeader() {
    return el(
      "header",
      { class: "page-header" },
      el("h1", {}, this.payload.title),
      el("div", { class: "summaries" }, ...this.runs.map(imageRunSummary)),
    );
  }

  /** Layer, view, head and colour scale. */
  buildControls() {
    const state = this.state;
    const select = (id, options, onChange, title) => {
      const element = el("select", title ? { id, title } : { id }, ...options);
      element.addEventListener("change", () => {
        onChange(element.value);
        this.render();
      });
      return element;
    };
    this.layerSelect = select(
      "layer-select",
      this.layers.map((layer) => el("option", { value: layer }, `layer ${layer}`)),
      (value) => (state.layer = Number(value)),
    );
    const views = viewOptions(this.runs, this.viewNames, IMAGE_VIEW_NAMES);
    this.viewSelect = select("view-select", views.options, (value) => (state.view = value));
    this.headSelect = select(
      "head-select",
      [
        el("option", { value: "mean" }, "mean of all heads"),
        ...range(this.numHeads).map((head) => el("option", { value: head }, `head ${head}`)),
      ],
      (value) => (state.head = value),
    );
    this.scaleSelect = select(
      "scale-select",
      Object.entries(IMAGE_SCALES).map(([name, label]) => el("option", { value: name }, label)),
      (value) => (state.scale = value),
      "absolute: maps of a view are comparable; stretched: small differences look large",
    );
    return el(
      "section",
      { class: "controls-bar" },
      el(
        "div",
        { class: "controls" },
        el("label", {}, "Layer ", this.layerSelect),
        el("label", {}, "View ", this.viewSelect),
        el("label", {}, "Head ", this.headSelect),
        el("label", {}, "Colour ", this.scaleSelect),
      ),
      ...views.notes,
    );
  }

  /** One panel per run: the image and its overlay, every layer and head, the distance chart. */
  buildPanels() {
    this.panels = this.runs.map((run, index) => {
      const size = imageScale(run);
      const panel = {
        run,
        message: el("p", { class: "panel-message", "data-testid": "panel-message" }),
        uniformity: el("p", { class: "uniformity", "data-testid": "uniformity" }),
        image: el("canvas", {
          class: "image-canvas",
          "data-testid": "image-canvas",
          width: run.image.width * size,
          height: run.image.height * size,
        }),
        overlay: el("canvas", {
          class: "image-canvas overlay",
          "data-testid": "overlay-canvas",
          width: run.image.width * size,
          height: run.image.height * size,
        }),
        caption: el("p", { class: "caption", "data-testid": "overlay-caption" }),
        grid: el("div", { class: "model-view", "data-testid": "image-grid" }),
        chart: svgEl("svg", { class: "distance-chart", "data-testid": "distance-chart" }),
      };
      panel.overlay.addEventListener("mousemove", (event) => showPatchValue(panel, event));
      const figure = (title, name, ...content) =>
        el("div", { class: `figure ${name}` }, el("h3", {}, title), ...content);
      panel.attentionFigures = [
        figure(
          "Attention over the image",
          "image-figure",
          panel.caption,
          el("div", { class: "image-pair" }, panel.image, panel.overlay),
          panel.uniformity,
        ),
        figure(
          "Every layer and head",
          "grid-figure",
          el(
            "p",
            { class: "hint" },
            "This view for every layer and head, with its uniformity; click one to enlarge it.",
          ),
          el("div", { class: "scroll" }, panel.grid),
        ),
      ];
      panel.element = el(
        "section",
        { class: "run-panel", "data-testid": "run-panel", "data-run": index },
        el("h2", {}, run.name, " ", el("span", { class: "family" }, run.family)),
        panel.message,
        el(
          "div",
          { class: "figures" },
          ...panel.attentionFigures,
          figure(
            "Mean attention distance",
            "distance-figure",
            el(
              "p",
              { class: "hint" },
              "How far each head looks: the attention-weighted distance from each patch to the patches it " +
                "attends to, in pixels, averaged over patches. One dot per head; low = local, like a " +
                "convolution; near the dashed line = as far as attending evenly everywhere. " +
                "Click a dot to see that head.",
            ),
            panel.chart,
            distanceLegend(run),
          ),
        ),
      );
      return panel;
    });
    return el("div", { class: "panels" }, ...this.panels.map((panel) => panel.element));
  }

  /** Redraw everything from `this.state`. */
  render() {
    const state = this.state;
    this.layerSelect.value = state.layer;
    this.viewSelect.value = state.view;
    this.headSelect.value = state.head;
    this.scaleSelect.value = state.scale;
    // Rollout has one map per layer: no head to choose.
    this.headSelect.disabled = !this.runs.some((run) => run.views[state.view]?.heads > 1);
    for (const panel of this.panels) this.renderPanel(panel);
  }

  /** One run's figures for the current state, or a line saying why its attention cannot be drawn. */
  renderPanel(panel) {
    const run = panel.run;
    const view = run.views[this.state.view];
    const layerIndex = run.layers.indexOf(this.state.layer);
    drawImage(panel.image, run);
    drawDistanceChart(panel.chart, run, this.state, (layer, head) => this.pick(panel, layer, head));
    let problem = null;
    if (!view) {
      const reason = run.unavailable[this.state.view] ?? "it was not computed";
      problem = `${this.viewLabel(this.state.view)} is not available for this run: ${reason}.`;
    } else if (layerIndex < 0) {
      problem = `${run.name} has no layer ${this.state.layer} (it has layers ${run.layers.join(", ")}).`;
    } else if (view.heads > 1 && this.state.head !== "mean" && Number(this.state.head) >= view.heads) {
      problem = `${run.name} has no head ${this.state.head} (it has ${view.heads}).`;
    }
    showMessage(panel, problem ?? "");
    for (const figure of panel.attentionFigures) figure.hidden = Boolean(problem);
    if (problem) return;

    const heads = view.heads === 1 || this.state.head === "mean" ? range(view.heads) : [Number(this.state.head)];
    const map = patchMap(run, view, layerIndex, heads);
    const { low, high } = colourRange(view, map, this.state);
    drawOverlay(panel.overlay, run, map.values, low, high);
    panel.shown = map.values;
    const value = uniformity(map);
    panel.uniformity.dataset.value = value.toFixed(6);
    panel.uniformity.textContent =
      `Uniformity of this map: ${value.toFixed(3)} (the entropy of the class token's weights over the ` +
      `${map.cols.length} patches, over log ${map.cols.length}; 1 = spread evenly, 0 = on one patch).`;
    panel.caption.textContent =
      `${view.label}, layer ${this.state.layer}, ${imageHeadsText(view, heads)}: the class token's attention to ` +
      `each patch (its weight on itself left out); ${imageScaleText(map, low, high, this.state)}.`;
    drawImageGrid(panel.grid, run, view, this.state, (layer, head) => this.pick(panel, layer, head));
  }

  /** A thumbnail or a chart dot was clicked: select its layer (and head), and show the enlarged map. */
  pick(panel, layer, head) {
    this.state.layer = layer;
    if (panel.run.views[this.state.view]?.heads > 1) this.state.head = String(head);
    this.render();
    flash(panel.overlay);
  }

  viewLabel(name) {
    return viewLabel(this.runs, name, IMAGE_VIEW_NAMES);
  }
}

/** An image run with its views' bytes decoded, and its pixels on a canvas of the image's own size. */
function decodeImageRun(run) {
  const decoded = decodeRun(run);
  const { width, height } = run.image;
  const rgb = base64Bytes(run.image.data);
  const pixels = new ImageData(width, height);
  for (let index = 0; index < width * height; index++) {
    pixels.data.set([rgb[3 * index], rgb[3 * index + 1], rgb[3 * index + 2], 255], 4 * index);
  }
  decoded.source = document.createElement("canvas");
  decoded.source.width = width;
  decoded.source.height = height;
  decoded.source.getContext("2d").putImageData(pixels, 0, 0);
  decoded.patches = run.grid[0] * run.grid[1];
  return decoded;
}

/** How many times the image is enlarged on the page: a whole number, 1 for an image at least IMAGE_TARGET wide. */
function imageScale(run) {
  return Math.max(1, Math.floor(IMAGE_TARGET / Math.max(run.image.width, run.image.height)));
}

/** A run's card in the header: name, family, prediction, notes. */
function imageRunSummary(run) {
  return el(
    "article",
    { class: "run-summary", "data-testid": "run-summary" },
    el("h2", {}, run.name, " ", el("span", { class: "family" }, run.family)),
    el(
      "div",
      { class: "text-and-prediction" },
      el(
        "p",
        { class: "text" },
        `A ${run.image.width}x${run.image.height} image ` +
          (run.tokens ||
            `cut into ${run.grid[0]}x${run.grid[1]} patches of ${run.patch_size}x${run.patch_size} pixels`) +
          ", plus the class token whose attention is drawn.",
      ),
      labelPrediction(run.prediction),
    ),
    el("ul", { class: "notes", "data-testid": "run-notes" }, ...run.notes.map((note) => el("li", {}, note))),
  );
}

/**
 * The class token's attention over the patches of one layer, averaged over `heads`, as the
 * matrix `uniformity` and `colourRange` read: {rows: [0], cols (patches), values, min, max}.
 */
function patchMap(run, view, layerIndex, heads) {
  const values = new Float32Array(run.patches);
  for (const head of heads) {
    const matrix = layerIndex * view.heads + head;
    const step = view.scales[matrix] / 255;
    const bytes = view.bytes.subarray(matrix * run.patches, (matrix + 1) * run.patches);
    bytes.forEach((byte, patch) => (values[patch] += (byte * step) / heads.length));
  }
  const max = values.reduce((largest, value) => Math.max(largest, value), 0);
  const min = values.reduce((smallest, value) => Math.min(smallest, value), max);
  return { rows: [0], cols: range(run.patches), values, min, max };
}

/** Draw the run's image on `canvas`, enlarged without smoothing to the canvas's size. */
function drawImage(canvas, run) {
  const context = canvas.getContext("2d");
  context.imageSmoothingEnabled = false;
  context.clearRect(0, 0, canvas.width, canvas.height);
  context.drawImage(run.source, 0, 0, canvas.width, canvas.height);
}

/** The image with one value per patch laid over it: clear at `low`, dark red and most opaque at `high`. */
function drawOverlay(canvas, run, values, low, high, gridLines = true) {
  drawImage(canvas, run);
  const context = canvas.getContext("2d");
  const scale = canvas.width / run.image.width;
  const side = run.patch_size * scale;
  const [rows, cols] = run.grid;
  values.forEach((value, patch) => {
    const t = Math.min(Math.max(position(value, low, high), 0), 1);
    const [red, green, blue] = rgbValues(HEAT, t);
    context.fillStyle = `rgba(${red},${green},${blue},${(OVERLAY_ALPHA * t).toFixed(3)})`;
    context.fillRect((patch % cols) * side, Math.floor(patch / cols) * side, side, side);
  });
  if (!gridLines) return;
  // Faint patch borders, so that each patch reads as one cell of the map.
  context.strokeStyle = "rgba(255,255,255,0.35)";
  context.lineWidth = 1;
  context.beginPath();
  for (let row = 1; row < rows; row++) {
    context.moveTo(0, row * side + 0.5);
    context.lineTo(cols * side, row * side + 0.5);
  }
  for (let col = 1; col < cols; col++) {
    context.moveTo(col * side + 0.5, 0);
    context.lineTo(col * side + 0.5, rows * side);
  }
  context.stroke();
}

/** The overlay's tooltip: the patch under the pointer and its value. */
function showPatchValue(panel, event) {
  const run = panel.run;
  if (!panel.shown) return;
  const box = panel.overlay.getBoundingClientRect();
  const side = (run.patch_size * box.width) / run.image.width;
  const col = Math.floor((event.clientX - box.left) / side);
  const row = Math.floor((event.clientY - box.top) / side);
  const inside = row >= 0 && col >= 0 && row < run.grid[0] && col < run.grid[1];
  const value = inside ? panel.shown[row * run.grid[1] + col] : 0;
  panel.overlay.title = inside ? `patch row ${row}, column ${col}: ${format(value)}` : "";
}

/** Every layer and head of a view as small overlays; clicking one calls onPick(layer, head). */
function drawImageGrid(container, run, view, state, onPick) {
  const height = Math.round((THUMB_SIZE * run.image.height) / run.image.width);
  drawThumbGrid(container, run, view, [THUMB_SIZE, height], onPick, {
    testid: "image-thumb",
    even: "spread evenly",
    selected: (layer, head) =>
      layer === state.layer && (view.heads === 1 || state.head === "mean" || Number(state.head) === head),
    paint(canvas, layerIndex, head) {
      const map = patchMap(run, view, layerIndex, [head]);
      const { low, high } = colourRange(view, map, state);
      drawOverlay(canvas, run, map.values, low, high, false);
      return uniformity(map);
    },
  });
}

/**
 * Mean attention distance per head (the keras.io "Investigating Vision Transformer
 * representations" plot): x the layer, y pixels, one dot per head in its colour, the selected
 * layer shaded, and a dashed line at the distance of a head that attends to every patch evenly.
 * Clicking a dot calls onPick(layer, head).
 */
function drawDistanceChart(svg, run, state, onPick) {
  const { left, right, top, bottom } = CHART_MARGIN;
  const plotWidth = CHART_WIDTH - left - right;
  const plotHeight = CHART_HEIGHT - top - bottom;
  const even = evenAttentionDistance(run);
  const largest = Math.max(even, ...run.distances.flat());
  const yMax = niceCeiling(largest > 0 ? largest * 1.05 : 1);
  const step = plotWidth / run.layers.length;
  const x = (layerIndex) => left + (layerIndex + 0.5) * step;
  const y = (value) => top + plotHeight * (1 - value / yMax);
  // Heads of a layer side by side within its column, so that equal distances stay apart.
  const spread = Math.min(step * 0.6, run.num_heads * 5);
  const offset = (head) => (run.num_heads > 1 ? (head / (run.num_heads - 1) - 0.5) * spread : 0);
  svg.setAttribute("width", CHART_WIDTH);
  svg.setAttribute("height", CHART_HEIGHT);
  const parts = [];
  const selected = run.layers.indexOf(state.layer);
  if (selected >= 0) {
    const band = { class: "selected-layer", x: x(selected) - step / 2, y: top, width: step, height: plotHeight };
    parts.push(svgEl("rect", band));
  }
  for (const tick of range(5).map((index) => (yMax * index) / 4)) {
    parts.push(
      svgEl("line", { class: "gridline", x1: left, x2: left + plotWidth, y1: y(tick), y2: y(tick) }),
      svgEl("text", { x: left - 6, y: y(tick), "text-anchor": "end", "dominant-baseline": "central" }, tickLabel(tick)),
    );
  }
  run.layers.forEach((layer, layerIndex) => {
    parts.push(svgEl("text", { x: x(layerIndex), y: top + plotHeight + 14, "text-anchor": "middle" }, `${layer}`));
  });
  parts.push(
    svgEl("line", { class: "axis", x1: left, x2: left + plotWidth, y1: top + plotHeight, y2: top + plotHeight }),
    svgEl("line", { class: "axis", x1: left, x2: left, y1: top, y2: top + plotHeight }),
    svgEl(
      "line",
      { class: "even-line", x1: left, x2: left + plotWidth, y1: y(even), y2: y(even) },
      svgEl("title", {}, `a head attending evenly to every patch: ${even.toFixed(2)} pixels`),
    ),
    svgEl("text", { x: left + plotWidth / 2, y: CHART_HEIGHT - 6, "text-anchor": "middle" }, "layer"),
    svgEl(
      "text",
      { x: 12, y: top + plotHeight / 2, transform: `rotate(-90 12 ${top + plotHeight / 2})`, "text-anchor": "middle" },
      "mean attention distance (pixels)",
    ),
  );
  run.layers.forEach((layer, layerIndex) => {
    run.distances[layerIndex].forEach((distance, head) => {
      const chosen = layer === state.layer && (state.head === "mean" || Number(state.head) === head);
      const dot = svgEl(
        "circle",
        {
          class: chosen ? "distance-dot selected" : "distance-dot",
          "data-testid": "distance-dot",
          "data-layer": layer,
          "data-head": head,
          "data-distance": distance,
          cx: x(layerIndex) + offset(head),
          cy: y(distance),
          r: 4,
          fill: headColor(head),
        },
        svgEl("title", {}, `layer ${layer}, head ${head}: ${distance.toFixed(2)} pixels`),
      );
      dot.addEventListener("click", () => onPick(layer, head));
      parts.push(dot);
    });
  });
  svg.replaceChildren(...parts);
}

/** The distance chart's key: each head's colour, and what the dashed line stands for. */
function distanceLegend(run) {
  const heads = range(run.num_heads).map((head) => {
    const swatch = el("span", { class: "swatch" });
    swatch.style.background = headColor(head);
    return el("li", {}, swatch, `head ${head}`);
  });
  const even = evenAttentionDistance(run).toFixed(1);
  return el(
    "div",
    { class: "distance-legend" },
    el("ul", { class: "tag-legend" }, ...heads),
    el(
      "p",
      { class: "caption", "data-testid": "distance-caption" },
      `Dashed: attending evenly to every patch, ${even} px.`,
    ),
  );
}

/** The mean attention distance of a head that attends to every patch evenly: the mean distance
 * between patch centres over every pair (a patch and itself included), as
 * `distance_of_uniform_attention` in tfattn/explorer/images.py computes it. */
function evenAttentionDistance(run) {
  const [rows, cols] = run.grid;
  let total = 0;
  for (let a = 0; a < rows * cols; a++) {
    for (let b = 0; b < rows * cols; b++) {
      total += Math.hypot(Math.floor(a / cols) - Math.floor(b / cols), (a % cols) - (b % cols));
    }
  }
  return (run.patch_size * total) / (rows * cols) ** 2;
}

/** The top of a chart's axis at least `value`: a round number whose quarters (the ticks) are round too. */
function niceCeiling(value) {
  const power = 10 ** Math.floor(Math.log10(value));
  return [1, 1.2, 1.6, 2, 2.4, 3.2, 4, 6, 8, 10].map((step) => step * power).find((top) => top >= value * (1 - 1e-9));
}

/** An axis tick: "0", "2.5", "15" (no trailing zeros). */
function tickLabel(value) {
  return String(Number(value.toPrecision(4)));
}

/** "head 3", "mean of its 4 heads", or for rollout "one map for all heads". */
function imageHeadsText(view, heads) {
  if (view.heads === 1) return "one map for all heads";
  return heads.length === 1 ? `head ${heads[0]}` : `mean of its ${heads.length} heads`;
}

/** The caption's words for the overlay's colour scale. */
function imageScaleText(map, low, high, state) {
  const [min, max] = formatRange(map.min, map.max);
  if (state.scale === "stretched") {
    return (
      `colour stretched to this map's own range, ${min} (clear) to ${max} (dark red): ` +
      "small differences look large"
    );
  }
  return (
    `colour from clear (0) to dark red (${format(high)}, the largest value of this view over its layers and ` +
    `heads); this map's values run from ${min} to ${max}`
  );
}

/** A run's card in the header: name, family, text, prediction, notes. */
function runSummary(run) {
  const drawings = {
    label: (each) => labelPrediction(each.prediction),
    tags: tagPrediction,
    generation: generationPrediction,
  };
  const prediction = drawings[run.prediction.type](run);
  return el(
    "article",
    { class: "run-summary", "data-testid": "run-summary" },
    el("h2", {}, run.name, " ", el("span", { class: "family" }, run.family)),
    el("div", { class: "text-and-prediction" }, el("p", { class: "text" }, run.text), prediction),
    el("ul", { class: "notes", "data-testid": "run-notes" }, ...run.notes.map((note) => el("li", {}, note))),
  );
}

/** A classifier's prediction: one probability bar per label, the predicted one in bold. */
function labelPrediction(prediction) {
  const rows = prediction.labels.map((label, index) => {
    const probability = prediction.probabilities[index];
    const fill = el("span", { class: "fill" });
    fill.style.width = `${(100 * probability).toFixed(1)}%`;
    return el(
      "div",
      { class: index === prediction.predicted ? "probability predicted" : "probability", "data-testid": "probability" },
      el("span", { class: "probability-label" }, label),
      el("span", { class: "bar" }, fill),
      el("span", { class: "probability-value" }, probability.toFixed(3)),
    );
  });
  return el("div", { class: "prediction", "data-testid": "prediction" }, ...rows);
}

/** A tagger's prediction: the tokens coloured by entity type (B-/I- prefixes share a colour), and a legend. */
function tagPrediction(run) {
  const { labels, tags, scores } = run.prediction;
  const types = [...new Set(labels.map(entityType).filter(Boolean))];
  const colorOf = (type) => TAG_COLORS[types.indexOf(type) % TAG_COLORS.length];
  const tokens = run.query_tokens.map((text, index) => {
    const tag = tags[index];
    const type = tag >= 0 ? entityType(labels[tag]) : null;
    const span = el(
      "span",
      {
        class: tag >= 0 ? "tagged" : "tagged untagged",
        "data-testid": "tagged-token",
        "data-tag": tag >= 0 ? labels[tag] : "",
      },
      text,
    );
    if (tag >= 0) span.title = `${labels[tag]} (score ${scores[index].toFixed(3)})`;
    if (type) span.style.background = colorOf(type);
    return span;
  });
  const legend = el(
    "ul",
    { class: "tag-legend", "data-testid": "tag-legend" },
    ...types.map((type) => {
      const swatch = el("span", { class: "swatch" });
      swatch.style.background = colorOf(type);
      return el("li", {}, swatch, type);
    }),
  );
  const tagged = el("p", { class: "tagged-tokens" }, ...tokens);
  return el("div", { class: "prediction", "data-testid": "prediction" }, tagged, legend);
}

/** A language model's output: the prompt tokens, then the generated ones highlighted (rows
 * after the prompt in every map are the generated tokens, attending to the prompt and to what
 * came before them). */
function generationPrediction(run) {
  const { prompt_tokens: promptTokens, strategy } = run.prediction;
  const tokens = run.query_tokens.map((text, index) =>
    el(
      "span",
      {
        class: index < promptTokens ? "tagged untagged" : "tagged generated",
        "data-testid": "generated-token",
        "data-generated": index < promptTokens ? "false" : "true",
      },
      visible(text),
    ),
  );
  const count = run.query_tokens.length - promptTokens;
  const caption = el(
    "p",
    { class: "generation-caption", "data-testid": "generation-caption" },
    `${promptTokens} prompt tokens, then ${count} generated (${strategy})`,
  );
  const tagged = el("p", { class: "tagged-tokens" }, ...tokens);
  return el("div", { class: "prediction", "data-testid": "prediction" }, tagged, caption);
}

/** "PER" for "B-PER" or "I-PER"; null for "O" (outside any entity). */
function entityType(label) {
  return label === "O" ? null : label.replace(/^[BIES]-/, "");
}

function showMessage(panel, text) {
  panel.message.textContent = text;
  panel.message.hidden = !text;
}

/** "head 3", "mean of heads 0, 2", or for a one-map view "one map for all heads". */
function headsText(view, heads) {
  if (view.heads === 1) return "one map for all heads";
  return heads.length === 1 ? `head ${heads[0]}` : `mean of heads ${heads.join(", ")}`;
}

/** A distinct colour per head: hues a golden angle apart. */
function headColor(head) {
  return `hsl(${Math.round((head * 137.508) % 360)}, 70%, 42%)`;
}

/** The colour at t in [0, 1] along RGB stops, as [r, g, b]. */
function rgbValues(stops, t) {
  const position = Math.min(Math.max(t, 0), 1) * (stops.length - 1);
  const index = Math.min(Math.floor(position), stops.length - 2);
  const fraction = position - index;
  return stops[index].map((start, channel) => Math.round(start + (stops[index + 1][channel] - start) * fraction));
}

function rgb(stops, t) {
  return `rgb(${rgbValues(stops, t).join(",")})`;
}

/** Pixels the widest of these token labels takes in LABEL_FONT. */
function labelWidth(tokens) {
  measure.font = LABEL_FONT;
  return Math.ceil(tokens.reduce((widest, token) => Math.max(widest, measure.measureText(shortLabel(token)).width), 0));
}

function shortLabel(token) {
  token = visible(token);
  return token.length > MAX_LABEL_CHARS ? `${token.slice(0, MAX_LABEL_CHARS - 1)}…` : token;
}

/** A token with its newlines, carriage returns and tabs drawn (a language model's pieces hold them). */
function visible(token) {
  return token.replace(/\n/g, "↵").replace(/\r/g, "␍").replace(/\t/g, "⇥");
}

function format(value) {
  return Math.abs(value) >= 0.001 || value === 0 ? value.toFixed(3) : value.toExponential(1);
}

/** Two values with as many decimals (3 to 6) as it takes to tell them apart: "0.0664", "0.0671". */
function formatRange(low, high) {
  if (low === high || Math.abs(low) < 0.001 || Math.abs(high) < 0.001) return [format(low), format(high)];
  let digits = 3;
  while (digits < 6 && low.toFixed(digits) === high.toFixed(digits)) digits += 1;
  return [low.toFixed(digits), high.toFixed(digits)];
}

function range(count) {
  return Array.from({ length: count }, (_, index) => index);
}

/** An HTML element with attributes and children (strings become text, never HTML). */
function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  node.append(...children);
  return node;
}

/** An SVG element with attributes and children. */
function svgEl(tag, attributes = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  node.append(...children);
  return node;
}

main();
