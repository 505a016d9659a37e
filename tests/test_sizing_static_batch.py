"""Static batch: prefill of B prompts, then O - 1 decode steps at growing context (as
TensorRT-LLM's gptSessionBenchmark and vLLM's benchmark_latency time one batch)."""

import json

import pytest

from ridgeline.cli import main
from ridgeline.errors import RidgelineError
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
