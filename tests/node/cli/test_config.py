"""``config.toml`` in the data dir: defaults, file overrides, flag overrides file, errors, ``mu config show``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from node.cli import build_parser, main
from node.cli.config import settings_from_args
from node.cli.node import config_from_settings
from node.runtime.config import ConfigError
from node.runtime.daemon import NodeConfig
from node.runtime.settings import CONFIG_FILE, DEFAULTS, SETTING_NAMES, EffectiveSettings, Source, effective_settings

REPO = Path(__file__).resolve().parents[3]


def node_settings(data_dir: Path, *flags: str) -> EffectiveSettings:
    return settings_from_args(build_parser().parse_args(["--data-dir", str(data_dir), "node", *flags]))


def test_defaults_without_a_file(tmp_path: Path) -> None:
    effective = node_settings(tmp_path)
    assert effective.settings == DEFAULTS
    assert set(effective.sources.values()) == {Source.DEFAULT}
    assert effective.file == tmp_path / CONFIG_FILE


def test_the_node_config_defaults_are_the_settings_defaults(tmp_path: Path) -> None:
    built = config_from_settings(tmp_path, node_settings(tmp_path))
    bare = NodeConfig(data_dir=tmp_path, chain_rpc=DEFAULTS.chain_rpc, chain_cookie=tmp_path / "chain" / ".cookie")
    assert built == bare


def test_file_overrides_defaults_and_flags_override_the_file(tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILE).write_text(
        'price_get = 7\nprice_put = 8\nsettle_poll = 1\nbootstrap = ["10.0.0.1:4001"]\nlisten = "0.0.0.0:4000"\n')
    effective = node_settings(tmp_path, "--price-get", "9", "--bootstrap", "10.0.0.2:4001")
    s = effective.settings
    assert (s.price_get, s.price_put, s.settle_poll, s.listen) == (9, 8, 1.0, "0.0.0.0:4000")
    assert s.bootstrap == ("10.0.0.2:4001",)  # a flag replaces the file's list, it does not extend it
    assert effective.sources["price_get"] is Source.FLAG and effective.sources["bootstrap"] is Source.FLAG
    assert effective.sources["price_put"] is Source.FILE and effective.sources["settle_poll"] is Source.FILE
    assert effective.sources["retention"] is Source.DEFAULT and s.retention == DEFAULTS.retention
    config = config_from_settings(tmp_path, effective)
    assert (config.listen_host, config.listen_port, config.price_per_mib_get) == ("0.0.0.0", 4000, 9)
    assert config.bootstrap == (("10.0.0.2", 4001),) and config.settlement.poll_seconds == 1.0


def test_an_unknown_key_names_the_key_and_the_file(tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILE).write_text("price_get = 7\nprice_gte = 8\n")
    with pytest.raises(ConfigError, match="price_gte") as caught:
        effective_settings(tmp_path, {})
    assert str(tmp_path / CONFIG_FILE) in str(caught.value)


@pytest.mark.parametrize("line, key", [('price_get = "100"', "price_get"), ("quota = true", "quota"),
                                       ("bootstrap = [1]", "bootstrap"), ("listen = 4000", "listen"),
                                       ("settle_poll = [1.0]", "settle_poll")])
def test_a_value_of_the_wrong_type_names_the_key_and_the_file(tmp_path: Path, line: str, key: str) -> None:
    (tmp_path / CONFIG_FILE).write_text(line + "\n")
    with pytest.raises(ConfigError, match=key) as caught:
        effective_settings(tmp_path, {})
    assert str(tmp_path / CONFIG_FILE) in str(caught.value)


def test_a_file_that_is_not_toml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / CONFIG_FILE).write_text("price_get = \n")
    assert main(["--data-dir", str(tmp_path), "config", "show"]) == 1
    assert str(tmp_path / CONFIG_FILE) in capsys.readouterr().err


def mu(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "node", "--data-dir", str(data_dir), *args],
                          capture_output=True, text=True, timeout=60, cwd=REPO)


def test_mu_config_show_prints_each_value_and_its_source(tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILE).write_text("price_get = 7\nfee_rate = 5\n")
    shown = mu(tmp_path, "config", "show", "--json", "--fee-rate", "3")
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert report["file"] == str(tmp_path / CONFIG_FILE)
    assert set(report["settings"]) == set(SETTING_NAMES)
    assert report["settings"]["price_get"] == {"value": 7, "source": "file"}
    assert report["settings"]["fee_rate"] == {"value": 3, "source": "flag"}
    assert report["settings"]["quota"] == {"value": None, "source": "default"}
    assert report["settings"]["bootstrap"] == {"value": [], "source": "default"}

    text = mu(tmp_path, "config", "show")
    assert text.returncode == 0, text.stderr
    lines = {line.split("=")[0].strip(): line for line in text.stdout.splitlines() if "=" in line}
    assert lines["price_get"].split("=")[1].split() == ["7", "#", "file"]
    assert lines["price_put"].split("=")[1].split() == ["300", "#", "default"]


def test_mu_node_with_a_bad_config_file_exits_1_naming_key_and_file(tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILE).write_text("free_allowence = 0\n")
    result = mu(tmp_path, "node")
    assert result.returncode == 1
    assert "free_allowence" in result.stderr and str(tmp_path / CONFIG_FILE) in result.stderr
    assert "Traceback" not in result.stderr


def test_a_malformed_listen_in_the_file_is_reported_as_the_files(tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILE).write_text('listen = "nowhere"\n')
    result = mu(tmp_path, "node")
    assert result.returncode == 1 and f"listen in {tmp_path / CONFIG_FILE} must be HOST:PORT" in result.stderr


def test_help_shows_the_defaults(tmp_path: Path) -> None:
    result = mu(tmp_path, "node", "--help")
    assert result.returncode == 0
    flat = " ".join(result.stdout.split())
    assert f"(default: {DEFAULTS.price_get}; config.toml key: price_get)" in flat
    assert "(default: no limit; config.toml key: quota)" in flat


def test_mu_wallet_reads_the_fee_rate_setting_from_the_file(tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILE).write_text('fee_rate = "fast"\n')
    result = mu(tmp_path, "wallet", "--rpc-url", "http://127.0.0.1:1/", "balance")
    assert result.returncode == 1 and f"{tmp_path / CONFIG_FILE}: fee_rate must be an integer" in result.stderr
