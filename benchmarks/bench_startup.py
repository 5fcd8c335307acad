"""Start-up cost of the ``.pth`` hook that lets the stock ``yolo`` command load the plugin.

Measures, interleaved in one process (noisy machines: compare side by side, not across runs):

* whole-interpreter start ``python -S -c "import site; site.addsitedir(D)"`` where ``D`` holds either an empty
  folder or a copy of ``yolo_attn_autoload.pth``; everything else identical (same sys.path), so the median
  difference is the hook's cost;
* the hook's import time measured inside a fresh interpreter (perf_counter around ``import yolo_attn.plugin.autoload``);
* whether torch / ultralytics got imported (they must not be).

Usage: python benchmarks/bench_startup.py [--runs 60]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=60)
    opts = parser.parse_args()
    import yolo_attn

    package_parent = str(Path(yolo_attn.__file__).resolve().parents[1])
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONDONTWRITEBYTECODE", "YOLO_ATTN_DISABLE"}}
    env["PYTHONPATH"] = package_parent
    with tempfile.TemporaryDirectory() as tmp:
        empty, hooked = Path(tmp, "empty"), Path(tmp, "hooked")
        empty.mkdir()
        hooked.mkdir()
        shutil.copy(REPO / "yolo_attn_autoload.pth", hooked / "yolo_attn_autoload.pth")
        cmd = {
            name: [sys.executable, "-S", "-c", f"import site; site.addsitedir({str(d)!r})"]
            for name, d in (("without hook", empty), ("with hook", hooked))
        }
        for c in cmd.values():  # warm the OS cache and write .pyc files once
            subprocess.run(c, env=env, check=True)
        times: dict[str, list[float]] = {k: [] for k in cmd}
        for r in range(opts.runs):
            order = list(cmd) if r % 2 == 0 else list(reversed(cmd))
            for name in order:
                t0 = time.perf_counter()
                subprocess.run(cmd[name], env=env, check=True)
                times[name].append((time.perf_counter() - t0) * 1e3)
        probe = (
            f"import sys, time, site; t = time.perf_counter(); site.addsitedir({str(hooked)!r}); "
            "dt = (time.perf_counter() - t) * 1e3; "
            "print(f'{dt:.3f}', 'torch' in sys.modules, 'ultralytics' in sys.modules)"
        )
        inproc = []
        for _ in range(max(10, opts.runs // 3)):
            out = subprocess.run(
                [sys.executable, "-S", "-c", probe], env=env, capture_output=True, text=True, check=True
            )
            ms, torch_loaded, ul_loaded = out.stdout.split()
            inproc.append(float(ms))
    base, hook = statistics.median(times["without hook"]), statistics.median(times["with hook"])
    print(f"python {sys.version.split()[0]}  runs={opts.runs} (interleaved, order alternated)")
    print(
        f"interpreter start, median: without hook {base:.2f} ms | with hook {hook:.2f} ms | "
        f"difference {hook - base:+.2f} ms ({(hook / base - 1) * 100:+.1f}%)"
    )
    print(
        f"hook .pth processing inside the interpreter: median {statistics.median(inproc):.3f} ms "
        f"(min {min(inproc):.3f})"
    )
    print(f"torch imported by the hook: {torch_loaded}; ultralytics imported: {ul_loaded}")


if __name__ == "__main__":
    main()
