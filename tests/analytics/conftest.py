"""Fixtures of the analytics tests: the synthetic data set of tests/analytics/synthetic.py."""

from __future__ import annotations

from typing import Any

import pytest

from tests.analytics.synthetic import Dataset, build_dataset


@pytest.fixture
def dataset(demo_city: Any) -> Dataset:
    """The synthetic data written in this test's transaction (the demo city reloaded if a test flushed it)."""
    return build_dataset()
