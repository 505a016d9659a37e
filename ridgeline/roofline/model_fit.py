"""Fit the roofline model (see roofline.model) from hbm, matmul, gemv and launch records."""

from __future__ import annotations

from typing import Any


def fit_model(records: list[dict[str, Any]], ceilings: dict[str, Any],
              datasheet: dict[str, Any] | None = None) -> dict[str, Any]:
    return {}
