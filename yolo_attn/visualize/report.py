"""Figures and ``report.html`` for a compare run folder.

* :func:`render_compare_figures` -- CAM grids and gate-map figures of every model of the sweep (the trained weights
  of one seed, 0 by default) into ``<run>/figures/cam/`` and ``<run>/figures/attn/``. What is already rendered from
  the same weights, images and settings is skipped (``figures/manifest.json`` records what made each file).
* :func:`write_report` -- ``<run>/report.html``: one self-contained page (every image inlined as a base64 data URI,
  inline CSS, no script, no font, no external URL) with the comparison table (rendered from ``table.md``, whatever
  its columns), the Pareto plot, per-class AP per model, training curves (mean ± std over seeds, from each run's
  ``results.csv``), the heatmap figures, the settings and the environment. Plots are matplotlib (Agg).

Everything is read from the files compare writes (``config.json``, ``results/<model>-seed<k>.json``,
``runs/<model>-seed<k>/{results.csv, weights/best.pt}``, ``table.md``, ``pareto.png``, ``bench.json``), so
``yolo-attn report <folder>`` rebuilds the page at any time.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import os
import platform
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from yolo_attn.evaluation.results_csv import read_results_csv
from yolo_attn.visualize._common import list_images, load_model, matplotlib_pyplot

__all__ = ["render_compare_figures", "write_report", "find_weights"]

FIGURES = "figures"
_MANIFEST_VERSION = 1


# ------------------------------------------------------------------------------------------------ run folder I/O
def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _labels(config: dict[str, Any]) -> list[str]:
    return [Path(str(m)).stem for m in config.get("models", [])]


def _config(folder: Path) -> dict[str, Any]:
    config = _read_json(folder / "config.json")
    if not isinstance(config, dict):
        raise FileNotFoundError(f"{folder} is not a yolo-attn compare run folder (no config.json)")
    return config


def _run_dir(folder: Path, run: str) -> Path:
    record = _read_json(folder / "results" / f"{run}.json") or {}
    recorded = Path(record["run_dir"]) if record.get("run_dir") else None
    local = folder / "runs" / run
    # The run folder may have been moved or copied: the local path wins when it exists.
    return local if local.is_dir() or recorded is None else recorded


def find_weights(folder: str | os.PathLike, model: str, seed: int = 0) -> Path | None:
    """Trained weights of one model and seed in a compare run folder: ``best.pt``, else ``last.pt``, else None."""
    run_dir = _run_dir(Path(folder), f"{model}-seed{seed}")
    for name in ("best.pt", "last.pt"):
        if (run_dir / "weights" / name).is_file():
            return run_dir / "weights" / name
    return None


def _file_id(path: Path) -> list[Any]:
    stat = path.stat()
    return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]


def _key(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------------ figures
def render_compare_figures(
    run_folder: str | os.PathLike,
    cam_source: str | os.PathLike | Sequence[str | os.PathLike],
    seed: int = 0,
    *,
    imgsz: int | None = None,
    method: str = "eigencam",
    layers: Sequence[int | str] | None = None,
    cls: int | str | None = None,
    scale: str = "grid",
    gates: bool = True,
    max_images: int | None = 8,
    verbose: bool = True,
) -> dict[str, Any]:
    """CAM grids and gate maps of every model of a compare run (one seed's trained weights) into the run folder.

    Args:
        run_folder: The compare run folder (``runs/compare/<name>``).
        cam_source: Image file, folder or list of them.
        seed: Whose weights to show (default 0; a model without a finished run for that seed is left out and
            reported).
        imgsz: Letterbox size; default the comparison's ``imgsz``.
        method, layers, cls, scale: As for :func:`yolo_attn.visualize.render_cam_grids`.
        gates: Also render gate-map figures (models without attention layers show an empty row).
        max_images: At most this many images of ``cam_source``.
        verbose: Print what is rendered and skipped.

    Returns:
        ``{"cam": [paths], "attn": [paths], "rendered": [paths], "skipped": [paths], "models": [labels],
        "missing": {label: reason}}``. Re-running with the same weights, images and settings renders nothing.
    """
    from yolo_attn.visualize.cam import render_cam_grids
    from yolo_attn.visualize.gates import render_gate_maps

    folder = Path(run_folder)
    config = _config(folder)
    imgsz = int(imgsz or config.get("imgsz") or 640)
    images = list_images(cam_source, max_images)
    weights: dict[str, Path] = {}
    missing: dict[str, str] = {}
    for label in _labels(config):
        path = find_weights(folder, label, seed)
        if path is None:
            missing[label] = f"no weights for seed {seed} (run {label}-seed{seed} missing or failed)"
        else:
            weights[label] = path
    fig_dir = folder / FIGURES
    manifest_path = fig_dir / "manifest.json"
    manifest = _read_json(manifest_path) or {}
    result: dict[str, Any] = {
        "cam": [],
        "attn": [],
        "rendered": [],
        "skipped": [],
        "models": list(weights),
        "missing": missing,
    }
    if verbose and missing:
        for label, reason in missing.items():
            print(f"[yolo-attn figures] {label}: left out, {reason}")
    if not weights:
        return result
    models_id = [[label, *_file_id(path)] for label, path in weights.items()]
    common = {"v": _MANIFEST_VERSION, "models": models_id, "imgsz": imgsz, "seed": seed}
    jobs = [("cam", {**common, "method": method, "layers": layers, "cls": cls, "scale": scale})]
    if gates:
        jobs.append(("attn", common))
    loaded: dict[str, Any] = {}

    def models() -> list[Any]:
        if not loaded:  # load only when something has to be rendered
            for label, path in weights.items():
                loaded[label] = load_model(path, name=label)
        return list(loaded.values())

    for kind, settings in jobs:
        for image in images:
            out = fig_dir / kind / f"{image.stem}.png"
            rel = out.relative_to(folder).as_posix()
            key = _key({**settings, "image": _file_id(image)})
            result[kind].append(out)
            if out.is_file() and manifest.get(rel, {}).get("key") == key:
                result["skipped"].append(out)
                continue
            if kind == "cam":
                render_cam_grids(
                    models(), image, layers, method, cls, imgsz, out=out.parent, scale=scale, verbose=verbose
                )
            else:
                render_gate_maps(models(), image, imgsz, out=out.parent, verbose=verbose)
            manifest[rel] = {"key": key, "image": str(image), "seed": seed, "models": list(weights)}
            if kind == "cam":
                manifest[rel].update(method=method, layers=layers, scale=scale)
            fig_dir.mkdir(parents=True, exist_ok=True)
            tmp = manifest_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(manifest, indent=2, default=str), encoding="utf-8")
            tmp.replace(manifest_path)  # written after every figure: an interrupted run resumes where it stopped
            result["rendered"].append(out)
    if verbose:
        print(f"[yolo-attn figures] {len(result['rendered'])} rendered, {len(result['skipped'])} already up to date")
    return result


# ------------------------------------------------------------------------------------------------ data for plots
def _curve_series(table: dict[str, list[float | None]]) -> dict[str, list[float | None]]:
    """The plotted quantities: summed train and val losses, and Ultralytics' per-epoch mAP50 / mAP50-95."""
    out: dict[str, list[float | None]] = {}
    n = len(table.get("epoch", []))
    for split in ("train", "val"):
        cols = [c for c in table if c.startswith(f"{split}/") and c.endswith("loss")]
        if cols:
            out[f"{split} loss ({' + '.join(c.split('/')[1].replace('_loss', '') for c in cols)})"] = [
                None if any(table[c][i] is None for c in cols) else sum(table[c][i] for c in cols) for i in range(n)
            ]
    for col in ("metrics/mAP50(B)", "metrics/mAP50-95(B)"):
        if col in table:
            out[col.split("/")[1].replace("(B)", "") + " (Ultralytics val)"] = table[col]
    return out


def training_curves(folder: Path, config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``model -> {"epochs": [...], "series": {name: (mean, std, n)}}`` over the seeds that have a results.csv."""
    curves: dict[str, dict[str, Any]] = {}
    for label in _labels(config):
        per_seed = []
        for seed in config.get("seeds", []):
            path = _run_dir(folder, f"{label}-seed{seed}") / "results.csv"
            if path.is_file():
                table = read_results_csv(path)
                if table.get("epoch"):
                    per_seed.append((table["epoch"], _curve_series(table)))
        if not per_seed:
            continue
        epochs = sorted({int(e) for ep, _ in per_seed for e in ep if e is not None})
        names = list(dict.fromkeys(k for _, series in per_seed for k in series))
        stats = {}
        for name in names:
            mean, std, count = [], [], []
            for epoch in epochs:
                values = [
                    series[name][ep.index(epoch)]
                    for ep, series in per_seed
                    if name in series and epoch in ep and series[name][ep.index(epoch)] is not None
                ]
                mean.append(float(np.mean(values)) if values else np.nan)
                std.append(float(np.std(values, ddof=1)) if len(values) > 1 else 0.0)
                count.append(len(values))
            stats[name] = (mean, std, count)
        curves[label] = {"epochs": epochs, "series": stats, "seeds": len(per_seed)}
    return curves


def per_class_ap(folder: Path, config: dict[str, Any]) -> dict[str, dict[str, tuple[float, float, int]]]:
    """``model -> class name -> (mean AP %, std, n seeds)`` from each run's evaluation (classes with GT only)."""
    out: dict[str, dict[str, tuple[float, float, int]]] = {}
    for label in _labels(config):
        values: dict[str, list[float]] = {}
        for seed in config.get("seeds", []):
            run = f"{label}-seed{seed}"
            record = _read_json(folder / "results" / f"{run}.json") or {}
            if record.get("status") != "ok":
                continue
            rows = (record.get("metrics") or {}).get("per_class")
            if rows is None:  # older result JSONs: the evaluation's own file
                rows = (_read_json(_run_dir(folder, run) / "eval.json") or {}).get("per_class")
            for row in rows or []:
                ap = row.get("AP")
                if isinstance(ap, (int, float)) and ap >= 0 and row.get("n_gt", 1):
                    values.setdefault(str(row.get("name", row.get("id"))), []).append(100.0 * ap)
        if values:
            out[label] = {
                name: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, len(v))
                for name, v in values.items()
            }
    return out


# ------------------------------------------------------------------------------------------------ plots
def plot_curves(curves: dict[str, dict[str, Any]], path: Path) -> Path | None:
    """One panel per quantity, a line per model (mean over seeds) with a ± std band."""
    if not curves:
        return None
    plt = matplotlib_pyplot()
    names = list(dict.fromkeys(n for c in curves.values() for n in c["series"]))
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        for label, curve in curves.items():
            if name not in curve["series"]:
                continue
            mean, std, _ = (np.asarray(v, dtype=float) for v in curve["series"][name])
            epochs = np.asarray(curve["epochs"], dtype=float)
            (line,) = ax.plot(epochs, mean, marker="o" if len(epochs) < 4 else None, ms=3, lw=1.2, label=label)
            ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2, lw=0)
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("epoch", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names) :]:
        ax.set_axis_off()
    seeds = sorted({c["seeds"] for c in curves.values()})
    axes.flat[0].legend(fontsize=6)
    fig.suptitle(f"training curves: mean ± std over seeds (seeds per model: {seeds})", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_per_class(ap: dict[str, dict[str, tuple[float, float, int]]], path: Path) -> Path | None:
    """Grouped horizontal bars: AP per class (classes with ground truth), a bar per model, ± std over seeds."""
    if not ap:
        return None
    plt = matplotlib_pyplot()
    classes = sorted({c for per in ap.values() for c in per})
    models = list(ap)
    height = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(7, 0.6 + 0.3 * len(classes) * max(1, len(models) / 2)))
    y = np.arange(len(classes))
    for k, label in enumerate(models):
        means = [ap[label].get(c, (np.nan, 0, 0))[0] for c in classes]
        stds = [ap[label].get(c, (np.nan, 0, 0))[1] for c in classes]
        ax.barh(y + k * height, means, height, xerr=stds, label=label, capsize=2)
    ax.set_yticks(y + height * (len(models) - 1) / 2)
    ax.set_yticklabels(classes, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("AP (%), IoU 0.50:0.95, mean ± std over seeds", fontsize=8)
    ax.legend(fontsize=7)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("per-class AP (classes with ground truth in the evaluated split)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------------ HTML
_CSS = """
body { font-family: sans-serif; margin: 1.5em auto; max-width: 1400px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; font-size: .85em; margin: .5em 0; }
th, td { border: 1px solid #ccc; padding: .25em .5em; text-align: right; white-space: nowrap; }
th { background: #f0f0f0; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #ddd; margin: .3em 0; }
figure { margin: 1em 0; } figcaption { font-size: .85em; color: #555; }
pre { background: #f7f7f7; padding: .6em; font-size: .8em; overflow-x: auto; }
.note { font-size: .85em; color: #555; } ul { font-size: .85em; }
"""


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _figure(path: Path | None, alt: str, caption: str, element_id: str) -> str:
    if path is None or not path.is_file():
        return f'<p class="note" id="{element_id}">{html.escape(alt)}: not available ({html.escape(caption)})</p>'
    return (
        f'<figure id="{element_id}"><img alt="{html.escape(alt)}" src="{_data_uri(path)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _split_row(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def markdown_to_html(text: str) -> str:
    """The subset of Markdown ``table.md`` uses: pipe tables, ``-`` bullets, ``#`` headings, paragraphs.

    Rendered generically, so columns added to the table later appear without a change here.
    """
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        if line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                block.append(lines[i])
                i += 1
            rows = [_split_row(b) for b in block if not set(b.replace("|", "").strip()) <= set("-: ")]
            if rows:
                head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
                body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
                out.append(f'<table class="results"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')
            continue
        if line.lstrip().startswith(("- ", "* ")):
            items = []
            while i < len(lines) and lines[i].lstrip().startswith(("- ", "* ")):
                items.append(f"<li>{html.escape(lines[i].lstrip()[2:])}</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
            continue
        if line.startswith("#"):
            level = min(6, len(line) - len(line.lstrip("#")) + 2)
            out.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
        i += 1
    return "\n".join(out)


def _per_class_table(ap: dict[str, dict[str, tuple[float, float, int]]]) -> str:
    if not ap:
        return ""
    classes = sorted({c for per in ap.values() for c in per})
    head = "<th>class</th>" + "".join(f"<th>{html.escape(m)}</th>" for m in ap)
    body = []
    for c in classes:
        cells = []
        for m in ap:
            if c in ap[m]:
                mean, std, n = ap[m][c]
                cells.append(f"{mean:.1f}" + (f" ± {std:.1f}" if n > 1 else ""))
            else:
                cells.append("–")
        body.append(f"<tr><td>{html.escape(c)}</td>" + "".join(f"<td>{x}</td>" for x in cells) + "</tr>")
    return f'<table id="per-class-table"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _kv_table(data: dict[str, Any], element_id: str) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td style='text-align:left'>{html.escape(json.dumps(v, default=str))}"
        "</td></tr>"
        for k, v in data.items()
    )
    return f'<table id="{element_id}"><tbody>{rows}</tbody></table>'


def _environment(folder: Path) -> dict[str, Any]:
    bench = _read_json(folder / "bench.json") or {}
    env = dict(bench.get("environment") or {})
    import torch
    import ultralytics

    from yolo_attn import __version__

    env["report built"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    env["report built with"] = (
        f"python {platform.python_version()}, torch {torch.__version__}, ultralytics {ultralytics.__version__}, "
        f"yolo-attn {__version__}, {platform.platform()}"
    )
    return env


def write_report(run_folder: str | os.PathLike) -> Path:
    """Build ``<run_folder>/report.html`` from what the run folder holds; returns its path.

    Missing parts (no figures rendered yet, no results.csv) are said on the page, not silently dropped. The
    per-class and curve plots are also kept as PNGs in ``<run_folder>/figures/``.
    """
    folder = Path(run_folder)
    config = _config(folder)
    if not (folder / "table.md").is_file():  # the report is the stage after compare: it reads, never recomputes
        raise FileNotFoundError(
            f"{folder} has no table.md: not a compare run folder, or its tables were deleted "
            f"(`yolo-attn table {folder}` re-renders them from the saved results)"
        )
    table_md = (folder / "table.md").read_text(encoding="utf-8")
    fig_dir = folder / FIGURES
    curves_png = plot_curves(training_curves(folder, config), fig_dir / "training_curves.png")
    ap = per_class_ap(folder, config)
    per_class_png = plot_per_class(ap, fig_dir / "per_class_ap.png")
    manifest = _read_json(fig_dir / "manifest.json") or {}
    name = folder.resolve().name
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>yolo-attn compare: {html.escape(name)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>yolo-attn compare: {html.escape(name)}</h1>",
        f'<p class="note">{html.escape(str(folder.resolve()))} — models {html.escape(", ".join(_labels(config)))}; '
        f"seeds {html.escape(str(config.get('seeds')))}; {html.escape(str(config.get('epochs')))} epochs at imgsz "
        f"{html.escape(str(config.get('imgsz')))} on {html.escape(str(config.get('data')))}</p>",
        '<h2 id="table">Comparison table</h2>',
        f'<div id="table-md">{markdown_to_html(table_md)}</div>',
        '<h2 id="pareto">Accuracy vs latency</h2>',
        _figure(folder / "pareto.png", "Pareto plot", "AP and APs vs latency (pareto.png)", "pareto-plot"),
        '<h2 id="per-class">Per-class AP</h2>',
        _figure(per_class_png, "per-class AP", "AP per class from each run's evaluation", "per-class-plot"),
        _per_class_table(ap),
        '<h2 id="curves">Training curves</h2>',
        _figure(
            curves_png,
            "training curves",
            "loss and Ultralytics' own per-epoch val mAP from each run's results.csv; line = mean over seeds, band = "
            "± std (the table's AP is the pycocotools evaluation of the best checkpoint)",
            "training-curves",
        ),
        '<h2 id="heatmaps">Heatmaps</h2>',
    ]
    for kind, heading, caption in (
        ("cam", "Class-activation maps", "rows = models, columns = layers, one colour scale per grid"),
        ("attn", "Gate maps", "every attention layer's gate, one colour scale per figure"),
    ):
        pngs = sorted((fig_dir / kind).glob("*.png"))
        parts.append(f"<h3>{heading}</h3>")
        if not pngs:
            parts.append(
                f'<p class="note" id="no-{kind}">none rendered (give compare cam=&lt;images&gt;, or run '
                "render_compare_figures)</p>"
            )
        for png in pngs:
            entry = manifest.get(png.relative_to(folder).as_posix(), {})
            seed = f", weights of seed {entry['seed']}" if "seed" in entry else ""
            parts.append(_figure(png, f"{kind} {png.stem}", f"{png.stem}: {caption}{seed}", f"{kind}-{png.stem}"))
    parts += [
        '<h2 id="settings">Settings</h2>',
        _kv_table(config, "settings-table"),
        '<h2 id="environment">Environment</h2>',
        _kv_table(_environment(folder), "environment-table"),
        "</body></html>",
    ]
    path = folder / "report.html"
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text("\n".join(parts), encoding="utf-8")
    tmp.replace(path)
    return path
