"""Training cost: step time for every model, peak step memory (fresh process per model on CPU), and the compare
table's epoch time read from the runs' own ``results.csv``.

Values are not timed against thresholds; memory is checked for what must hold (it grows with the batch, it sees an
allocation of known size).
"""

from __future__ import annotations

import csv
import json
import statistics
import sys
from pathlib import Path

import pytest
import torch

from yolo_attn.bench import benchmark_models
from yolo_attn.bench.train_cost import make_train_batch, peak_step_memory

MODELS = ["yolov8n.yaml", "yolov8n-ema.yaml"]
BATCHES = (1, 8)


@pytest.fixture(scope="module")
def train_runs(tmp_path_factory, single_torch_thread):
    tmp = tmp_path_factory.mktemp("train_cost")
    runs = {}
    for batch in BATCHES:
        benchmark_models(
            MODELS,
            imgsz=64,
            flops=False,
            latency=False,
            train=True,
            train_batch=batch,
            train_warmup=1,
            train_repeats=2,
            threads=1,
            save=tmp / f"b{batch}.json",
            verbose=False,
        )
        runs[batch] = json.loads((tmp / f"b{batch}.json").read_text())
    return runs


def test_step_time_is_reported_for_every_model(train_runs) -> None:
    for batch, saved in train_runs.items():
        assert saved["settings"]["train"]["batch"] == batch
        for entry in saved["models"]:
            train = entry["train"]
            assert train["batch"] == batch and train["imgsz"] == [64, 64]
            assert len(train["samples_ms"]) == 2 and train["step"]["p50_ms"] > 0
        ratio = saved["models"][1]["ratios"]["train_step"]
        base, variant = (e["train"]["samples_ms"] for e in saved["models"])
        assert ratio["paired_median"] == pytest.approx(statistics.median(v / b for v, b in zip(variant, base)))
        assert ratio["paired_ci95"][0] <= ratio["paired_median"] <= ratio["paired_ci95"][1]


def test_peak_memory_grows_with_batch_size(train_runs) -> None:
    small, large = (train_runs[b] for b in BATCHES)
    for e_small, e_large in zip(small["models"], large["models"]):
        m_small, m_large = e_small["train"]["memory"], e_large["train"]["memory"]
        if sys.platform.startswith("linux"):
            assert m_small["method"] == m_large["method"] == "cpu-hwm"
        assert m_small["step_memory_mb"] > 0
        # gradients (~12 MB for 3.2 M params) are batch-independent; activations grow ~linearly with the batch
        assert m_large["step_memory_mb"] > m_small["step_memory_mb"] + 5
        assert m_large["peak_total_mb"] > m_small["peak_total_mb"]
    ratio = large["models"][1]["ratios"]["train_memory"]
    expected = (
        large["models"][1]["train"]["memory"]["step_memory_mb"]
        / large["models"][0]["train"]["memory"]["step_memory_mb"]
    )
    assert ratio == pytest.approx(expected)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the CPU method reads /proc (Linux)")
def test_cpu_memory_method_sees_an_allocation_of_known_size() -> None:
    size_mb = 64
    kept = []

    def step() -> None:
        kept.append(torch.ones(size_mb * 2**20 // 4))  # 64 MB, every page written

    result = peak_step_memory(step, torch.device("cpu"))
    assert result["method"] == "cpu-hwm"
    assert size_mb - 1 <= result["step_memory_mb"] <= size_mb + 16


def test_train_batch_targets_are_valid_and_fixed() -> None:
    a = make_train_batch(3, 3, (32, 48), 80, torch.device("cpu"))
    b = make_train_batch(3, 3, (32, 48), 80, torch.device("cpu"))
    assert a["img"].shape == (3, 3, 32, 48) and torch.equal(a["bboxes"], b["bboxes"])
    assert a["batch_idx"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    xywh = a["bboxes"]
    assert ((xywh[:, :2] - xywh[:, 2:] / 2) >= 0).all() and ((xywh[:, :2] + xywh[:, 2:] / 2) <= 1).all()


def test_train_needs_a_detection_model() -> None:
    with pytest.raises(ValueError, match="needs an Ultralytics detection model"):
        benchmark_models([torch.nn.Conv2d(3, 8, 3)], imgsz=32, flops=False, latency=False, train=True, verbose=False)


# ------------------------------------------------------------------------------------ epoch time in compare tables
def _write_run_folder(folder: Path, runs: dict[str, Path | None], records: dict[str, dict] | None = None) -> None:
    (folder / "results").mkdir(parents=True)
    models = sorted({name.rsplit("-seed", 1)[0] for name in runs})
    seeds = sorted({int(name.rsplit("-seed", 1)[1]) for name in runs})
    config = {
        "models": [f"{m}.yaml" for m in models],
        "seeds": seeds,
        "baseline": models[0],
        "data": "coco8.yaml",
        "epochs": 2,
        "imgsz": 64,
        "protocol": "coco",
    }
    (folder / "config.json").write_text(json.dumps(config))
    for name, results_csv in runs.items():
        model, seed = name.rsplit("-seed", 1)
        record = {
            "run": name,
            "model": f"{model}.yaml",
            "seed": int(seed),
            "status": "ok",
            "run_dir": str(folder / "runs" / name),
            "metrics": {"AP": 0.1},
        }
        record.update((records or {}).get(name, {}))
        (folder / "results" / f"{name}.json").write_text(json.dumps(record))
        if results_csv is not None:
            (folder / "runs" / name).mkdir(parents=True)
            (folder / "runs" / name / "results.csv").write_text(results_csv.read_text())


def test_epoch_time_column_comes_from_the_runs_results_csv(tmp_path, coco8_copy, single_torch_thread) -> None:
    """A real Ultralytics training writes results.csv with a cumulative ``time`` column; the table reads it."""
    from ultralytics import YOLO

    from yolo_attn.compare.table import summarize, to_markdown

    YOLO("yolov8n.yaml").train(
        data=str(coco8_copy),
        epochs=2,
        imgsz=64,
        batch=4,
        workers=0,
        device="cpu",
        plots=False,
        project=str(tmp_path / "train"),
        name="r",
        exist_ok=True,
        verbose=False,
    )
    results_csv = tmp_path / "train" / "r" / "results.csv"
    with results_csv.open() as fh:
        rows = list(csv.DictReader(fh))
    header = [k.strip() for k in rows[0]]
    assert "time" in header, f"Ultralytics' results.csv has no time column: {header}"
    times = [float(r[next(k for k in r if k.strip() == "time")]) for r in rows]
    assert len(times) == 2 and 0 < times[0] < times[1]  # cumulative seconds since training started
    resumed = tmp_path / "resumed.csv"  # epochs 1-2, then a resume restarts the clock for epochs 3-4
    resumed.write_text("epoch,time,metrics/mAP50(B)\n1,10,0\n2,21,0\n3,5,0\n4,16,0\n")

    folder = tmp_path / "cmp"
    fallback = {"train": {"ultralytics_last_epoch": {"time": "30"}, "epochs_logged": 3}}
    worker_times = {"train": {"epoch_seconds": [4.0, 6.0], "resumed": True, "ultralytics_last_epoch": {"time": "9"}}}
    runs = {"yolov8n-seed0": results_csv, "yolov8n-seed1": resumed, "yolov8n-seed2": None, "yolov8n-seed3": None}
    _write_run_folder(folder, runs, {"yolov8n-seed2": fallback, "yolov8n-seed3": worker_times})
    summary = summarize(folder)
    epoch = summary["rows"][0]["epoch_time_s"]
    # per run: mean epoch duration; seeds 2 and 3 have no CSV left: the worker's epoch times, else its CSV last row
    assert epoch["values"] == pytest.approx([times[1] / 2, (10 + 11 + 5 + 11) / 4, 30 / 3, (4 + 6) / 2])
    assert epoch["n"] == 4 and epoch["mean"] == pytest.approx(sum(epoch["values"]) / 4)
    table = to_markdown(summary)
    assert " epoch time (s) |" in table.splitlines()[0] and " GFLOPs (executed) |" in table.splitlines()[0]
    assert f"{epoch['mean']:.1f} ± {epoch['std']:.1f}" in table


def test_epoch_time_is_missing_not_invented(tmp_path) -> None:
    from yolo_attn.compare.table import summarize, to_csv

    no_time = tmp_path / "old.csv"
    no_time.write_text("epoch,train/box_loss\n1,3.2\n")
    folder = tmp_path / "cmp"
    _write_run_folder(
        folder,
        {"yolov8n-seed0": no_time},
        {"yolov8n-seed0": {"train": {"ultralytics_last_epoch": {"time": "30"}, "epochs_logged": 3, "resumed": True}}},
    )
    summary = summarize(folder)
    assert summary["rows"][0]["epoch_time_s"]["mean"] is None  # a resumed run's last row is not a total
    assert "epoch_time_s_mean" in to_csv(summary).splitlines()[0]
