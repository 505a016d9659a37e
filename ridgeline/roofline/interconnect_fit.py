"""Fit the interconnect model (see roofline.interconnect) from host_link, p2p and allreduce records."""

from __future__ import annotations

from typing import Any


def fit_interconnect(records: list[dict[str, Any]], device: dict[str, Any]) -> dict[str, Any]:
    return {}
