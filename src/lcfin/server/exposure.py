"""Who can reach the server, decided once at start-up from the settings (docs/security.md).

`Exposure.of(settings)` reads the API keys (a bad key file refuses to start) and the bind address,
and refuses a bind beyond loopback with no key unless LCFIN_ALLOW_UNAUTHENTICATED opts in. The
middleware then applies what it decided:

- `exposed`: the server listens on a non-loopback address (0.0.0.0 included), so admin routes
  need the admin key even when no API key is set;
- `allowed_hosts`: the Host names accepted (None: any), against DNS rebinding;
- `trusted_proxies`: the peers whose X-Forwarded-* headers uvicorn believes.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lcfin.errors import InvalidParameter

if TYPE_CHECKING:
    from lcfin import Settings

__all__ = ["LOOPBACK_HOSTS", "MIN_KEY_LENGTH", "Exposure", "host_allowed", "is_loopback"]

log = logging.getLogger(__name__)

#: Host names that always mean this machine.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1", "*.localhost")
MIN_KEY_LENGTH = 16
OPT_IN = "--allow-unauthenticated (LCFIN_ALLOW_UNAUTHENTICATED=true)"


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the server on this machine (a name other than localhost,
    or an unspecified address such as 0.0.0.0, counts as reachable from the network)."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _split(text: str) -> list[str]:
    return [item.strip().lower() for item in text.split(",") if item.strip()]


def host_allowed(host_header: str, patterns: tuple[str, ...]) -> bool:
    """Whether a Host header (`name[:port]`, `[v6]:port`) matches one of `patterns`."""
    value = host_header.strip().lower()
    if value.startswith("["):
        name = value[1 : value.find("]")] if "]" in value else value
    else:
        name = value.rsplit(":", 1)[0] if value.count(":") == 1 else value
    return bool(name) and any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _check_proxies(items: list[str]) -> tuple[str, ...]:
    for item in items:
        if item == "*":  # any peer: only when nothing but the proxy can reach the server
            continue
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise InvalidParameter(
                f"LCFIN_TRUSTED_PROXIES: {item!r} is not an IP address or network",
                param="LCFIN_TRUSTED_PROXIES",
                hint="list proxy addresses such as 10.0.0.7 or 10.0.0.0/24",
            ) from None
    return tuple(items)


@dataclass(frozen=True)
class Exposure:
    """What start-up decided: keys, reachability, accepted Host names and trusted proxies."""

    api_keys: tuple[str, ...]
    admin_key: str | None
    exposed: bool
    allowed_hosts: tuple[str, ...] | None
    trusted_proxies: tuple[str, ...]
    warnings: tuple[str, ...] = ()

    @classmethod
    def of(cls, settings: Settings) -> Exposure:
        """Decide from `settings`.

        Raises:
            InvalidParameter: a bad key file or proxy list, or a bind beyond loopback with no
                API key and no opt-in (the CLI exits 2).
        """
        keys = tuple(settings.api_key_list())
        admin = settings.admin_key.get_secret_value() if settings.admin_key else None
        exposed = not is_loopback(settings.host)
        if exposed and not keys and not settings.allow_unauthenticated:
            raise InvalidParameter(
                f"Refusing to listen on {settings.host} with no API key: every route would be "
                "open to the network",
                param="LCFIN_HOST",
                hint=f"set LCFIN_API_KEYS (and LCFIN_ADMIN_KEY), bind 127.0.0.1, or opt in "
                f"with {OPT_IN}",
            )
        extra = _split(settings.allowed_hosts)
        hosts = None if "*" in extra or (keys and not extra) else (*LOOPBACK_HOSTS, *extra)
        bound = settings.host.strip().strip("[]").lower()
        if hosts is not None and exposed and bound not in ("0.0.0.0", "::", ""):
            hosts = (*hosts, bound)  # a specific address: clients may name it
        return cls(
            keys,
            admin,
            exposed,
            hosts,
            cls.trusted_proxies_of(settings),
            _warnings(settings, keys, admin, exposed),
        )

    @staticmethod
    def trusted_proxies_of(settings: Settings) -> tuple[str, ...]:
        """LCFIN_TRUSTED_PROXIES, checked (raises InvalidParameter on a bad entry)."""
        return _check_proxies(_split(settings.trusted_proxies))

    def log_warnings(self) -> None:
        """Log what an operator should know at every start."""
        for message in self.warnings:
            log.warning("%s", message)


def _warnings(
    settings: Settings, keys: tuple[str, ...], admin: str | None, exposed: bool
) -> tuple[str, ...]:
    found = []
    if exposed and not keys:
        found.append(
            f"Listening on {settings.host} with NO API KEY ({OPT_IN}): every route except the "
            "admin ones is open to anyone who can reach this address; set LCFIN_API_KEYS"
        )
    if any(len(k) < MIN_KEY_LENGTH for k in keys):
        found.append(
            f"An API key in LCFIN_API_KEYS is shorter than {MIN_KEY_LENGTH} characters; use "
            "long random keys (e.g. `python -c 'import secrets; print(secrets.token_urlsafe())'`)"
        )
    if admin is not None and len(admin) < MIN_KEY_LENGTH:
        found.append(f"LCFIN_ADMIN_KEY is shorter than {MIN_KEY_LENGTH} characters")
    return tuple(found)
