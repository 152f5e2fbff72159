"""The egress guard's decisions: the refused-networks table, address spellings, ports, host allow-list."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.errors import BadRequest, DestinationNotAllowed
from app.utils.egress_guard import EgressPolicy, canonical_host, embedded_ipv4, is_public_address

DEFAULT = EgressPolicy()

REFUSED = [
    "0.0.0.0",
    "0.1.2.3",
    "10.0.0.1",
    "10.255.255.255",
    "100.64.0.1",
    "100.127.255.254",
    "127.0.0.1",
    "127.0.0.2",
    "127.255.255.254",
    "169.254.169.254",
    "172.16.0.1",
    "172.31.255.255",
    "192.0.0.1",
    "192.0.0.170",  # CVE-2024-4032: 3.11.7 calls parts of 192.0.0.0/24 global
    "192.0.2.10",
    "192.88.99.1",
    "192.168.1.1",
    "198.18.0.1",
    "198.19.255.255",
    "198.51.100.7",
    "203.0.113.9",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "::",
    "::1",
    "::ffff:127.0.0.1",
    "::ffff:7f00:1",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "::127.0.0.1",  # IPv4-compatible
    "::ffff:0:7f00:1",  # IPv4-translated
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1: is_global says True on every CPython
    "64:ff9b::a00:1",
    "64:ff9b:1::1",
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo whose client is 127.0.0.1 (obfuscated)
    "2001:db8::1",
    "3fff::1",
    "100::1",
    "fc00::1",
    "fd12:3456::1",
    "fe80::1",
    "fec0::1",
    "ff02::1",
    "5f00::1",
    "4000::1",  # outside 2000::/3
]

PUBLIC = [
    "1.1.1.1",
    "8.8.8.8",
    "93.184.215.14",
    "100.63.255.255",  # just below CGNAT
    "100.128.0.0",  # just above
    "172.15.255.255",
    "172.32.0.0",
    "198.17.255.255",
    "198.20.0.0",
    "223.255.255.255",
    "2606:4700:4700::1111",
    "2a00:1450:4001:80b::200e",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
    "2002:808:808::1",
]


@pytest.mark.parametrize("ip", REFUSED)
def test_refused_addresses(ip: str) -> None:
    assert is_public_address(ip) is False
    with pytest.raises(DestinationNotAllowed):
        DEFAULT.check_address(ip)


@pytest.mark.parametrize("ip", PUBLIC)
def test_public_addresses(ip: str) -> None:
    assert is_public_address(ip) is True
    DEFAULT.check_address(ip)


@pytest.mark.parametrize("ip", REFUSED)
def test_refused_ip_literal_urls(ip: str) -> None:
    host = f"[{ip}]" if ":" in ip else ip
    with pytest.raises(DestinationNotAllowed) as caught:
        DEFAULT.check_url(f"http://{host}:8080/path")
    assert "exist" not in caught.value.message and ip not in caught.value.message


def test_embedded_ipv4_unwrapping() -> None:
    v6 = ipaddress.IPv6Address
    assert embedded_ipv4(v6("::ffff:1.2.3.4")) == [ipaddress.IPv4Address("1.2.3.4")]
    assert embedded_ipv4(v6("64:ff9b::102:304")) == [ipaddress.IPv4Address("1.2.3.4")]
    assert embedded_ipv4(v6("2002:102:304::")) == [ipaddress.IPv4Address("1.2.3.4")]
    assert ipaddress.IPv4Address("127.0.0.1") in embedded_ipv4(v6("2001:0:4136:e378:8000:63bf:80ff:fffe"))
    assert embedded_ipv4(v6("2606:4700::1")) == []


LOOPBACK_SPELLINGS = [
    "127.0.0.1",
    "2130706433",
    "0177.0.0.1",
    "0x7f.1",
    "0x7f000001",
    "127.1",
    "127.0.1",
    "0177.1",
    "127.0.0.1.",
    "[::1]",
    "[::ffff:127.0.0.1]",
    "[0:0:0:0:0:ffff:7f00:0001]",
    "[::FFFF:7F00:1]",
    "LOCALHOST",
    "localhost.",
]


@pytest.mark.parametrize("spelling", LOOPBACK_SPELLINGS)
def test_every_loopback_spelling_is_refused(spelling: str) -> None:
    url = f"http://{spelling}:8080/"
    try:
        DEFAULT.check_url(url)
    except DestinationNotAllowed:
        return
    # A name passes the URL check; the transport must then refuse what it resolves to.
    host = canonical_host(spelling)
    resolved = {info[4][0] for info in socket.getaddrinfo(host, 8080, type=socket.SOCK_STREAM)}
    assert resolved
    for ip in resolved:
        with pytest.raises(DestinationNotAllowed):
            DEFAULT.check_address(ip)


@pytest.mark.parametrize("spelling", ["2130706433", "0177.0.0.1", "0x7f.1", "127.1", "[::ffff:127.0.0.1]"])
def test_spellings_of_an_exempt_address_are_allowed_alike(spelling: str) -> None:
    policy = EgressPolicy(allow_private_networks=("127.0.0.1/32",))
    url = policy.check_url(f"http://{spelling}:8080/x")
    address = ipaddress.ip_address(url.host)
    assert address == ipaddress.IPv4Address("127.0.0.1") or embedded_ipv4(address) == [  # type: ignore[arg-type]
        ipaddress.IPv4Address("127.0.0.1")
    ]
    with pytest.raises(DestinationNotAllowed):
        policy.check_url("http://127.0.0.2:8080/x")
    with pytest.raises(DestinationNotAllowed):
        policy.check_url("http://[::1]:8080/x")


def _spell(value: int, parts: int, bases: list[str]) -> str:
    """Write a 32-bit address as inet_aton accepts it: 1 to 4 parts, each in decimal, octal or hex."""
    octets = list(value.to_bytes(4, "big"))
    numbers = [*octets[: parts - 1], int.from_bytes(bytes(octets[parts - 1 :]), "big")]
    out = []
    for number, base in zip(numbers, bases, strict=False):
        if base == "oct":
            out.append("0" + format(number, "o"))
        elif base == "hex":
            out.append("0x" + format(number, "x"))
        elif base == "HEX":
            out.append("0X" + format(number, "X"))
        else:
            out.append(str(number))
    return ".".join(out)


@given(
    value=st.one_of(
        st.integers(0, 2**32 - 1),
        st.integers(0x7F000000, 0x7FFFFFFF),  # loopback
        st.integers(0x0A000000, 0x0AFFFFFF),  # 10/8
        st.integers(0xA9FE0000, 0xA9FEFFFF),  # 169.254/16
        st.integers(0x64400000, 0x647FFFFF),  # 100.64/10
    ),
    parts=st.integers(1, 4),
    bases=st.lists(st.sampled_from(["dec", "oct", "hex", "HEX"]), min_size=4, max_size=4),
    trailing_dot=st.booleans(),
)
def test_any_ipv4_spelling_gets_the_dotted_quad_decision(
    value: int, parts: int, bases: list[str], trailing_dot: bool
) -> None:
    dotted = str(ipaddress.IPv4Address(value))
    spelling = _spell(value, parts, bases) + ("." if trailing_dot else "")
    assert canonical_host(spelling) == dotted

    def decision(host: str) -> str:
        try:
            DEFAULT.check_url(f"http://{host}/")
        except DestinationNotAllowed:
            return "refused"
        return "allowed"

    assert decision(spelling) == decision(dotted)
    assert decision(dotted) == ("allowed" if is_public_address(dotted) else "refused")


@given(st.ip_addresses(v=6))
def test_ipv6_decision_matches_its_embedded_ipv4(ip: ipaddress.IPv6Address) -> None:
    inner = embedded_ipv4(ip)
    if inner and ip not in (ipaddress.IPv6Address("::"), ipaddress.IPv6Address("::1")):
        assert is_public_address(ip) == all(is_public_address(a) for a in inner)
    if not is_public_address(ip):
        with pytest.raises(DestinationNotAllowed):
            DEFAULT.check_url(f"http://[{ip}]/")


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("ftp://example.com/", BadRequest),
        ("file:///etc/passwd", BadRequest),
        ("gopher://example.com/", BadRequest),
        ("http://user:pass@example.com/", BadRequest),
        ("http://user@example.com/", BadRequest),
        ("http:///path", BadRequest),
        ("http://exa mple.com/", BadRequest),
        ("http://example.com:99999/", BadRequest),
        ("http://example.com\\@127.0.0.1/", BadRequest),
        ("http://999.1.1.1/", BadRequest),
        ("http://example.com:22/", DestinationNotAllowed),
        ("http://example.com:25/", DestinationNotAllowed),
        ("http://example.com:1023/", DestinationNotAllowed),
        ("http://example.com:0/", DestinationNotAllowed),
    ],
)
def test_bad_urls(url: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        DEFAULT.check_url(url)


@pytest.mark.parametrize(
    "url",
    ["http://example.com/", "https://example.com/", "http://example.com:8080/", "HTTPS://Example.COM./a?b"],
)
def test_good_urls(url: str) -> None:
    result = DEFAULT.check_url(url)
    assert result.host == "example.com"
    assert result.scheme in ("http", "https")


def test_allowed_hosts() -> None:
    policy = EgressPolicy(allowed_hosts=("api.example.com", "*.example.org"))
    assert policy.check_url("https://API.example.com/v1").host == "api.example.com"
    assert policy.check_url("https://a.b.example.org/").host == "a.b.example.org"
    for url in ("https://example.org/", "https://evil.com/", "https://api.example.com.evil.com/"):
        with pytest.raises(DestinationNotAllowed):
            policy.check_url(url)


def test_allowed_ports_are_configurable() -> None:
    policy = EgressPolicy(allowed_ports=((443, 443),))
    policy.check_url("https://example.com/")
    with pytest.raises(DestinationNotAllowed):
        policy.check_url("http://example.com/")
    with pytest.raises(DestinationNotAllowed):
        policy.check_url("https://example.com:8443/")


@pytest.mark.parametrize(
    "url", ["https://xn--bcher-kva.ch/", "https://XN--BCHER-KVA.ch/", "https://b\u00fccher.ch/"]
)
def test_internationalised_names_in_either_spelling(url: str) -> None:
    assert DEFAULT.check_url(url).raw_host == b"xn--bcher-kva.ch"
    for pattern in ("b\u00fccher.ch", "xn--bcher-kva.ch"):
        EgressPolicy(allowed_hosts=(pattern,)).check_url(url)
    with pytest.raises(DestinationNotAllowed):
        EgressPolicy(allowed_hosts=("*.b\u00fccher.ch",)).check_url(url)


@pytest.mark.parametrize(
    "url", ["http://xn--/", "http://xn--a/", "http://xn--ls8h.com/", "http://a.xn--ls8h.com/"]
)
def test_undecodable_internationalised_names_are_bad_requests(url: str) -> None:
    with pytest.raises(BadRequest):
        DEFAULT.check_url(url)
