"""Planner options, each defined once on its dataclass: flags, file keys, values derive from it."""

import argparse
import dataclasses

import pytest

from ridgeline.errors import RidgelineError
from ridgeline.sizing.plan_options import PLAN_GROUPS
from ridgeline.sizing.hardware import HardwareOptions
from ridgeline.sizing.memory import EngineConfig
from ridgeline.sizing.options import (add_option_groups, build, option, option_values,
                                      options_markdown, options_of)
from ridgeline.sizing.precision import PrecisionOptions
from ridgeline.sizing.workload import SLO, Workload


def parser_for(groups):
    p = argparse.ArgumentParser()
    add_option_groups(p, groups)
    return p


def values(groups, argv):
    return option_values(parser_for(groups).parse_args(argv), groups)


def test_every_field_of_every_group_is_one_flag():
    p = parser_for(PLAN_GROUPS)
    flags = {s for a in p._actions for s in a.option_strings}
    for cls in PLAN_GROUPS:
        opts = options_of(cls)
        assert [o.name for o in opts] == [f.name for f in dataclasses.fields(cls)], cls
        assert all(o.flag in flags for o in opts)
    keys = [o.key for cls in PLAN_GROUPS for o in options_of(cls)]
    assert len(keys) == len(set(keys))


def test_defaults_live_on_the_dataclass_only():
    """Nothing given: each group is built from its own field defaults."""
    for cls in (EngineConfig, SLO, PrecisionOptions):
        assert build(cls, values(PLAN_GROUPS, [])) == cls()
    text = parser_for(PLAN_GROUPS).format_help()
    assert "(default: 256)" in text and "(default: 0.9)" in text   # shown from the fields


def test_construction_is_by_keyword_only():
    with pytest.raises(TypeError):
        EngineConfig(0.9, 0.05)  # type: ignore[misc]
    with pytest.raises(TypeError):
        SLO(2.0, 0.05)  # type: ignore[misc]
    assert EngineConfig(max_num_seqs=64).max_num_seqs == 64


def test_flags_override_the_workload_file(tmp_path):
    toml = tmp_path / "w.toml"
    toml.write_text('[engine]\nmax-num-seqs = 128\nmemory_fraction = 0.8\n[workload]\n'
                    'input_p95 = 100\noutput_p95 = 10\nconcurrency = 2\n')
    got = values((EngineConfig, Workload), ["--workload", str(toml), "--max-num-seqs", "64"])
    engine = build(EngineConfig, got)
    assert engine.max_num_seqs == 64 and engine.memory_fraction == 0.8
    assert build(Workload, got) == Workload(input_p95=100, output_p95=10, concurrency=2)


def test_an_exclusive_flag_replaces_the_files_alternatives(tmp_path):
    toml = tmp_path / "w.toml"
    toml.write_text('gpu = "h100-sxm"\nallow_unverified = true\n')
    got = values((HardwareOptions,), ["--workload", str(toml), "--profile", "p.json"])
    hw = build(HardwareOptions, got)
    assert (hw.profile, hw.gpu, hw.allow_unverified) == ("p.json", None, True)
    with pytest.raises(RidgelineError, match="not both"):
        build(HardwareOptions, values((HardwareOptions,), ["--gpu", "a", "--profile", "b"]))


@pytest.mark.parametrize("text, message", [
    ("max_num_seqs = 1.5\n", "must be a whole number"),
    ("memory_fraction = \"all\"\n", "must be a number"),
    ("allow_unverified = 1\n", "true or false"),
    ("max_num_sequences = 4\n", "unknown key"),
    ("[a]\ntp = 2\n[b]\ntp = 4\n", "given twice"),
])
def test_bad_workload_files_are_one_line(tmp_path, text, message):
    toml = tmp_path / "w.toml"
    toml.write_text(text)
    with pytest.raises(RidgelineError, match=message):
        values(PLAN_GROUPS, ["--workload", str(toml)])


def test_required_options_and_validation_name_the_flag():
    with pytest.raises(RidgelineError, match="--input-p95 is required"):
        build(Workload, {"output_p95": 3, "concurrency": 1})
    with pytest.raises(RidgelineError, match="--max-num-seqs must be a positive whole number"):
        EngineConfig(max_num_seqs=0)
    with pytest.raises(RidgelineError, match="--lora-targets"):
        EngineConfig(lora_targets="mlp")        # the API refuses what the CLI refuses
    with pytest.raises(RidgelineError, match="--memory-fraction must be in"):
        EngineConfig(memory_fraction=1.5)


def test_a_new_group_reuses_the_machinery():
    """What `ridgeline simulate` does: its own dataclass next to the shared ones."""
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Sweep:
        """Sweep."""

        points: int = option(8, "load points")
        seed: int | None = option(None, "random seed", flag="--sim-seed")

    got = values((Sweep, EngineConfig), ["--sim-seed", "3", "--max-num-seqs", "32"])
    assert build(Sweep, got) == Sweep(points=8, seed=3)
    assert build(EngineConfig, got).max_num_seqs == 32
    table = options_markdown((Sweep,))
    assert "| Sweep | `--points` | 8 | load points |" in table
    assert "| | `--sim-seed` | - | random seed |" in table.replace("|  |", "| |")
