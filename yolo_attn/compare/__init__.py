"""Comparison experiments: train x seeds, evaluate, benchmark, and tabulate with mean ± std and noise markers."""

from yolo_attn.compare.commands import compare_command, table_command
from yolo_attn.compare.executors import plan_devices
from yolo_attn.compare.runner import POST_PROCESSORS, compare, load_results, post_process
from yolo_attn.compare.table import NOISE_RULE, render_tables, summarize

__all__ = [
    "NOISE_RULE",
    "POST_PROCESSORS",
    "compare",
    "compare_command",
    "load_results",
    "plan_devices",
    "post_process",
    "render_tables",
    "summarize",
    "table_command",
]
