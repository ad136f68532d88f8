"""``mu node --offer`` (config key ``offer``): a size, into the node's terms (specs/payments.md §Service balance)."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.cli.node import config_from_settings, parse_size
from node.runtime.settings import effective_settings


@pytest.mark.parametrize("text, size", [("0", 0), ("4096", 4096), ("100GB", 100 * 10**9), ("512MiB", 512 << 20),
                                        ("2 tb", 2 * 10**12), ("1KiB", 1024)])
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text, "--offer") == size


@pytest.mark.parametrize("text", ["", "GB", "-1GB", "1.5GB", "10XB", "99999999999TB"])
def test_bad_sizes_name_the_setting(text: str) -> None:
    with pytest.raises(ValueError, match="--offer"):
        parse_size(text, "--offer")


def test_offer_from_flag_and_file(tmp_path: Path) -> None:
    assert config_from_settings(tmp_path, effective_settings(tmp_path, {}, environ={})).offer_bytes == 0
    flagged = effective_settings(tmp_path, {"offer": "100GB"}, environ={})
    assert config_from_settings(tmp_path, flagged).offer_bytes == 100 * 10**9
    (tmp_path / "config.toml").write_text('offer = "3MiB"\n')
    assert config_from_settings(tmp_path, effective_settings(tmp_path, {}, environ={})).offer_bytes == 3 << 20
    (tmp_path / "config.toml").write_text('offer = "lots"\n')
    with pytest.raises(ValueError, match="offer in"):
        config_from_settings(tmp_path, effective_settings(tmp_path, {}, environ={}))
