"""`yolo-attn compare` under every executor: a local pool (`jobs=2`) and Ray give the sequential run's numbers and
table, survive `kill -9` of the driver and of a Ray worker, record a broken model as failed, and never put two
concurrent runs on one GPU.

Real runs throughout (coco8, 1 epoch at imgsz 64, batch 4, workers=0): the sequential sweep of conftest (2 models x
2 seeds, plus a model that fails to build; shared with test_compare) is the reference every other executor is
compared with. The Ray cluster is a real one started by the test
(`ray start --head --block`, 2 CPUs, its own port, temp dir and auth token), torn down at the end.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from conftest import COMPARE_COMMON, COMPARE_MODELS, console_script, subprocess_env

from yolo_attn.compare.executors import DeviceSlot, LocalExecutor, plan_devices
from yolo_attn.compare.progress import Progress
from yolo_attn.compare.worker import state_paths

MODELS = COMPARE_MODELS
RUNS = [f"{m}-seed{s}" for s in (0, 1) for m in ("yolov8n", "yolov8n-ema")]
# The parallel sweeps run the reference's two good models without the benchmark: their per-run numbers are compared
# with the reference's, their tables with each other's.
COMMON = [*COMPARE_COMMON, "bench=False"]
# Columns that hold wall-clock measurements (latency, FPS, epoch time): they differ between any two sweeps, also
# two sequential ones, so table equality is checked on every other cell.
TIMED = re.compile(r"time|latency|FPS", re.I)


def yolo_attn(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    run = subprocess.run(
        [console_script("yolo-attn"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env or subprocess_env(),
        timeout=900,
    )
    assert run.returncode == 0, f"{run.stdout[-4000:]}\n{run.stderr[-4000:]}"
    return run


def per_run(folder: Path) -> dict[str, dict]:
    """What must not depend on the executor: status, the harness's metrics, Ultralytics' losses of the last epoch."""
    out = {}
    for path in sorted((folder / "results").glob("*.json")):
        if path.stem not in RUNS:  # the reference's model that fails to build
            continue
        record = json.loads(path.read_text())
        last = record.get("train", {}).get("ultralytics_last_epoch", {})
        out[path.stem] = {
            "status": record["status"],
            "metrics": {k: v for k, v in record.get("metrics", {}).items() if k != "model"},  # model = weights path
            "losses": {k: v for k, v in last.items() if "loss" in k},
            "epochs_logged": record.get("train", {}).get("epochs_logged"),
        }
    return out


def untimed_table(folder: Path) -> str:
    """table.md with the wall-clock columns blanked (header kept, so a lost or added column still shows)."""
    lines = (folder / "table.md").read_text().splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    timed = {i for i, name in enumerate(header) if TIMED.search(name)}
    out = []
    for line in lines:
        if line.startswith("|") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if line is not lines[0]:
                cells = ["·" if i in timed else c for i, c in enumerate(cells)]
            line = "| " + " | ".join(cells) + " |"
        out.append(line)
    return "\n".join(out)


def truncate(path: Path) -> None:
    """What a kill during a checkpoint write leaves: the first half of the file."""
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def table_metrics(folder: Path) -> dict[str, dict]:
    """The table's metric cells (mean, std, n, Δ) of the good models, from table.json."""
    rows = json.loads((folder / "table.json").read_text())["rows"]
    return {r["model"]: r["metrics"] for r in rows if r["model"] in ("yolov8n", "yolov8n-ema")}


def snapshot(folder: Path) -> dict[str, tuple[int, str]]:
    return {p.name: (p.stat().st_mtime_ns, p.read_text()) for p in (folder / "results").glob("*.json")}


def ok_results(folder: Path) -> list[str]:
    out = []
    for path in (folder / "results").glob("*.json"):
        try:
            if json.loads(path.read_text())["status"] == "ok":
                out.append(path.stem)
        except (OSError, ValueError, KeyError):
            pass
    return out


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie is dead for our purpose
        return fh.read().split(") ")[-1][0] != "Z"


def kill_driver_mid_sweep(
    args: list[str], cwd: Path, folder: Path, env: dict, state_folder: Path | None = None
) -> dict:
    """Start a sweep, SIGKILL the driver (only its pid) once the first run finished; return what was left.

    ``state_folder`` is where the runs' progress files are (the node side, with ray_storage).
    """
    proc = subprocess.Popen(
        [console_script("yolo-attn"), *args], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 600
    while time.time() < deadline and not ok_results(folder):
        assert proc.poll() is None, "the sweep ended before it could be killed"
        time.sleep(0.2)
    in_flight = []  # pids of the runs still working, from their progress files
    for run in RUNS:
        progress = (state_folder or folder) / "specs" / f"{run}.progress.json"
        if progress.is_file() and not (folder / "results" / f"{run}.json").is_file():
            in_flight.append(json.loads(progress.read_text())["pid"])
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10  # local workers die with their driver; Ray kills the tasks of a dead driver
    while time.time() < deadline and any(alive(p) for p in in_flight):
        time.sleep(0.1)
    return {"finished": snapshot(folder), "orphans": [p for p in in_flight if alive(p)], "in_flight": in_flight}


def resume_twice(args: list[str], cwd: Path, folder: Path, killed: dict, env: dict) -> dict:
    finished = killed["finished"]
    k = len(finished)
    again = yolo_attn(*args, cwd=cwd, env=env)
    after_first = snapshot(folder)
    third = yolo_attn(*args, cwd=cwd, env=env)
    return {"k": k, "again": again.stdout, "after_first": after_first, "third": third.stdout}


def assert_resumed_without_redoing(sweep: dict, orphans: str) -> None:
    """After the driver's SIGKILL: nothing left running, the first re-run redid no finished run and completed the
    sweep, the second redid nothing."""
    folder, killed, k = sweep["folder"], sweep["killed"], sweep["k"]
    assert not killed["orphans"], orphans
    assert 1 <= k < len(RUNS)
    assert f"{len(RUNS)} runs ({k} done, {len(RUNS) - k} to do)" in sweep["again"]
    for name, (mtime, text) in killed["finished"].items():
        assert sweep["after_first"][name] == (mtime, text), f"{name} was redone"
    assert sorted(ok_results(folder)) == sorted(RUNS)
    assert f"{len(RUNS)} runs ({len(RUNS)} done, 0 to do)" in sweep["third"]
    assert snapshot(folder) == sweep["after_first"]  # the second re-run redid nothing


# ----------------------------------------------------------------------------------------------------------------------
# fixtures
# ----------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sequential(compare_reference) -> Path:
    """The reference: the sequential runner (conftest), whose good runs are RUNS."""
    return compare_reference["folder"]


@pytest.fixture(scope="module")
def pool(tmp_path_factory, coco8_copy) -> dict:
    """A jobs=2 sweep whose driver is SIGKILLed after its first finished run, then re-run twice."""
    work = tmp_path_factory.mktemp("pool")
    folder = work / "runs" / "compare" / "pool"
    args = ["compare", f"models={MODELS}", f"data={coco8_copy}", *COMMON, "name=pool", "jobs=2"]
    killed = kill_driver_mid_sweep(args, work, folder, subprocess_env())
    return {"folder": folder, "killed": killed, **resume_twice(args, work, folder, killed, subprocess_env())}


@pytest.fixture(scope="module")
def ray_cluster():
    """A real Ray head node with 2 CPUs on a free port, private temp dir and token; stopped at the end."""
    pytest.importorskip("ray", reason="Ray tests need the ray extra: pip install 'yolo-attn[ray]'")
    import socket

    with socket.socket() as s:
        s.bind(("", 0))
        port = s.getsockname()[1]
    temp = Path(tempfile.mkdtemp(prefix="ya-ray-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    env = subprocess_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32), RAY_USAGE_STATS_ENABLED="0")
    log = temp / "head.log"
    with open(log, "w") as handle:
        head = subprocess.Popen(
            [console_script("ray"), "start", "--head", "--block", f"--port={port}", "--num-cpus=2", "--num-gpus=0"]
            + ["--include-dashboard=false", f"--temp-dir={temp}", "--disable-usage-stats"],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: torn down as a whole below
        )
    try:
        deadline = time.time() + 180
        while time.time() < deadline and "Ray runtime started" not in log.read_text():
            assert head.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)
        address = re.search(r"ray start --address='([^']+)'", log.read_text())
        assert address, log.read_text()[-3000:]
        yield {"address": address.group(1), "env": env}
    finally:
        head.send_signal(signal.SIGTERM)  # `ray start --block` stops the processes it started
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
        try:
            os.killpg(head.pid, signal.SIGKILL)  # anything of that cluster still around
        except ProcessLookupError:
            pass
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_sweep(tmp_path_factory, coco8_copy, ray_cluster) -> dict:
    """executor=ray on the test cluster, runs trained under a separate storage folder (as if on other machines:
    only what the tasks return reaches the run folder); driver SIGKILLed after its first run, then re-run twice."""
    work = tmp_path_factory.mktemp("ray")
    folder = work / "runs" / "compare" / "ray"
    storage = work / "nodes"
    args = ["compare", f"models={MODELS}", f"data={coco8_copy}", *COMMON, "name=ray", "executor=ray"]
    args += [f"ray_address={ray_cluster['address']}", f"ray_storage={storage}"]
    env = ray_cluster["env"]
    node = storage / "ray"
    killed = kill_driver_mid_sweep(args, work, folder, env, state_folder=node)
    return {"folder": folder, "node": node, "killed": killed, **resume_twice(args, work, folder, killed, env)}


# ----------------------------------------------------------------------------------------------------------------------
# device assignment (no training)
# ----------------------------------------------------------------------------------------------------------------------
def test_device_plan_gives_every_concurrent_run_gpus_of_its_own():
    four = plan_devices("0,1,2,3", jobs=4, cuda_count=4, visible="")
    assert [s.visible for s in four.slots] == ["0", "1", "2", "3"] and {s.device for s in four.slots} == {"0"}
    assert four.gpus_per_run == 1 and not four.notes
    ddp = plan_devices([0, 1, 2, 3], jobs=2, cuda_count=4, visible="")  # device=0,1,2,3 parsed by the CLI
    assert [s.visible for s in ddp.slots] == ["0,1", "2,3"] and {s.device for s in ddp.slots} == {"0,1"}
    assert ddp.gpus_per_run == 2
    over = plan_devices("0,1,2,3", jobs=8, cuda_count=4, visible="")
    assert len(over.slots) == 4 and "4 run(s) at a time" in over.notes[0]
    uneven = plan_devices("0,1,2,3", jobs=3, cuda_count=4, visible="")
    assert [s.visible for s in uneven.slots] == ["0", "1", "2"] and "GPU(s) 3 stay idle" in uneven.notes[-1]
    # indices are torch's, i.e. relative to the driver's own CUDA_VISIBLE_DEVICES
    mapped = plan_devices("1,3", jobs=2, cuda_count=4, visible="4,5,6,7")
    assert [s.visible for s in mapped.slots] == ["5", "7"] and [s.gpus for s in mapped.slots] == [("1",), ("3",)]
    # jobs=1 with every GPU per run is the sequential runner: DDP on the whole list, device passed on unchanged
    legacy = plan_devices("0,1", jobs=1, cuda_count=2, visible="")
    assert legacy.slots == [DeviceSlot("0,1", None, ("0", "1"))] and legacy.gpus_per_run == 2
    cpu = plan_devices("cpu", jobs=2)
    assert cpu.slots == [DeviceSlot("cpu")] * 2 and cpu.gpus_per_run == 0
    auto = plan_devices(None, jobs=2, cuda_count=2, visible="")
    assert [s.visible for s in auto.slots] == ["0", "1"]
    with pytest.raises(Exception, match="gpus_per_run=5"):
        plan_devices("0,1,2,3", jobs=1, gpus_per_run=5, cuda_count=4)
    with pytest.raises(Exception, match="name the GPUs"):
        plan_devices("cpu", jobs=2, gpus_per_run=1)


def test_pool_never_runs_two_runs_on_one_gpu_at_once(tmp_path):
    """The real pool and slot bookkeeping, with a fake launcher that records which GPUs each run held and when."""
    plan = plan_devices("0,1,2,3", jobs=4, cuda_count=4, visible="")
    held: list[tuple[float, float, str, str]] = []
    lock = threading.Lock()

    def launch(spec, slot):
        start = time.monotonic()
        time.sleep(0.1 + 0.05 * (spec["seed"] % 3))
        Path(spec["result_path"]).parent.mkdir(parents=True, exist_ok=True)
        Path(spec["result_path"]).write_text(json.dumps({"run": spec["run"], "status": "ok", "started": time.time()}))
        with lock:
            held.append((start, time.monotonic(), slot.visible, spec["train_args"]["device"]))
        return 0

    specs = [
        {
            "run": f"m-seed{i}",
            "model": "m.yaml",
            "seed": i,
            "train_args": {"device": "0,1,2,3"},
            "run_dir": str(tmp_path / "runs" / f"m-seed{i}"),
            "result_path": str(tmp_path / "results" / f"m-seed{i}.json"),
        }
        for i in range(14)
    ]
    progress = Progress(len(specs), 0, len(specs), capacity=4, mode="quiet")
    LocalExecutor(plan, tmp_path, launch=launch).run(specs, progress)
    assert len(held) == 14 and progress.done == 14 and progress.failed == 0
    assert {device for *_, device in held} == {"0"}  # each worker sees only its GPU, as device 0
    for i, (s1, e1, gpu1, _) in enumerate(held):
        for s2, e2, gpu2, _ in held[i + 1 :]:
            assert not (gpu1 == gpu2 and s1 < e2 and s2 < e1), f"GPU {gpu1} held by two runs at once"
    busiest = max(sum(1 for s, e, *_ in held if s <= t < e) for t, *_ in held)
    assert busiest == 4, "four GPUs should be busy at once"


# ----------------------------------------------------------------------------------------------------------------------
# local pool
# ----------------------------------------------------------------------------------------------------------------------
def test_pool_numbers_and_table_equal_sequential(pool, sequential):
    assert per_run(pool["folder"]) == per_run(sequential)
    assert sorted(per_run(pool["folder"])) == sorted(RUNS)
    assert all(r["status"] == "ok" and len(r["losses"]) >= 6 for r in per_run(sequential).values())
    assert table_metrics(pool["folder"]) == table_metrics(sequential)
    config = json.loads((pool["folder"] / "config.json").read_text())
    assert config["threads"] == 1 and config["gpus_per_run"] == 0  # the shared per-run settings that fix the numbers
    record = json.loads((pool["folder"] / "results" / "yolov8n-seed1.json").read_text())
    assert record["executor"]["kind"] == "local" and record["executor"]["jobs"] == 2


def test_pool_sigkilled_driver_resumes_without_redoing_finished_runs(pool):
    assert_resumed_without_redoing(pool, orphans="workers of the killed driver kept running")


# ----------------------------------------------------------------------------------------------------------------------
# Ray
# ----------------------------------------------------------------------------------------------------------------------
def test_ray_numbers_and_table_equal_sequential_and_pool(ray_sweep, sequential, pool):
    folder = ray_sweep["folder"]
    assert per_run(folder) == per_run(sequential)
    assert table_metrics(folder) == table_metrics(sequential)
    assert untimed_table(folder) == untimed_table(pool["folder"])  # same settings: the same table, cell for cell
    record = json.loads((folder / "results" / "yolov8n-ema-seed1.json").read_text())
    assert record["executor"]["kind"] == "ray" and record["executor"]["node_id"]


def test_ray_results_reach_the_run_folder_without_a_shared_filesystem(ray_sweep):
    """Runs trained under ray_storage: the run folder got records and small files from the tasks, weights stayed."""
    folder, node = ray_sweep["folder"], ray_sweep["node"]
    for run in RUNS:
        assert (folder / "runs" / run / "eval.json").read_text() == (node / "runs" / run / "eval.json").read_text()
        assert (folder / "runs" / run / "results.csv").is_file()
        assert not (folder / "runs" / run / "weights").exists()  # weights stay where the run trained
        assert (node / "runs" / run / "weights" / "best.pt").is_file()
        record = json.loads((folder / "results" / f"{run}.json").read_text())
        assert record["run_dir"] == str((folder / "runs" / run).resolve())
        assert record["executor"]["node_run_dir"] == str((node / "runs" / run).resolve())


def test_ray_sigkilled_driver_resumes_without_redoing_finished_runs(ray_sweep):
    assert_resumed_without_redoing(ray_sweep, orphans="Ray tasks of the killed driver kept running")


def test_ray_fetches_weights_from_the_node_that_trained(ray_sweep, ray_cluster, tmp_path):
    """What the driver-side benchmark does when weights stayed on a node: a task pinned to that node reads them."""
    record = ray_sweep["folder"] / "results" / "yolov8n-seed0.json"
    script = (
        "import json, sys; from pathlib import Path; from yolo_attn.compare.executors import RayExecutor\n"
        f"record = json.loads(Path({str(record)!r}).read_text())\n"
        f"executor = RayExecutor(Path({str(ray_sweep['folder'])!r}), address={ray_cluster['address']!r})\n"
        f"print('COPY', executor.fetch_weights(record, Path({str(tmp_path / 'weights')!r})))\n"
        "executor.shutdown()\n"
    )
    run = subprocess.run([sys.executable, "-c", script], env=ray_cluster["env"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    copy = tmp_path / "weights" / "best.pt"
    assert f"COPY {copy}" in run.stdout
    assert copy.read_bytes() == (ray_sweep["node"] / "runs" / "yolov8n-seed0" / "weights" / "best.pt").read_bytes()


def test_ray_worker_killed_mid_training_is_retried_and_a_broken_model_fails_alone(tmp_path, coco8_copy, broken_yaml):
    """Local Ray started by compare itself (2 CPUs); the EMA run's worker process is SIGKILLed once while it trains."""
    pytest.importorskip("ray", reason="Ray tests need the ray extra: pip install 'yolo-attn[ray]'")
    folder = tmp_path / "runs" / "compare" / "retry"
    args = ["compare", f"models=yolov8n-ema.yaml,{broken_yaml}", f"data={coco8_copy}", "epochs=1", "imgsz=64"]
    args += ["seeds=0", "batch=4", "workers=0", "device=cpu", "bench=True", "bench_repeats=3", "name=retry"]
    args += ["executor=ray", "ray_num_cpus=2"]
    log = tmp_path / "driver.log"
    with open(log, "w") as handle:
        proc = subprocess.Popen(
            [console_script("yolo-attn"), *args],
            cwd=tmp_path,
            env=subprocess_env(RAY_USAGE_STATS_ENABLED="0"),
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    progress = state_paths({"run": "yolov8n-ema-seed0", "result_path": str(folder / "results" / "x.json")})["progress"]
    killed_pid = None
    deadline = time.time() + 600
    while time.time() < deadline and killed_pid is None and proc.poll() is None:
        state = json.loads(progress.read_text()) if progress.is_file() else {}
        if state.get("stage") == "train":  # inside Ultralytics' epoch loop
            killed_pid = state["pid"]
            os.kill(killed_pid, signal.SIGKILL)
        time.sleep(0.05)
    proc.wait(timeout=900)
    assert proc.returncode == 0, log.read_text()[-4000:]
    assert killed_pid is not None, "the EMA run never reached training"
    ema = json.loads((folder / "results" / "yolov8n-ema-seed0.json").read_text())
    assert ema["status"] == "ok" and ema["starts"] == 2 and ema["executor"]["pid"] != killed_pid
    broken = json.loads((folder / "results" / "yolov8n-broken-seed0.json").read_text())
    assert broken["status"] == "failed" and "divisible" in broken["error"] and broken["starts"] == 1
    assert "FAILED: yolov8n-broken seed 0" in (folder / "table.md").read_text()
    assert "yolov8n-ema" in json.loads((folder / "bench.json").read_text())["models"]


# ----------------------------------------------------------------------------------------------------------------------
# settings, errors and the progress line (no training)
# ----------------------------------------------------------------------------------------------------------------------
def test_gpus_per_run_and_threads_are_shared_settings(tmp_path):
    from yolo_attn.compare.runner import _check_config

    base = {"models": ["a.yaml"], "seeds": [0], "baseline": "a", "data": "d.yaml", "epochs": 1, "imgsz": 64}
    base |= {"protocol": "coco", "split": "val", "pretrained": None, "train_args": {}, "bench_imgsz": 64}
    _check_config(tmp_path, {**base, "threads": 1, "gpus_per_run": 1})
    with pytest.raises(ValueError, match=r"gpus_per_run: was 1, now 2.*device= and jobs="):
        _check_config(tmp_path, {**base, "threads": 1, "gpus_per_run": 2})
    with pytest.raises(ValueError, match="threads: was 1, now 4"):
        _check_config(tmp_path, {**base, "threads": 4, "gpus_per_run": 1})
    # a folder made before these settings existed is not refused; it records them from now on
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "config.json").write_text(json.dumps(base))
    merged = _check_config(legacy, {**base, "threads": None, "gpus_per_run": 0})
    assert merged["threads"] is None and merged["gpus_per_run"] == 0
    assert json.loads((legacy / "config.json").read_text())["gpus_per_run"] == 0


def test_bad_executor_options_are_refused_before_any_work(tmp_path, coco8_copy):
    from yolo_attn.compare import compare

    common = {"models": ["yolov8n.yaml"], "data": str(coco8_copy), "project": str(tmp_path), "device": "cpu"}
    with pytest.raises(ValueError, match=r"\['ray_address'\] only apply to executor=ray"):
        compare(**common, ray_address="auto")
    with pytest.raises(ValueError, match="executor='slurm'"):
        compare(**common, executor="slurm")
    with pytest.raises(ValueError, match="jobs=0"):
        compare(**common, jobs=0)
    with pytest.raises(ValueError, match="gpus_per_run=1 with device=cpu"):
        compare(**common, executor="ray", gpus_per_run=1)
    assert not list(tmp_path.iterdir()), "nothing may be written for a refused command"


def test_ray_missing_says_how_to_install(monkeypatch, tmp_path):
    import sys

    from yolo_attn.compare.executors import ExecutorError, RayExecutor

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(ExecutorError, match=r"pip install 'yolo-attn\[ray\]'"):
        RayExecutor(tmp_path).start()


def test_progress_line_counts_eta_and_epochs():
    progress = Progress(total=6, done=1, todo=5, capacity=2, mode="quiet")
    for run in ("a-seed0", "b-seed0", "a-seed1"):
        progress.started({"run": run, "result_path": f"/nowhere/results/{run}.json"})
    progress.finished({"run": "a-seed0"}, {"status": "ok"}, 10.0)
    progress.finished({"run": "b-seed0"}, {"status": "failed", "error": "boom"}, 1.0)  # failures: not in the ETA
    progress.update("a-seed1", {"stage": "train", "epoch": 3, "epochs": 10})
    progress.running["a-seed1"]["since"] = time.time() - 4.0
    # 2 to do x 10 s + 6 s left of the running run = 26 s of work, 2 at once
    assert progress.eta() == "0m13s"
    line = progress.status_line()
    assert "2/6 done, 1 running, 1 failed, 2 to do, ETA 0m13s" in line and "a-seed1 epoch 3/10" in line


def test_runs_killed_around_the_final_checkpoints_are_finalised_restored_or_retrained(compare_reference, tmp_path):
    """Kills around Ultralytics' last checkpoint writes, in a copy of the reference folder.

    yolov8n-ema-seed1, killed after the last epoch's save wrote last.pt and while it wrote best.pt (truncated), before
    the final strip: ``resume=True`` would fail with "nothing to resume" forever, and best.pt is unreadable; the
    worker restores best.pt from last.pt (Ultralytics writes both from the same bytes), strips the checkpoints as
    Ultralytics would and evaluates. yolov8n-seed0, killed while the final strip rewrote best.pt in place (truncated):
    the best weights are gone, so the run is trained again. Both end with the reference's numbers.
    """
    folder = tmp_path / "runs" / "compare" / "full"
    shutil.copytree(compare_reference["folder"], folder)
    weights = folder / "runs" / "yolov8n-ema-seed1" / "weights"
    shutil.copy(weights / "epoch0.pt", weights / "last.pt")  # the final epoch's checkpoint, optimizer included
    truncate(weights / "best.pt")
    (folder / "results" / "yolov8n-ema-seed1.json").unlink()
    truncate(folder / "runs" / "yolov8n-seed0" / "weights" / "best.pt")
    (folder / "results" / "yolov8n-seed0.json").unlink()
    out = yolo_attn(*compare_reference["args"], cwd=tmp_path)
    assert "6 runs (2 done, 4 to do)" in out.stdout  # the two above and the reference's two failed runs
    finalised = json.loads((folder / "results" / "yolov8n-ema-seed1.json").read_text())
    assert finalised["status"] == "ok", finalised.get("error")
    assert "restored from last.pt" in finalised["train"]["note"] and "finalised" in finalised["train"]["note"]
    assert finalised["starts"] == 2
    retrained = json.loads((folder / "results" / "yolov8n-seed0.json").read_text())
    assert retrained["status"] == "ok", retrained.get("error")
    assert "trained again" in retrained["train"]["note"] and retrained["train"]["epochs_logged"] == 1
    assert per_run(folder) == per_run(compare_reference["folder"])
