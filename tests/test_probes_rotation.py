"""The rotating probes' shared lifecycle (ridgeline.probes.rotation): a case whose samples
scatter is measured once more, grouped by its inputs, and the fits keep its fastest attempt."""

from __future__ import annotations

from ridgeline.device import cpu_device
from ridgeline.probes.base import ProbeContext
from ridgeline.probes.rotation import MAX_ATTEMPTS, Rotation, RotatingProbe
from ridgeline.records import fastest_per_case
from ridgeline.timing import FakeTimer


class ScriptedProbe(RotatingProbe):
    """Each case's samples spread as `spreads[(shape, attempt)]` says (0.02 when unlisted)."""

    name = "scripted"
    description = "test probe"

    def __init__(self, spreads, invalid=()):
        super().__init__()
        self.spreads, self.invalid = spreads, set(invalid)
        self.built: list[tuple] = []

    def cases(self, ctx):
        return self.plan(ctx, ({"provider": p, "shape": s} for s in (1, 2, 3)
                               for p in ("a", "b")))

    def pool_key(self, params):
        return (params["shape"],)

    def build_pool(self, ctx, params):
        self.built.append(self.pool_key(params))
        return Rotation(copies=1, copy_bytes=1, cache_bytes=1)

    def measure(self, ctx, pool, params):
        attempt = params.get("attempt", 1)
        spread = self.spreads.get((params["shape"], params["provider"], attempt), 0.02)
        med = 10.0 / attempt   # a re-measured case runs faster: it was disturbed
        ok = (params["shape"], params["provider"]) not in self.invalid
        return {"probe": self.name, "provider": params["provider"], "shape": params["shape"],
                "status": "ok" if ok else "invalid", "validated": ok, "time_ms_median": med,
                "time_ms_p20": med * (1 - spread / 2), "time_ms_p80": med * (1 + spread / 2)}


def _run(probe):
    ctx = ProbeContext(cpu_device(), FakeTimer())
    records = []
    for case in probe.cases(ctx):
        records += probe.run(case, ctx)
    rounds = []
    while extra := probe.more_cases(records, ctx):
        rounds.append([(c["shape"], c["provider"], c["attempt"]) for c in extra])
        for case in extra:
            records += probe.run(case, ctx)
    return records, rounds


def test_scattered_cases_are_measured_once_more_grouped_by_their_inputs():
    probe = ScriptedProbe({(3, "a", 1): 0.30, (1, "b", 1): 0.25, (3, "b", 1): 0.11,
                           (2, "a", 1): 0.09,      # under 10%: kept as measured
                           (3, "a", 2): 0.40,      # still scattered: no third attempt
                           (1, "a", 1): 0.50},     # invalid: never re-measured
                          invalid={(1, "a")})
    records, rounds = _run(probe)
    assert MAX_ATTEMPTS == 2
    # one round, grouped by input in the order the scatter was seen
    assert rounds == [[(1, "b", 2), (3, "a", 2), (3, "b", 2)]]
    assert [r["attempt"] for r in records] == [1] * 6 + [2] * 3
    # each pool built once for the plan, once more for the re-measures, and freed after
    assert probe.built == [(1,), (2,), (3,), (1,), (3,)]
    assert len(probe.pools) == 0


def test_the_fits_keep_each_providers_fastest_attempt():
    records, _ = _run(ScriptedProbe({(3, "a", 1): 0.30}))
    groups = fastest_per_case(records, "scripted", lambda r: (r["shape"],))
    (first, second) = groups[(3,)]
    assert (first["provider"], first["attempt"], first["time_ms_median"]) == ("a", 2, 5.0)
    assert (second["provider"], second["attempt"]) == ("b", 1)   # one record per provider
    assert [len(g) for g in groups.values()] == [2, 2, 2]
