"""``yolo-attn`` command line: a thin dispatch table over library functions, ``key=value`` arguments like ``yolo``.

Each subcommand maps to one function importable from Python; this file only parses arguments and prints errors.
"""

from __future__ import annotations

import ast
import importlib
import os
import sys
from collections.abc import Callable, Sequence

# subcommand -> ("module:function", one-line help, usage example)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "layers": ("yolo_attn.cli:layers_command", "list registered layers and shipped model YAMLs", "yolo-attn layers"),
    "eval": (
        "yolo_attn.evaluation.commands:eval_command",
        "COCO-protocol AP/APs (pycocotools) or VisDrone protocols",
        "yolo-attn eval gt=gt.json pred=dets.json protocol=coco  |  yolo-attn eval model=best.pt data=coco8.yaml",
    ),
    "convert": (
        "yolo_attn.evaluation.commands:convert_command",
        "convert datasets (VisDrone -> YOLO labels + COCO GT JSON with ignored regions)",
        "yolo-attn convert visdrone src=VisDrone2019-DET-val out=datasets/VisDrone",
    ),
    "bench": (
        "yolo_attn.bench.commands:bench_command",
        "params, GFLOPs at the real input size, latency (p50/p90) and throughput",
        "yolo-attn bench model=yolov8s.yaml,yolov8s-ema.yaml imgsz=640 device=cpu",
    ),
    "compare": (
        "yolo_attn.compare.commands:compare_command",
        "train x seeds, evaluate and benchmark several models; tables with mean +- std",
        "yolo-attn compare models=yolov8n.yaml,yolov8n-ema.yaml data=coco8.yaml epochs=1 seeds=0,1",
    ),
    "table": (
        "yolo_attn.compare.commands:table_command",
        "re-render tables and plots of a compare run folder",
        "yolo-attn table runs/compare/exp",
    ),
    "place": (
        "yolo_attn.placement:place_command",
        "insert/replace/remove layers in a model YAML with every `from` index rewired",
        "yolo-attn place base=yolov8.yaml layer=EMA after=15,18,21 out=my.yaml",
    ),
    "transfer": (
        "yolo_attn.transfer:transfer_command",
        "write a variant checkpoint initialised with every baseline tensor (renumbered rows included)",
        "yolo-attn transfer base=runs/detect/train/weights/best.pt model=yolov8n-ema.yaml out=ema-init.pt",
    ),
    "inspect": (
        "yolo_attn.placement:inspect_command",
        "per-layer table (from, module, args after injection, output shape, params, GFLOPs)",
        "yolo-attn inspect model=my.yaml imgsz=640 scale=s",
    ),
}


class CLIError(ValueError):
    """Bad command-line input; printed without a traceback."""


def parse_value(text: str) -> object:
    """Parse a CLI value like ``yolo`` does: Python literals (ints, floats, lists, None, True) else the string.

    Comma-separated values without brackets become lists (``seeds=0,1,2`` -> ``[0, 1, 2]``).
    """
    lowered = text.strip()
    if lowered.lower() in {"none", "null"}:
        return None
    if lowered.lower() in {"true", "false"}:
        return lowered.lower() == "true"
    try:
        value = ast.literal_eval(lowered)
        return list(value) if isinstance(value, tuple) else value  # `seeds=0,1,2` parses as a tuple
    except (ValueError, SyntaxError):
        pass
    if "," in lowered and not lowered.startswith(("[", "(")):
        return [parse_value(p) for p in lowered.split(",") if p.strip()]
    return lowered


def parse_args(tokens: Sequence[str]) -> tuple[list[str], dict[str, object]]:
    """Split argv into positional tokens and ``key=value`` pairs (values parsed with :func:`parse_value`)."""
    positional: list[str] = []
    kwargs: dict[str, object] = {}
    for token in tokens:
        if "=" in token:
            key, _, value = token.partition("=")
            key = key.strip().lstrip("-").replace("-", "_")
            if not key:
                raise CLIError(f"argument {token!r} has no key; write key=value")
            if key in kwargs:
                raise CLIError(f"argument {key!r} given twice")
            kwargs[key] = parse_value(value)
        else:
            positional.append(token)
    return positional, kwargs


def _resolve(target: str) -> Callable:
    module, _, func = target.partition(":")
    return getattr(importlib.import_module(module), func)


def layers_command() -> dict:
    """Print registered layers (name, kind, class) and the model YAMLs shipped with yolo-attn."""
    from yolo_attn import registry
    from yolo_attn.integration import model_yaml_dirs

    print(f"{'layer':<12}{'kind':<11}class")
    for spec in registry.specs():
        print(f"{spec.name:<12}{spec.kind:<11}{spec.cls.__module__}.{spec.cls.__qualname__}")
    yamls = sorted({p.name for d in model_yaml_dirs() for p in d.glob("*.yaml")})
    print("\nshipped model YAMLs (put a scale letter after the version: yolov8s-ema.yaml, yolo11n-cbam.yaml):")
    for name in yamls:
        print(f"  {name}")
    return {"layers": [s.name for s in registry.specs()], "yamls": yamls}


def _usage() -> str:
    lines = ["usage: yolo-attn <command> [positional] key=value ...", "", "commands:"]
    for name, (_, help_text, example) in COMMANDS.items():
        lines.append(f"  {name:<9}{help_text}")
        lines.append(f"  {'':<9}e.g. {example}")
    lines.append("\nAll commands are library functions too (see README).")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``yolo-attn`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0
    if argv[0] in {"--version", "version"}:
        from yolo_attn import __version__

        print(__version__)
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"yolo-attn: unknown command {command!r}; valid commands: {', '.join(COMMANDS)}\n", file=sys.stderr)
        print(_usage(), file=sys.stderr)
        return 2
    try:
        positional, kwargs = parse_args(rest)
        func = _resolve(COMMANDS[command][0])
        func(*positional, **kwargs)
    except Exception as exc:
        # Our own error types (e.g. FlopCountError) and bad-input errors get one line; anything else is a bug.
        expected = (CLIError, ValueError, KeyError, FileNotFoundError, TypeError)
        if os.environ.get("YOLO_ATTN_DEBUG") or not (
            isinstance(exc, expected) or type(exc).__module__.startswith("yolo_attn")
        ):  # developers: the full traceback
            raise
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"yolo-attn {command}: error: {message}", file=sys.stderr)
        if isinstance(exc, TypeError):
            print("  (set YOLO_ATTN_DEBUG=1 for the traceback)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
