"""Fit a whole profile from its records: ceilings, the roofline model, the interconnect model
and the measured kernel efficiencies.

    fit_profile(profile)   # fills profile["ceilings"], ["model"], ["interconnect"] (and
                           # ["efficiency"] when the attention/moe/dequant probes ran)

This only runs the fitters in order, each in its own module: ceilings.py (fit_ceilings),
model_fit.py (fit_model), interconnect_fit.py (fit_interconnect) and efficiency.py
(fit_efficiency, which needs the fitted model).
Only validated records are used (see ridgeline.records.fit_ready).
"""

from __future__ import annotations

from typing import Any

from ridgeline.roofline.ceilings import fit_ceilings
from ridgeline.roofline.efficiency import fit_efficiency
from ridgeline.roofline.interconnect_fit import fit_interconnect
from ridgeline.roofline.model_fit import fit_model


def fit_profile(profile: dict[str, Any]) -> dict[str, Any]:
    records = profile.get("records", [])
    device = profile["provenance"]["device"]
    profile["ceilings"] = fit_ceilings(records, device, profile.get("datasheet"))
    profile["model"] = fit_model(records, profile["ceilings"], profile.get("datasheet"), device=device)
    profile["interconnect"] = fit_interconnect(records, device)
    efficiency = fit_efficiency(records, profile)
    if efficiency:  # only profiles that ran the attention / moe / dequant probes have one
        profile["efficiency"] = efficiency
    return profile
