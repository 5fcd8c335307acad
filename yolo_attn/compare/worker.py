"""One compare run in its own process: train (or resume) one model with one seed, then evaluate it.

Run by :mod:`yolo_attn.compare.runner` as ``python -m yolo_attn.compare.worker <spec.json>``. A separate process
per run keeps Ultralytics' process-wide state (seeds, deterministic flags, ``Conv.default_act``) from leaking between
runs, and confines a hard crash to the run that caused it. The result JSON is written atomically at the end; a
failure writes a JSON with ``status: failed`` and the traceback, so the parent can record it and go on.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any


def write_json_atomic(data: Any, path: Path) -> None:
    """Write JSON via a temporary file and rename, so a crash never leaves a half-written result."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    tmp.replace(path)


def checkpoint_state(path: Path) -> str:
    """``missing``, ``unfinished`` (resumable: has an epoch and optimizer state) or ``finished`` (stripped)."""
    if not path.is_file():
        return "missing"
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # a checkpoint truncated by a kill mid-write: start the run over
        return "missing"
    return "unfinished" if ckpt.get("epoch", -1) != -1 and ckpt.get("optimizer") is not None else "finished"


def train(spec: dict[str, Any]) -> dict[str, Any]:
    """Train or resume; returns facts about the training (resumed or not, epochs, Ultralytics' own metrics)."""
    from ultralytics import YOLO

    run_dir = Path(spec["run_dir"])
    last = run_dir / "weights" / "last.pt"
    state = checkpoint_state(last)
    info: dict[str, Any] = {"resumed": False}
    if state == "unfinished":
        print(f"[yolo-attn compare] resuming {run_dir.name} from {last}", flush=True)
        YOLO(str(last)).train(resume=True)
        info["resumed"] = True
    elif state == "missing":
        if run_dir.exists():  # debris of a run killed before its first checkpoint: start clean (results.csv appends)
            import shutil

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
        YOLO(spec["model"]).train(**args)
    else:
        info["note"] = "training had already finished; evaluation only"
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


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    out = Path(spec["result_path"])
    started = time.time()
    record: dict[str, Any] = {
        "run": spec["run"],
        "model": spec["model"],
        "seed": spec["seed"],
        "run_dir": spec["run_dir"],
        "started": started,
    }
    try:
        record["train"] = train(spec)
        metrics = evaluate(spec)
        record["metrics"] = {k: v for k, v in metrics.items() if k not in {"files"}}
        record["status"] = "ok"
    except BaseException as exc:  # noqa: BLE001 - record every failure (incl. KeyboardInterrupt) for the table
        record["status"] = "failed"
        record["error"] = f"{type(exc).__name__}: {exc}"
        record["traceback"] = traceback.format_exc()
        record["seconds"] = round(time.time() - started, 1)
        write_json_atomic(record, out)
        print(f"[yolo-attn compare] run {spec['run']} failed: {record['error']}", file=sys.stderr, flush=True)
        return 1
    record["seconds"] = round(time.time() - started, 1)
    write_json_atomic(record, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
