"""``mu config show`` and the node-setting flags it shares with ``mu node`` (README "Configuration").

Each setting of ``NodeSettings`` (node/runtime/settings.py) is a flag of
``mu node`` named after it (``price_get`` is ``--price-get``).  The flags'
argparse defaults are None, so a flag that was not given is visible and the
data dir's ``config.toml`` (or the built-in default) decides.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

from node.cli.arguments import non_negative_int, port_number, positive_float
from node.cli.exit_codes import EXIT_OK, EXIT_FAILURE, fail
from node.runtime.config import ConfigError, resolve_data_dir
from node.runtime.settings import DEFAULTS, SETTING_NAMES, EffectiveSettings, effective_settings, setting_type

# What an unset (None) setting means, for the help.
UNSET_MEANS: dict[str, str] = {"chain_cookie": "<data-dir>/chain/.cookie", "quota": "no limit"}
# Help text of each setting's flag; the default is appended from NodeSettings.
SETTING_HELP: dict[str, str] = {
    "listen": "HOST:PORT to listen on (port 0: any free port)",
    "chain_rpc": "Bitcoin Core JSON-RPC URL (mu chain or bitcoind)",
    "chain_cookie": "RPC cookie file",
    "price_get": "sats per MiB served",
    "price_put": "sats per MiB stored",
    "max_price_get": "most sats per MiB paid to a host for a GET",
    "max_price_put": "most sats per MiB paid to a host for a PUT",
    "retention": "seconds a paid PUT is kept",
    "free_allowance": "sats of service per peer before payment",
    "min_capacity": "smallest channel accepted, sats",
    "expiry_window": "blocks a channel must have left at open",
    "min_confirmations": "confirmations a funding output needs",
    "fee_rate": "sat/vB for channel closes and wallet spends",
    "quota": "most bytes of chunks to store",
    "settle_threshold": "close a channel once it holds this many sats",
    "settle_poll": "seconds between settlement watcher passes",
    "dht_port": "UDP port of the DHT (0: any free port)",
    "bootstrap": "a DHT node HOST:PORT to join through (repeatable)",
    "loopback_devnet": "a local test network: many nodes on 127.0.0.1 may share the DHT table "
                       "(lifts its per-address-prefix limits for loopback peers)",
    "gc_period": "seconds between passes deleting chunks whose paid retention ran out",
    "ui_bind": "IP address the control API and web app listen on (not loopback: a warning, login still needed)",
    "audit_period": "seconds in which each share of the k-of-n files this node owns is audited once, on average",
    "max_spend_per_month": "sats the node may spend renewing its k-of-n files in a 30-day month",
    "offer": "storage hosted free for peers that offer some too, e.g. 100GB (0: none; every request is paid)",
}



def _flag_type(name: str, kind: type) -> Callable[[str], object]:
    """The argparse type of a numeric setting's flag: ports, counts, sats and seconds are never negative."""
    if name == "dht_port":
        return port_number
    if kind is float:
        return positive_float
    return non_negative_int


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per node setting, default None (not given); the help shows the real default."""
    for name in SETTING_NAMES:
        default = getattr(DEFAULTS, name)
        shown = UNSET_MEANS[name] if default is None else ("none" if default == () else default)
        help_text = f"{SETTING_HELP[name]} (default: {shown}; config.toml key: {name})"
        flag = "--" + name.replace("_", "-")
        kind = setting_type(name)
        if kind is bool:
            parser.add_argument(flag, action="store_true", default=None, help=help_text)
        elif kind is tuple:
            parser.add_argument(flag, action="append", default=None, metavar="HOST:PORT", help=help_text)
        elif kind is str:
            parser.add_argument(flag, default=None, help=help_text)
        else:
            parser.add_argument(flag, type=_flag_type(name, kind), default=None, help=help_text)


def settings_from_args(args: argparse.Namespace) -> EffectiveSettings:
    """The settings for ``args``: defaults, the data dir's config.toml, then the given flags.

    Raises:
        ConfigError: the config file is unreadable or has a bad key or value.
    """
    flags = {name: getattr(args, name) for name in SETTING_NAMES}
    return effective_settings(resolve_data_dir(args.data_dir), flags)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("config", help="the node settings: defaults, the data dir's config.toml, flags")
    actions = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = actions.add_parser("show", help="print each effective setting and where it came from (default, file, flag)")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    add_settings_arguments(show)
    show.set_defaults(func=run_show)


def run_show(args: argparse.Namespace) -> int:
    try:
        effective = settings_from_args(args)
    except ConfigError as exc:
        return fail(str(exc), EXIT_FAILURE)
    if args.json:
        print(json.dumps({"file": str(effective.file), "settings": {
            name: {"value": _json_value(getattr(effective.settings, name)), "source": effective.sources[name].value}
            for name in SETTING_NAMES}}, sort_keys=True))
        return EXIT_OK
    print(f"# {effective.file}{'' if effective.file.exists() else ' (not present)'}")
    shown = {name: _shown(getattr(effective.settings, name)) for name in SETTING_NAMES}
    name_width = max(len(name) for name in SETTING_NAMES)
    value_width = max(len(text) for text in shown.values())
    for name in SETTING_NAMES:
        print(f"{name:<{name_width}} = {shown[name]:<{value_width}}  # {effective.sources[name].value}")
    return EXIT_OK


def _shown(value: object) -> str:
    """A value as TOML writes it; an unset one as a comment-like marker (TOML has no null)."""
    return "(unset)" if value is None else json.dumps(_json_value(value))


def _json_value(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value
