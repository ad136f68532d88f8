"""Fixtures for mu chain tests: a real `mu chain` subprocess per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.helpers.chain import MuChain, open_mu_chain


@pytest.fixture
async def chain(tmp_path: Path) -> AsyncIterator[MuChain]:
    async with open_mu_chain(tmp_path / "node") as running:
        yield running
