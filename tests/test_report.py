"""Figures and report.html of a real compare run folder (coco8, 2 models, 1 seed, 1 epoch, imgsz 64).

The page is opened from disk in a real headless browser (Debian's Chromium driven by playwright, never
`playwright install`): the screenshot is not blank, the page holds the table, the Pareto plot, the curves and the
grids, and no request leaves the file itself (a page with an external image, checked the same way, is caught).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLE_COCO8, console_script, subprocess_env
from PIL import Image

pytest.importorskip("pytorch_grad_cam", reason="grad-cam is an optional extra: pip install 'yolo-attn[cam]'")

CHROMIUM = Path("/usr/bin/chromium")
BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
IMAGES = sorted((SAMPLE_COCO8 / "images" / "val").glob("*.jpg"))[:2]
MODELS = ["yolov8n.yaml", "yolov8n-ema.yaml"]


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory, coco8_copy) -> Path:
    from yolo_attn.compare import compare

    project = tmp_path_factory.mktemp("compare")
    return compare(
        MODELS,
        str(coco8_copy),
        epochs=1,
        imgsz=64,
        seeds=[0],
        name="viz",
        project=str(project),
        bench_repeats=3,
        verbose=False,
        cam=[str(p) for p in IMAGES],  # figures and report.html at the end of the run
        batch=4,
        workers=0,
        device="cpu",
        plots=False,
    )


def test_compare_with_cam_writes_the_grids_and_the_report(run_folder):
    for kind in ("cam", "attn"):
        assert sorted(p.name for p in (run_folder / "figures" / kind).glob("*.png")) == [
            f"{p.stem}.png" for p in IMAGES
        ]
    page = (run_folder / "report.html").read_text(encoding="utf-8")
    assert page.count('src="data:image/png;base64,') == 3 + 2 * len(IMAGES)


@pytest.fixture(scope="module")
def figures(run_folder) -> dict:
    """The figures compare rendered (a second call finds them up to date and renders nothing)."""
    from yolo_attn.visualize import render_compare_figures

    return render_compare_figures(run_folder, IMAGES, seed=0, verbose=False)


def test_figures_use_each_models_trained_weights(run_folder, figures):
    from yolo_attn.visualize.report import find_weights

    assert figures["models"] == ["yolov8n", "yolov8n-ema"] and figures["missing"] == {}
    for label in figures["models"]:
        weights = find_weights(run_folder, label, 0)
        assert weights is not None and weights.parent == run_folder / "runs" / f"{label}-seed0" / "weights"
    expected = [run_folder / "figures" / kind / f"{p.stem}.png" for kind in ("cam", "attn") for p in IMAGES]
    assert sorted(figures["cam"] + figures["attn"]) == sorted(expected)
    assert figures["rendered"] == [] and sorted(figures["skipped"]) == sorted(expected)  # compare made them
    for path in expected:
        with Image.open(path) as im:
            assert np.asarray(im.convert("L")).std() > 5
    from yolo_attn.visualize import render_compare_figures

    seed1 = render_compare_figures(run_folder, IMAGES, seed=1, verbose=False)  # no run with seed 1: said, not faked
    assert seed1["models"] == [] and set(seed1["missing"]) == {"yolov8n", "yolov8n-ema"}


def test_rerun_renders_nothing_and_a_removed_figure_comes_back(run_folder, figures):
    from yolo_attn.visualize import render_compare_figures

    before = {p: p.stat().st_mtime_ns for p in figures["cam"] + figures["attn"]}
    again = render_compare_figures(run_folder, IMAGES, seed=0, verbose=False)
    assert again["rendered"] == [] and sorted(again["skipped"]) == sorted(before)
    assert {p: p.stat().st_mtime_ns for p in before} == before
    victim = figures["cam"][0]
    victim.unlink()
    third = render_compare_figures(run_folder, IMAGES, seed=0, verbose=False)
    assert third["rendered"] == [victim] and victim.is_file()
    # Other settings are other figures: a different method re-renders the grids (and only them).
    first_grid = run_folder / "figures" / "cam" / f"{IMAGES[0].stem}.png"
    fourth = render_compare_figures(run_folder, IMAGES[:1], seed=0, method="gradcam", verbose=False)
    assert fourth["rendered"] == [first_grid]
    back = render_compare_figures(run_folder, IMAGES[:1], seed=0, verbose=False)  # and back to the defaults
    assert back["rendered"] == [first_grid]


def _markdown_cells(text: str) -> list[list[str]]:
    rows = [line for line in text.splitlines() if line.startswith("|")]
    return [[c.strip() for c in r.strip("|").split("|")] for r in rows if not set(r) <= set("|-: ")]


@pytest.fixture(scope="module")
def report(run_folder, figures) -> Path:
    from yolo_attn.visualize import write_report

    return write_report(run_folder)


def test_report_is_self_contained(report, run_folder):
    text = report.read_text(encoding="utf-8")
    assert report == run_folder / "report.html"
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", text), "a resource outside the file"
    assert "<script" not in text and "@import" not in text and "url(" not in text
    assert text.count('src="data:image/png;base64,') == 3 + 2 * len(IMAGES)  # pareto, per-class, curves, grids
    for name in ("training_curves.png", "per_class_ap.png"):
        assert (run_folder / "figures" / name).is_file()


def test_report_command_rebuilds_the_page(report, run_folder):
    before = report.stat().st_mtime_ns
    run = subprocess.run(
        [console_script("yolo-attn"), "report", str(run_folder)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert str(report) in run.stdout and report.stat().st_mtime_ns > before


def _browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium; .ci/run does)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extras")
    return sync_api.sync_playwright()


def test_report_renders_in_headless_chromium(report, run_folder, tmp_path):
    with _browser() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto(report.as_uri(), wait_until="load")
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
            if os.environ.get("YOLO_ATTN_SCREENSHOT_DIR"):  # to look at it by hand
                shutil.copy(shot, Path(os.environ["YOLO_ATTN_SCREENSHOT_DIR"]) / "report.png")

            external = [u for u in requests if not u.startswith(("file://", "data:"))]
            assert external == [], f"the page loaded external URLs: {external}"
            assert requests[0] == report.as_uri()

            with Image.open(shot) as im:
                gray = np.asarray(im.convert("L"), dtype=np.float32)
            assert gray.shape[0] > 2000  # the whole page, not one screen
            assert gray.std() > 20 and (gray < 200).mean() > 0.05, "the screenshot is (nearly) blank"

            # The table: every cell of table.md, in order.
            expected = _markdown_cells((run_folder / "table.md").read_text(encoding="utf-8"))
            shown = page.evaluate(
                "Array.from(document.querySelectorAll('#table-md table.results tr'))"
                ".map(r => Array.from(r.children).map(c => c.textContent))"
            )
            assert shown == expected and [r[0] for r in shown[1:]] == ["yolov8n", "yolov8n-ema"]
            assert any("?" in cell for cell in shown[2])  # one seed: the noise marker says "unknown"

            images = page.evaluate(
                "Array.from(document.images).map(i => [i.alt, i.naturalWidth, i.src.slice(0, 22), "
                "i.closest('figure') ? i.closest('figure').id : ''])"
            )
            by_alt = {alt: (width, src, fig) for alt, width, src, fig in images}
            for alt, figure_id in (
                ("Pareto plot", "pareto-plot"),
                ("training curves", "training-curves"),
                ("per-class AP", "per-class-plot"),
            ):
                assert by_alt[alt][0] > 100 and by_alt[alt][2] == figure_id, alt
            for kind in ("cam", "attn"):
                grids = [a for a in by_alt if a.startswith(f"{kind} ")]
                assert sorted(grids) == sorted(f"{kind} {p.stem}" for p in IMAGES)
                assert all(by_alt[a][0] > 100 and by_alt[a][1] == "data:image/png;base64," for a in grids)
            assert page.locator("#settings-table").inner_text().count("yolov8n-ema.yaml") == 1
            assert "ultralytics" in page.locator("#environment-table").inner_text()

            # Negative control: the same recording catches a page that does reach out.
            caught: list[str] = []
            probe = browser.new_page()
            probe.on("request", lambda r: caught.append(r.url))
            probe.set_content('<img src="http://127.0.0.1:9/x.png">', wait_until="load")
            assert any(u.startswith("http://127.0.0.1:9/") for u in caught)
        finally:
            browser.close()
