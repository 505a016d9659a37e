"""docs/interconnect.md does not drift: its flags parse and the fields it names exist in the code."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "interconnect.md").read_text()


def test_documented_entry_point_flags_parse():
    from ridgeline.probes.allreduce import build_parser

    block = DOC[DOC.index("-m ridgeline.probes.allreduce"):].split("```")[0]
    flags = set(re.findall(r"--[a-z][a-z-]+", block))
    assert {"--out", "--quick", "--timeout-s"} <= flags
    known = {opt for action in build_parser()._actions for opt in action.option_strings}
    assert flags <= known


def test_documented_fields_exist_in_code():
    code = "".join(p.read_text() for p in [
        ROOT / "ridgeline/probes/host_link.py", ROOT / "ridgeline/probes/collective_worker.py",
        ROOT / "ridgeline/roofline/interconnect_fit.py"])
    pattern = r"`([a-z][A-Za-z_0-9]*_(?:GBps|us|median|worst|enable|version|size|direction))`"
    fields = set(re.findall(pattern, DOC))
    assert len(fields) >= 10
    for field in fields:
        assert f'"{field}"' in code, field


def test_every_swept_collective_and_layout_is_documented():
    from ridgeline.probes.collective_worker import layout
    from ridgeline.roofline.interconnect import COLLECTIVES

    model = DOC[DOC.index("## The fitted model"):]
    for name in COLLECTIVES:
        assert f'`"{name}"`' in model, name
    assert {layout(c) for c in COLLECTIVES} == {"in_place", "out_of_place"}
    for kernel in ("in_place", "out_of_place"):
        assert f'`"{kernel}"`' in DOC, kernel
