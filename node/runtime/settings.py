"""The node's settings: defaults, ``config.toml`` in the data dir, command-line flags (README "Configuration").

Every default is defined once, in :class:`NodeSettings`.  The data dir's
``config.toml`` overrides the defaults, an environment variable ``MU_<NAME>``
(``MU_AUDIT_PERIOD=5``) overrides the file, and ``mu node``'s flags override
both; :func:`effective_settings` merges them and remembers where each
value came from (``mu config show`` prints it).  The environment is for
tests and devnets, whose nodes inherit it from the process that starts them.  The file holds flat
``key = value`` lines whose keys are the field names below; an unknown key
or a value of the wrong type is a :class:`ConfigError` naming the key and
the file.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path

from node.bitcoin.wallet import DEFAULT_FEE_RATE
from node.exchange.settlement import DEFAULT_POLL_SECONDS, DEFAULT_SETTLE_THRESHOLD
from node.files.upkeep import DEFAULT_AUDIT_PERIOD
from node.runtime.config import ConfigError
from node.store.retention import DEFAULT_GC_PERIOD

CONFIG_FILE = "config.toml"
DEFAULT_LISTEN_HOST = "127.0.0.1"
DEFAULT_LISTEN_PORT = 0  # any free port
DEFAULT_CHAIN_RPC = "http://127.0.0.1:18443/"  # `mu chain`'s default RPC port (specs/chain.md)
DEFAULT_UI_BIND = "127.0.0.1"  # the control API and web app: this machine only (specs/network.md §6 Security)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class NodeSettings:
    """What ``mu node`` can be told, with its defaults (prices and limits: specs/payments.md §3 Terms)."""

    listen: str = f"{DEFAULT_LISTEN_HOST}:{DEFAULT_LISTEN_PORT}"
    chain_rpc: str = DEFAULT_CHAIN_RPC
    chain_cookie: str | None = None  # None: <data-dir>/chain/.cookie
    price_get: int = 100  # sats per MiB served
    price_put: int = 300  # sats per MiB stored
    max_price_get: int = 1_000  # most sats per MiB we pay for a GET
    max_price_put: int = 3_000  # most sats per MiB we pay for a PUT
    retention: int = 30 * 86_400  # seconds a paid PUT is kept
    free_allowance: int = 1_000  # sats of service per peer before payment
    min_capacity: int = 10_000  # smallest channel accepted, sats
    expiry_window: int = 36  # blocks a channel must have left at open
    min_confirmations: int = 1
    fee_rate: int = DEFAULT_FEE_RATE  # sat/vB, for channel closes and wallet spends
    quota: int | None = None  # most bytes of chunks to store; None: no limit
    settle_threshold: int = DEFAULT_SETTLE_THRESHOLD
    settle_poll: float = DEFAULT_POLL_SECONDS
    dht_port: int = 0  # any free port
    bootstrap: tuple[str, ...] = ()  # HOST:PORT of DHT nodes to join through
    loopback_devnet: bool = False  # many nodes on 127.0.0.1 (specs/dht.md §5.3 Address limits)
    gc_period: float = DEFAULT_GC_PERIOD
    ui_bind: str = DEFAULT_UI_BIND  # address of the control API and web app
    audit_period: float = DEFAULT_AUDIT_PERIOD  # each share audited once per period on average (specs/erasure.md §7.5)
    max_spend_per_month: int = 0  # sats the upkeep timer may spend on renewals in a 30-day month
    # Storage hosted free for peers that host for us, "100GB" or bytes; "0": none, pay for everything
    # (specs/payments.md §Service balance).
    offer: str = "0"


DEFAULTS = NodeSettings()
SETTING_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(NodeSettings))


class Source(StrEnum):
    """Where an effective setting came from."""

    DEFAULT = "default"
    FILE = "file"
    ENV = "env"
    FLAG = "flag"


ENV_PREFIX = "MU_"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class EffectiveSettings:
    settings: NodeSettings
    sources: Mapping[str, Source]
    file: Path  # the config file that was (or would have been) read

    def origin(self, name: str) -> str:
        """How to name a setting in an error: the flag, the file's key, or the default."""
        source = self.sources[name]
        if source is Source.FLAG:
            return "--" + name.replace("_", "-")
        if source is Source.FILE:
            return f"{name} in {self.file}"
        if source is Source.ENV:
            return f"{ENV_PREFIX}{name.upper()} in the environment"
        return f"the default {name}"


_HINTS = typing.get_type_hints(NodeSettings)


def _kind(name: str) -> tuple[type, str]:
    """The type setting ``name``'s values must have (bool, int, float, str or tuple), and how to say it."""
    hint = _HINTS[name]
    if isinstance(hint, types.UnionType):  # `int | None`: the file and flags give the int, or nothing
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    if hint is bool:
        return bool, "true or false"
    if hint is int:
        return int, "an integer"
    if hint is float:
        return float, "a number"
    if hint is str:
        return str, "a string"
    return tuple, "a list of strings"


def setting_type(name: str) -> type:
    """bool, int, float, str or tuple: what setting ``name`` holds (tuple: of strings)."""
    return _kind(name)[0]


def coerce(name: str, value: object) -> object:
    """``value`` as setting ``name`` holds it; ValueError saying what was expected."""
    kind, described = _kind(name)
    if kind is bool and isinstance(value, bool):
        return value
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind is str and isinstance(value, str):
        return value
    if kind is tuple and isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError(f"{name} must be {described}, got {value!r}")


def read_config_file(path: Path) -> dict[str, object]:
    """The settings in ``path`` (none if it does not exist).

    Raises:
        ConfigError: the file is not TOML, has a key that is not a setting,
            or a value of the wrong type; the message names the file and key.
    """
    try:
        with path.open("rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    values: dict[str, object] = {}
    for name, value in raw.items():
        if name not in SETTING_NAMES:
            raise ConfigError(f"{path}: unknown key {name!r} (known keys: {', '.join(SETTING_NAMES)})")
        try:
            values[name] = coerce(name, value)
        except ValueError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    return values


def read_environment(environ: Mapping[str, str]) -> dict[str, object]:
    """The settings given as ``MU_<NAME>`` variables (a list's items separated by commas).

    Raises:
        ConfigError: a value of the wrong type; the message names the variable.
    """
    values: dict[str, object] = {}
    for name in SETTING_NAMES:
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is None:
            continue
        kind = setting_type(name)
        try:
            if kind is bool:
                if raw.lower() not in ("true", "false"):
                    raise ValueError(f"{name} must be true or false, got {raw!r}")
                values[name] = raw.lower() == "true"
            elif kind is tuple:
                values[name] = tuple(item.strip() for item in raw.split(",") if item.strip())
            else:
                values[name] = coerce(name, raw if kind is str else kind(raw))
        except ValueError as exc:
            raise ConfigError(f"{ENV_PREFIX}{name.upper()} in the environment: {exc}") from None
    return values


def effective_settings(data_dir: Path, flags: Mapping[str, object | None],
                       environ: Mapping[str, str] | None = None) -> EffectiveSettings:
    """Defaults, overridden by the data dir's ``config.toml``, by ``MU_<NAME>`` variables of ``environ``
    (default: the process's), then by the flags that were given.

    ``flags`` maps setting names to the command line's values; None means not given.
    """
    path = data_dir / CONFIG_FILE
    values: dict[str, object] = {}
    sources = {name: Source.DEFAULT for name in SETTING_NAMES}
    for name, value in read_config_file(path).items():
        values[name] = value
        sources[name] = Source.FILE
    for name, value in read_environment(os.environ if environ is None else environ).items():
        values[name] = value
        sources[name] = Source.ENV
    for name, value in flags.items():
        if value is not None:
            values[name] = coerce(name, value)
            sources[name] = Source.FLAG
    settings = dataclasses.replace(DEFAULTS, **values)  # type: ignore[arg-type]
    return EffectiveSettings(settings=settings, sources=sources, file=path)
