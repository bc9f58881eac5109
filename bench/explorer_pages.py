"""The attention explorer on real trained runs, opened in headless Chromium with no network.

For each run (default: the MiniLM AG News classifier, the from-scratch AG News classifier and the
MiniLM CoNLL NER tagger) it writes the page of one text with `tfattn attention --html`'s code,
opens it from disk in offline Chromium (tests/browser.py), checks that nothing was requested and
nothing logged an error and that hovering a token changes the drawn lines, and saves a
screenshot. It also reports the page size of a 6-layer x 12-head MiniLM text cropped to 64 tokens.

    .venv/bin/python bench/explorer_pages.py [--pages minilm_agnews scratch_agnews ...]

`--pages` remeasures only those pages (and the cropped MiniLM page when minilm_agnews is among
them); the other entries of pages.json are kept as they were. `--image RUN FILE` adds the page of
an image-classification run (a ViT) on one image file, saved as `<run name>_image.png`.
Writes bench/results/explorer/<name>.png and bench/results/explorer/pages.json.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the browser helpers the tests use

from tfattn.quiet import start_tensorflow  # noqa: E402

start_tensorflow(verbose=False)

from browser import (  # noqa: E402
    assert_offline_and_clean,
    by_testid,
    click,
    drawn_lines,
    hover,
    offline_chromium,
    open_page,
)

from tfattn.explorer import explore  # noqa: E402

HEADLINE = "Oil prices rose sharply on Monday as traders worried about Gulf supplies."
PAGES = {
    "minilm_agnews": ("runs/agnews_minilm", HEADLINE),
    "scratch_agnews": ("runs/agnews", HEADLINE),
    "minilm_ner": ("runs/ner_minilm", "Angela Merkel met Dmitry Medvedev in Berlin on Monday."),
}
LONG_TEXT = " ".join(["Stocks fell sharply on Monday as oil prices rose and investors sold bank shares."] * 8)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", nargs="*", choices=tuple(PAGES), default=tuple(PAGES), help="pages to measure")
    parser.add_argument("--image", nargs=2, metavar=("RUN", "FILE"), help="also the page of an image run on FILE")
    args = parser.parse_args()
    out_dir = ROOT / "bench" / "results" / "explorer"
    out_dir.mkdir(parents=True, exist_ok=True)
    results_file = out_dir / "pages.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    with tempfile.TemporaryDirectory() as scratch, offline_chromium(width=1400, height=1100) as driver:
        for name in args.pages:
            run_dir, text = PAGES[name]
            started = time.perf_counter()
            page = explore(ROOT / run_dir, text)
            path = page.save(Path(scratch) / f"{name}.html")
            written = time.perf_counter() - started
            open_page(driver, path)
            assert_offline_and_clean(driver, path)
            all_lines = drawn_lines(driver)
            hover(driver, by_testid(driver, "query-token")[1])
            focused = drawn_lines(driver)
            assert 0 < len(focused) < len(all_lines), (name, len(focused), len(all_lines))
            driver.save_screenshot(str(out_dir / f"{name}.png"))
            run = page.payload["runs"][0]
            results[name] = {
                "run": run_dir,
                "family": run["family"],
                "tokens": len(run["query_tokens"]),
                "layers": len(run["layers"]),
                "heads": run["num_heads"],
                "views": list(run["views"]),
                "bytes": path.stat().st_size,
                "seconds_to_explain_and_write": round(written, 2),
                "lines_drawn": len(all_lines),
                "lines_after_hovering_token_1": len(focused),
            }
            print(f"{name}: {results[name]}", flush=True)
        if args.image:
            results.update(image_page(driver, *args.image, scratch, out_dir))
        if "minilm_agnews" not in args.pages:
            results_file.write_text(json.dumps(results, indent=2) + "\n")
            return
        long_page = explore(ROOT / PAGES["minilm_agnews"][0], LONG_TEXT, max_tokens=64)
        long_path = long_page.save(Path(scratch) / "long.html")
        run = long_page.payload["runs"][0]
        results["minilm_64_tokens"] = {
            "layers": len(run["layers"]),
            "heads": run["num_heads"],
            "tokens": len(run["query_tokens"]),
            "notes": run["notes"],
            "bytes": long_path.stat().st_size,
        }
        print(f"minilm_64_tokens: {results['minilm_64_tokens']}")
    results_file.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out_dir}")


def image_page(driver, run_dir, image_file, scratch, out_dir):
    """The explorer page of an image run on `image_file`, as `tfattn attention --html` writes it,
    opened offline; clicking a layer x head thumbnail must redraw the overlay."""
    from tfattn.explorer.images import explain_image, image_explorer_page
    from tfattn.tasks.base import open_run

    task, model = open_run(run_dir, "tfattn attention")
    started = time.perf_counter()
    (pixels,) = task._read_files([image_file])
    explanation = explain_image(model, pixels, task.label_names, name=Path(run_dir).name)
    path = image_explorer_page([explanation], title=Path(image_file).name).save(Path(scratch) / "image.html")
    written = time.perf_counter() - started
    open_page(driver, path)
    assert_offline_and_clean(driver, path)
    name = f"{Path(run_dir).name}_image"
    driver.save_screenshot(str(out_dir / f"{name}.png"))  # as it opens: the last layer, mean of the heads
    overlay = by_testid(driver, "overlay-canvas")[0]
    before = overlay.screenshot_as_png
    thumbs = by_testid(driver, "image-thumb")
    click(driver, thumbs[1])
    assert overlay.screenshot_as_png != before, "clicking a thumbnail did not redraw the overlay"
    run = explanation.to_payload()
    result = {
        "run": str(run_dir),
        "image": str(image_file),
        "family": run["family"],
        "predicted": run["prediction"]["labels"][run["prediction"]["predicted"]],
        "layers": len(run["layers"]),
        "heads": run["num_heads"],
        "views": list(run["views"]),
        "thumbnails": len(thumbs),
        "bytes": path.stat().st_size,
        "seconds_to_explain_and_write": round(written, 2),
    }
    print(f"{name}: {result}", flush=True)
    return {name: result}


if __name__ == "__main__":
    main()
