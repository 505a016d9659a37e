"""Telemetry: the throttle reasons records carry, read back the one way every report reads them."""

from ridgeline.telemetry import summarize, throttle_reasons


def test_throttle_reasons_is_the_union_over_records_that_throttled():
    # records as summarize writes them: reasons comma-joined, throttled only for real throttling
    hot = summarize([{"throttle_reasons": ["sw_power_cap", "gpu_idle"]},
                     {"throttle_reasons": ["hw_thermal_slowdown"]}])
    hotter = summarize([{"throttle_reasons": ["sw_power_cap", "hw_slowdown"]}])
    idle = summarize([{"throttle_reasons": ["gpu_idle", "sync_boost"]}])
    assert hot["throttled"] and hotter["throttled"] and not idle["throttled"]
    records = [hot, {"throttled": True, "throttle_reasons": None}, idle, hotter, {}]
    # sorted, each once; an idle record's reasons are not a throttled record's
    assert throttle_reasons(records) == ["gpu_idle", "hw_slowdown", "hw_thermal_slowdown",
                                         "sw_power_cap"]
    assert throttle_reasons([idle, {}]) == []
