"""benchmarks/bench_published.py and its data: the published rows parse, cite a source and
resolve to a model and a datasheet ridgeline knows; the scorer's arithmetic (torch-free)."""

import csv
import importlib.util
import sys
from pathlib import Path

import pytest

from ridgeline import api, datasheets
from ridgeline.errors import RidgelineError

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_published",
                                               ROOT / "benchmarks" / "bench_published.py")
bp = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("bench_published", bp)   # dataclasses resolve names through it
_spec.loader.exec_module(bp)

ROWS = bp.load_rows()


def test_the_published_file_parses_and_every_row_cites_its_source():
    assert len(ROWS) >= 30
    assert {"decode batch-1", "moe", "ttft", "static batch", "throughput"} <= \
        {r.category for r in ROWS}
    for r in ROWS:
        assert r.source_url.startswith("https://") and r.source_where, r.id
        assert r.value > 0 and r.tp >= 1 and r.input_len >= 1 and r.output_len >= 1, r.id


def test_every_row_resolves_to_a_known_model_gpu_and_precision():
    for r in ROWS:
        api.load_model(r.model)
        entry = datasheets.by_sku(r.gpu)
        assert entry is not None and entry["sku"] == r.gpu, r.id   # a datasheet SKU, exactly
        gpu = api.load_gpu(r.gpu)
        bp.precision_for(r).resolve(gpu.hardware.device_dtypes)


def test_the_gpt_fast_int4_rows_carry_their_group_size_of_32():
    int4 = [r for r in ROWS if r.weights == "int4"]
    assert {r.id for r in int4} >= {"gptfast-03", "gptfast-05", "gptfast-13"}
    for r in int4:   # the source's table says G=32
        assert r.int4_group == 32 and "G=32" in r.source_where, r.id
        assert "per 128" not in r.note, r.id
        p, _ = bp.precision_for(r).resolve(None)
        assert p.int4_group_size == 32 and p.weight_bytes == 0.5 + (2 + 2) / 32
    assert all(r.int4_group is None for r in ROWS if r.weights != "int4")


def test_the_gpt_fast_int4_rows_count_their_bf16_zero_point():
    """gpt-fast's quantize.py stores scales_and_zeros [K/G, N, 2] bf16: a zero per group."""
    int4 = [r for r in ROWS if r.weights == "int4"]
    for r in int4:
        assert r.engine == "gpt-fast" and r.int4_zero_point == "fp16", r.id
        assert "bf16 zero" in r.note and "counts both" in r.note, r.id
        assert "scale only" not in r.note, r.id
        p, _ = bp.precision_for(r).resolve(None)
        assert p.int4_zero_point == "fp16" and p.weight_bytes == 0.625
    assert all(r.int4_zero_point is None for r in ROWS if r.weights != "int4")
    header = bp.DATA.read_text().splitlines()[0].split(",")
    assert header.index("int4_zero_point") == header.index("int4_group") + 1


def _write(tmp_path, rows):
    path = tmp_path / "rows.csv"
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=bp.COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in bp.COLUMNS})
    return path


BASE = {"model": "llama-3.1-8b", "gpu": "h100-sxm5-80gb", "weights": "bf16", "tp": "1",
        "engine": "x", "batch": "1", "input_len": "128", "output_len": "64",
        "source_url": "https://example.org/table", "source_where": "table 1"}


def test_the_scorer_on_a_two_row_fixture(tmp_path):
    rows = bp.load_rows(_write(tmp_path, [
        {**BASE, "id": "rate", "category": "a", "metric": "tokens_per_s", "value": "100"},
        {**BASE, "id": "time", "category": "b", "metric": "ttft_ms", "value": "50"}]))
    predicted = {"rate": 125.0, "time": 40.0}
    scored = bp.score(rows, lambda r: predicted[r.id])
    rate, tm = scored
    # 25% above a rate is optimistic; 20% below a time is optimistic too (faster)
    assert rate.error == pytest.approx(0.25) and rate.optimistic is True
    assert tm.error == pytest.approx(0.20) and tm.optimistic is True
    s = bp.summarize(scored)
    assert s["all"].median_error == pytest.approx(0.225) and s["all"].worst_error == 0.25
    assert s["all"].worst_id == "rate" and s["all"].optimistic_share == 1.0
    assert (s["a"].rows, s["b"].median_error) == (1, pytest.approx(0.2))
    # a slower prediction is pessimistic; a refusal is counted, not scored
    slow = bp.score(rows, lambda r: {"rate": 80.0, "time": 60.0}[r.id])
    assert [x.optimistic for x in slow] == [False, False]
    assert [x.error for x in slow] == [pytest.approx(0.2), pytest.approx(0.2)]

    def refuse(r):
        if r.id == "time":
            raise RidgelineError("does not fit")
        return 100.0

    half = bp.summarize(bp.score(rows, refuse))["all"]
    assert (half.rows, half.failed, half.median_error, half.optimistic_share) == (2, 1, 0.0, 0.0)
    assert half.failures == ["time: does not fit"]
    assert "all" in bp.table({"x": bp.summarize(scored)})


@pytest.mark.parametrize("field, value, match", [
    ("source_url", "", "source_url is empty"),
    ("source_url", "tables.pdf", "not a URL"),
    ("metric", "qps", "metric 'qps'"),
    ("value", "0", "value must be positive"),
    ("batch", "", "needs its batch"),
])
def test_a_malformed_row_is_refused_naming_it(tmp_path, field, value, match):
    row = {**BASE, "id": "bad", "category": "a", "metric": "tokens_per_s", "value": "1",
           field: value}
    with pytest.raises(ValueError, match=f"row bad: .*{match}"):
        bp.load_rows(_write(tmp_path, [row]))


def test_the_loader_reads_the_int4_zero_point_column(tmp_path):
    rows = bp.load_rows(_write(tmp_path, [
        {**BASE, "id": n, "category": "a", "metric": "tokens_per_s", "value": "1",
         "weights": w, "int4_zero_point": z}
        for n, w, z in (("fp16", "int4", "fp16"), ("bf16", "int4", " BF16"),
                        ("awq", "awq", "int4"), ("sym", "int4", "none"),
                        ("default", "int4", ""))]))
    assert [r.int4_zero_point for r in rows] == ["fp16", "fp16", "int4", "none", None]
    opts = [bp.precision_for(r) for r in rows]
    assert [o.int4_zero_point for o in opts] == ["fp16", "fp16", "int4", "none", "none"]
    resolved = [o.resolve(None)[0] for o in opts]
    assert [p.weight_bytes for p in resolved] == [0.5 + (2 + z) / 128
                                                  for z in (2, 2, 0.5, 0, 0)]


def test_the_loader_reads_the_int4_group_column(tmp_path):
    rows = bp.load_rows(_write(tmp_path, [
        {**BASE, "id": "g32", "category": "a", "metric": "tokens_per_s", "value": "1",
         "weights": "int4", "int4_group": "32"},
        {**BASE, "id": "gptq", "category": "a", "metric": "tokens_per_s", "value": "1",
         "weights": "gptq", "int4_group": "64"},
        {**BASE, "id": "default", "category": "a", "metric": "tokens_per_s", "value": "1",
         "weights": "int4"}]))
    assert [r.int4_group for r in rows] == [32, 64, None]
    opts = [bp.precision_for(r) for r in rows]
    assert [o.int4_group_size for o in opts] == [32, 64, 128]


@pytest.mark.parametrize("fields, match", [
    ({"weights": "int4", "int4_group": "0"}, "int4_group must be >= 1"),
    ({"weights": "int4", "int4_group": "x"}, "invalid literal"),
    ({"weights": "bf16", "int4_group": "32"}, "int4_group applies to int4 weights only"),
    ({"weights": "int4", "int4_zero_point": "int8"},
     "--int4-zero-point must be one of none, int4, fp16"),
    ({"weights": "bf16", "int4_zero_point": "fp16"},
     "int4_zero_point applies to int4 weights only"),
    ({"weights": "fp8", "int4_zero_point": "none"},
     "int4_zero_point applies to int4 weights only"),
])
def test_a_bad_int4_group_is_refused_naming_the_row(tmp_path, fields, match):
    row = {**BASE, "id": "bad", "category": "a", "metric": "tokens_per_s", "value": "1",
           **fields}
    with pytest.raises(ValueError, match=f"row bad: .*{match}"):
        bp.load_rows(_write(tmp_path, [row]))


def test_the_row_group_size_reaches_the_prediction():
    """A G=32 row reads more scale bytes than the same row at the planner's 128: slower."""
    from dataclasses import replace

    row = next(r for r in ROWS if r.int4_group == 32 and r.tp == 1)
    assert bp.predict(row) < bp.predict(replace(row, int4_group=None))


def test_the_row_zero_point_reaches_the_prediction():
    """A row with gpt-fast's bf16 zero reads more bytes a step than without one: slower."""
    from dataclasses import replace

    row = next(r for r in ROWS if r.int4_zero_point == "fp16" and r.tp == 1)
    sym = replace(row, int4_zero_point=None)
    awq = replace(row, int4_zero_point="int4")
    assert bp.predict(row) < bp.predict(awq) < bp.predict(sym)


def test_a_derated_datasheet_predicts_slower_than_the_100_percent_sheet():
    row = next(r for r in ROWS if r.metric == "ttft_ms")
    derated, sheet = bp.predict(row, derate=True), bp.predict(row, derate=False)
    assert derated > sheet > 0          # a time: longer on the derated peaks
    rate = next(r for r in ROWS if r.metric == "tokens_per_s" and r.tp == 1)
    assert bp.predict(rate, derate=True) < bp.predict(rate, derate=False)
