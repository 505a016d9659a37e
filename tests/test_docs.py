"""Docs that drift from the code are bugs: README commands and flags must exist."""

import re
from pathlib import Path

from ridgeline.cli import COMMANDS, build_parser
from ridgeline.probes import REGISTRY

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_test_one():
    setup = README.split("## Set up", 1)[1].split("##", 1)[0]
    commands = [line.strip() for line in setup.splitlines() if line.startswith("    python3 -m venv")]
    assert len(commands) == 2
    assert commands[0].endswith("ridgeline profile")
    install_and_test = commands[1].split("&& ", 2)[2]  # after venv creation and activation
    assert install_and_test in (ROOT / ".ci" / "run").read_text()


def test_every_documented_command_and_probe_exists():
    for name in re.findall(r"`ridgeline (\w+)", README):
        assert name in COMMANDS, name
    probes = README.split("Probes (`--probes`):", 1)[1].split("(see", 1)[0]
    for name in re.findall(r"`(\w+)`", probes):
        assert name in REGISTRY, name


def test_documented_profile_flags_exist():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["profile"]
    flags = {s for a in sub._actions for s in a.option_strings}
    for flag in ("--device", "--quick", "--probes", "-o", "--no-report"):
        assert flag in flags
