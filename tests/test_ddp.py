"""Multi-GPU (DDP) training with plugin layers, tested as far as a CPU machine allows.

Ultralytics' DDP launcher (``ultralytics.utils.dist.generate_ddp_file``) cloudpickles the trainer's model into a
``.pt`` file and writes a Python script that each worker runs under ``torch.distributed.run``. The worker is a fresh
interpreter: it only works if unpickling finds the plugin classes and the parser knows the plugin names. Here the
real generated script runs in a fresh process, unchanged except that ``trainer.train()`` (which needs GPUs and a
process group) is replaced by a check of the model it rebuilt.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import subprocess_env


# (model, EMA modules anywhere in it): after the three neck outputs, and inside the head's four C2f rows (n: 1 each)
@pytest.mark.parametrize(("cfg", "n_ema"), [("yolov8n-ema.yaml", 3), ("yolov8n-ema-blocks.yaml", 4)])
def test_generated_ddp_worker_rebuilds_plugin_model(coco8_copy, tmp_path, cfg, n_ema):
    from ultralytics.models.yolo.detect import DetectionTrainer
    from ultralytics.utils.dist import generate_ddp_file

    trainer = DetectionTrainer(
        overrides={
            "model": cfg,
            "data": str(coco8_copy),
            "epochs": 1,
            "imgsz": 64,
            "device": "cpu",
            "plots": False,
            "project": str(tmp_path / "runs"),
            "name": "ddp",
        }
    )
    trainer.model = trainer.get_model(cfg=cfg, verbose=False)
    script = Path(generate_ddp_file(trainer))
    try:
        text = script.read_text()
        train_line = re.search(
            r"^([ \t]*)(?:\w+ *= *)?trainer\.train\(\)[ \t]*$", text, re.M
        )  # `results = ...` in 8.4.0
        assert train_line is not None, text
        probe = text.replace(
            train_line.group(0),
            train_line.group(1) + "import torch\n"
            "    if isinstance(trainer.model, str):  # older releases pickle the cfg name; the worker parses the YAML\n"
            "        trainer.model = trainer.get_model(cfg=trainer.model, verbose=False)\n"
            "    names = [type(m).__name__ for m in trainer.model.modules()]\n"
            "    out = trainer.model.eval()(torch.zeros(1, 3, 64, 64))\n"
            "    rebuilt = type(trainer).__name__, names.count('EMA')\n"
            "    from ultralytics.nn.tasks import DetectionModel\n"
            "    fresh = DetectionModel(trainer.model.yaml, verbose=False)  # what a worker's resume would parse\n"
            "    print('WORKER', *rebuilt, sum(type(m).__name__ == 'EMA' for m in fresh.modules()))",
        )
        worker = tmp_path / "worker.py"
        worker.write_text(probe)
        run = subprocess.run(
            [sys.executable, str(worker)], capture_output=True, text=True, env=subprocess_env(), cwd=tmp_path
        )
        assert run.returncode == 0, run.stderr[-3000:]
        assert run.stdout.strip().splitlines()[-1] == f"WORKER DetectionTrainer {n_ema} {n_ema}"
    finally:
        script.unlink(missing_ok=True)
        script.with_suffix(".pt").unlink(missing_ok=True)
