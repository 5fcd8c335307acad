"""`yolo-attn compare` end to end on real data (coco8), resumability, crash isolation, and the table maths."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import COMPARE_COMMON, COMPARE_MODELS, console_script, subprocess_env

from yolo_attn.compare.table import mean_std, within_noise

MODELS = COMPARE_MODELS
COMMON = COMPARE_COMMON


def yolo_attn(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    run = subprocess.run(
        [console_script("yolo-attn"), *args], cwd=cwd, capture_output=True, text=True, env=subprocess_env(), timeout=900
    )
    assert run.returncode == 0, f"{run.stdout[-4000:]}\n{run.stderr[-4000:]}"
    return run


@pytest.fixture(scope="module")
def full_run(compare_reference) -> dict:
    return compare_reference


def test_run_folder_has_every_artifact(full_run):
    folder = full_run["folder"]
    for name in ("config.json", "bench.json", "table.md", "table.csv", "table.json", "table.tex", "pareto.png"):
        assert (folder / name).is_file(), name
    results = sorted(p.stem for p in (folder / "results").glob("*.json"))
    assert results == sorted(f"{m}-seed{s}" for m in ("yolov8n", "yolov8n-ema", "yolov8n-broken") for s in (0, 1))


def test_crashing_run_is_recorded_and_others_go_on(full_run):
    folder = full_run["folder"]
    broken = json.loads((folder / "results" / "yolov8n-broken-seed0.json").read_text())
    assert broken["status"] == "failed"
    assert "divisible" in broken["error"] and "48" in broken["error"]
    for model in ("yolov8n", "yolov8n-ema"):
        for seed in (0, 1):
            assert json.loads((folder / "results" / f"{model}-seed{seed}.json").read_text())["status"] == "ok"
    assert "FAILED: yolov8n-broken seed 0" in (folder / "table.md").read_text()


def test_table_values_equal_the_per_run_jsons(full_run):
    folder = full_run["folder"]
    table = json.loads((folder / "table.json").read_text())
    bench = json.loads((folder / "bench.json").read_text())
    with (folder / "table.csv").open() as fh:
        csv_rows = {r["model"]: r for r in csv.DictReader(fh)}
    header = (folder / "table.md").read_text().splitlines()[0]
    for column in ("params (M)", "GFLOPs", "GFLOPs (executed)", "latency p50 (ms)", "FPS", "epoch time (s)", "AP",
                   "AP50", "AP75", "APs", "APm", "APl"):  # fmt: skip
        assert f" {column} |" in header
    for row in table["rows"][:2]:
        runs = [json.loads((folder / "results" / f"{row['model']}-seed{s}.json").read_text()) for s in (0, 1)]
        for key in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
            raw = [r["metrics"][key] for r in runs]
            values = [100 * v for v in raw if v >= 0]
            expected_mean = sum(values) / len(values) if values else None
            got = row["metrics"][key]["mean"]
            assert (got is None and expected_mean is None) or math.isclose(got, expected_mean, abs_tol=1e-9)
            if values:
                assert math.isclose(float(csv_rows[row["model"]][f"{key}_mean"]), expected_mean, abs_tol=1e-9)
        entry = bench["models"][row["model"]]
        assert row["cost"]["params_M"] == entry["params"] / 1e6
        assert row["cost"]["gflops"] == entry["flops"]["gflops"] > 0
        assert row["cost"]["gflops_executed"] == entry["flops"]["executed_gflops"] > 0
        assert row["epoch_time_s"]["n"] == 2 and row["epoch_time_s"]["mean"] > 0  # one epoch time per finished seed
        p50 = entry["latency"]["batch"]["forward"]["p50_ms"]
        assert row["cost"]["latency_p50_ms"] == p50 and math.isclose(row["cost"]["fps"], 1000 / p50)
        assert float(csv_rows[row["model"]]["gflops"]) == pytest.approx(entry["flops"]["gflops"])


def test_rerun_skips_finished_runs_and_reproduces_the_table(full_run):
    folder = full_run["folder"]
    before = {p.name: (p.stat().st_mtime_ns, p.read_text()) for p in (folder / "results").glob("yolov8n*-seed*.json")}
    table_before = (folder / "table.md").read_text()
    again = yolo_attn(*full_run["args"], cwd=full_run["work"])
    assert "6 runs (4 done, 2 to do)" in again.stdout  # the two failed runs are retried, nothing finished is redone
    for name, (mtime, text) in before.items():
        if "broken" in name:
            continue
        path = folder / "results" / name
        assert path.stat().st_mtime_ns == mtime and path.read_text() == text
    assert (folder / "table.md").read_text() == table_before
    rendered = yolo_attn("table", str(folder), cwd=full_run["work"])
    assert (folder / "table.md").read_text() == table_before
    assert table_before.splitlines()[0] in rendered.stdout


def test_changed_settings_are_refused(full_run):
    args = [a if not a.startswith("epochs=") else "epochs=2" for a in full_run["args"]]
    run = subprocess.run(
        [console_script("yolo-attn"), *args], cwd=full_run["work"], capture_output=True, text=True, env=subprocess_env()
    )
    assert run.returncode == 2
    assert "different settings (epochs: was 1, now 2)" in run.stderr


def test_interrupted_run_resumes_from_last_pt(full_run, tmp_path):
    """Deterministic interruption: a run folder whose last.pt is an unfinished checkpoint (epoch 0 of 2)."""
    import shutil

    folder = tmp_path / "runs" / "compare" / "resume"
    args = [
        "compare",
        "models=yolov8n-ema.yaml",
        f"data={json.loads((full_run['folder'] / 'config.json').read_text())['data']}",
        "epochs=2",
        "imgsz=64",
        "seeds=0",
        "batch=4",
        "workers=0",
        "device=cpu",
        "bench=False",
        "save_period=1",
        "name=resume",
    ]
    yolo_attn(*args, cwd=tmp_path)
    run_dir = folder / "runs" / "yolov8n-ema-seed0"
    # make it look like the process died after epoch 0: restore the epoch-0 checkpoint, drop the result
    shutil.copy(run_dir / "weights" / "epoch0.pt", run_dir / "weights" / "last.pt")
    (folder / "results" / "yolov8n-ema-seed0.json").unlink()
    out = yolo_attn(*args, cwd=tmp_path)
    assert "resuming yolov8n-ema-seed0" in out.stdout
    record = json.loads((folder / "results" / "yolov8n-ema-seed0.json").read_text())
    assert record["status"] == "ok" and record["train"]["resumed"] is True


def test_killed_compare_redoes_nothing_finished(full_run, coco8_copy, tmp_path):
    # one seed: the sequential runner's second run is in progress when the first result appears
    common = [a if not a.startswith("seeds=") else "seeds=0" for a in COMMON]
    args = ["compare", f"models={MODELS}", f"data={coco8_copy}", *common, "name=killed", "bench=False"]
    folder = tmp_path / "runs" / "compare" / "killed"
    proc = subprocess.Popen(
        [console_script("yolo-attn"), *args],
        cwd=tmp_path,
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # so the kill reaches the training worker too
    )
    deadline = time.time() + 300
    while time.time() < deadline and not list((folder / "results").glob("*.json")):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p.name: (p.stat().st_mtime_ns, p.read_text()) for p in (folder / "results").glob("*.json")}
    assert len(finished) == 1, "the kill should land while the second run is in progress"
    out = yolo_attn(*args, cwd=tmp_path)
    assert "2 runs (1 done, 1 to do)" in out.stdout
    for name, (mtime, text) in finished.items():
        path = folder / "results" / name
        assert path.stat().st_mtime_ns == mtime and path.read_text() == text
    statuses = [json.loads(p.read_text())["status"] for p in (folder / "results").glob("*.json")]
    assert statuses == ["ok"] * 2
    # same settings and seed as the uninterrupted comparison: the same metrics and training losses per run
    # (deterministic training per seed; AP is ~0 after one epoch from scratch, the losses are not)
    for run in ("yolov8n-seed0", "yolov8n-ema-seed0"):
        records = [json.loads((f / "results" / f"{run}.json").read_text()) for f in (folder, full_run["folder"])]
        metrics = [{k: v for k, v in r["metrics"].items() if k != "model"} for r in records]
        losses = [{k: v for k, v in r["train"]["ultralytics_last_epoch"].items() if "loss" in k} for r in records]
        assert metrics[0] == metrics[1] and len(metrics[0]) >= 6, metrics
        assert losses[0] == losses[1] and len(losses[0]) >= 3, losses


def test_noise_rule_by_hand():
    # baseline 40.0 +- 0.5 (n=3), variant 40.6 +- 0.5 (n=3): SE = sqrt(2 * 0.25 / 3) = 0.408; 2 SE = 0.816 > 0.6
    assert within_noise((40.0, 0.5, 3), (40.6, 0.5, 3)) is True
    assert within_noise((40.0, 0.5, 3), (41.0, 0.5, 3)) is False  # 1.0 > 0.816
    assert within_noise((40.0, None, 1), (41.0, 0.5, 3)) is None  # a single seed: noise unknown
    mean, std, n = mean_std([1.0, 2.0, 3.0])
    assert (mean, std, n) == (2.0, 1.0, 3)
    assert mean_std([5.0]) == (5.0, None, 1)


def test_ddp_device_list_evaluates_on_first_device():
    from yolo_attn.compare.runner import _eval_args

    assert _eval_args({"device": [0, 1]}) == {"device": 0}
    assert _eval_args({"device": "0,1"}) == {"device": "0"}
    assert _eval_args({"device": "cpu"}) == {"device": "cpu"}
    assert _eval_args({}) == {}
