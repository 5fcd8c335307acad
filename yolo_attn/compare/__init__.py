"""Comparison experiments: train x seeds, evaluate, benchmark, and tabulate with mean ± std and noise markers."""

from yolo_attn.compare.commands import compare_command, table_command
from yolo_attn.compare.runner import compare, load_results
from yolo_attn.compare.table import NOISE_RULE, render_tables, summarize

__all__ = ["NOISE_RULE", "compare", "compare_command", "load_results", "render_tables", "summarize", "table_command"]
