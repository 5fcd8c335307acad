"""Shared fixtures: paths to the shipped sample and ../shared data, and a sandboxed Ultralytics environment.

Ultralytics must never reach the network here: tests use YAML-built models (no ``*.pt`` names that trigger
downloads), ``plots=False`` (no font downloads) and a private settings/config directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_DATA = SHARED / "data"
SAMPLE_COCO8 = REPO / "datasets" / "coco8"

# One private Ultralytics config dir for the whole session (settings.json, fonts): keeps the user's untouched and
# stops first-run chatter. Set before any test imports ultralytics.
_CONFIG_DIR = Path(tempfile.mkdtemp(prefix="yolo_attn_ucfg_"))
os.environ.setdefault("YOLO_CONFIG_DIR", str(_CONFIG_DIR))
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("ULTRALYTICS_NO_HUB", "1")


def shared_path(*parts: str) -> Path:
    """Path under ../shared/data, or skip the test with a reason naming what is missing."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (the ../shared data checkout is absent on this machine)")
    return path


@pytest.fixture(scope="session")
def coco8_copy(tmp_path_factory) -> Path:
    """A private copy of the coco8 sample (shipped in datasets/, identical to ../shared/data/coco8) with a YAML
    whose ``path`` points at the copy, so Ultralytics' label caches land in tmp."""
    src = SHARED_DATA / "coco8" if (SHARED_DATA / "coco8").is_dir() else SAMPLE_COCO8
    dst = tmp_path_factory.mktemp("data") / "coco8"
    shutil.copytree(src, dst)
    yaml_text = (dst / "coco8.yaml").read_text(encoding="utf-8")
    (dst / "coco8.yaml").write_text(f"path: {dst}\n{yaml_text}", encoding="utf-8")
    return dst / "coco8.yaml"


def console_script(name: str) -> str:
    """Absolute path of an installed console script (``yolo``, ``yolo-attn``) next to this Python."""
    candidate = Path(sys.executable).parent / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"console script {name!r} is not installed; run `pip install -e .[dev]` first")
    return found


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for child processes: this session's offline Ultralytics settings plus ``extra``."""
    env = dict(os.environ)
    env.pop("YOLO_ATTN_DISABLE", None)
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def single_torch_thread():
    """Run a module's tests with one torch thread.

    Building a model runs a small forward pass; on 2 cores shared with other jobs, torch's intra-op threads spin
    against each other and a 0.1 s build takes seconds. One thread keeps such suites' runtime predictable.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# The sequential `yolo-attn compare` sweep that test_compare checks and test_compare_executors uses as the reference
# for the parallel executors: made once per session (it is the suite's most expensive fixture).
COMPARE_MODELS = "yolov8n.yaml,yolov8n-ema.yaml"
# save_period=1 keeps each run's epoch-0 checkpoint (optimizer included) for the final-epoch resume test
COMPARE_COMMON = ["epochs=1", "imgsz=64", "seeds=0,1", "batch=4", "workers=0", "device=cpu", "save_period=1"]


@pytest.fixture(scope="session")
def broken_yaml(tmp_path_factory) -> Path:
    """A variant whose EMA row asks for 48 groups at 64 channels: fails at build time with a clear error."""
    path = tmp_path_factory.mktemp("yaml") / "yolov8n-broken.yaml"
    path.write_text((REPO / "model_yamls" / "yolov8-ema.yaml").read_text().replace("EMA, []", "EMA, [48]", 1))
    return path


@pytest.fixture(scope="session")
def compare_reference(tmp_path_factory, coco8_copy, broken_yaml) -> dict:
    """Sequential compare of yolov8n, yolov8n-ema (2 seeds each) and a model that fails to build, benchmarked."""
    work = tmp_path_factory.mktemp("compare")
    args = ["compare", f"models={COMPARE_MODELS},{broken_yaml}", f"data={coco8_copy}", *COMPARE_COMMON]
    args += ["bench_repeats=3", "name=full"]
    command = [console_script("yolo-attn"), *args]
    run = subprocess.run(command, cwd=work, capture_output=True, text=True, env=subprocess_env(), timeout=900)
    assert run.returncode == 0, f"{run.stdout[-4000:]}\n{run.stderr[-4000:]}"
    return {"work": work, "folder": work / "runs" / "compare" / "full", "args": args, "stdout": run.stdout}


def load_in_fresh_process(model: object, folder: Path, report: str) -> str:
    """Save ``model`` as an Ultralytics checkpoint, load it with ``load_checkpoint`` under ``ULTRALYTICS_SAFE_LOAD=1``
    in a fresh interpreter (only the start-up hook registers the plugin there), and return what ``report`` (a Python
    expression over the loaded model ``m``) printed."""
    import torch

    path = folder / "ckpt.pt"
    torch.save({"model": model, "train_args": {}}, path)
    code = f"from ultralytics.nn.tasks import load_checkpoint\nm, _ = load_checkpoint({str(path)!r})\nprint({report})\n"
    env = subprocess_env(ULTRALYTICS_SAFE_LOAD="1")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout.strip().splitlines()[-1]
