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
    "layers": (
        "yolo_attn.cli:layers_command",
        "list layers, model families x placements (<family><scale>-<layer>[-<where>].yaml) and shipped YAMLs",
        "yolo-attn layers",
    ),
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
        "params, GFLOPs (official formulation + executed) at the real input size, latency (p50/p90) and "
        "throughput in torch/onnxruntime/openvino, training step time and memory",
        "yolo-attn bench model=yolov8s.yaml,yolov8s-ema.yaml imgsz=640 runtime=torch,onnxruntime train=True",
    ),
    "compare": (
        "yolo_attn.compare.commands:compare_command",
        "train x seeds (jobs=N in parallel, executor=ray on a cluster), evaluate, benchmark; tables, figures, report",
        "yolo-attn compare models=yolov8n.yaml,yolov8n-ema.yaml data=coco8.yaml epochs=1 seeds=0,1 jobs=2 cam=images/",
    ),
    "table": (
        "yolo_attn.compare.commands:table_command",
        "re-render tables and plots of a compare run folder",
        "yolo-attn table runs/compare/exp",
    ),
    "place": (
        "yolo_attn.variants.placement:place_command",
        "insert/replace/remove layers in a model YAML with every `from` index rewired",
        "yolo-attn place base=yolov8.yaml layer=EMA after=15,18,21 out=my.yaml",
    ),
    "transfer": (
        "yolo_attn.variants.transfer:transfer_command",
        "write a variant checkpoint initialised with every baseline tensor (renumbered rows included)",
        "yolo-attn transfer base=runs/detect/train/weights/best.pt model=yolov8n-ema.yaml out=ema-init.pt",
    ),
    "inspect": (
        "yolo_attn.variants.placement:inspect_command",
        "per-layer table (from, module, args after injection, output shape, params, GFLOPs)",
        "yolo-attn inspect model=my.yaml imgsz=640 scale=s",
    ),
    "migrate": (
        "yolo_attn.variants.migrate:migrate_command",
        "rewrite a fork-style YAML (channel args, fork names) to the plugin's conventions, comments kept",
        "yolo-attn migrate in=blog-yolov8-ema.yaml out=yolov8-ema-migrated.yaml",
    ),
    "attn": (
        "yolo_attn.visualize.commands:attn_command",
        "gate maps of every attention layer, overlaid on the input image",
        "yolo-attn attn model=best.pt source=datasets/coco8/images/val imgsz=640",
    ),
    "cam": (
        "yolo_attn.visualize.commands:cam_command",
        "class-activation heatmaps (pytorch-grad-cam) of several models side by side",
        "yolo-attn cam model=a.pt,b.pt source=datasets/coco8/images/val method=eigencam",
    ),
    "report": (
        "yolo_attn.visualize.commands:report_command",
        "rebuild report.html of a compare run folder",
        "yolo-attn report runs/compare/exp",
    ),
}


class CLIError(ValueError):
    """Bad command-line input; printed without a traceback."""


def parse_value(text: str) -> object:
    """Parse a CLI value like ``yolo`` does: Python literals (ints, floats, lists, None, True) else the string.

    Brackets that are not a Python literal are read as YAML, the way a model YAML row writes its args
    (``args=[gc, {rd_ratio: 0.25}]`` -> ``["gc", {"rd_ratio": 0.25}]``).

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
    if lowered.startswith(("[", "{")):  # a YAML flow collection as written in model YAMLs: [gc, {rd_ratio: 0.25}]
        import yaml

        try:
            value = yaml.safe_load(lowered)
        except yaml.YAMLError:
            value = None
        if isinstance(value, (list, dict)):
            return value
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


def layers_command(timm: bool = True) -> dict:
    """Print registered layers, timm attention types, model families with their placements, and shipped YAMLs.

    Args:
        timm: Also list timm's attention types usable through ``TimmAttn`` (classifying them builds each type once,
            a few seconds; ``yolo-attn layers timm=False`` skips it).
    """
    from yolo_attn.plugin import registry
    from yolo_attn.plugin.integration import model_yaml_dirs
    from yolo_attn.variants import families

    print("layers (YAML rows name them; variant file names take them case-insensitively):")
    print(f"{'layer':<11} {'kind':<11}{'aliases':<9}class")
    for spec in registry.specs():
        aliases = ",".join(spec.aliases) or "-"
        print(f"{spec.name:<11} {spec.kind:<11}{aliases:<9}{spec.cls.__module__}.{spec.cls.__qualname__}")
    timm_types = _timm_types() if timm else None
    if isinstance(timm_types, str):
        print(f"\ntimm attention types: unavailable ({timm_types})")
    elif timm_types is not None:
        usable = [n for n, reason in timm_types.items() if reason is None]
        refused = {n: r for n, r in timm_types.items() if r is not None}
        print(f"\ntimm attention types usable as [-1, 1, TimmAttn, [<type>]] ({len(usable)}): {', '.join(usable)}")
        for name, reason in refused.items():
            print(f"  refused {name}: {reason}")

    print("\nmodel families: yolo train model=<family><scale>-<layer>[-<where>].yaml from any folder")
    print("  (rows of the installed Ultralytics' base YAML each placement edits; '-' = refused, reason below)")
    table = families.family_table()
    reasons: dict[str, str] = {}
    columns = ("neck", "backbone", "sppf", "blocks", "convs")
    lines = [["family", "base (cfg/models)", *columns]]
    for entry in table:
        rules = entry["rules"]
        name = entry["stem"] + ("" if entry["size"] else "<s>")
        if "error" in rules:
            lines.append([name, entry["base"], rules["error"]])
            continue
        cells = []
        for key in columns:
            value = rules[key]
            if isinstance(value, str):
                reasons.setdefault(f"{entry['family']} {key}", value)
                cells.append("-")
            else:
                cells.append(",".join(map(str, value)))
        lines.append([name, entry["base"], *cells])
    widths = [max(len(line[k]) for line in lines if k < len(line)) + 2 for k in range(len(lines[0]))]
    for line in lines:
        print("  " + "".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())
    for what, reason in reasons.items():
        print(f"  - {what}: {reason}")
    print("\nplacements (<where>; nothing = neck):")
    for name, text in families.PLACEMENTS.items():
        print(f"  {name:<9}{text}")
    print("  conv-kind layers (" + ", ".join(registry.list_layers("conv")) + ") replace rows instead:")
    for name, text in families.CONV_PLACEMENTS.items():
        print(f"  {name:<9}{text}" + ("  [the 'convs' column]" if name == "neck" else ""))
    print("  e.g. yolo26s-ema.yaml, yolo26s-cbam-backbone.yaml, yolo26n-se-sppf.yaml, yolo26s-simam-blocks.yaml,")
    print("       yolo26s-odconv.yaml, yolo26s-odconv-blocks.yaml, yolov9c-ema.yaml, rtdetr-l-eca.yaml")

    yamls = sorted({p.name for d in model_yaml_dirs() for p in d.glob("*.yaml")})
    print("\nshipped model YAMLs (put a scale letter after the version: yolov8s-ema.yaml, yolo11n-cbam.yaml):")
    for name in yamls:
        print(f"  {name}")
    return {
        "layers": [s.name for s in registry.specs()],
        "yamls": yamls,
        "families": table,
        "placements": list(families.PLACEMENTS),
        "timm": timm_types,
    }


def _timm_types() -> dict[str, str | None] | str | None:
    """timm attention types; None without the bridge module, a reason string when timm cannot list them."""
    try:
        from yolo_attn.layers.timm_bridge import timm_attention_types
    except ImportError:
        return None
    try:
        return timm_attention_types()
    except Exception as exc:  # timm is an optional extra (ImportError names the install command); never fail `layers`
        return str(exc)


def _usage() -> str:
    lines = ["usage: yolo-attn <command> [positional] key=value ...", "", "commands:"]
    for name, (_, help_text, example) in COMMANDS.items():
        lines.append(f"  {name:<9}{help_text}")
        lines.append(f"  {'':<9}e.g. {example}")
    lines.append("\nAll commands are library functions too (see README).")
    return "\n".join(lines)


def command_help(command: str) -> str:
    """Help of one subcommand: its line, example and the docstring of the function behind it.

    Where that docstring defers to a library function (``:func:`yolo_attn...```), the library function's documented
    arguments follow, so ``yolo-attn compare --help`` lists every key ``compare()`` takes.
    """
    import inspect
    import re

    target, line, example = COMMANDS[command]
    doc = inspect.getdoc(_resolve(target)) or ""
    parts = [f"yolo-attn {command}: {line}", f"  e.g. {example}", "", doc]
    for name in dict.fromkeys(re.findall(r":func:`(yolo_attn[\w.]*)`", doc)):
        module, _, attr = name.rpartition(".")
        try:
            library = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            continue
        library_doc = inspect.getdoc(library) or ""
        if "Args:" in library_doc:
            parts += ["", f"{name}:", library_doc[library_doc.index("Args:") :]]
    return "\n".join(parts).rstrip()


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
    if any(a in {"-h", "--help", "help"} for a in rest):
        print(command_help(command))
        return 0
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
