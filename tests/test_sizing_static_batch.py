"""Static batch: prefill of B prompts, then O - 1 decode steps at growing context (as
TensorRT-LLM's gptSessionBenchmark and vLLM's benchmark_latency time one batch)."""

import json

import pytest

from ridgeline.cli import main
from ridgeline.errors import RidgelineError
from ridgeline.sizing.engine import ENGINE_KIND, NO_ENGINE, EngineProfile, entry_of, load_engine
from ridgeline.sizing import static_batch as sb
from ridgeline.sizing.hardware import hardware_from_gpu_name
from ridgeline.sizing.latency import decode_step_time, prefill_time
from ridgeline.sizing.memory import EngineConfig
from ridgeline.sizing.models import load_model
from ridgeline.sizing.precision import Precision
from ridgeline.sizing.static_batch import StaticBatch, static_batch
from ridgeline.sizing.workload import ParallelOptions

H100 = hardware_from_gpu_name("h100-sxm")
SPEC = load_model("llama-3.1-8b")
BF16 = Precision()


def test_latency_is_prefill_then_one_step_per_further_token():
    run = static_batch(SPEC, BF16, H100, StaticBatch(batch=8, input_len=1000, output_len=50))
    prefill = prefill_time(SPEC, BF16, H100, 8, 1000, max_batched_tokens=8192).time_s
    steps = [decode_step_time(SPEC, BF16, H100, 8, 1000 + j).time_s for j in range(49)]
    assert run.tp == 1 and run.decode_steps == 49
    assert run.prefill_s == pytest.approx(prefill)
    assert run.decode_s == pytest.approx(sum(steps))
    assert run.latency_s == pytest.approx(prefill + sum(steps))
    assert (run.first_step_s, run.last_step_s) == (pytest.approx(steps[0]),
                                                  pytest.approx(steps[-1]))
    assert run.tokens_per_s == pytest.approx(8 * 50 / run.latency_s)   # tokensPerSec
    assert run.tokens_per_s_per_gpu == run.tokens_per_s


def test_one_output_token_is_the_prefill_alone():
    run = static_batch(SPEC, BF16, H100, StaticBatch(batch=4, input_len=512, output_len=1))
    assert run.decode_steps == 0 and run.decode_s == 0 and run.mean_step_s is None
    assert run.latency_s == run.prefill_s and run.tokens_per_s == pytest.approx(4 / run.prefill_s)


def test_long_outputs_interpolate_within_a_hair_of_the_exact_sum(monkeypatch):
    run = StaticBatch(batch=16, input_len=128, output_len=600)
    exact = static_batch(SPEC, BF16, H100, run)
    monkeypatch.setattr(sb, "EXACT_STEPS", 64)
    approx = static_batch(SPEC, BF16, H100, run)
    assert approx.decode_s == pytest.approx(exact.decode_s, rel=1e-4)
    assert any("priced contexts" in n for n in approx.notes)


def test_tp_is_the_lowest_that_holds_the_batch_per_gpu_rates_divide_by_it():
    big = load_model("llama-3.1-70b")
    run = static_batch(big, BF16, H100, StaticBatch(batch=32, input_len=2048, output_len=256))
    assert run.tp == 4 and run.memory_per_gpu_bytes <= run.usable_per_gpu_bytes
    assert run.tokens_per_s_per_gpu == pytest.approx(run.tokens_per_s / 4)
    forced = static_batch(big, BF16, H100, StaticBatch(batch=32, input_len=2048, output_len=256),
                          EngineConfig(), ParallelOptions(tp=8))
    assert forced.tp == 8 and forced.latency_s < run.latency_s


def test_a_batch_that_fits_nowhere_or_overruns_the_window_is_one_error():
    with pytest.raises(RidgelineError, match="does not fit"):
        static_batch(SPEC, BF16, H100, StaticBatch(batch=4096, input_len=8192, output_len=8192))
    with pytest.raises(RidgelineError, match="context window"):
        static_batch(load_model("llama-2-7b"), BF16, H100,
                     StaticBatch(batch=1, input_len=4000, output_len=200))
    with pytest.raises(RidgelineError, match="--input-len"):
        StaticBatch(batch=1, output_len=3)


def test_cli_prints_latency_and_tokens_per_gpu(capsys):
    argv = ["plan", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--static-batch", "8",
            "--input-len", "1000", "--output-len", "50"]
    assert main([*argv, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["kind"] == "ridgeline-static-batch" and out["basis"] == "datasheet"
    assert out["tokens_per_s"] == pytest.approx(8 * 50 / out["latency_s"])
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "latency" in text and "tokens/s per GPU" in text and "[DATASHEET]" in text
    assert main(["plan", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--static-batch",
                 "8"]) == 2
    assert "--input-len" in capsys.readouterr().err


# -- the serving engine layer (sizing.engine): priced as prefill_time/decode_step_time price it --

STEP_1MS = EngineProfile(name="step", step_overhead_us=1000.0)
ONE_SHOT = EngineProfile(name="os", allreduce="one_shot", one_shot_latency_us={2: 9.0},
                         one_shot_max_bytes={2: 8 * 2**20})


def _numbers(run) -> dict:
    return {k: v for k, v in run.to_dict().items() if k not in ("notes", "engine_layer")}


def test_no_engine_layer_keeps_the_hardware_alone_numbers():
    run = StaticBatch(batch=3, input_len=700, output_len=40)
    for parallel in (ParallelOptions(), ParallelOptions(tp=2)):
        bare = static_batch(SPEC, BF16, H100, run, EngineConfig(), parallel)
        assert bare.engine_layer is None and bare.request_overhead_s == 0
        assert not any(n.startswith("engine layer") for n in bare.notes)
        for same in (NO_ENGINE, EngineProfile(name="nccl"), load_engine("trtllm")):
            got = static_batch(SPEC, BF16, H100, run, EngineConfig(), parallel,
                               engine_layer=same)
            assert _numbers(got) == _numbers(bare), same.name   # exactly, not approximately
            assert got.notes[0] == same.describe()


@pytest.mark.parametrize("batch, passes", [(8, 1), (16, 2)])   # 8 x 1000 tokens: one pass
def test_step_overhead_is_paid_by_each_prefill_pass_and_each_decode_step(batch, passes):
    run = StaticBatch(batch=batch, input_len=1000, output_len=50)
    bare = static_batch(SPEC, BF16, H100, run)
    slow = static_batch(SPEC, BF16, H100, run, engine_layer=STEP_1MS)
    assert slow.prefill_s == pytest.approx(bare.prefill_s + passes * 1e-3, rel=1e-12)
    assert slow.decode_s == pytest.approx(bare.decode_s + 49 * 1e-3, rel=1e-12)
    assert slow.mean_step_s == pytest.approx(bare.mean_step_s + 1e-3, rel=1e-12)
    # O - 1 decode steps and the prefill's passes: output_len ms with one pass
    assert slow.latency_s == pytest.approx(bare.latency_s + (49 + passes) * 1e-3, rel=1e-12)
    assert slow.tokens_per_s == pytest.approx(batch * 50 / slow.latency_s)


def test_step_overhead_survives_the_interpolated_sum(monkeypatch):
    monkeypatch.setattr(sb, "EXACT_STEPS", 64)
    run = StaticBatch(batch=4, input_len=128, output_len=600)
    bare = static_batch(SPEC, BF16, H100, run)
    slow = static_batch(SPEC, BF16, H100, run, engine_layer=STEP_1MS)
    assert slow.decode_s == pytest.approx(bare.decode_s + 599e-3, rel=1e-9)


def test_request_overhead_is_added_once_to_the_latency():
    run = StaticBatch(batch=8, input_len=256, output_len=20)
    bare = static_batch(SPEC, BF16, H100, run)
    eng = EngineProfile(name="o", request_overhead_us=20_000.0)
    got = static_batch(SPEC, BF16, H100, run, engine_layer=eng)
    assert (got.prefill_s, got.decode_s) == (bare.prefill_s, bare.decode_s)   # no engine time
    assert got.request_overhead_s == pytest.approx(0.02)
    assert got.latency_s == pytest.approx(bare.latency_s + 0.02, rel=1e-12)
    assert got.tokens_per_s == pytest.approx(8 * 20 / got.latency_s)
    assert any("request overhead once" in n for n in got.notes)


def test_every_step_is_the_engines_prefill_and_decode_step():
    """A mixed engine (overheads, one-shot all-reduce, efficiencies) prices each step as
    prefill_time / decode_step_time do with it."""
    eng = ONE_SHOT.with_values(step_overhead_us=300.0, bandwidth_efficiency=0.8,
                               compute_efficiency=0.9, allreduce_efficiency=0.7)
    run = static_batch(SPEC, BF16, H100, StaticBatch(batch=2, input_len=300, output_len=12),
                       EngineConfig(), ParallelOptions(tp=2), engine_layer=eng)
    prefill = prefill_time(SPEC, BF16, H100, 2, 300, tp=2, max_batched_tokens=8192, engine=eng)
    steps = [decode_step_time(SPEC, BF16, H100, 2, 300 + j, tp=2, engine=eng).time_s
             for j in range(11)]
    assert run.prefill_s == pytest.approx(prefill.time_s, rel=1e-12)
    assert run.decode_s == pytest.approx(sum(steps), rel=1e-12)
    assert run.engine_layer["name"] == "os" and run.notes[0] == eng.describe()


def test_one_shot_allreduce_shortens_a_small_tp2_batch():
    """At batch 1 the TP=2 all-reduce is latency-bound: one-shot's single step (9 us) beats
    the profile's (datasheet NVLink) all-reduce, so every step and the latency shrink."""
    run = StaticBatch(batch=1, input_len=128, output_len=32)
    nccl = static_batch(SPEC, BF16, H100, run, EngineConfig(), ParallelOptions(tp=2),
                        engine_layer=EngineProfile(name="nccl"))
    one = static_batch(SPEC, BF16, H100, run, EngineConfig(), ParallelOptions(tp=2),
                       engine_layer=ONE_SHOT)
    assert one.first_step_s < nccl.first_step_s and one.decode_s < nccl.decode_s
    assert one.latency_s < nccl.latency_s
    assert one.tokens_per_s_per_gpu > nccl.tokens_per_s_per_gpu
    # at TP=1 there is no all-reduce: the implementation changes nothing
    alone = static_batch(SPEC, BF16, H100, run, engine_layer=ONE_SHOT)
    assert alone.latency_s == static_batch(SPEC, BF16, H100, run).latency_s


def test_cli_static_batch_takes_the_engine(tmp_path, capsys):
    path = tmp_path / "engine.json"
    path.write_text(json.dumps({"kind": ENGINE_KIND, "schema_version": 1, "name": "slow",
                                "engine": entry_of(STEP_1MS)}))
    argv = ["plan", "--model", "llama-3.1-8b", "--gpu", "h100-sxm", "--static-batch", "8",
            "--input-len", "1000", "--output-len", "50", "--json"]
    assert main(argv) == 0
    bare = json.loads(capsys.readouterr().out)
    assert bare["engine_layer"]["name"] == "none"
    assert main([*argv, "--engine", str(path)]) == 0
    slow = json.loads(capsys.readouterr().out)
    assert slow["engine_layer"]["name"] == "slow"
    assert any(n.startswith("engine layer: slow") for n in slow["notes"])
    assert slow["latency_s"] == pytest.approx(bare["latency_s"] + 50e-3, rel=1e-12)
