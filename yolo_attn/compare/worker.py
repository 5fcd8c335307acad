"""One compare run: train (or resume) one model with one seed, then evaluate it.

Run by the local executors of :mod:`yolo_attn.compare.executors` as ``python -c <WORKER_MAIN> <spec.json>``
(one process per run), or called in-process as :func:`run_spec` by a Ray task (Ray gives every task a fresh worker
process, ``max_calls=1``). A separate process per run keeps Ultralytics' process-wide state (seeds, deterministic
flags, ``Conv.default_act``) from leaking between runs, and confines a hard crash to the run that caused it.

What a run writes, besides Ultralytics' own folder ``runs/<run>/``:

* ``results/<run>.json`` -- the record, written atomically at the end; a failure writes ``status: failed`` with the
  traceback, so the driver can record it and go on;
* ``specs/<run>.lock`` -- held (``flock``) while the run works: a process left over from a killed driver and the
  re-run of that driver never train the same run at once; the second waits, then finds the first one's result;
* ``specs/<run>.progress.json`` -- stage and current epoch, for the driver's progress line;
* ``specs/<run>.starts`` -- how many processes have started this run (restarts after kills show up here).

Determinism: Ultralytics resets torch's thread count to ``min(8, cores - 1)`` when it selects a CPU device, and on CPU
the thread count changes the numbers (summation order in the convolution kernels: measured here, the first epoch's
losses differ in the 6th digit between 1 and 2 threads). So a run's thread count is a setting of the comparison
(``threads`` in ``config.json``), pinned again right after Ultralytics' reset by a trainer callback; every executor
therefore trains with the same count and gets the same numbers.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# Small files of a run folder that travel back to the driver when workers do not share its filesystem (the record
# itself travels separately). Weights stay where the run trained.
SHIPPED_FILES = ("eval.json", "results.csv", "args.yaml")
SHIPPED_MAX_BYTES = 2_000_000


def write_text_atomic(text: str, path: Path) -> None:
    """Write via a temporary file and rename, so a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")  # writers never share a tmp file
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_json_atomic(data: Any, path: Path) -> None:
    """:func:`write_text_atomic` of ``data`` as indented JSON."""
    write_text_atomic(json.dumps(data, indent=2, default=str), path)


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file's content, or None when it is missing or unreadable (a reader never crashes on a writer)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def checkpoint_state(path: Path, epochs: int | None = None) -> str:
    """State of a ``last.pt``.

    Returns:
        ``missing`` (none, or truncated by a kill mid-write), ``unfinished`` (resumable: an epoch before the last one
        and optimizer state), ``trained`` (every epoch done, killed before Ultralytics stripped the optimizer: resuming
        would fail with "nothing to resume", so it is finalised instead) or ``finished`` (stripped).
    """
    if not Path(path).is_file():
        return "missing"
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # a checkpoint truncated by a kill mid-write: start the run over
        return "missing"
    epoch = ckpt.get("epoch", -1)
    if epoch == -1 or ckpt.get("optimizer") is None:
        return "finished"
    total = (ckpt.get("train_args") or {}).get("epochs", epochs)
    return "trained" if total is not None and epoch + 1 >= int(total) else "unfinished"


def state_paths(spec: dict[str, Any]) -> dict[str, Path]:
    """Bookkeeping files of a run, in ``specs/`` next to ``results/`` (on the node where the run works)."""
    state_dir = Path(spec.get("state_dir") or Path(spec["result_path"]).parent.parent / "specs")
    run = spec["run"]
    return {
        "lock": state_dir / f"{run}.lock",
        "progress": state_dir / f"{run}.progress.json",
        "starts": state_dir / f"{run}.starts",
    }


@contextlib.contextmanager
def run_lock(path: Path, run: str) -> Iterator[None]:
    """Exclusive ``flock`` on ``path`` for as long as the run works; released by the kernel if the process dies."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; one driver per run folder is then the user's job
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            print(f"[yolo-attn compare] {run}: another process is still working on it; waiting", flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class Reporter:
    """Writes the run's progress file and forwards each update (e.g. to the Ray driver); never raises."""

    def __init__(self, spec: dict[str, Any], forward: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.path = state_paths(spec)["progress"]
        self.forward = forward
        self.state: dict[str, Any] = {"run": spec["run"], "pid": os.getpid(), "host": socket.gethostname()}

    def __call__(self, **update: Any) -> None:
        self.state.update(update, updated=time.time())
        with contextlib.suppress(Exception):
            write_json_atomic(self.state, self.path)
        if self.forward is not None:
            with contextlib.suppress(Exception):
                self.forward(dict(self.state))


def _add_callbacks(yolo: Any, threads: int | None, report: Reporter, epoch_seconds: list[float]) -> None:
    """Pin the thread count after Ultralytics' CPU reset; report epochs; collect Ultralytics' epoch wall times."""
    import torch

    def pin_threads(trainer: Any) -> None:
        if threads and trainer.device.type == "cpu":
            torch.set_num_threads(threads)

    def epoch_start(trainer: Any) -> None:
        report(stage="train", epoch=trainer.epoch + 1, epochs=trainer.epochs)

    def epoch_end(trainer: Any) -> None:
        if trainer.epoch < trainer.epochs and trainer.epoch_time is not None:  # final_eval re-fires at epochs + 1
            epoch_seconds.append(round(float(trainer.epoch_time), 3))
            report(stage="train", epoch=trainer.epoch + 1, epochs=trainer.epochs, epoch_done=True)

    yolo.add_callback("on_pretrain_routine_start", pin_threads)
    yolo.add_callback("on_train_epoch_start", epoch_start)
    yolo.add_callback("on_fit_epoch_end", epoch_end)


def _loadable(path: Path) -> bool:
    """Whether a checkpoint file reads back (a kill while Ultralytics writes it leaves a truncated zip)."""
    import torch

    try:
        torch.load(path, map_location="cpu", weights_only=False)
    except Exception:
        return False
    return True


def _strip_atomic(path: Path, updates: dict[str, Any] | None = None) -> dict[str, Any]:
    """Ultralytics' ``strip_optimizer`` written to a temporary file and renamed: a kill leaves the old file whole."""
    from ultralytics.utils.torch_utils import strip_optimizer

    tmp = path.with_name(f".{path.name}.strip.tmp")
    ckpt = strip_optimizer(path, s=str(tmp), updates=updates)
    os.replace(tmp, path)
    return ckpt


def _finalise_trained(run_dir: Path) -> None:
    """What Ultralytics' ``final_eval`` does to checkpoints after the last epoch: strip the optimizer (FP16 weights)."""
    last, best = run_dir / "weights" / "last.pt", run_dir / "weights" / "best.pt"
    ckpt = _strip_atomic(last)
    if best.is_file():
        _strip_atomic(best, updates={"train_results": ckpt.get("train_results")})


def train(spec: dict[str, Any], report: Reporter | None = None) -> dict[str, Any]:
    """Train or resume; returns facts about the training (resumed or not, epochs, Ultralytics' own metrics)."""
    from ultralytics import YOLO

    report = report or Reporter(spec)
    run_dir = Path(spec["run_dir"])
    last = run_dir / "weights" / "last.pt"
    state = checkpoint_state(last, spec.get("epochs"))
    info: dict[str, Any] = {"resumed": False}
    best = run_dir / "weights" / "best.pt"
    if state != "missing" and best.is_file() and not _loadable(best):
        if state in ("unfinished", "trained"):
            # Ultralytics' save_model writes last.pt, then best.pt, from the same bytes: a kill during the best.pt
            # write leaves last.pt holding exactly what best.pt was to hold (an earlier truncation would have been
            # repaired here when the run was resumed after it)
            tmp = best.with_name(f".{best.name}.copy.tmp")
            shutil.copyfile(last, tmp)
            os.replace(tmp, best)
            info["note"] = "best.pt had been truncated by an interruption while it was saved; restored from last.pt"
        else:
            # killed while the final strip rewrote best.pt in place: the best epoch's weights are gone, so the run is
            # trained again from scratch; same seed, same settings, same numbers
            state = "missing"
            info["note"] = "best.pt had been truncated by an interruption; the run was trained again from scratch"
        print(f"[yolo-attn compare] {run_dir.name}: {info['note']}", flush=True)
    epoch_seconds: list[float] = []
    threads = spec.get("threads")
    if state == "unfinished":
        print(f"[yolo-attn compare] resuming {run_dir.name} from {last}", flush=True)
        yolo = YOLO(str(last))
        _add_callbacks(yolo, threads, report, epoch_seconds)
        yolo.train(resume=True)
        info["resumed"] = True
    elif state == "missing":
        if run_dir.exists():  # debris of a run killed before its first checkpoint: start clean (results.csv appends)
            shutil.rmtree(run_dir)
        args = dict(spec["train_args"])
        args.update(
            data=spec["data"],
            epochs=spec["epochs"],
            imgsz=spec["imgsz"],
            seed=spec["seed"],
            project=str(run_dir.parent),
            name=run_dir.name,
            exist_ok=True,
        )
        if spec.get("pretrained"):
            args["pretrained"] = spec["pretrained"]
        yolo = YOLO(spec["model"])
        _add_callbacks(yolo, threads, report, epoch_seconds)
        yolo.train(**args)
    elif state == "trained":
        _finalise_trained(run_dir)
        info["note"] = "; ".join(
            filter(
                None,
                [
                    info.get("note"),
                    "every epoch had finished before an interruption; checkpoints finalised, evaluation only",
                ],
            )
        )
    else:
        info["note"] = "training had already finished; evaluation only"
    info["epoch_seconds"] = epoch_seconds  # Ultralytics' epoch wall times, this process's epochs only
    results_csv = run_dir / "results.csv"
    if results_csv.is_file():
        lines = results_csv.read_text().strip().splitlines()
        header = [h.strip() for h in lines[0].split(",")]
        values = [v.strip() for v in lines[-1].split(",")]
        info["ultralytics_last_epoch"] = dict(zip(header, values))
        info["epochs_logged"] = len(lines) - 1
    return info


def evaluate(spec: dict[str, Any]) -> dict[str, Any]:
    """The evaluation harness on the best checkpoint (pycocotools / VisDrone protocol)."""
    from yolo_attn.evaluation import eval_command

    run_dir = Path(spec["run_dir"])
    best = run_dir / "weights" / "best.pt"
    if not best.is_file():
        best = run_dir / "weights" / "last.pt"
    kwargs = dict(spec.get("eval_args", {}))
    return eval_command(
        model=str(best),
        data=spec["data"],
        split=spec.get("split", "val"),
        protocol=spec["protocol"],
        imgsz=spec["imgsz"],
        save=str(run_dir / "eval.json"),
        save_dir=str(run_dir / "eval"),
        verbose=False,
        **kwargs,
    )


def _count_start(path: Path) -> int:
    try:
        starts = int(path.read_text().strip() or 0) + 1
    except (OSError, ValueError):
        starts = 1
    with contextlib.suppress(OSError):
        write_text_atomic(f"{starts}\n", path)
    return starts


def run_spec(spec: dict[str, Any], forward: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Do one run (train + evaluate), write ``results/<run>.json`` atomically and return the record.

    Args:
        spec: The run's spec (written by the driver: run, model, seed, data, epochs, imgsz, protocol, split,
            pretrained, train_args, eval_args, threads, run_dir, result_path, executor).
        forward: Called with each progress update (the Ray executor sends them to the driver).

    Returns:
        The record (``status`` ``ok`` or ``failed``); every exception of the run is caught and recorded.
    """
    out = Path(spec["result_path"])
    paths = state_paths(spec)
    with run_lock(paths["lock"], spec["run"]):
        previous = read_json(out)
        if previous and previous.get("status") == "ok":  # finished by a process of an earlier, killed driver
            return previous
        starts = _count_start(paths["starts"])
        report = Reporter(spec, forward)
        report(stage="start", starts=starts)
        if spec.get("threads"):
            import torch

            torch.set_num_threads(int(spec["threads"]))  # Ultralytics resets it on CPU; the callback pins it again
            from yolo_attn.plugin.integration import pin_cpu_threads

            pin_cpu_threads(int(spec["threads"]))  # and evaluation's select_device keeps it too
        started = time.time()
        record: dict[str, Any] = {
            "run": spec["run"],
            "model": spec["model"],
            "seed": spec["seed"],
            "run_dir": spec["run_dir"],
            "started": started,
            "starts": starts,
            "executor": {
                **spec.get("executor", {}),
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "device": spec["train_args"].get("device"),
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "threads": spec.get("threads"),
            },
        }
        try:
            record["train"] = train(spec, report)
            report(stage="eval")
            metrics = evaluate(spec)
            record["metrics"] = {k: v for k, v in metrics.items() if k not in {"files"}}
            record["status"] = "ok"
        except BaseException as exc:  # noqa: BLE001 - record every failure (incl. KeyboardInterrupt) for the table
            record["status"] = "failed"
            record["error"] = f"{type(exc).__name__}: {exc}"
            record["traceback"] = traceback.format_exc()
            print(f"[yolo-attn compare] run {spec['run']} failed: {record['error']}", file=sys.stderr, flush=True)
        record["seconds"] = round(time.time() - started, 1)
        write_json_atomic(record, out)
        report(stage=record["status"])
        return record


def shipped_files(spec: dict[str, Any]) -> dict[str, str]:
    """The small files of a run folder (eval.json, results.csv, args.yaml), keyed by path relative to the compare
    folder, for drivers that do not share the worker's filesystem."""
    folder = Path(spec["result_path"]).parent.parent
    run_dir = Path(spec["run_dir"])
    files = {}
    for name in SHIPPED_FILES:
        path = run_dir / name
        if path.is_file() and path.stat().st_size <= SHIPPED_MAX_BYTES:
            files[str(path.relative_to(folder))] = path.read_text(encoding="utf-8")
    return files


def _die_with_parent(parent: int) -> None:
    """End this run (and its DDP children) once the driver that started it is gone (e.g. SIGKILLed).

    Without this, a run orphaned by ``kill -9`` of the driver trains on and races the re-run for its folder. On
    Linux the kernel does it (``PR_SET_PDEATHSIG``: immediate, even while a C call holds the GIL); a thread that
    polls the parent pid is the fallback elsewhere and also kills the run's own children (DDP ranks).
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes
            import signal

            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the driver died before the kernel was told
        os._exit(137)

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                with contextlib.suppress(Exception):
                    import psutil

                    for child in psutil.Process().children(recursive=True):
                        child.kill()
                os._exit(137)

    threading.Thread(target=watch, daemon=True).start()


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    parent = os.environ.get("YOLO_ATTN_PARENT_PID")
    if parent and parent.isdigit():
        _die_with_parent(int(parent))
    record = run_spec(spec)
    return 0 if record["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
