"""Graph-mode validation on a real GPU (skipped with a reason where torch sees none)."""

import json

import pytest
import torch

from ridgeline.sizing.models import load_model

pytestmark = pytest.mark.gpu


def test_graph_replay_equals_eager_and_both_modes_are_measured():
    from ridgeline.device import get_device
    from ridgeline.timing import make_timer
    from ridgeline.validation.measure import Bench, Measured, Point, capture_graph
    from ridgeline.validation.transformer import DecoderModel

    device = get_device("cuda:0")
    with torch.inference_mode():
        model = DecoderModel(load_model("tiny"), "bf16", device=torch.device("cuda:0"))
        assert model.ops.name == "triton", model.notes  # the fused kernels passed their check
        model.prepare(300)
        cache = model.new_cache(5, 258, filled=257)
        tokens = model.random_tokens(5, 1)
        graph, out = capture_graph(lambda: model.forward(tokens, cache), device.index)
        graph.replay()
        torch.cuda.synchronize()
        # same kernels; cuBLAS may pick another algorithm under capture: bf16-level agreement
        torch.testing.assert_close(out, model.forward(tokens, cache), atol=2e-2, rtol=2e-2)
        bench = Bench(model, device, make_timer(device), rep_ms=20)
        results = bench.run_point(Point("decode", 5, 257), 2, ["graph", "eager"])
    assert [r.mode for r in results] == ["graph", "eager"]
    assert all(isinstance(r, Measured) and r.finite and r.measured_s > 0 for r in results)
    assert results[0].timing["timer"] == "device-events"


def test_cli_on_the_gpu_measures_graph_and_eager(tmp_path):
    from test_commands_validate import cpu_profile

    from ridgeline.cli import main

    prof = cpu_profile(tmp_path / "profile.json")  # any valid profile: the numbers are not judged
    rc = main(["validate", "--device", "cuda:0", "--model", "tiny", "--batch", "1,4",
               "--context", "128", "--prefill", "64", "--rep-ms", "20", "--profile", str(prof),
               "-o", str(tmp_path)])
    data = json.loads((tmp_path / "validation.json").read_text())
    assert rc == 0
    assert {(p["phase"], p["mode"]) for p in data["points"]} == {
        ("decode", "graph"), ("decode", "eager"), ("prefill", "graph"), ("prefill", "eager")}
    assert data["summary"]["decode"]["mode"] == "graph"
    assert all(p["measured_s"] > 0 for p in data["points"])
