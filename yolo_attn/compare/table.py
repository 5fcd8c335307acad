"""Comparison tables from a compare run folder: mean +- std over seeds, deltas vs the baseline, noise markers.

Everything here is a pure function of the JSON files in the run folder (``config.json``, ``results/*.json``,
``bench.json``), so ``yolo-attn table <folder>`` re-renders identical tables at any time.

Numbers and how they are made:

* **AP, AP50, AP75, APs, APm, APl** (COCO protocols) or **AP, AP50, AP75, AR1, AR10, AR100, AR500** (``visdrone``):
  the evaluation harness's numbers on the best checkpoint of each run, in percent, as ``mean ± std`` over the seeds
  that finished (sample standard deviation, n-1; a single seed shows no ± part).
* **Δ** vs the baseline model: difference of the means. Marked ``≈`` when it is within seed noise by this rule:
  ``|Δ| ≤ 2·SE`` with ``SE = sqrt(s_b²/n_b + s_v²/n_v)`` (the standard error of a difference of two means; 2·SE is
  roughly a 95% interval). With fewer than two seeds on either side the noise is unknown and the mark is ``?``.
* **params (M)**, **GFLOPs** (conv+matmul, 2×MACs, fused model, counted at the benchmark input size, every plugin
  layer counted as its official formulation computes it: the convention of published tables), **GFLOPs (executed)**
  (the same count of what yolo-attn's implementation runs) and **latency p50 (ms)** / **FPS** (batch 1, forward only,
  warm-up and interleaved rounds; FPS = 1000 / p50) come from ``bench.json`` (:mod:`yolo_attn.bench`), measured once
  per architecture.
* **epoch time (s)**: wall time per training epoch from the runs themselves, ``mean ± std`` over the seeds that
  finished. Per run it is the mean of the epochs' durations, read from the ``time`` column of Ultralytics'
  ``runs/<run>/results.csv`` (seconds since training started, written after each epoch's validation, so an epoch
  includes its validation); after a resume the clock restarts, and the first resumed epoch's own time is used. Runs
  trained in parallel on one machine (or on different machines) share it: compare epoch times only between runs
  made under the same conditions.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from yolo_attn.evaluation.results_csv import read_results_csv

COCO_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
VISDRONE_METRICS = ("AP", "AP50", "AP75", "AR1", "AR10", "AR100", "AR500")
COST_COLUMNS = ("params_M", "gflops", "gflops_executed", "latency_p50_ms", "fps")
NOISE_RULE = (
    "Δ is marked ≈ when |Δ| ≤ 2·SE, SE = sqrt(s_b²/n_b + s_v²/n_v) (sample std over seeds); "
    "? = fewer than 2 seeds on a side, noise unknown"
)


def metric_names(protocol: str) -> tuple[str, ...]:
    return VISDRONE_METRICS if protocol == "visdrone" else COCO_METRICS


def _metric_value(metrics: dict[str, Any], key: str) -> float | None:
    """A metric in percent; VisDrone's AR keys are stored as ``AR@N`` by the harness."""
    value = metrics.get(key)
    if value is None and key.startswith("AR") and key[2:].isdigit():
        value = metrics.get(f"AR@{key[2:]}")
    if value is None or not isinstance(value, (int, float)) or value < 0:  # -1 = undefined (no GT in that bin)
        return None
    return 100.0 * float(value)


def mean_std(values: list[float]) -> tuple[float | None, float | None, int]:
    """Mean, sample std (n-1; None for n < 2) and n."""
    n = len(values)
    if n == 0:
        return None, None, 0
    mean = sum(values) / n
    if n < 2:
        return mean, None, n
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)), n


def within_noise(base: tuple, variant: tuple) -> bool | None:
    """True/False by the 2·SE rule; None when either side has fewer than two seeds."""
    (mb, sb, nb), (mv, sv, nv) = base, variant
    if mb is None or mv is None or sb is None or sv is None:
        return None
    se = math.sqrt(sb**2 / nb + sv**2 / nv)
    return abs(mv - mb) <= 2 * se  # <=: identical results (Δ = 0, SE = 0) are within noise


def summarize(folder: Path) -> dict[str, Any]:
    """Aggregate a run folder into the table's data (also saved as ``table.json``)."""
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    results = {}
    for path in sorted((folder / "results").glob("*.json")):
        results[path.stem] = json.loads(path.read_text(encoding="utf-8"))
    bench_path = folder / "bench.json"
    bench = json.loads(bench_path.read_text(encoding="utf-8")) if bench_path.is_file() else {"models": {}}
    names = metric_names(config["protocol"])
    labels = [Path(m).stem for m in config["models"]]
    rows = []
    for label in labels:
        runs = [results.get(f"{label}-seed{s}") for s in config["seeds"]]
        ok = [r for r in runs if r and r.get("status") == "ok"]
        failed = [r for r in runs if r and r.get("status") == "failed"]
        row: dict[str, Any] = {
            "model": label,
            "seeds_ok": [r["seed"] for r in ok],
            "seeds_failed": {str(r["seed"]): r.get("error", "") for r in failed},
            "metrics": {},
        }
        for key in names:
            values = [v for v in (_metric_value(r["metrics"], key) for r in ok) if v is not None]
            mean, std, n = mean_std(values)
            row["metrics"][key] = {"mean": mean, "std": std, "n": n, "values": values}
        entry = bench.get("models", {}).get(label)
        row["cost"] = _cost(entry)
        epoch_times = [t for t in (run_epoch_time(folder, r) for r in ok) if t is not None]
        mean, std, n = mean_std(epoch_times)
        row["epoch_time_s"] = {"mean": mean, "std": std, "n": n, "values": epoch_times}
        rows.append(row)
    baseline = config.get("baseline", labels[0])
    base_row = next((r for r in rows if r["model"] == baseline), rows[0])
    for row in rows:
        row["delta"] = {}
        if row is base_row:
            continue
        for key in names:
            b, v = base_row["metrics"][key], row["metrics"][key]
            if b["mean"] is None or v["mean"] is None:
                row["delta"][key] = None
                continue
            row["delta"][key] = {
                "value": v["mean"] - b["mean"],
                "within_noise": within_noise((b["mean"], b["std"], b["n"]), (v["mean"], v["std"], v["n"])),
            }
    return {
        "folder": str(folder),
        "protocol": config["protocol"],
        "metrics": list(names),
        "baseline": base_row["model"],
        "seeds": config["seeds"],
        "epochs": config["epochs"],
        "imgsz": config["imgsz"],
        "data": config["data"],
        "bench": bench.get("settings"),
        "noise_rule": NOISE_RULE,
        "rows": rows,
    }


def _cost(entry: dict[str, Any] | None) -> dict[str, float | None]:
    if not entry:
        return dict.fromkeys(COST_COLUMNS)
    flops = entry.get("flops") or {}
    latency = (entry.get("latency") or {}).get("batch") or {}
    p50 = (latency.get("forward") or {}).get("p50_ms")
    return {
        "params_M": entry["params"] / 1e6 if entry.get("params") is not None else None,
        "gflops": flops.get("gflops"),
        "gflops_executed": flops.get("executed_gflops"),  # absent from bench.json written before schema 2
        "latency_p50_ms": p50,
        "fps": 1000.0 / p50 if p50 else None,
    }


def _float(text: Any) -> float | None:
    try:
        value = float(str(text).strip())
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def epoch_durations(results_csv: Path) -> list[float]:
    """Per-epoch wall times (s) from Ultralytics' ``results.csv`` ``time`` column (cumulative since the training
    (re)started); [] when the file or the column is missing or unreadable."""
    try:
        times = read_results_csv(Path(results_csv)).get("time", [])
    except OSError:
        return []
    durations: list[float] = []
    previous = 0.0
    for t in times:
        if t is None:
            continue
        # a resumed run restarts the clock: an epoch whose time went down is its own (time since the restart)
        durations.append(t - previous if t > previous else t)
        previous = t
    return durations


def run_epoch_time(folder: Path, record: dict[str, Any]) -> float | None:
    """Mean epoch wall time (s) of one finished run, from ``runs/<run>/results.csv``.

    Falls back, when the CSV is gone, to the worker's own record: ``train.epoch_seconds`` (Ultralytics' per-epoch wall
    times of the worker's process; their mean is an epoch time even after a resume), else the CSV's last row
    (``train.ultralytics_last_epoch.time`` over ``train.epochs_logged``, valid for a run that was not resumed). None
    when nothing usable exists.
    """
    run = record.get("run") or ""
    candidates = [folder / "runs" / run / "results.csv"] if run else []
    if record.get("run_dir"):
        candidates.append(Path(record["run_dir"]) / "results.csv")
    for path in candidates:
        durations = epoch_durations(path)
        if durations:
            return sum(durations) / len(durations)
    train = record.get("train") if isinstance(record.get("train"), dict) else {}
    seconds = [v for v in (_float(t) for t in train.get("epoch_seconds") or []) if v is not None and v > 0]
    if seconds:
        return sum(seconds) / len(seconds)
    last = train.get("ultralytics_last_epoch") if isinstance(train.get("ultralytics_last_epoch"), dict) else {}
    total, epochs = _float(last.get("time")), train.get("epochs_logged")
    if total is not None and isinstance(epochs, int) and epochs > 0 and not train.get("resumed"):
        return total / epochs
    return None


# --------------------------------------------------------------------------------------------------------------------
# renderers
# --------------------------------------------------------------------------------------------------------------------
def _fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _cell(stats: dict[str, Any], delta: dict[str, Any] | None, pm: str = " ± ", tex: bool = False) -> str:
    if stats["mean"] is None:
        return "–"
    text = _fmt(stats["mean"]) + (f"{pm}{stats['std']:.1f}" if stats["std"] is not None else "")
    if delta:
        mark = {True: "≈", False: "", None: "?"}[delta["within_noise"]]
        if tex:
            mark = {"≈": r"$\approx$", "?": "?", "": ""}[mark]
        text += f" ({delta['value']:+.1f}{mark})"
    return text


def _header(summary: dict[str, Any]) -> list[str]:
    return [
        "model",
        "seeds",
        "params (M)",
        "GFLOPs",
        "GFLOPs (executed)",
        "latency p50 (ms)",
        "FPS",
        "epoch time (s)",
        *summary["metrics"],
    ]


def _cost_cells(row: dict[str, Any], pm: str = " ± ") -> list[str]:
    cost = row["cost"]
    return [
        _fmt(cost["params_M"], 2),
        _fmt(cost["gflops"], 2),
        _fmt(cost.get("gflops_executed"), 2),
        _fmt(cost["latency_p50_ms"], 1),
        _fmt(cost["fps"], 1),
        _epoch_cell(row.get("epoch_time_s"), pm),
    ]


def _epoch_cell(stats: dict[str, Any] | None, pm: str) -> str:
    if not stats or stats["mean"] is None:
        return "–"
    digits = 1 if stats["mean"] >= 1 else 2
    return f"{stats['mean']:.{digits}f}" + (f"{pm}{stats['std']:.{digits}f}" if stats["std"] is not None else "")


def _seeds_cell(row: dict[str, Any]) -> str:
    text = str(len(row["seeds_ok"]))
    if row["seeds_failed"]:
        text += f" ({len(row['seeds_failed'])} failed)"
    return text


def _footer(summary: dict[str, Any]) -> list[str]:
    bench = summary.get("bench") or {}
    epochs = f"{summary['epochs']} epoch{'' if summary['epochs'] == 1 else 's'}"
    lines = [
        f"Metrics: {summary['protocol']} protocol (yolo-attn eval), percent, mean ± std over seeds "
        f"{summary['seeds']}; {epochs} at imgsz {summary['imgsz']} on {summary['data']}.",
        f"(Δ) vs baseline {summary['baseline']}: {summary['noise_rule']}.",
        f"Cost: params and GFLOPs (conv+matmul, 2×MACs, fused; plugin layers by their official formulation, the "
        f"published convention; 'executed' = what yolo-attn's implementation runs) and latency p50 at batch 1 / FPS "
        f"= 1000/p50, measured by yolo-attn bench at imgsz {bench.get('imgsz', '?')} on {bench.get('device', '?')}.",
        "Epoch time: wall time per training epoch (validation included), mean of the run's epochs from Ultralytics' "
        "results.csv, mean ± std over seeds; comparable only between runs made under the same conditions.",
    ]
    failed = [(r["model"], s, e) for r in summary["rows"] for s, e in r["seeds_failed"].items()]
    lines += [f"FAILED: {m} seed {s}: {e}" for m, s, e in failed]
    return lines


def to_markdown(summary: dict[str, Any]) -> str:
    header = _header(summary)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in summary["rows"]:
        cells = [row["model"], _seeds_cell(row), *_cost_cells(row)]
        cells += [_cell(row["metrics"][k], row["delta"].get(k)) for k in summary["metrics"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {line}" for line in _footer(summary)) + "\n"


def to_csv(summary: dict[str, Any]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    metric_cols = [f"{k}_{s}" for k in summary["metrics"] for s in ("mean", "std", "n", "delta", "within_noise")]
    epoch_cols = ["epoch_time_s_mean", "epoch_time_s_std", "epoch_time_s_n"]
    writer.writerow(["model", "seeds_ok", "seeds_failed", *COST_COLUMNS, *epoch_cols, *metric_cols])
    for row in summary["rows"]:
        values: list[Any] = [row["model"], len(row["seeds_ok"]), len(row["seeds_failed"])]
        values += [row["cost"].get(c) for c in COST_COLUMNS]
        epoch = row.get("epoch_time_s") or {}
        values += [epoch.get("mean"), epoch.get("std"), epoch.get("n")]
        for k in summary["metrics"]:
            m, d = row["metrics"][k], row["delta"].get(k)
            values += [m["mean"], m["std"], m["n"], d["value"] if d else None, d["within_noise"] if d else None]
        writer.writerow(["" if v is None else v for v in values])
    return buffer.getvalue()


def to_latex(summary: dict[str, Any]) -> str:
    header = _header(summary)
    cols = "l" + "r" * (len(header) - 1)
    lines = [
        "% generated by yolo-attn table; needs \\usepackage{booktabs}",
        f"\\begin{{tabular}}{{{cols}}}",
        "\\toprule",
        " & ".join(h.replace("_", "\\_") for h in header) + " \\\\",
        "\\midrule",
    ]
    for row in summary["rows"]:
        cells = [row["model"].replace("_", "\\_"), _seeds_cell(row), *_cost_cells(row, pm=" $\\pm$ ")]
        cells += [_cell(row["metrics"][k], row["delta"].get(k), pm=" $\\pm$ ", tex=True) for k in summary["metrics"]]
        lines.append(" & ".join(cells).replace("–", "--") + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    lines += [f"% {line}" for line in _footer(summary)]
    return "\n".join(lines) + "\n"


def plot_pareto(summary: dict[str, Any], path: Path) -> Path:
    """AP vs latency and APs (or AP50 for VisDrone) vs latency, with ±std error bars."""
    import matplotlib

    matplotlib.use("Agg")  # headless; never needs a display or a font download
    import matplotlib.pyplot as plt

    second = "APs" if "APs" in summary["metrics"] else "AP50"
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("AP", second)):
        for row in summary["rows"]:
            x, stats = row["cost"]["latency_p50_ms"], row["metrics"][key]
            if x is None or stats["mean"] is None:
                continue
            ax.errorbar(x, stats["mean"], yerr=stats["std"] or 0, fmt="o", capsize=3)
            ax.annotate(row["model"], (x, stats["mean"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel("latency p50, batch 1 (ms)")
        ax.set_ylabel(f"{key} (%)")
        ax.set_title(f"{key} vs latency")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{summary['protocol']} protocol, mean ± std over seeds {summary['seeds']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def render_tables(folder: Path | str) -> str:
    """Write table.md/.csv/.json/.tex and pareto.png into the run folder; return the markdown table."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a yolo-attn compare run folder (no config.json)")
    summary = summarize(folder)
    markdown = to_markdown(summary)
    (folder / "table.md").write_text(markdown, encoding="utf-8")
    (folder / "table.csv").write_text(to_csv(summary), encoding="utf-8")
    (folder / "table.tex").write_text(to_latex(summary), encoding="utf-8")
    (folder / "table.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    plot_pareto(summary, folder / "pareto.png")
    return markdown
