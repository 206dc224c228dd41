"""Start-up decisions (`server/exposure.py`): loopback, Host patterns, keys, proxies."""

from __future__ import annotations

from pathlib import Path

import pytest

from lcfin import Settings
from lcfin.errors import InvalidParameter
from lcfin.server.exposure import LOOPBACK_HOSTS, Exposure, host_allowed, is_loopback

KEY = "sk-lcfin-exposure-test-4e1f"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True), ("::1", True),
     ("[::1]", True), ("0.0.0.0", False), ("::", False), ("", False), ("10.1.2.3", False),
     ("myhost", False), ("localhost.evil.example", False)],
)  # fmt: skip
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("header", "allowed"),
    [("localhost:8000", True), ("127.0.0.1", True), ("[::1]:8000", True), ("api.localhost", True),
     ("LOCALHOST:1", True), ("evil.example", False), ("evil.example:8000", False),
     ("127.0.0.1.evil.example", False), ("localhost.evil.example", False), ("", False)],
)  # fmt: skip
def test_host_allowed(header: str, allowed: bool) -> None:
    assert host_allowed(header, LOOPBACK_HOSTS) is allowed


def test_wildcards_extend_the_allow_list() -> None:
    exposure = Exposure.of(Settings(allowed_hosts="*.hf.space, api.example.com"))

    assert exposure.allowed_hosts is not None
    assert host_allowed("me-demo.hf.space", exposure.allowed_hosts)
    assert host_allowed("api.example.com:443", exposure.allowed_hosts)
    assert not host_allowed("hf.space.evil.example", exposure.allowed_hosts)


def test_keys_on_and_no_list_means_no_host_check() -> None:
    assert Exposure.of(Settings(api_keys=KEY)).allowed_hosts is None
    assert Exposure.of(Settings(api_keys=KEY, allowed_hosts="a.example")).allowed_hosts


def test_a_specific_bind_address_is_an_allowed_host() -> None:
    exposure = Exposure.of(Settings(host="10.0.0.5", allow_unauthenticated=True))

    assert exposure.allowed_hosts is not None and "10.0.0.5" in exposure.allowed_hosts


def test_open_bind_needs_keys_or_the_opt_in() -> None:
    with pytest.raises(InvalidParameter, match="allow-unauthenticated") as refused:
        Exposure.of(Settings(host="0.0.0.0"))
    assert "LCFIN_API_KEYS" in str(refused.value)

    assert Exposure.of(Settings(host="0.0.0.0", api_keys=KEY)).exposed
    opened = Exposure.of(Settings(host="0.0.0.0", allow_unauthenticated=True))
    assert opened.exposed and any("NO API KEY" in w for w in opened.warnings)
    assert not Exposure.of(Settings()).exposed and not Exposure.of(Settings()).warnings


def test_short_keys_are_warned_about() -> None:
    warnings = Exposure.of(Settings(api_keys=f"{KEY},sk-9x", admin_key="ak-7q")).warnings

    assert len(warnings) == 2
    assert "sk-9x" not in " ".join(warnings) and "ak-7q" not in " ".join(warnings)


@pytest.mark.parametrize("value", ["10.0.0.7", "10.0.0.0/24", "::1", "*", "10.0.0.7, 10.0.0.8"])
def test_trusted_proxies_accept_addresses(value: str) -> None:
    assert Exposure.of(Settings(trusted_proxies=value)).trusted_proxies


def test_trusted_proxies_refuse_anything_else() -> None:
    with pytest.raises(InvalidParameter) as refused:
        Exposure.of(Settings(trusted_proxies="proxy.internal"))
    assert refused.value.param == "LCFIN_TRUSTED_PROXIES"


def test_key_file_problems_name_the_setting(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("# nothing\n")
    for value in (str(tmp_path / "missing"), str(empty), str(tmp_path), ",", " , "):
        with pytest.raises(InvalidParameter) as refused:
            Settings(api_keys=value).api_key_list()
        assert refused.value.param == "LCFIN_API_KEYS"
        assert str(tmp_path) not in str(refused.value)  # a mistyped key never gets printed
