"""Latency bookkeeping (warm-up counts, interleaving, percentiles, ratios) and the bench JSON schema.

Nothing here asserts on real timings: a fake clock advanced by fake models makes every duration exact.
"""

from __future__ import annotations

import gc
import json
import random
import sys

import numpy as np
import pytest
import torch
from torch import nn

from yolo_attn.bench import (
    SCHEMA_VERSION,
    LatencySettings,
    bench_command,
    benchmark_models,
    measure_interleaved,
    parse_device,
    percentile,
    ratio_summary,
    rotated_order,
    summarize,
)
from yolo_attn.bench.latency import bootstrap_ci


# -------------------------------------------------------------------------------------------------------- statistics
@pytest.mark.parametrize("n", [1, 2, 5, 10, 101])
@pytest.mark.parametrize("q", [0, 10, 50, 90, 97.5, 100])
def test_percentile_is_numpy_linear(n: int, q: float) -> None:
    rng = random.Random(n)
    values = [rng.uniform(0, 100) for _ in range(n)]
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)), abs=1e-12)


def test_percentile_hand_values_and_errors() -> None:
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([1, 2, 3, 4], 90) == pytest.approx(3.7)  # position 2.7: 3 + 0.7 * (4 - 3)
    assert percentile([4, 1, 3, 2], 0) == 1  # sorts first
    with pytest.raises(ValueError, match="empty"):
        percentile([], 50)
    with pytest.raises(ValueError, match=r"\[0, 100\]"):
        percentile([1.0], 101)


def test_summarize_converts_to_ms_and_per_image() -> None:
    s = summarize([0.010, 0.020, 0.030, 0.040], batch=2)
    assert s["n"] == 4
    assert s["p50_ms"] == pytest.approx(25.0) and s["p90_ms"] == pytest.approx(37.0)
    assert s["min_ms"] == pytest.approx(10.0) and s["max_ms"] == pytest.approx(40.0)
    assert s["ms_per_img"] == pytest.approx(12.5) and s["img_per_s"] == pytest.approx(80.0)


def test_rotated_order() -> None:
    assert [rotated_order(3, r) for r in range(4)] == [[0, 1, 2], [1, 2, 0], [2, 0, 1], [0, 1, 2]]
    assert rotated_order(1, 7) == [0]


def test_ratio_summary_paired_and_deterministic() -> None:
    base = [0.1, 0.2, 0.15, 0.3]
    other = [2 * b for b in base]
    r = ratio_summary(other, base)
    assert r["paired_median"] == pytest.approx(2.0) and r["ratio_of_medians"] == pytest.approx(2.0)
    assert r["paired_ci95"] == pytest.approx([2.0, 2.0]) and r["n"] == 4
    noisy = [random.Random(1).gauss(1.0, 0.05) for _ in range(50)]
    assert bootstrap_ci(noisy) == bootstrap_ci(noisy)  # fixed seed: reproducible intervals
    with pytest.raises(ValueError, match="length"):
        ratio_summary([1.0], [1.0, 2.0])


@pytest.mark.parametrize("kwargs", [{"warmup": -1}, {"repeats": 0}, {"batch": 0}, {"repeats": 2.5}])
def test_latency_settings_validation(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        LatencySettings(**kwargs)


# ------------------------------------------------------------------------------------------- interleaved bookkeeping
class FakeTime:
    """A clock that only moves when a fake model or NMS 'runs'."""

    def __init__(self) -> None:
        self.t = 0.0
        self.syncs = 0

    def clock(self) -> float:
        return self.t

    def sync(self) -> None:
        self.syncs += 1


class FakeModel:
    def __init__(self, clock: FakeTime, ms: float, log: list[int], index: int) -> None:
        self.clock, self.ms, self.log, self.index, self.calls = clock, ms, log, index, 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.log.append(self.index)
        self.clock.t += self.ms / 1e3
        return x


def test_interleaved_warmup_repeats_order_and_exact_times() -> None:
    ft, log = FakeTime(), []
    models = [FakeModel(ft, ms, log, i) for i, ms in enumerate((10.0, 12.0, 15.0))]

    def nms(pred: torch.Tensor) -> None:
        ft.t += 0.5e-3

    settings = LatencySettings(warmup=4, repeats=9, batch=1)
    out = measure_interleaved(models, torch.zeros(1), settings, nms=[nms, nms, None], sync=ft.sync, clock=ft.clock)
    assert [m.calls for m in models] == [4 + 9] * 3
    # warm-up and timed rounds are rotated round-robin: round r starts with model r mod 3
    rounds = [log[3 * r : 3 * r + 3] for r in range(13)]
    assert rounds[4:] == [rotated_order(3, r) for r in range(9)]
    assert [o["order_first"] for o in out] == [3, 3, 3]
    for res, ms in zip(out, (10.0, 12.0, 15.0)):
        assert len(res["forward_s"]) == 9
        assert res["forward"]["p50_ms"] == pytest.approx(ms) and res["forward"]["p90_ms"] == pytest.approx(ms)
    assert out[0]["nms"]["p50_ms"] == pytest.approx(0.5)
    assert out[0]["forward_nms"]["p50_ms"] == pytest.approx(10.5)
    assert out[2]["nms"] is None and out[2]["forward_nms"] is None
    # sync before start, after forward, after NMS: 3 per step with NMS, 2 without
    steps_with_nms, steps_without = 2 * 13, 13
    assert ft.syncs == 3 * steps_with_nms + 2 * steps_without
    assert gc.isenabled()  # paused only while timing


def test_interleaved_without_nms_setting_ignores_nms_functions() -> None:
    ft, log = FakeTime(), []
    models = [FakeModel(ft, 1.0, log, 0)]
    called = []
    out = measure_interleaved(
        models,
        [torch.zeros(1)],
        LatencySettings(warmup=0, repeats=3, nms=False),
        nms=[called.append],
        sync=ft.sync,
        clock=ft.clock,
    )
    assert not called and out[0]["nms_s"] is None and models[0].calls == 3


def test_interleaved_argument_errors() -> None:
    with pytest.raises(ValueError, match="no models"):
        measure_interleaved([], torch.zeros(1), LatencySettings())
    with pytest.raises(ValueError, match="inputs"):
        measure_interleaved([lambda x: x], [torch.zeros(1)] * 2, LatencySettings())


# ------------------------------------------------------------------------------------------------ command and JSON
def test_bench_command_rejects_unknown_keys_and_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown argument\(s\) bogus.*valid: model, imgsz"):
        bench_command(model="yolov8n.yaml", bogus=1)
    with pytest.raises(ValueError, match="no model"):
        bench_command(imgsz=64)


def test_bad_devices_half_on_cpu_and_missing_checkpoint(tmp_path) -> None:
    with pytest.raises(ValueError, match="half=True needs a CUDA device"):
        benchmark_models(["yolov8n.yaml"], device="cpu", half=True, verbose=False)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            parse_device(0)
    with pytest.raises(ValueError, match="not a device"):
        parse_device("gpu7")
    assert parse_device("cpu") == torch.device("cpu")
    with pytest.raises(FileNotFoundError, match="never downloads"):
        bench_command(model=str(tmp_path / "missing.pt"), flops=False, latency=False, verbose=False)


class Tiny(nn.Module):
    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, c, 3, padding=1)
        self.head = nn.Conv2d(c, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)))


def test_benchmark_json_schema(tmp_path) -> None:
    out = tmp_path / "bench.json"
    result = benchmark_models(
        [Tiny(8), Tiny(16)],
        imgsz=(32, 48),
        names=["tiny8", "tiny16"],
        warmup=1,
        repeats=4,
        throughput_batch=2,
        throughput_repeats=2,
        throughput_warmup=0,
        save=out,
        verbose=False,
    )
    data = json.loads(out.read_text())
    assert data["schema_version"] == SCHEMA_VERSION == result["schema_version"]
    env = data["environment"]
    for key in ("date", "device", "device_name", "cpu_model", "torch_threads", "torch", "ultralytics", "python"):
        assert key in env
    s = data["settings"]
    assert s["imgsz"] == [32, 48] and s["batch"] == 1 and s["throughput_batch"] == 2 and s["interleaved"] is True
    assert s["warmup"] == 1 and s["repeats"] == 4 and "linear" in s["percentile_method"]
    assert [m["name"] for m in data["models"]] == ["tiny8", "tiny16"]
    m0, m1 = data["models"]
    assert set(data) == {"schema_version", "tool", "environment", "settings", "models", "notes"}
    assert set(m0) == {
        "name", "source", "params", "fused", "fused_plugin_modules", "flops", "latency", "runtimes", "train", "ratios",
    }  # fmt: skip
    assert {
        "gflops", "macs", "elementwise_ops", "elementwise_gops", "params", "input_shape", "thop_gflops",
        "thop_disagreement_pct", "thop_notes", "ultralytics_get_flops", "functional_conv_macs", "by_op",
        "uncounted_ops", "layers", "plugin_modules", "notes", "executed_gflops", "executed_macs",
        "executed_elementwise_ops", "executed_elementwise_gops", "official_formulations",
    } <= set(m0["flops"])  # fmt: skip
    assert m0["flops"]["executed_macs"] == m0["flops"]["macs"]  # no layer with an official formulation here
    assert s["runtimes"] == ["torch"] and s["train"] is None and m0["train"] is None
    assert m0["runtimes"]["torch"]["samples_ms"] == m0["latency"]["batch"]["samples_ms"]
    assert data["environment"]["runtimes"] == {"torch": torch.__version__}
    assert set(m0["latency"]) == {"batch", "throughput", "peak_memory_mb", "nms_applicable"}
    assert set(m0["latency"]["batch"]) == {
        "batch", "forward", "forward_nms", "nms", "fps", "samples_ms", "samples_nms_ms", "rounds_first",
        "minor_faults_p50",
    }  # fmt: skip
    if sys.platform.startswith("linux"):  # getrusage reports minor faults: a count per timed forward, never negative
        assert m0["latency"]["batch"]["minor_faults_p50"] >= 0
    assert set(m0["latency"]["batch"]["forward"]) == {
        "n", "mean_ms", "std_ms", "min_ms", "p50_ms", "p90_ms", "max_ms", "ms_per_img", "img_per_s",
    }  # fmt: skip
    assert m0["params"] == sum(p.numel() for p in Tiny(8).parameters())
    assert m0["flops"]["macs"] == 32 * 48 * 8 * (27 + 4) and m0["flops"]["input_shape"] == [1, 3, 32, 48]
    lat = m0["latency"]
    assert len(lat["batch"]["samples_ms"]) == 4 and lat["batch"]["forward"]["n"] == 4
    assert lat["throughput"]["batch"] == 2 and lat["throughput"]["forward"]["n"] == 2
    assert lat["nms_applicable"] is False and lat["batch"]["forward_nms"] is None  # not a detection model
    assert m0["ratios"] is None
    assert m1["ratios"]["vs"] == "tiny8" and m1["ratios"]["gflops"] == pytest.approx((16 * 31) / (8 * 31))
    assert set(m1["ratios"]["latency_p50"]) == {
        "ratio_of_medians",
        "ratio_of_minimums",
        "paired_median",
        "paired_ci95",
        "n",
    }


def test_detection_model_end_to_end_with_nms_via_cli(tmp_path, capsys) -> None:
    from yolo_attn.cli import main

    out = tmp_path / "det.json"
    rc = main(["bench", "model=yolov8n.yaml", "imgsz=64", "warmup=1", "repeats=2", "throughput_batch=0", f"save={out}"])
    assert rc == 0
    data = json.loads(out.read_text())
    (m,) = data["models"]
    assert m["name"] == "yolov8n" and m["latency"]["nms_applicable"] is True
    assert len(m["latency"]["batch"]["samples_nms_ms"]) == 2 and m["latency"]["throughput"] is None
    assert m["flops"]["thop_disagreement_pct"] == pytest.approx(0.0, abs=1e-9)
    assert "p50 ms" in capsys.readouterr().out


# ---------------------------------------------------------------- EMA's reused CPU scratch buffers (in-model latency)
def _ema_pair(c: int, groups: int, seed: int):
    """yolo-attn's EMA and the official-style reference with the same random weights."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from reference_layers import RefEMA

    from yolo_attn import EMA

    official = RefEMA(c, groups)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in official.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    fast = EMA(c, groups)
    fast.load_state_dict(official.state_dict(), strict=True)
    return fast.eval(), official.eval()


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * max(1.0, b.abs().max().item()))


def test_ema_scratch_reuse_keeps_results_exact_across_shapes_and_modes() -> None:
    fast, official = _ema_pair(64, 8, seed=3)
    gen = torch.Generator().manual_seed(0)
    shapes = [(2, 64, 9, 13), (1, 64, 20, 6), (2, 64, 9, 13), (3, 64, 4, 4)]  # grow, shrink, repeat
    held = []
    for i, shape in enumerate(shapes):
        x = torch.randn(shape, generator=gen)
        with torch.inference_mode() if i % 2 == 0 else torch.no_grad():  # buffers of both kinds coexist
            y = fast(x)
            _close(y, official(x))
        held.append((y.clone(), y))
    for copy_of_y, y in held:  # no returned tensor aliases scratch memory that a later call overwrote
        assert torch.equal(y, copy_of_y)
    buffers = fast._workspace._local.buffers
    assert {role for role, *_ in buffers} == {"y", "t1", "taps", "t2"}
    cpu = torch.device("cpu")
    assert buffers[("y", torch.float32, cpu, True)].numel() == 2 * 64 * 9 * 13  # largest input under inference_mode
    assert buffers[("y", torch.float32, cpu, False)].numel() == 1 * 64 * 20 * 6  # ... and under no_grad


def test_ema_scratch_is_per_thread_and_never_used_with_autograd() -> None:
    import threading

    fast, official = _ema_pair(64, 16, seed=4)
    xs = [torch.randn(2, 64, 24, 16, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    with torch.no_grad():
        expected = [official(x) for x in xs]
    results: dict[int, list[torch.Tensor]] = {}

    def worker(k: int) -> None:
        with torch.inference_mode():
            results[k] = [fast(x) for x in xs[k:] + xs[:k] for _ in range(3)]

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k, outs in results.items():
        for j, y in enumerate(outs):
            _close(y, expected[(k + j // 3) % len(xs)])
    # training: fresh buffers saved for backward, none from the workspace
    fresh, _ = _ema_pair(64, 16, seed=4)
    x = xs[0].clone().requires_grad_(True)
    fresh.train()(x).sum().backward()
    assert "buffers" not in fresh._workspace._local.__dict__


def test_ema_scratch_is_not_state() -> None:
    import copy
    import pickle

    fast, official = _ema_pair(32, 8, seed=5)
    x = torch.randn(1, 32, 7, 7)
    with torch.inference_mode():
        fast(x)
    assert set(fast.state_dict()) == set(official.state_dict())  # official checkpoints still load strict
    for clone in (copy.deepcopy(fast), pickle.loads(pickle.dumps(fast))):
        assert "buffers" not in clone._workspace._local.__dict__
        with torch.inference_mode():
            _close(clone(x), official(x))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="getrusage minor faults (Linux)")
def test_minor_page_faults_per_forward_are_counted() -> None:
    import mmap

    def touches_fresh_pages(_: torch.Tensor) -> None:
        m = mmap.mmap(-1, 4 * 2**20)  # 1024 fresh 4 KiB pages, each written once
        for offset in range(0, len(m), 4096):
            m[offset] = 1
        m.close()

    res = measure_interleaved([touches_fresh_pages, lambda x: None], torch.zeros(1), LatencySettings(1, 3, nms=False))
    assert res[0]["minor_faults_p50"] >= 1000
    assert res[1]["minor_faults_p50"] < 100
