"""docs/ci.md's GitHub Actions example: valid YAML, and every edgekd command line in it parses
with the real CLI (options and all). Not verified: running it on GitHub."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import yaml

from edgekd.cli.main import cli

DOC = Path(__file__).resolve().parents[2] / "docs" / "ci.md"


def _workflow() -> dict:
    block = re.search(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    assert block, "docs/ci.md has no yaml block"
    return yaml.safe_load(block.group(1))


def test_workflow_builds_benches_and_gates() -> None:
    steps = _workflow()["jobs"]["gate"]["steps"]
    commands = [line.strip() for s in steps for line in str(s.get("run", "")).replace(">\n", " ").splitlines()]
    text = " ".join(commands)
    for needed in ("pip install torch==2.13.0", "edgekd build", "edgekd bench", "edgekd gate", "--junit", "--markdown"):
        assert needed in text, needed


def test_every_edgekd_command_in_the_workflow_parses() -> None:
    steps = _workflow()["jobs"]["gate"]["steps"]
    runs = " \n".join(str(s.get("run", "")) for s in steps)
    runs = re.sub(r"\n(?=\s*--)", " ", runs)  # folded (>) continuation lines
    lines = [m.group(0) for m in re.finditer(r"edgekd (build|bench|gate)[^\n|&]*", runs)]
    assert len(lines) >= 5
    for line in lines:
        argv = shlex.split(line.replace("$GITHUB_WORKSPACE", "/w").replace('"', ""))[1:]
        command = cli.get_command(click.Context(cli), argv[0])
        assert command is not None, line
        # unknown options raise NoSuchOption; the positional arguments are left for the command
        _, args, _ = command.make_parser(click.Context(command)).parse_args(argv[1:])
        assert len(args) <= 1, f"unexpected arguments {args} in {line}"
