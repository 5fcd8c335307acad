"""Regenerate the shipped model YAMLs in ``model_yamls/`` from Ultralytics' own yolov8.yaml / yolo11.yaml.

The YAMLs are rendered by :func:`yolo_attn.variants.families.render_variant` -- the code that answers
``yolo train model=<family><scale>-<layer>[-<where>].yaml`` for every other name, built on the row editor of
``yolo-attn place`` -- so a shipped file is byte-identical to what the name would generate. Shipping the twelve
headline variants keeps them visible (``yolo-attn layers``), usable by path, and reviewable in the repository;
every other family and placement is generated on demand into a cache folder.

``tests/test_model_yamls.py`` fails if the committed files drift from this script's output.

Usage: python scripts/generate_model_yamls.py [--check]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from yolo_attn.variants.families import parse_variant_name, render_variant

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "model_yamls"
#: family -> layer parts of the shipped names (``ca`` is CoordAtt's registered alias; ``odconv`` the conv-kind layer).
SHIPPED: dict[str, tuple[str, ...]] = {
    "yolov8": ("se", "cbam", "eca", "ema", "ca", "odconv"),
    "yolo11": ("se", "cbam", "eca", "ema", "ca", "odconv"),
}
#: Ultralytics release the committed files were rendered with (their bodies are that release's base YAML text).
GENERATED_WITH_ULTRALYTICS = "8.4.190"


def render_all() -> dict[str, str]:
    """File name -> YAML text for every shipped variant."""
    files: dict[str, str] = {}
    for family, tokens in SHIPPED.items():
        for token in tokens:
            variant = parse_variant_name(f"{family}-{token}.yaml", skip_existing=False)
            if variant is None:  # a family or layer renamed without updating SHIPPED
                raise SystemExit(f"{family}-{token}.yaml is not a variant name any more; update SHIPPED")
            files[f"{variant.stem}.yaml"] = render_variant(variant)
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if model_yamls/ differs from the generated text")
    opts = parser.parse_args()
    files = render_all()
    stale = [n for n, t in files.items() if not (OUT / n).is_file() or (OUT / n).read_text(encoding="utf-8") != t]
    extra = sorted(p.name for p in OUT.glob("*.yaml") if p.name not in files) if OUT.is_dir() else []
    if opts.check:
        for name in stale:
            print(f"stale: model_yamls/{name}")
        for name in extra:
            print(f"not generated: model_yamls/{name}")
        return 1 if stale or extra else 0
    OUT.mkdir(exist_ok=True)
    for name, text in files.items():
        (OUT / name).write_text(text, encoding="utf-8")
    print(f"wrote {len(files)} YAMLs to {OUT} ({len(stale)} changed)" + (f"; not generated: {extra}" if extra else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
