"""The `yolo-attn` dispatcher: key=value parsing like `yolo`, clear errors, every command wired to a function."""

from __future__ import annotations

import subprocess

import pytest
from conftest import console_script, subprocess_env

from yolo_attn import cli


@pytest.mark.parametrize(
    "text,value",
    [
        ("640", 640),
        ("0.25", 0.25),
        ("0,1,2", [0, 1, 2]),
        ("yolov8n.yaml,yolov8n-ema.yaml", ["yolov8n.yaml", "yolov8n-ema.yaml"]),
        ("[1,10,100]", [1, 10, 100]),
        ("False", False),
        ("true", True),
        ("none", None),
        ("coco", "coco"),
        ("runs/compare/exp", "runs/compare/exp"),
        ("[gc]", ["gc"]),  # not a Python literal: read as YAML, like a model YAML row's args
        ("[gc, {rd_ratio: 0.25}]", ["gc", {"rd_ratio": 0.25}]),
        ("{factor: 8}", {"factor": 8}),
        ("[unclosed", "[unclosed"),
    ],
)
def test_parse_value(text, value):
    assert cli.parse_value(text) == value


def test_parse_args_splits_positional_and_pairs():
    positional, kwargs = cli.parse_args(["visdrone", "src=a", "out=b", "--max-dets=500"])
    assert positional == ["visdrone"] and kwargs == {"src": "a", "out": "b", "max_dets": 500}
    with pytest.raises(cli.CLIError, match="given twice"):
        cli.parse_args(["a=1", "a=2"])


def test_every_command_resolves_to_a_function():
    for name, (target, _, _) in cli.COMMANDS.items():
        assert callable(cli._resolve(target)), name


def test_console_script_errors_are_one_line_and_exit_2(tmp_path):
    exe = console_script("yolo-attn")
    run = subprocess.run([exe, "nope"], capture_output=True, text=True, env=subprocess_env(), cwd=tmp_path)
    assert run.returncode == 2 and "unknown command 'nope'; valid commands: layers, eval" in run.stderr
    run = subprocess.run([exe, "eval", "gt=x.json"], capture_output=True, text=True, env=subprocess_env(), cwd=tmp_path)
    assert run.returncode == 2 and "Traceback" not in run.stderr and "gt= and pred= go together" in run.stderr
    run = subprocess.run([exe, "layers"], capture_output=True, text=True, env=subprocess_env(), cwd=tmp_path)
    assert run.returncode == 0 and "ODConv      conv" in run.stdout and "yolov8-ema.yaml" in run.stdout


@pytest.mark.parametrize("flag", ["--help", "-h", "help"])
def test_command_help_lists_the_library_functions_keys(flag, capsys):
    assert cli.main(["compare", flag]) == 0
    out = capsys.readouterr().out
    assert out.startswith("yolo-attn compare: ")
    # compare_command defers to compare(): its documented keys follow
    for key in ("    jobs:", "    executor:", "    cam:", "    **train_args:"):
        assert key in out, key


def test_every_command_has_help(capsys):
    for command in cli.COMMANDS:
        assert cli.main([command, "--help"]) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"yolo-attn {command}: ") and len(out.splitlines()) >= 4, command
