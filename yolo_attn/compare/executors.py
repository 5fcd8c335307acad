"""Where compare runs execute: one after another, several at once on this machine, or as Ray tasks on a cluster.

Every executor runs the same unit of work, :func:`yolo_attn.compare.worker.run_spec` (one model x seed: train, then
evaluate), in a process of its own, and reports to a :class:`~yolo_attn.compare.progress.Progress`:

* :class:`LocalExecutor` -- ``jobs=1`` is the sequential runner (the worker's output on the terminal); ``jobs=N``
  keeps N worker processes busy (a thread pool waits on them; each worker's output goes to ``logs/<run>.log``).
  Devices come from :func:`plan_devices`: on GPUs every concurrent run gets GPUs of its own (``CUDA_VISIBLE_DEVICES``),
  on CPU every run gets ``threads`` torch threads.
* :class:`RayExecutor` -- each run is a Ray task (``num_cpus=cpus_per_run``, ``num_gpus=gpus_per_run``); Ray does the
  scheduling and retries tasks whose worker process or node died (``max_retries``); a run that fails for real returns
  a ``failed`` record (``retry_exceptions=False``: no retry) and the others go on. The record and the run's small files
  come back as the task's return value and are written driver-side, so no shared filesystem is needed.
"""

from __future__ import annotations

import contextlib
import os
import queue
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yolo_attn.compare.progress import Progress
from yolo_attn.compare.worker import read_json, write_json_atomic, write_text_atomic

RAY_INSTALL = "pip install 'yolo-attn[ray]'"


# The worker process: one run spec, see yolo_attn.compare.worker.main
WORKER_MAIN = "import sys; from yolo_attn.compare.worker import main; sys.exit(main(sys.argv[1]))"


class ExecutorError(RuntimeError):
    """An executor cannot run as configured (bad device list, missing Ray, cluster too small); says what to do."""


# ----------------------------------------------------------------------------------------------------------------------
# devices
# ----------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeviceSlot:
    """What one concurrent run gets.

    Attributes:
        device: Ultralytics ``device=`` of the run (``"0"``, ``"0,1"`` for DDP, ``"cpu"``, or the user's own value).
        visible: ``CUDA_VISIBLE_DEVICES`` of the worker (None: inherited unchanged).
        gpus: The GPUs it owns, as the driver names them (for messages and tests).
    """

    device: Any
    visible: str | None = None
    gpus: tuple[str, ...] = ()


@dataclass
class DevicePlan:
    """Slots for the runs that go at once, the GPUs each run trains on, and notes for the user."""

    slots: list[DeviceSlot]
    gpus_per_run: int
    notes: list[str] = field(default_factory=list)


def gpu_list(device: Any) -> list[str] | None:
    """The CUDA indices named by an Ultralytics ``device=`` value; None for CPU/MPS/auto/other accelerators."""
    if device is None or isinstance(device, bool):
        return None
    if isinstance(device, int):
        return [str(device)]
    if isinstance(device, (list, tuple)):
        items = [str(d).strip() for d in device]
    else:
        text = str(device).strip().lower().replace("cuda:", "")
        if text in {"", "cpu", "mps", "mps:0"} or not text[0].isdigit():
            return None
        items = [t.strip() for t in text.split(",") if t.strip()]
    if not items or not all(i.isdigit() for i in items):
        return None
    if len(set(items)) != len(items):
        raise ExecutorError(f"device={device!r} names a GPU twice")
    return items


def plan_devices(
    device: Any,
    jobs: int,
    gpus_per_run: int | None = None,
    *,
    cuda_count: int | None = None,
    visible: str | None = None,
) -> DevicePlan:
    """Give each of up to ``jobs`` concurrent runs its own device(s).

    Rules (the README's "Run a sweep on a GPU server"):

    * CPU (``device=cpu``, or no GPU): ``jobs`` slots on the CPU; each run uses the comparison's ``threads``.
    * A GPU list of K (``device=0,1,2,3``): each run gets ``gpus_per_run`` GPUs of its own, by default
      ``K // jobs`` (``jobs=4`` -> one each; ``jobs=2`` -> two each, i.e. DDP on two GPUs per run). A run never
      shares a GPU: with ``jobs`` > K // gpus_per_run only K // gpus_per_run runs go at once, and GPUs left over
      by an uneven split stay idle (both said in ``notes``). Each worker sees only its GPUs (``CUDA_VISIBLE_DEVICES``,
      mapped through the driver's own), so its ``device=`` is ``0`` (or ``0,1`` for DDP).
    * ``jobs=1`` with all the GPUs per run is exactly the sequential runner: ``device`` is passed on unchanged.
    * No ``device=`` with ``jobs`` > 1 and GPUs present: the GPUs torch sees form the list.
    * Other devices (``mps``, ``npu:0``): one run at a time.

    Args:
        device: The comparison's Ultralytics ``device=``.
        jobs: Runs at once asked for.
        gpus_per_run: GPUs per run (default ``K // jobs``).
        cuda_count: GPUs torch sees (default: asked from torch); a test passes a fake count.
        visible: The driver's ``CUDA_VISIBLE_DEVICES`` (default: from the environment).

    Returns:
        The plan; ``gpus_per_run`` is 0 on CPU.
    """
    if jobs < 1:
        raise ExecutorError(f"jobs={jobs}: give a positive number of runs at once")
    gpus = gpu_list(device)
    auto = device is None or (isinstance(device, str) and device.strip() == "")
    if auto:
        if cuda_count is None:
            import torch

            cuda_count = torch.cuda.device_count()
        if jobs == 1 or cuda_count == 0:  # the sequential runner's own choice: Ultralytics picks GPU 0 or the CPU
            per = 1 if cuda_count else 0
            if gpus_per_run not in (None, per):
                raise ExecutorError(f"gpus_per_run={gpus_per_run} needs device=<GPU list>, e.g. device=0,1")
            return DevicePlan([DeviceSlot(device)] * jobs, per)
        gpus = [str(i) for i in range(cuda_count)]
    if gpus is None:
        cpu = str(device).strip().lower() == "cpu"
        if gpus_per_run not in (None, 0):
            raise ExecutorError(f"gpus_per_run={gpus_per_run} with device={device!r}: name the GPUs, e.g. device=0,1")
        if cpu:
            return DevicePlan([DeviceSlot(device)] * jobs, 0)
        notes = [f"device={device!r} is one device: runs go one at a time"] if jobs > 1 else []
        return DevicePlan([DeviceSlot(device)], 0, notes)
    k = len(gpus)
    per = gpus_per_run if gpus_per_run is not None else k // min(jobs, k)
    if not 1 <= per <= k:
        raise ExecutorError(f"gpus_per_run={per} with {k} GPU(s) in device={device!r}: give 1..{k}")
    n = min(jobs, k // per)
    notes = []
    if jobs > n:
        notes.append(f"jobs={jobs} but {k} GPU(s) at {per} per run: {n} run(s) at a time (a run never shares a GPU)")
    if k - n * per:
        notes.append(f"GPU(s) {','.join(gpus[n * per :])} stay idle ({k} GPUs do not split into {n} x {per})")
    if n == 1 and per == k:
        return DevicePlan([DeviceSlot(device, None, tuple(gpus))], per, notes)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES") if visible is None else visible
    names = [v.strip() for v in visible.split(",")] if visible else None
    slots = []
    for i in range(n):
        group = gpus[i * per : (i + 1) * per]
        physical = [names[int(g)] if names and int(g) < len(names) else g for g in group]
        slots.append(DeviceSlot(",".join(str(j) for j in range(per)), ",".join(physical), tuple(group)))
    return DevicePlan(slots, per, notes)


def eval_device(device: Any) -> Any:
    """Evaluation runs on one device: the first of a DDP training's ``device=0,1``."""
    if isinstance(device, (list, tuple)):
        return device[0] if device else None
    if isinstance(device, str) and "," in device:
        return device.split(",")[0].strip()
    return device


def place(spec: dict[str, Any], device: Any, executor: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``spec`` training on ``device`` (evaluating on its first GPU), tagged with the executor."""
    spec = dict(spec)
    train_args = dict(spec["train_args"])
    if device is None:
        train_args.pop("device", None)
    else:
        train_args["device"] = device
    spec["train_args"] = train_args
    first = eval_device(device)
    spec["eval_args"] = {} if first is None else {"device": first}
    spec["executor"] = executor
    return spec


def failed_record(spec: dict[str, Any], error: str, **extra: Any) -> dict[str, Any]:
    """The record the driver writes for a run whose worker died without writing one."""
    return {
        "run": spec["run"],
        "model": spec["model"],
        "seed": spec["seed"],
        "run_dir": spec["run_dir"],
        "status": "failed",
        "error": error,
        **extra,
    }


# ----------------------------------------------------------------------------------------------------------------------
# local: one process per run, up to `jobs` at once
# ----------------------------------------------------------------------------------------------------------------------
Launcher = Callable[[dict[str, Any], DeviceSlot], int]


class LocalExecutor:
    """Worker processes on this machine; ``jobs=1`` is the sequential runner.

    Args:
        plan: Device slots (:func:`plan_devices`); as many runs go at once as there are slots.
        folder: The compare run folder (specs and logs are written there).
        threads: Torch threads of each run (also its ``OMP_NUM_THREADS``/``MKL_NUM_THREADS``); None: Ultralytics'.
        inline: Let workers print to this terminal (one run at a time) instead of ``logs/<run>.log``.
        launch: Runs one spec on one slot and returns the exit code; default: a worker subprocess. Tests pass a fake
            one to check the slot bookkeeping without training.
    """

    kind = "local"

    def __init__(
        self,
        plan: DevicePlan,
        folder: Path,
        threads: int | None = None,
        inline: bool = False,
        launch: Launcher | None = None,
    ) -> None:
        self.plan, self.folder, self.threads, self.inline = plan, Path(folder), threads, inline
        self.launch = launch or self._launch_worker
        self.capacity = len(plan.slots)

    def _launch_worker(self, spec: dict[str, Any], slot: DeviceSlot) -> int:
        spec_path = self.folder / "specs" / f"{spec['run']}.json"
        write_json_atomic(spec, spec_path)
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        env["YOLO_ATTN_PARENT_PID"] = str(os.getpid())  # the worker exits if this driver is killed
        if slot.visible is not None:
            env["CUDA_VISIBLE_DEVICES"] = slot.visible
        if self.threads:
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(self.threads)
        # `-c` rather than `-m yolo_attn.compare.worker`: the package imports that module, and runpy warns about
        # running a module already imported
        command = [sys.executable, "-c", WORKER_MAIN, str(spec_path)]
        if self.inline:
            return subprocess.call(command, env=env)
        log = self.folder / "logs" / f"{spec['run']}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} device={slot.device} gpus={slot.visible}\n")
            handle.flush()
            return subprocess.call(command, env=env, stdout=handle, stderr=subprocess.STDOUT)

    def _conclude(self, spec: dict[str, Any], rc: int, launched: float) -> dict[str, Any]:
        """The run's record; a worker that died without writing one (kill, segfault) is recorded as failed."""
        result_path = Path(spec["result_path"])
        record = read_json(result_path)
        if rc != 0 and (record is None or float(record.get("started", 0)) < launched - 1):
            reason = f"worker killed by signal {-rc}" if rc < 0 else f"worker exited with {rc}"
            log = None if self.inline else str(self.folder / "logs" / f"{spec['run']}.log")
            record = failed_record(spec, reason, executor=spec.get("executor"), log=log)
            write_json_atomic(record, result_path)
        if record is None:
            record = failed_record(spec, "worker wrote no result")
            write_json_atomic(record, result_path)
        if record.get("status") != "ok" and not self.inline:
            record.setdefault("log", str(self.folder / "logs" / f"{spec['run']}.log"))
        return record

    def run(self, specs: list[dict[str, Any]], progress: Progress) -> None:
        """Run every spec, at most ``capacity`` at once, each on a free slot; returns when all have ended."""
        free: queue.Queue[DeviceSlot] = queue.Queue()
        for slot in self.plan.slots:
            free.put(slot)
        stop = threading.Event()
        info = {"kind": "local", "jobs": self.capacity}

        def job(spec: dict[str, Any]) -> None:
            if stop.is_set():
                return
            slot = free.get()  # a pool thread only starts when a slot is free: never two runs on one slot
            try:
                placed = place(spec, slot.device, {**info, "gpus": list(slot.gpus)})
                progress.started(placed)
                launched = time.time()
                rc = self.launch(placed, slot)
                # reported before the slot is free, so the sequential runner prints "done" before the next header
                progress.finished(placed, self._conclude(placed, rc, launched), time.time() - launched)
            finally:
                free.put(slot)

        pool = ThreadPoolExecutor(max_workers=self.capacity, thread_name_prefix="compare-run")
        try:
            pending = {pool.submit(job, spec) for spec in specs}
            while pending:
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                for future in done:
                    future.result()  # re-raises a driver-side error of that run's thread
                progress.poll()
        except BaseException:  # Ctrl-C reached the workers too (same process group): start nothing new, let them end
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        finally:
            pool.shutdown(wait=True)

    def shutdown(self) -> None:
        pass


# ----------------------------------------------------------------------------------------------------------------------
# Ray: one task per run
# ----------------------------------------------------------------------------------------------------------------------
class _ProgressBoard:
    """Ray actor holding the latest progress update of each run (tasks push, the driver polls)."""

    def __init__(self) -> None:
        self.states: dict[str, dict[str, Any]] = {}

    def update(self, run: str, state: dict[str, Any]) -> None:
        self.states[run] = state

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return self.states


def _ray_task(spec: dict[str, Any], board: Any) -> dict[str, Any]:
    """Body of a run's Ray task, in a fresh worker process (``max_calls=1``) on whichever node Ray picked."""
    import ray

    from yolo_attn.compare.worker import run_spec, shipped_files

    folder = Path(spec["result_path"]).parent.parent
    log = folder / "logs" / f"{spec['run']}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    handle = open(log, "a", encoding="utf-8")  # noqa: SIM115 - stays open for the rest of this one-task process
    handle.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} ray task\n")
    handle.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(handle.fileno(), 1)  # Ultralytics' log of this run goes to the node's logs/<run>.log, not the driver
    os.dup2(handle.fileno(), 2)
    context = ray.get_runtime_context()
    spec = dict(spec)
    spec["executor"] = {
        **spec.get("executor", {}),
        "node_id": context.get_node_id(),
        "node_ip": ray.util.get_node_ip_address(),
        "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
    }

    def forward(state: dict[str, Any]) -> None:
        board.update.remote(spec["run"], state)

    record = run_spec(spec, forward)
    sys.stdout.flush()
    text = log.read_text(encoding="utf-8", errors="replace")
    return {"record": record, "files": shipped_files(spec), "log_tail": text[-20000:]}


def _land_text(text: str, path: Path) -> None:
    """Write a shipped file unless the same content is already there (a shared filesystem: the worker wrote it)."""
    with contextlib.suppress(OSError):
        if path.read_text(encoding="utf-8") == text:
            return
    write_text_atomic(text, path)


def _read_bytes(path: str) -> bytes | None:
    """A file's bytes on the node this runs on (fetches weights for the driver-side benchmark)."""
    return Path(path).read_bytes() if Path(path).is_file() else None


def _forwarded_env() -> dict[str, str]:
    """Ultralytics' settings of the driver (offline mode, config dir, ...), applied on every node alike."""
    keep = ("YOLO_", "ULTRALYTICS_")
    return {k: v for k, v in os.environ.items() if k.startswith(keep) and k != "YOLO_ATTN_PARENT_PID"}


class RayExecutor:
    """Each run a Ray task; see the module docstring.

    Args:
        folder: The driver's compare run folder (records and small files are written there).
        address: ``auto``, ``<host>:<port>`` or ``ray://...`` of a running cluster; None starts a local Ray.
        num_cpus: CPUs of a local Ray (default: all); ignored with ``address``.
        cpus_per_run: Ray ``num_cpus`` of each task (default: ``threads`` on CPU, else 1).
        gpus_per_run: Ray ``num_gpus`` of each task (0 on CPU); more than 1 means DDP inside the task.
        threads: Torch threads of each run (the comparison's setting).
        max_retries: Retries of a task whose worker process or node died.
        storage: Folder on the worker nodes where runs train (weights stay there); default: the driver's folder path.
        jobs: At most this many runs submitted at once (default: all; Ray queues what does not fit).
    """

    kind = "ray"

    def __init__(
        self,
        folder: Path,
        address: str | None = None,
        num_cpus: int | None = None,
        cpus_per_run: int | None = None,
        gpus_per_run: int = 0,
        threads: int | None = None,
        max_retries: int = 3,
        storage: str | None = None,
        jobs: int | None = None,
    ) -> None:
        self.folder = Path(folder).resolve()
        self.address, self.num_cpus, self.threads = address, num_cpus, threads
        self.gpus_per_run = int(gpus_per_run)
        default_cpus = (threads or 1) if not self.gpus_per_run else 1  # a GPU run's CPU work is its data loading
        self.cpus_per_run = int(cpus_per_run) if cpus_per_run is not None else default_cpus
        self.max_retries, self.jobs = int(max_retries), jobs
        self.node_folder = Path(storage).resolve() / self.folder.name if storage else self.folder
        self.capacity = 1
        self.ray: Any = None

    # ------------------------------------------------------------------------------------------------ cluster
    def start(self) -> None:
        """Connect to the cluster (or start a local Ray) and check it can hold one run; idempotent."""
        if self.ray is not None:
            return
        try:
            import ray
        except ImportError as exc:
            raise ExecutorError(f"executor=ray needs Ray: {RAY_INSTALL}") from exc
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # offline-friendly: no usage report at start-up
        runtime_env = {"env_vars": _forwarded_env()}
        try:
            if self.address:
                ray.init(address=self.address, log_to_driver=False, runtime_env=runtime_env, logging_level="WARNING")
            else:
                ray.init(
                    num_cpus=self.num_cpus,
                    include_dashboard=False,
                    log_to_driver=False,
                    runtime_env=runtime_env,
                    logging_level="WARNING",
                )
        except ConnectionError as exc:
            raise ExecutorError(
                f"cannot connect to the Ray cluster at ray_address={self.address}: {exc}. Is it running (`ray status` "
                "on the head node)? A cluster with token authentication needs RAY_AUTH_MODE=token and the cluster's "
                "token (RAY_AUTH_TOKEN, or ~/.ray/auth_token) in this shell."
            ) from exc
        self.ray = ray
        resources = ray.cluster_resources()
        if resources.get("GPU", 0) < self.gpus_per_run:
            self.shutdown()
            raise ExecutorError(
                f"gpus_per_run={self.gpus_per_run} but the Ray cluster has {resources.get('GPU', 0):g} GPU(s); "
                "train on CPU with device=cpu (gpus_per_run=0), or add GPU nodes"
            )
        if resources.get("CPU", 0) < self.cpus_per_run:
            self.shutdown()
            raise ExecutorError(
                f"cpus_per_run={self.cpus_per_run} but the Ray cluster has {resources.get('CPU', 0):g} CPU(s)"
            )

    def shutdown(self) -> None:
        if self.ray is not None and self.ray.is_initialized():
            self.ray.shutdown()  # stops a local Ray; only disconnects from a cluster
        self.ray = None

    def node_spec(self, spec: dict[str, Any]) -> dict[str, Any]:
        """The spec as a worker node sees it: paths under ``storage`` (if given), Ray's GPUs as ``device=``."""
        device = "cpu" if not self.gpus_per_run else ",".join(str(i) for i in range(self.gpus_per_run))
        spec = place(spec, device, {"kind": "ray", "address": self.address or "local"})
        spec["threads"] = self.threads
        if Path(spec["model"]).is_file():  # a Ray worker's working directory is not the driver's
            spec["model"] = str(Path(spec["model"]).resolve())
        if self.node_folder != self.folder:
            spec["run_dir"] = str(self.node_folder / "runs" / spec["run"])
            spec["result_path"] = str(self.node_folder / "results" / f"{spec['run']}.json")
        return spec

    # ------------------------------------------------------------------------------------------------ runs
    def _land(self, spec: dict[str, Any], output: dict[str, Any]) -> dict[str, Any]:
        """Write a finished task's files and record into the driver's folder (record last: it marks the run done)."""
        record = dict(output["record"])
        record["model"] = spec["model"]  # as the user wrote it, like every other executor's record
        node_run_dir = record.get("run_dir")
        record["run_dir"] = str(self.folder / "runs" / spec["run"])
        record["executor"] = {**record.get("executor", {}), "node_run_dir": node_run_dir}
        for rel, text in output.get("files", {}).items():
            _land_text(text, self.folder / rel)
        log, tail = self.folder / "logs" / f"{spec['run']}.log", output.get("log_tail")
        if tail and not (log.is_file() and log.read_text(encoding="utf-8", errors="replace").endswith(tail)):
            write_text_atomic(tail, log)  # the node's log was not on this filesystem: keep its tail here
        write_json_atomic(record, self.folder / "results" / f"{spec['run']}.json")
        return record

    def run(self, specs: list[dict[str, Any]], progress: Progress) -> None:
        """Submit every run as a task (at most ``jobs`` in flight), land results as they come, report progress."""
        ray = self.ray
        task = ray.remote(max_calls=1)(_ray_task).options(
            num_cpus=self.cpus_per_run,
            num_gpus=self.gpus_per_run,
            max_retries=self.max_retries,
            retry_exceptions=False,
        )
        board = ray.remote(num_cpus=0)(_ProgressBoard).remote()
        waiting = deque(specs)
        pending: dict[Any, tuple[dict[str, Any], dict[str, Any]]] = {}  # ref -> (driver spec, node spec)
        started: dict[str, float] = {}
        try:
            while waiting or pending:
                while waiting and (self.jobs is None or len(pending) < self.jobs):
                    spec = waiting.popleft()
                    node = self.node_spec(spec)
                    pending[task.remote(node, board)] = (spec, node)
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                for ref in ready:
                    spec, node = pending.pop(ref)
                    if spec["run"] not in started:  # finished before the board saw it start
                        progress.started(spec)
                        started[spec["run"]] = time.time()
                    try:
                        record = self._land(spec, ray.get(ref))
                    except Exception as exc:  # retries exhausted (worker/node died), or the task could not run
                        message = str(exc).strip().splitlines()
                        error = f"{type(exc).__name__}: {message[0] if message else ''}"[:500]
                        record = failed_record(
                            spec, error, executor={"kind": "ray", "retries": self.max_retries}, traceback=str(exc)
                        )
                        write_json_atomic(record, Path(spec["result_path"]))
                    progress.finished(spec, record, time.time() - started[spec["run"]])
                self._poll_board(board, pending, started, progress)
        finally:
            with contextlib.suppress(Exception):
                ray.kill(board)

    def _poll_board(self, board: Any, pending: dict, started: dict[str, float], progress: Progress) -> None:
        try:
            states = self.ray.get(board.snapshot.remote(), timeout=10)
        except Exception:  # progress is best effort; the runs go on
            return
        for spec, _ in pending.values():
            state = states.get(spec["run"])
            if state is None:
                continue
            if spec["run"] not in started:
                progress.started(spec)
                started[spec["run"]] = time.time()
            progress.update(spec["run"], state)
        progress.capacity = max(1, sum(1 for spec, _ in pending.values() if spec["run"] in started))
        progress.poll()

    def fetch_weights(self, record: dict[str, Any], weights_dir: Path) -> Path | None:
        """Copy a run's ``best.pt`` (else ``last.pt``) from the node it trained on into ``weights_dir``.

        Returns:
            The copy, or None when the node left the cluster or holds neither file.
        """
        if not (record.get("executor") or {}).get("node_id"):
            return None
        self.start()  # also when this session trained nothing: the weights are on the cluster
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        node_run_dir = Path(record["executor"].get("node_run_dir") or record["run_dir"])
        reader = self.ray.remote(num_cpus=0)(_read_bytes).options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=record["executor"]["node_id"], soft=False)
        )
        for name in ("best.pt", "last.pt"):
            try:
                data = self.ray.get(reader.remote(str(node_run_dir / "weights" / name)), timeout=300)
            except Exception:  # the node left the cluster
                return None
            if data:
                dest = Path(weights_dir) / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                tmp = dest.with_name(dest.name + ".tmp")
                tmp.write_bytes(data)
                tmp.replace(dest)
                return dest
        return None
