"""Docs that drift from the code are bugs: README commands and flags must exist."""

import json
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


# -- docs/planning.md: the options table, the example's figures, paths -----------------------

PLANNING = (ROOT / "docs" / "planning.md").read_text()


def test_planning_options_table_is_the_fields():
    from ridgeline.sizing.plan_options import PLAN_GROUPS
    from ridgeline.sizing.options import options_markdown

    table = PLANNING.split("<!-- options:begin", 1)[1].split("-->", 1)[1]
    table = table.split("<!-- options:end -->", 1)[0].strip()
    assert table == options_markdown(PLAN_GROUPS)


def test_planning_lists_the_bundled_models():
    from ridgeline.sizing.models import bundled_models

    listed = PLANNING.split("Bundled models:", 1)[1].split(".\n", 1)[0]
    assert re.findall(r"`([\w.-]+)`", listed) == bundled_models()


# label (as documented) -> how the figure is read from `ridgeline plan --json`
EXAMPLE_FIGURES = {
    "weights (fp8 linear layers, 16-bit embedding and head)":
        lambda p: f"{p['memory']['weights_bytes'] / 1e9:,.1f} GB",
    "KV per token (fp8)": lambda p: f"{p['memory']['kv_bytes_per_token']:,} B",
    "KV for 50 x 8,704 tokens": lambda p: f"{p['memory']['kv_bytes'] / 1e9:,.1f} GB",
    "pooled minimum": lambda p: f"{p['memory']['min_gpus']} GPUs",
    "chosen layout (lowest TP that holds 50 and meets the SLO)":
        lambda p: f"TP={p['parallelism']['chosen']['tp']}",
    "capacity per replica (memory)":
        lambda p: f"{p['operating_point']['max_concurrency_memory']} requests",
    "SLO-limited concurrency (the ITL SLO binds)":
        lambda p: f"{p['operating_point']['max_concurrency_slo']} requests"
        if p["operating_point"]["slo_limit_above"] == "ITL SLO" else "ITL does not bind",
    "usable RPS per replica": lambda p: f"{p['fleet']['usable_rps_per_replica']:.2f}",
    "replicas needed for 120 RPS": lambda p: f"{p['fleet']['replicas_needed']:.2f}",
    "replicas with the 1.2 safety factor": lambda p: f"{p['fleet']['replicas_with_safety']}",
    "GPUs deployed (N+1)": lambda p: f"{p['fleet']['gpus_deployed']}",
    "$ per 1M input / output / blended tokens (16:1 mix, full utilization)":
        lambda p: " / ".join(f"{p['fleet'][k]:.3f}" for k in (
            "cost_per_1m_input_tokens", "cost_per_1m_output_tokens",
            "cost_per_1m_blended_tokens")),
}


def test_planning_example_figures_are_what_the_command_prints(capsys):
    from ridgeline.cli import main

    example = PLANNING.split("## Example", 1)[1].split("## Limits", 1)[0]
    command = example.split("```\n", 1)[1].split("\n```", 1)[0].split()
    assert command[:2] == ["ridgeline", "plan"]
    assert main([*command[1:], "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    rows = [r for r in re.findall(r"^\| (.+?) \| (.+?) \|$", example, flags=re.M)
            if r != ("figure", "value")]
    assert {label for label, _ in rows} == set(EXAMPLE_FIGURES)
    for label, documented in rows:
        assert EXAMPLE_FIGURES[label](plan) == documented, label


def test_planning_paths_point_inside_the_repository():
    quoted = re.findall(r"`([^`\n]+)`", PLANNING)
    assert "/work/" not in PLANNING and not [q for q in quoted if q.startswith(("/", "~"))]
    for path in re.findall(r"`((?:ridgeline|docs|tests)/[\w./-]+)`", PLANNING):
        assert (ROOT / path).exists(), path


def test_api_doc_names_exist_and_its_example_runs(capsys):
    from ridgeline import api

    doc = (ROOT / "docs" / "api.md").read_text()
    for name in set(re.findall(r"\bapi\.(\w+)", doc)) - {"__all__"}:
        assert name in api.__all__, name
    for name in set(re.findall(r"^\| `(\w+)\(", doc, flags=re.M)):
        assert name in api.__all__ and callable(getattr(api, name)), name
    example = doc.split("```python\n", 1)[1].split("```", 1)[0]
    example = "\n".join(line for line in example.splitlines() if "load_profile" not in line)
    exec(compile(example, "docs/api.md", "exec"), {})   # noqa: S102 - the documented example
    assert capsys.readouterr().out.split()[:2] == ["8", "504"]  # on the simulated curve
