"""Tensor-parallel validation: the sharded layer against the unsharded one, the measured
all-reduce share, the planner's TP prediction, and ranks that die or hang.

The sharding tests run N ranks as N threads of one process, with an all-reduce that
sums the threads' tensors (no process group): fast, and exact in float32. The rank
timing runs in-process on a one-rank stub group whose all-reduce costs a known time.
Two tests spawn 2 real gloo ranks (about 10 s each on a loaded 2-core machine).
"""

import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from ridgeline.errors import RidgelineError
from ridgeline.validation import run
from ridgeline.validation.footprint import LayerDims
from ridgeline.validation.tp import (TPModel, check_tolerance, kv_heads_of, local_dims, run_rank,
                                     shard_error, shard_linear, tp_problem)
from ridgeline.validation.transformer import DecoderModel


def _spec(heads=4, kv_heads=2, hidden=48, head_dim=12, inter=40, vocab=37, layers=2, tied=False):
    return SimpleNamespace(name="odd", hidden_size=hidden, num_layers=layers,
                           num_attention_heads=heads, num_kv_heads=kv_heads, head_dim=head_dim,
                           intermediate_size=inter, vocab_size=vocab, tie_word_embeddings=tied)


def _dims(heads=4, kv_heads=2, inter=40):
    return LayerDims(hidden=48, heads=heads, kv_heads=kv_heads, head_dim=12, intermediate=inter,
                     vocab=37, num_layers=2)


class ThreadSum:
    """An all-reduce over N threads (one per rank); counts the calls of each rank."""

    def __init__(self, n: int):
        self.n, self.slots, self.barrier = n, [None] * n, threading.Barrier(n, timeout=60)
        self.calls = [0] * n

    def of(self, rank: int):
        def reduce(t: torch.Tensor) -> torch.Tensor:
            self.calls[rank] += 1
            self.slots[rank] = t.clone()
            self.barrier.wait()
            total = self.slots[0].clone()
            for other in self.slots[1:]:
                total += other
            self.barrier.wait()  # nobody overwrites a slot before every rank has summed
            t.copy_(total)
            return t
        return reduce


def on_ranks(tp: int, work):
    """work(rank, reduce) on `tp` threads; their results in rank order (errors re-raised)."""
    comm, out, errors = ThreadSum(tp), [None] * tp, []

    def body(r):
        try:
            with torch.inference_mode():
                out[r] = work(r, comm.of(r))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(exc)
            comm.barrier.abort()

    threads = [threading.Thread(target=body, args=(r,)) for r in range(tp)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return out, comm


# ------------------------------------------------------------------ shapes

def test_tp_problem_says_why_a_degree_does_not_shard():
    assert tp_problem(_dims(), 1) is None and tp_problem(_dims(), 2) is None
    assert "4 attention heads do not split over 3 ranks" in tp_problem(_dims(), 3)
    assert tp_problem(_dims(kv_heads=2), 4) is None              # KV heads replicated
    assert "KV heads" in tp_problem(_dims(heads=12, kv_heads=4), 6)  # 4 KV over 6: neither
    assert "intermediate" in tp_problem(_dims(inter=42), 4)
    assert "multiples of 16" in tp_problem(_dims(), 2, "fp8")


def test_kv_heads_split_or_replicate_as_vllm():
    d = _dims(heads=8, kv_heads=4)
    assert [kv_heads_of(d, 2, r) for r in range(2)] == [(0, 2), (2, 2)]
    assert [kv_heads_of(d, 4, r) for r in range(4)] == [(0, 1), (1, 1), (2, 1), (3, 1)]
    d2 = _dims(heads=8, kv_heads=2)  # 2 KV heads over 8 ranks: each on 4 ranks
    assert [kv_heads_of(d2, 8, r)[0] for r in range(8)] == [0, 0, 0, 0, 1, 1, 1, 1]
    # rank r's query heads [r*H/N, (r+1)*H/N) all use the KV heads it holds
    for d, tp in ((d, 2), (d, 4), (d2, 8), (d2, 2)):
        group, hq = d.heads // d.kv_heads, d.heads // tp
        for r in range(tp):
            first, count = kv_heads_of(d, tp, r)
            assert {h // group for h in range(r * hq, (r + 1) * hq)} == set(
                range(first, first + count))
    loc = local_dims(d2, 8)
    assert (loc.heads, loc.kv_heads, loc.intermediate, loc.hidden) == (1, 1, 5, 48)


def test_shard_linear_takes_rows_or_columns_and_never_a_view():
    full = SimpleNamespace(weight=torch.arange(24.).view(4, 6), scale=None)
    rows = shard_linear(full, rows=[(0, 1), (2, 4)])
    assert rows.weight.tolist() == [full.weight[0].tolist(), full.weight[2].tolist(),
                                    full.weight[3].tolist()]
    assert (rows.out_features, rows.in_features) == (3, 6)
    cols = shard_linear(full, cols=(0, 6))  # every column: still its own storage
    assert torch.equal(cols.weight, full.weight)
    assert cols.weight.data_ptr() != full.weight.data_ptr() and cols.weight.is_contiguous()


# ------------------------------------------------------------------ the sharded model

def _prefill_then_decode(model, tokens):
    B, T1 = tokens.shape
    cache = model.new_cache(B, T1)
    model.forward(tokens[:, :-1], cache)
    cache.length = T1 - 1                      # forward does not advance it
    return model.forward(tokens[:, -1:], cache)


@pytest.mark.parametrize("tp,kv_heads,tied", [(2, 2, False), (4, 2, True), (4, 1, False)])
def test_sharded_model_equals_unsharded_and_reduces_twice_per_layer(tp, kv_heads, tied):
    spec = _spec(kv_heads=kv_heads, tied=tied)
    tokens = torch.randint(0, 37, (3, 7), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ref = _prefill_then_decode(DecoderModel(spec, "fp32", seed=3), tokens)

    def work(rank, reduce):
        model = TPModel(spec, "fp32", tp=tp, rank=rank, reduce=reduce, seed=3)
        assert model.d.kv_heads == max(kv_heads // tp, 1)
        return _prefill_then_decode(model, tokens)

    logits, comm = on_ranks(tp, work)
    # vocab-parallel head: the ranks' logits side by side are the model's
    torch.testing.assert_close(torch.cat(logits, dim=-1), ref, atol=2e-5, rtol=2e-5)
    assert comm.calls == [2 * 2 * spec.num_layers] * tp  # 2 per layer, prefill + decode


def test_no_op_all_reduces_change_only_the_communication():
    spec = _spec()
    tokens = torch.randint(0, 37, (2, 1))

    def work(rank, reduce):
        model = TPModel(spec, "fp32", tp=2, rank=rank, reduce=reduce, seed=3)
        cache = model.new_cache(2, 4, filled=3)
        with model.allreduce(False):
            local = model.forward(tokens, cache)
        return local, model.forward(tokens, cache)

    out, comm = on_ranks(2, work)
    assert comm.calls == [2 * spec.num_layers] * 2      # only the second forward reduced
    assert out[0][0].shape == out[0][1].shape and not torch.allclose(out[0][0], out[0][1])


def test_shard_check_passes_when_right_and_fails_when_cut_wrong():
    spec = _spec()

    def errors(rank, reduce, sabotage=False):
        model = TPModel(spec, "fp32", tp=2, rank=rank, reduce=reduce, seed=3, keep_reference=True)
        if sabotage and rank == 0:  # rank 0 takes rank 1's O columns: heads and O mismatch
            q = spec.num_attention_heads // 2 * spec.head_dim
            model.layers[0].o = shard_linear(model.reference.o, cols=(q, 2 * q))
        return shard_error(model)

    good, _ = on_ranks(2, errors)
    assert max(good) < 1e-5
    bad, _ = on_ranks(2, lambda r, red: errors(r, red, sabotage=True))
    assert min(bad) > 0.1


def test_bf16_shards_are_within_the_check_tolerance():
    from ridgeline.sizing.models import load_model

    errs, _ = on_ranks(2, lambda r, red: shard_error(
        TPModel(load_model("tiny"), "bf16", tp=2, rank=r, reduce=red, keep_reference=True)))
    assert 0 < max(errs) < check_tolerance("bf16") / 2


# ------------------------------------------------------------------ the rank-side measurement

class SlowGroup:
    """One rank (world 1) whose all-reduce costs `cost_s` of host time: the known answer."""

    rank, world, local_rank, on_gpu, backend = 0, 1, 0, False, "stub"
    device = torch.device("cpu")

    def __init__(self, cost_s: float):
        self.cost_s, self.calls = cost_s, 0

    def all_reduce_(self, t):
        self.calls += 1
        time.sleep(self.cost_s)
        return t

    def reduce(self, values, op="max"):
        return list(values)

    def barrier(self):
        pass

    def share(self, obj):
        return [obj]


def _job(**kw):
    from dataclasses import asdict

    from ridgeline.sizing.models import load_model

    job = {"spec": asdict(load_model("tiny")), "weights": "bf16", "device_kind": "cpu",
           "batches": [2], "contexts": [6], "prefills": [], "layers_cap": None, "rep_ms": 20.0}
    job.update(kw)
    return job


@pytest.fixture
def one_thread():
    """One intra-op thread, as a spawned CPU rank has: two threads fighting a loaded
    2-core machine make the step itself vary by tens of ms."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_measured_all_reduce_recovers_a_known_cost(one_thread):
    cost = 0.01  # well above the step's own noise here
    group = SlowGroup(cost)
    stages = []
    report = run_rank(_job(), group, stages.append)
    (m,) = report["measured"]
    layers = m["layers_total"]
    assert m["tp"] == 1 and m["mode"] == "eager" and m["finite"]
    assert m["allreduce_s"] == pytest.approx(max(m["measured_s"] - m["no_allreduce_s"], 0))
    assert m["allreduce_share"] == pytest.approx(m["allreduce_s"] / m["measured_s"])
    # 2 all-reduces per layer: the step's difference and the all-reduces alone both see them
    expected = 2 * layers * cost
    assert m["allreduce_alone_s"] >= 0.95 * expected
    assert 0.5 * expected < m["allreduce_s"] < 3 * expected
    assert report["check_error"] < check_tolerance("bf16")
    assert any("checked against the unsharded layer" in n for n in report["notes"])
    assert any("sample" in s for s in stages)  # the watchdog sees every sample


def test_fp8_on_the_cpu_is_waived_on_the_ranks(one_thread):
    report = run_rank(_job(weights="fp8"), SlowGroup(0.0), lambda s: None)
    assert report["measured"] == [] and "fp8" in report["waived"]


# ------------------------------------------------------------------ predictions

def _profile(allreduce=None):
    from tests.profile_fixtures import synthetic_cpu_profile

    prof = synthetic_cpu_profile()
    if allreduce:
        prof["interconnect"] = {"allreduce": allreduce}
    return prof


FIT = {"alpha_us": 40.0, "busbw_GBps": 2.0, "algbw_GBps": 2.0, "link": "loopback",
       "source": "measured", "dtype": "fp32", "backend": "gloo", "status": "verified",
       "reason": None}
MEASURED = {"phase": "decode", "mode": "eager", "batch": 2, "context": 6, "measured_s": 0.01,
            "allreduce_s": 0.004, "allreduce_share": 0.4, "no_allreduce_s": 0.006,
            "allreduce_alone_s": 0.003}


def _setup(tmp_path, allreduce):
    from ridgeline.roofline.profile import save_profile

    return run.prepare("tiny", "bf16", save_profile(_profile(allreduce), tmp_path / "p.json"))


@pytest.mark.parametrize("fits,source", [({"2": FIT}, "measured"), ({"4": FIT}, "estimated")])
def test_tp_prediction_carries_the_all_reduce_share_and_its_source(tmp_path, fits, source):
    from ridgeline.sizing.latency import decode_step_time
    from ridgeline.validation import predict as pr

    setup = _setup(tmp_path, fits)
    point = pr.score_point(MEASURED, setup.spec, setup.precision, setup.hw, None, tp=2)
    want = decode_step_time(setup.spec, setup.precision, setup.hw, 2, 6, tp=2)
    assert point["predicted_profile_s"] == pytest.approx(want.time_s)
    assert want.allreduce_s > 0
    assert point["predicted_allreduce_s"] == pytest.approx(want.allreduce_s)
    assert point["predicted_allreduce_share"] == pytest.approx(want.allreduce_s / want.time_s)
    assert point["allreduce_source"] == source and point["no_prediction"] is None
    assert (point["allreduce_s"], point["allreduce_share"]) == (0.004, 0.4)
    notes = run.tp_notes(setup, 2)
    assert ("fit for 2 ranks (" in notes[0]) if source == "measured" else \
        ("no all-reduce fit for 2 ranks" in notes[0] and "estimate" in notes[0])


def test_no_all_reduce_anywhere_still_scores_the_measurement(tmp_path):
    from ridgeline.validation import predict as pr

    setup = _setup(tmp_path, None)
    point = pr.score_point(MEASURED, setup.spec, setup.precision, setup.hw, None, tp=2)
    assert point["predicted_profile_s"] is None and point["error_profile"] is None
    assert point["allreduce_share"] == 0.4 and "all-reduce" in point["no_prediction"]
    assert "measured only" in run.tp_notes(setup, 2)[0]
    summary = pr.summarize_allreduce([point])
    assert summary["decode"]["median_share_measured"] == 0.4
    assert summary["decode"]["median_share_predicted"] is None


def test_tp_1_points_are_scored_as_before(tmp_path):
    from ridgeline.validation import predict as pr

    setup = _setup(tmp_path, None)
    point = pr.score_point(MEASURED, setup.spec, setup.precision, setup.hw, None)
    assert "allreduce_share" not in point and point["predicted_profile_s"] > 0


# ------------------------------------------------------------------ real ranks (gloo)

SWEEP = run.Sweep(batches=(1, 2), contexts=(5,), prefills=(), rep_ms=5.0)


def test_a_killed_rank_is_named_and_the_finished_points_kept(tmp_path):
    setup = _setup(tmp_path, {"2": FIT})
    start = time.monotonic()
    with pytest.raises(run.TPFailure) as err:
        run.validate_tp(setup, SWEEP, 2, "cpu", timeout_s=60,
                        fault={"rank": 1, "kind": "kill", "at": "after_point"})
    msg = str(err.value)
    assert len(msg.splitlines()) == 1 and time.monotonic() - start < 60
    assert msg.startswith("--tp 2: rank 1 died (signal SIGKILL)") and "killed all ranks" in msg
    partial = err.value.result
    assert partial["complete"] is False and [p["batch"] for p in partial["points"]] == [1]
    assert partial["points"][0]["allreduce_share"] >= 0
    assert any(n.startswith("stopped: --tp 2: rank 1 died") for n in partial["notes"])


def test_a_hung_rank_ends_the_run_within_the_timeout(tmp_path):
    setup = _setup(tmp_path, {"2": FIT})
    start = time.monotonic()
    with pytest.raises(RidgelineError) as err:
        run.validate_tp(setup, SWEEP, 2, "cpu", timeout_s=2,
                        fault={"rank": 0, "kind": "hang", "at": "measure"})
    msg = str(err.value)
    assert len(msg.splitlines()) == 1 and "no rank progressed for 2 s" in msg
    assert "rank 0: 'test hang: sleeping'" in msg and "killed all ranks" in msg
    assert time.monotonic() - start < 60
    assert _ranks_left() == []


def _ranks_left() -> list[int]:
    """PIDs of this test's children still running ridgeline.validation.tp."""
    import os

    left = []
    for p in Path("/proc").iterdir():
        try:
            if (p.name.isdigit() and f"PPid:\t{os.getpid()}\n" in (p / "status").read_text()
                    and b"ridgeline.validation.tp" in (p / "cmdline").read_bytes()):
                left.append(int(p.name))
        except OSError:
            continue
    return left
