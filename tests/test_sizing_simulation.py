"""The serving simulation: step model, vLLM-v1 scheduler, load, metrics, sweep (pure, fast)."""

import math
import re
from pathlib import Path

import numpy as np
import pytest

from ridgeline.errors import RidgelineError
from ridgeline.roofline.model import RooflineModel
from ridgeline.sizing.hardware import hardware_from_gpu_name
from ridgeline.sizing.latency import decode_step_time, prefill_time
from ridgeline.sizing.memory import EngineConfig, kv_tokens_per_request, replica_memory
from ridgeline.sizing.models import load_model
from ridgeline.sizing.precision import Precision
from ridgeline.sizing.simulation import (ClosedLoop, LognormalLengths, OpenLoop, Requests,
                                         SchedulerConfig, SimPoint, Stat, capacity_rps, find_knee,
                                         kv_capacity_tokens, make_requests, max_load_meeting,
                                         read_trace, round_robin_replica_load, run_engine,
                                         scheduler_for, simulate, summarize, sweep)
from ridgeline.sizing.simulation.sweep import (BASELINE_SAMPLE, baseline_ttft_spread_s,
                                               unloaded_ttft_s)
from ridgeline.sizing.step_model import (EXACT_TOKENS, AttentionRoofline, ConstantStepModel,
                                         StepModel)

DATA = Path(__file__).parent / "data"
FP8 = Precision("fp8", "fp8", "fp8")


@pytest.fixture(scope="module")
def h100():
    return hardware_from_gpu_name("h100-sxm")


@pytest.fixture(scope="module")
def llama8b(h100):
    spec = load_model("llama-3.1-8b")
    return spec, StepModel(spec, FP8, h100, 1), scheduler_for(spec, FP8, h100.memory_bytes)


def fixed(inp, out, gaps=None):
    """Requests with given lengths (and trace gaps, seconds before each)."""
    return Requests(np.asarray(inp), np.asarray(out),
                    None if gaps is None else np.asarray(gaps, dtype=float), 0)


# -- step model ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name,tp", [("llama-3.1-8b", 1), ("llama-3.1-70b", 4),
                                     ("mixtral-8x7b", 2), ("deepseek-v3", 8)])
def test_step_model_is_the_planners_decode_step_and_prefill(h100, name, tp):
    spec = load_model(name)
    sm = StepModel(spec, FP8, h100, tp)
    for batch, ctx in [(1, 0), (3, 777), (64, 4000), (256, 9000)]:
        want = decode_step_time(spec, FP8, h100, batch, ctx, tp=tp).time_s
        assert sm.step_s(batch, batch * (ctx + 1)) == pytest.approx(want, rel=1e-12)
        run = sm.decode_steps_s(batch, batch * (ctx + 1), batch, 3)
        assert run[0] == pytest.approx(want, rel=1e-12)
        assert run[2] == pytest.approx(
            decode_step_time(spec, FP8, h100, batch, ctx + 2, tp=tp).time_s, rel=1e-12)
    for tokens in (1, 1000, 8192, 20000):  # 20000: three chunks, each attending to the last
        chunked, prior = 0.0, 0
        while prior < tokens:
            k = min(8192, tokens - prior)
            chunked += sm.step_s(0, 0, [(k, prior)], 1 if prior + k == tokens else 0)
            prior += k
        assert chunked == pytest.approx(prefill_time(spec, FP8, h100, 1, tokens, tp=tp).time_s,
                                        rel=1e-12)


def test_mixed_step_costs_more_than_either_part_and_less_than_both(llama8b):
    _, sm, _ = llama8b
    dec = sm.step_s(32, 32 * 2001)
    pre = sm.step_s(0, 0, [(2048, 0)], 1)
    mixed = sm.step_s(32, 32 * 2001, [(2048, 0)], 33)
    # the weights are read once for both: a mixed step is cheaper than running them apart
    assert max(dec, pre) < mixed < dec + pre


def test_attention_roofline_is_predict_in_arithmetic():
    model = RooflineModel(3000.0, {"bf16": 700.0}, {"bf16": 2e9}, latency_floor_us=4.0,
                          overhead_us=1.5, overlap_p=3.0)
    rng = np.random.default_rng(1)
    flops = np.concatenate([[0.0, 1.0], 10 ** rng.uniform(3, 13, 200)])
    moved = np.concatenate([[0.0, 5.0], 10 ** rng.uniform(2, 11, 200)])
    own = RooflineModel(3000.0, {"bf16": 700.0, "fp32": 60.0}, {"bf16": 2e9},
                        bandwidth_by_dtype={"bf16": 2400.0})   # bf16 streams at its own rate
    for m in (model, RooflineModel(3350.0, {"bf16": 989.0}), own):  # also: textbook max
        fast = AttentionRoofline(m, "bf16")
        want = np.array([m.predict(f, b, "bf16").time_s for f, b in zip(flops, moved)])
        np.testing.assert_allclose(fast.times_s(flops, moved), want, rtol=1e-12)
        np.testing.assert_allclose([fast.time_s(f, b) for f, b in zip(flops, moved)], want,
                                   rtol=1e-12)


@pytest.mark.parametrize("fit", [{"overlap_p": 2.5, "overhead_us": 2.0, "flops_half": 5e9},
                                 {"overlap_p": None, "overhead_us": 1.0, "flops_half": 5e9},
                                 {"overlap_p": None, "overhead_us": 0.0, "flops_half": 0.0}])
def test_decode_runs_equal_single_steps_on_any_fitted_model(fit):
    """The vectorized run (affine fast path when overlap_p is None) is step_s step by step."""
    from ridgeline.roofline.profile import new_profile
    from ridgeline.sizing.hardware import hardware_from_profile

    prof = new_profile({"name": "Fit GPU", "kind": "cuda", "memory_bytes": 80_000_000_000,
                        "dtypes": {"bf16": True}}, command_line=["test"], versions={})
    prof["ceilings"] = {"memory_bandwidth_GBps": {"read": 3000.0}, "matmul_TFLOPS": {"bf16": 700}}
    prof["model"] = {"bandwidth_GBps": 3000.0, "latency_floor_us": 4.0, "source": "measured",
                     "overhead_us": fit["overhead_us"], "overlap_p": fit["overlap_p"],
                     "matmul": {"bf16": {"peak_TFLOPS": 700.0, "flops_half": fit["flops_half"]}}}
    spec = load_model("llama-3.1-8b")
    sm = StepModel(spec, Precision(), hardware_from_profile(prof), 1)
    for batch, s0 in [(1, 10), (7, 7 * 3000), (200, 200 * 20000)]:
        run = sm.decode_steps_s(batch, s0, batch, 40)
        one = [sm.step_s(batch, s0 + j * batch) for j in range(40)]
        np.testing.assert_allclose(run, one, rtol=1e-12)


def test_body_interpolated_above_exact_tokens_within_half_a_percent(h100):
    spec = load_model("llama-3.1-70b")
    sm = StepModel(spec, Precision(), h100, 4)
    for m in range(EXACT_TOKENS + 1, 8448, 97):
        assert sm.body_s(m) == pytest.approx(sm._body_exact(m), rel=5e-3)


# -- the scheduler, by hand ------------------------------------------------------------------------

def test_hand_computed_case_matches_event_by_event():
    """Budget 8 tokens, 2 sequences, 4-token blocks, every step 10 ms.

    A (10 in, 3 out) at 0, B (4 in, 2 out) at 5 ms, C (3 in, 1 out) at 12 ms:
      step 1 [0, 10)   A prefills 8 of 10 (budget spent)
      step 2 [10, 20)  A its last 2 (first token at 20); B, waiting since 5, its 4 (token at 20)
      step 3 [20, 30)  A and B decode; B ends (2 tokens); C waits: 2 sequences run already
      step 4 [30, 40)  A decodes and ends; C prefills 3 and ends (1 token) at 40
    """
    sm = ConstantStepModel(0.010)
    sched = SchedulerConfig(kv_blocks=100, block_tokens=4, max_num_batched_tokens=8,
                            max_num_seqs=2)
    run = run_engine(sm, sched, fixed([10, 4, 3], [3, 2, 1], [0, 0.005, 0.007]), OpenLoop(None),
                     record=True)
    log = [(round(s.start_s, 9), round(s.end_s, 9), s.decodes, s.chunks, s.finished,
            s.used_blocks) for s in run.steps_log]
    assert log == [(0.0, 0.01, (), ((0, 8, 0),), (), 2),
                   (0.01, 0.02, (), ((0, 2, 8), (1, 4, 0)), (), 4),
                   (0.02, 0.03, (0, 1), (), (1,), 5),
                   (0.03, 0.04, (0,), ((2, 3, 0),), (2, 0), 4)]
    np.testing.assert_allclose(run.first_token_s - run.arrival_s, [0.020, 0.015, 0.028])
    np.testing.assert_allclose(run.finish_s - run.arrival_s, [0.040, 0.025, 0.028])
    np.testing.assert_allclose(run.first_scheduled_s - run.arrival_s, [0.0, 0.005, 0.018])
    # inter-token gaps: A 20->30->40, B 20->30: three gaps of 10 ms
    assert float(np.dot(run.itl_s, run.itl_weight)) == pytest.approx(0.030)
    assert run.itl_weight.sum() == 3
    point = summarize(run, OpenLoop(None))
    assert point.ttft_s.mean == pytest.approx((0.020 + 0.015 + 0.028) / 3)
    assert point.request_throughput == pytest.approx(3 / 0.040)


def test_preemption_takes_the_most_recent_request_and_everything_completes():
    """6 blocks of 4 tokens; A, B, C (4 in, 8 out) hold 2 blocks each from their 5th token;
    in step 6 their 9th token needs a third block: A, first in line, finds none free, so C,
    admitted last, is preempted (not B) with 5 tokens out; A and B then fit. C recomputes
    its 4 + 5 tokens in one chunk once A and B are done."""
    sm = ConstantStepModel(0.010)
    sched = SchedulerConfig(kv_blocks=6, block_tokens=4, max_num_batched_tokens=16,
                            max_num_seqs=4)
    run = run_engine(sm, sched, fixed([4, 4, 4], [8, 8, 8], [0, 0, 0]), OpenLoop(None),
                     record=True)
    pre = [(i, s.preempted) for i, s in enumerate(run.steps_log) if s.preempted]
    assert pre == [(5, (2,))]
    assert run.steps_log[5].decodes == (0, 1)
    assert run.preemptions == 1 and list(run.preemptions_per_request) == [0, 0, 1]
    assert (run.finish_s > 0).all()
    assert max(s.used_blocks for s in run.steps_log) <= 6
    resumed = [s for s in run.steps_log if any(r == 2 and prior == 0 and k == 9
                                               for r, k, prior in s.chunks)]
    assert len(resumed) == 1 and resumed[0].start_s >= run.finish_s[:2].max()
    # every non-first token has exactly one gap, the one across the preemption included
    assert run.itl_weight.sum() == 3 * 7
    assert run.itl_s.max() > 0.010


@pytest.mark.parametrize("reserve", [True, False])
def test_admission_reserves_the_whole_prompt_or_only_its_first_chunk(reserve):
    """8 blocks of 4, budget 8. A (16 in, 3 out) prefills in steps 1-2 and holds 5 blocks in
    step 3, leaving 3 free. B (20 in) needs 5 for its prompt, 2 for a first chunk of 7:
    reserving the whole prompt it waits for A to end; checking only the chunk, it starts,
    then its second chunk finds no blocks and B, the last admitted, is preempted, and is
    not re-admitted in that same step."""
    sm = ConstantStepModel(0.010)
    sched = SchedulerConfig(kv_blocks=8, block_tokens=4, max_num_batched_tokens=8,
                            max_num_seqs=4, reserve_full_prompt=reserve)
    run = run_engine(sm, sched, fixed([16, 20], [3, 1], [0, 0]), OpenLoop(None), record=True)
    log = [(s.decodes, s.chunks, s.preempted) for s in run.steps_log[:4]]
    if reserve:
        assert log[2:] == [((0,), (), ()), ((0,), (), ())] and run.preemptions == 0
        assert run.first_scheduled_s[1] == pytest.approx(0.040)  # after A's last token
    else:
        assert log[2:] == [((0,), ((1, 7, 0),), ()), ((0,), (), (1,))]
        assert run.preemptions == 1
    assert (run.finish_s > 0).all()


def test_preemption_under_load_completes_every_request_and_keeps_block_accounting(llama8b):
    spec, sm, _ = llama8b
    reqs = make_requests(LognormalLengths(300, 1200, 150, 600), n=400, seed=3)
    need = int(max(-(-(i + o) // 16) for i, o in zip(reqs.input_tokens, reqs.output_tokens)))
    sched = SchedulerConfig(kv_blocks=3 * need, max_num_seqs=64)  # a few long requests fit
    stepwise = run_engine(sm, sched, reqs, ClosedLoop(32), record=True)  # checks blocks per step
    bulk = run_engine(sm, sched, reqs, ClosedLoop(32))
    assert stepwise.preemptions > 10
    assert (bulk.first_token_s >= bulk.arrival_s).all()
    assert (bulk.finish_s >= bulk.first_token_s).all()
    assert bulk.itl_weight.sum() == (reqs.output_tokens - 1).sum()
    assert bulk.preemptions == stepwise.preemptions
    np.testing.assert_allclose(bulk.finish_s, stepwise.finish_s, rtol=1e-9)
    assert bulk.peak_kv_blocks <= sched.kv_blocks


def test_bulk_decode_runs_equal_step_by_step(llama8b):
    _, sm, sched = llama8b
    reqs = make_requests(LognormalLengths(500, 3000, 100, 400), n=300, seed=7)
    for load in (OpenLoop(4.0), OpenLoop(30.0, arrival_cv=2.0), ClosedLoop(20, think_s=0.5)):
        a = run_engine(sm, sched, reqs, load)
        b = run_engine(sm, sched, reqs, load, bulk=False)
        assert a.steps == b.steps
        for field in ("first_scheduled_s", "first_token_s", "finish_s"):
            np.testing.assert_allclose(getattr(a, field), getattr(b, field), rtol=1e-9)
        sa, sb = summarize(a, load), summarize(b, load)
        assert sa.itl_s.to_dict() == pytest.approx(sb.itl_s.to_dict(), rel=1e-9)
        assert sa.mean_kv_utilization == pytest.approx(sb.mean_kv_utilization, rel=0.01)


def test_max_num_seqs_caps_the_running_batch():
    sm = ConstantStepModel(0.01)
    sched = SchedulerConfig(kv_blocks=10_000, max_num_seqs=3, max_num_batched_tokens=64)
    run = run_engine(sm, sched, fixed([10] * 12, [5] * 12), ClosedLoop(12), record=True)
    assert max(len(s.decodes) + len(s.chunks) for s in run.steps_log) == 3


def test_requests_that_cannot_fit_alone_are_refused():
    sched = SchedulerConfig(kv_blocks=4, block_tokens=16)
    with pytest.raises(RidgelineError, match="needs 5 KV blocks"):
        run_engine(ConstantStepModel(0.01), sched, fixed([60], [10]), ClosedLoop(1))
    with pytest.raises(RidgelineError, match="max_num_seqs"):
        SchedulerConfig(kv_blocks=10, max_num_batched_tokens=128, max_num_seqs=256)


# -- the curve's properties -----------------------------------------------------------------------

def test_littles_law_holds_on_every_point(llama8b):
    _, sm, sched = llama8b
    reqs = make_requests(LognormalLengths(800, 3000, 150, 512), n=1500, seed=1)
    curve = sweep(sm, sched, reqs, rps=[2, 10, 25, 40, 60])
    closed = sweep(sm, sched, reqs, concurrency=[1, 16, 128, 400])
    for p in curve.points + closed.points:
        assert p.mean_concurrency == pytest.approx(p.request_throughput * p.e2e_s.mean, rel=0.02)


def test_low_load_ttft_is_the_prefill_and_itl_the_batch_1_step(llama8b, h100):
    spec, sm, sched = llama8b
    reqs = make_requests(LognormalLengths(900, 2500, 200, 512), n=401, seed=2)
    p = simulate(sm, sched, reqs, OpenLoop(0.005))  # busy 0.3% of the time
    median_in = int(np.median(reqs.input_tokens))
    # vLLM v1 samples the first token from the step that ends the prompt: TTFT = the prefill
    assert p.ttft_s.p50 == pytest.approx(prefill_time(spec, FP8, h100, 1, median_in).time_s,
                                         rel=0.02)
    ctx = median_in + int(np.median(reqs.output_tokens)) // 2
    assert p.itl_s.p50 == pytest.approx(decode_step_time(spec, FP8, h100, 1, ctx).time_s,
                                        rel=0.02)
    assert p.queue_wait_s.p50 == 0.0 and p.mean_batch < 1.1


def test_throughput_saturates_at_the_max_num_seqs_batch(llama8b):
    """8 clients of fixed 64-in / 32-out requests, max_num_seqs 8: all are admitted in one
    prefill step, decode 31 steps together and finish together, forever. More clients only
    queue: the rate stays 8 per cycle."""
    _, sm, _ = llama8b
    sched = SchedulerConfig(kv_blocks=10_000, max_num_seqs=8)
    cycle = sm.step_s(0, 0, [(64, 0)] * 8, 8) + sum(sm.step_s(8, 8 * (64 + j))
                                                   for j in range(1, 32))
    reqs = fixed([64] * 800, [32] * 800)
    for clients in (8, 16, 64):
        p = simulate(sm, sched, reqs, ClosedLoop(clients))
        assert p.request_throughput == pytest.approx(8 / cycle, rel=0.005)
        assert p.mean_batch == pytest.approx(8, rel=0.001)


def test_latency_rises_and_throughput_saturates_with_load(llama8b):
    _, sm, sched = llama8b
    reqs = make_requests(LognormalLengths(1000, 4000, 200, 512), n=3000, seed=4)
    top = capacity_rps(sm, sched, reqs)
    rates = [f * top for f in (0.1, 0.3, 0.5, 0.7, 0.85, 1.0, 1.3, 1.6)]
    pts = sweep(sm, sched, reqs, rps=rates).points
    for a, b in zip(pts, pts[1:]):
        for stat in ("ttft_s", "e2e_s", "queue_wait_s"):
            for q in ("p50", "p99"):
                assert getattr(b, stat).get(q) >= 0.98 * getattr(a, stat).get(q), (stat, q, b.value)
        assert b.itl_s.p50 >= 0.98 * a.itl_s.p50
        assert b.request_throughput >= 0.97 * a.request_throughput
    # past capacity the replica serves what it can, whatever is offered
    for p in pts[-2:]:
        assert p.request_throughput == pytest.approx(top, rel=0.08)
        assert p.request_throughput < 0.9 * p.value


def test_bursty_arrivals_raise_the_tail(llama8b):
    _, sm, sched = llama8b
    reqs = make_requests(LognormalLengths(1000, 4000, 200, 512), n=2000, seed=5)
    smooth = simulate(sm, sched, reqs, OpenLoop(20.0, arrival_cv=1.0))
    bursty = simulate(sm, sched, reqs, OpenLoop(20.0, arrival_cv=3.0))
    assert bursty.ttft_s.p99 > 1.5 * smooth.ttft_s.p99


def test_kv_capacity_is_what_the_memory_plan_leaves(h100):
    spec = load_model("llama-3.1-70b")
    engine = EngineConfig()
    tokens = kv_capacity_tokens(spec, FP8, engine, h100.memory_bytes, tp=4)
    ctx = 8192 + 512
    rm = replica_memory(spec, FP8, engine, h100.memory_bytes, 4, 1, 1, ctx)
    assert tokens // kv_tokens_per_request(spec, ctx, 16) == rm.max_concurrency
    sched = scheduler_for(spec, FP8, h100.memory_bytes, engine, tp=4)
    assert sched.kv_blocks == tokens // 16 and sched.max_num_seqs == engine.max_num_seqs


# -- load -----------------------------------------------------------------------------------------

def test_lognormal_lengths_hit_their_percentiles():
    src = LognormalLengths(500, 2000, 100, 100)
    inp, out = src.sample(200_000, np.random.default_rng(0))
    assert np.percentile(inp, 50) == pytest.approx(500, rel=0.02)
    assert np.percentile(inp, 95) == pytest.approx(2000, rel=0.03)
    assert (out == 100).all()  # p50 = p95: a fixed length
    mu, sigma = LognormalLengths.fit(500, 2000, 4000)  # p99 pulls sigma by least squares
    assert mu == pytest.approx(math.log(500))
    assert math.log(2000 / 500) / 2.3263 < sigma < math.log(4000 / 500) / 1.6449
    a, b = make_requests(src, 50, seed=9), make_requests(src, 50, seed=9)
    assert (a.input_tokens == b.input_tokens).all()
    with pytest.raises(RidgelineError):
        LognormalLengths(600, 500, 10, 10)


def test_gamma_arrivals_have_the_rate_and_cv_asked():
    reqs = make_requests(LognormalLengths(10, 10, 10, 10), 100_000, seed=0)
    for cv in (0.0, 1.0, 2.5):
        t = reqs.arrivals_s(OpenLoop(50.0, arrival_cv=cv))
        gaps = np.diff(t)
        assert t[0] == 0.0
        assert 1 / gaps.mean() == pytest.approx(50.0, rel=0.03)
        assert gaps.std() / gaps.mean() == pytest.approx(cv, abs=0.03 * max(cv, 1))


def test_round_robin_deals_each_replica_every_nth_arrival():
    fleet = OpenLoop(40.0, arrival_cv=1.0)
    one = round_robin_replica_load(fleet, 4)
    assert one.rps == 10.0 and one.arrival_cv == pytest.approx(0.5)
    # the same thing, by dealing a simulated fleet stream
    t = make_requests(LognormalLengths(10, 10, 10, 10), 200_000, seed=1).arrivals_s(fleet)[::4]
    gaps = np.diff(t)
    assert 1 / gaps.mean() == pytest.approx(one.rps, rel=0.02)
    assert gaps.std() / gaps.mean() == pytest.approx(one.arrival_cv, rel=0.03)


def test_read_azure_csv_trace_sorted_by_time():
    tr = read_trace(DATA / "azure_llm_trace_sample.csv")
    assert list(tr.input_tokens) == [374, 879, 396, 91, 2048]
    assert list(tr.output_tokens) == [44, 55, 109, 16, 1]
    np.testing.assert_allclose(tr.arrival_s, [0.0, 1.070262, 4.314579, 5.047539, 6.41941],
                               atol=1e-6)


def test_read_jsonl_traces_with_and_without_times():
    lengths = read_trace(DATA / "sharegpt_lengths_sample.jsonl")
    assert list(lengths.input_tokens) == [12, 1031, 305] and lengths.arrival_s is None
    timed = read_trace(DATA / "timed_requests_sample.jsonl")
    assert list(timed.input_tokens) == [100, 300, 200]
    np.testing.assert_allclose(timed.arrival_s, [0.0, 0.5, 1.0])
    reqs = make_requests(timed, 7, seed=0)  # cycled: 3 rows, then again
    assert list(reqs.input_tokens) == [100, 300, 200, 100, 300, 200, 100]
    np.testing.assert_allclose(reqs.arrivals_s(OpenLoop(None)), [0, .5, 1, 1.5, 2, 2.5, 3])
    t = reqs.arrivals_s(OpenLoop(6.0))  # the same pattern, at 6 requests/s
    assert (len(t) - 1) / t[-1] == pytest.approx(6.0)


def test_bad_traces_say_what_is_wrong(tmp_path):
    bad = tmp_path / "t.csv"
    bad.write_text("when,prompt_len\n1,2\n")
    with pytest.raises(RidgelineError, match="output-length column"):
        read_trace(bad)
    bad.write_text("input_tokens,output_tokens\n10,0\n")
    with pytest.raises(RidgelineError, match=">= 1"):
        read_trace(bad)
    with pytest.raises(RidgelineError, match="not found"):
        read_trace(tmp_path / "missing.jsonl")


# -- sweep: knee, SLO point, JSON -----------------------------------------------------------------

def point(value, ttft50, ttft99, itl99=0.02):
    s = Stat(ttft50, ttft50, ttft99, ttft99)
    return SimPoint("rps", value, 100, 10.0, s, Stat(itl99, itl99, itl99, itl99), s, s, s,
                    1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0, 10)


def test_knee_is_where_p99_leaves_p50_relative_to_the_unloaded_spread():
    # spreads P99 - P50: 0.2, 0.3, 0.58, 2.5 (the last is saturated: P99/P50 fell to 6)
    pts = [point(1, 0.1, 0.3), point(2, 0.1, 0.4), point(3, 0.12, 0.7), point(4, 0.5, 3.0)]
    assert find_knee(pts, baseline_spread_s=0.1) == 1      # 0.3 > 0.2
    assert find_knee(pts, baseline_spread_s=0.2) == 2      # 0.58 > 0.4
    assert find_knee(pts, baseline_spread_s=0.29) == 3     # 2.5 > 0.58, 0.58 is not
    assert find_knee(pts, baseline_spread_s=2.0) is None


def test_knee_of_a_real_curve_sits_below_saturation(llama8b):
    _, sm, sched = llama8b
    reqs = make_requests(LognormalLengths(1000, 4000, 200, 512), n=3000, seed=8)
    top = capacity_rps(sm, sched, reqs)
    curve = sweep(sm, sched, reqs, rps=[f * top for f in (0.1, 0.3, 0.5, 0.7, 0.9, 1.1)])
    base = baseline_ttft_spread_s(sm, sched, reqs)
    ttft0 = unloaded_ttft_s(sm, sched, reqs.input_tokens[:BASELINE_SAMPLE])
    assert base == pytest.approx(np.percentile(ttft0, 99) - np.percentile(ttft0, 50))
    assert curve.knee_index is not None and 1 <= curve.knee_index <= 4
    knee = curve.points[curve.knee_index]
    assert knee.ttft_s.p99 - knee.ttft_s.p50 > 2 * base
    before = curve.points[curve.knee_index - 1]
    assert before.ttft_s.p99 - before.ttft_s.p50 <= 2 * base


def test_operating_point_is_the_last_load_before_the_first_slo_miss():
    pts = [point(1, 0.1, 0.5), point(2, 0.1, 1.0), point(3, 0.2, 3.0), point(4, 0.1, 1.0)]
    op = max_load_meeting(pts, ttft_slo_s=2.0)
    assert (op.index, op.load, op.limit) == (1, 2, "TTFT SLO")
    assert op.load_at_slo == pytest.approx(2.5)          # 1.0 -> 3.0 s crosses 2.0 half way
    assert max_load_meeting(pts, itl_slo_s=0.01).index is None
    assert max_load_meeting(pts, ttft_slo_s=10).limit == "sweep limit"


def test_sweep_json_has_the_issue_shape(llama8b):
    _, sm, sched = llama8b
    reqs = make_requests(LognormalLengths(800, 3000, 150, 512), n=500, seed=6)
    curve = sweep(sm, sched, reqs, rps=[30, 5], ttft_slo_s=1.0, itl_slo_s=0.05)
    d = curve.to_dict()
    assert [p["rps"] for p in d["points"]] == [5.0, 30.0]     # sorted by load
    for p in d["points"]:
        for key in ("ttft_s", "itl_s", "e2e_s", "queue_wait_s"):
            assert set(p[key]) == {"mean", "p50", "p95", "p99"}
        for key in ("output_tokens_per_s", "request_throughput", "mean_concurrency",
                    "mean_batch", "mean_kv_utilization", "preemptions", "total_tokens_per_s"):
            assert key in p
    assert d["operating_point"]["limit"] in ("TTFT SLO", "ITL SLO", "sweep limit")
    closed = sweep(sm, sched, reqs, concurrency=[4]).to_dict()
    assert closed["points"][0]["concurrency"] == 4


def test_unloaded_ttft_is_the_chunked_prefill(llama8b, h100):
    spec, sm, sched = llama8b
    t = unloaded_ttft_s(sm, sched, np.array([100, 20000]))
    np.testing.assert_allclose(t, [prefill_time(spec, FP8, h100, 1, n).time_s
                                   for n in (100, 20000)], rtol=1e-12)


# -- docs/simulate.md does not drift ---------------------------------------------------------------

DOC = (Path(__file__).parents[1] / "docs" / "simulate.md").read_text()


def test_documented_output_fields_exist(llama8b):
    _, sm, sched = llama8b
    d = simulate(sm, sched, make_requests(LognormalLengths(100, 200, 10, 20), 20, seed=0),
                 OpenLoop(1.0)).to_dict()
    table = DOC.split("## Output of a point", 1)[1].split("\n\n", 2)[1]
    names = {n for row in table.splitlines()[2:] for n in re.findall(r"`(\w+)`", row.split("|")[1])}
    assert {"ttft_s", "itl_s", "mean_concurrency", "request_throughput"} <= names
    assert names - {"concurrency"} <= set(d), names - set(d)


def test_documented_example_runs():
    code = DOC.split("```python\n", 1)[1].split("```", 1)[0]
    code = code.replace("n=10_000", "n=300")  # the same example, smaller
    scope: dict = {}
    exec(compile(code, "docs/simulate.md", "exec"), scope)
    assert set(scope["curve"].to_dict()) == {"points", "knee", "operating_point", "slo"}
