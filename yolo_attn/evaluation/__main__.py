"""``python -m yolo_attn.evaluation eval key=value ...`` / ``... convert visdrone key=value ...`` (manual testing).

The packaged entry point is ``yolo-attn`` (``yolo_attn.cli``); this mirrors its ``key=value`` parsing.
"""

from __future__ import annotations

import ast
import sys
from typing import Any

from .commands import convert_command, eval_command


def _parse(tokens: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tok in tokens:
        if "=" not in tok:
            raise ValueError(f"expected key=value, got {tok!r}")
        k, v = tok.split("=", 1)
        try:
            out[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            out[k] = v
    return out


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``eval`` / ``convert <kind>``; returns the process exit code."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["eval"]:
            eval_command(**_parse(argv[1:]))
        elif argv[:1] == ["convert"] and len(argv) > 1:
            convert_command(argv[1], **_parse(argv[2:]))
        else:
            print("usage: python -m yolo_attn.evaluation eval key=value ... | convert <visdrone|yolo> key=value ...")
            return 2
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
