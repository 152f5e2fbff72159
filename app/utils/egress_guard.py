"""Which destinations a user-given URL may reach: the refused-networks table and the policy.

Two checks, both needed:
- `EgressPolicy.check_url` runs before a request (and on every redirect hop): scheme, port, host allow-list,
  and an early refusal of IP-literal hosts in any spelling (2130706433, 0177.0.0.1, 0x7f.1, 127.1).
- `EgressPolicy.check_address` runs inside the transport (app/utils/http_client.py) on each address a host
  name resolved to, right before connecting: the decision that DNS rebinding cannot get around.

Addresses are judged against an explicit table, not `ipaddress.is_global`/`is_private`: CPython 3.11.7
misjudges several ranges (CVE-2024-4032) and every version calls NAT64 forms of private addresses global.
IPv6 forms that embed an IPv4 address are unwrapped and the IPv4 address is judged.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from app.errors import BadRequest, DestinationNotAllowed

if TYPE_CHECKING:
    import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# IANA special-purpose registries, plus multicast and reserved space. Stricter than IANA where a block
# mixes global and special addresses (192.0.0.0/24, 2001::/23): refusing a rare anycast service is cheap.
REFUSED_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",  # "this network"
        "10.0.0.0/8",  # RFC 1918
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local, cloud metadata (169.254.169.254)
        "172.16.0.0/12",  # RFC 1918
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # TEST-NET-1
        "192.88.99.0/24",  # 6to4 relay anycast (deprecated)
        "192.168.0.0/16",  # RFC 1918
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # TEST-NET-2
        "203.0.113.0/24",  # TEST-NET-3
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and 255.255.255.255 broadcast
        "::/128",  # unspecified
        "::1/128",  # loopback
        "::ffff:0:0:0/96",  # IPv4-translated (SIIT)
        "64:ff9b:1::/48",  # local-use NAT64 (RFC 8215): local by definition, refused whole
        "100::/64",  # discard-only
        "2001::/23",  # IETF protocol assignments (Teredo 2001::/32 is unwrapped before this row)
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation (RFC 9637)
        "5f00::/16",  # SRv6 SIDs
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
    )
)

# Only 2000::/3 holds global unicast IPv6; anything else not unwrapped below is refused too.
_GLOBAL_UNICAST_V6 = ipaddress.ip_network("2000::/3")
_V4_MAPPED = ipaddress.ip_network("::ffff:0:0/96")
_V4_COMPATIBLE = ipaddress.ip_network("::/96")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SIX_TO_FOUR = ipaddress.ip_network("2002::/16")
_TEREDO = ipaddress.ip_network("2001::/32")

DEFAULT_ALLOWED_PORTS: tuple[tuple[int, int], ...] = ((80, 80), (443, 443), (1024, 65535))

# inet_aton accepts 1 to 4 parts, each decimal, octal (leading 0) or hex (0x): 127.1, 0x7f.1, 2130706433.
_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}$")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (mapped, compatible, NAT64, 6to4, Teredo), if any."""
    value = int(ip)
    if ip in _V4_MAPPED or ip in _NAT64:
        return [ipaddress.IPv4Address(value & 0xFFFFFFFF)]
    if ip in _V4_COMPATIBLE:
        return [ipaddress.IPv4Address(value & 0xFFFFFFFF)]
    if ip in _SIX_TO_FOUR:
        return [ipaddress.IPv4Address((value >> 80) & 0xFFFFFFFF)]
    if ip in _TEREDO:
        server, client = ip.teredo or (None, None)
        return [a for a in (server, client) if a is not None]
    return []


def is_public_address(ip: IPAddress | str) -> bool:
    """True when `ip` is public unicast by the table above, after unwrapping embedded IPv4."""
    addr = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    if isinstance(addr, ipaddress.IPv6Address):
        addr = addr.__class__(int(addr))  # drop any %scope: it does not change the decision
        if addr in (ipaddress.IPv6Address("::"), ipaddress.IPv6Address("::1")):
            return False
        inner = embedded_ipv4(addr)
        if inner:
            return all(is_public_address(a) for a in inner)
        if addr not in _GLOBAL_UNICAST_V6:
            return False
    return not any(addr in net for net in REFUSED_NETWORKS if net.version == addr.version)


def canonical_host(host: str) -> str:
    """Lower-case, without trailing dot; numeric IPv4 spellings become dotted quads, IPv6 compressed."""
    host = host.strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if _NUMERIC_HOST.match(host):
        try:
            return socket.inet_ntoa(socket.inet_aton(host))
        except OSError:
            raise BadRequest("The URL's host is not a valid address.") from None
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def _ascii_host(host: str) -> str:
    """The host as DNS sees it, in A-labels ("bücher.ch" -> "xn--bcher-kva.ch"); BadRequest if no valid IDN.

    Both spellings of a name then get one decision (allow-list, ambiguity check), and an "xn--" label that
    decodes to nothing valid ("xn--", an emoji) is refused here instead of failing deep in httpx.
    """
    if host.isascii() and "xn--" not in host:
        return host
    import idna  # loaded with httpx, and only for internationalised names

    try:
        ascii_host = host if host.isascii() else idna.encode(host).decode("ascii")
        for label in ascii_host.split("."):
            if label.startswith("xn--"):
                idna.decode(label)
    except (idna.IDNAError, UnicodeError):
        raise BadRequest("The URL's host is not a valid internationalised domain name.") from None
    return ascii_host


def _ascii_pattern(pattern: str) -> str:
    """An allow-list entry in the form hosts are matched in: "*.bücher.ch" -> "*.xn--bcher-kva.ch"."""
    pattern = pattern.strip().lower().rstrip(".")
    wildcard, name = ("*.", pattern[2:]) if pattern.startswith("*.") else ("", pattern)
    try:
        return wildcard + _ascii_host(name)
    except BadRequest:
        return pattern  # not a valid name: it matches no host that passes check_url


def _ip_or_none(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _host_matches(host: str, pattern: str) -> bool:
    pattern = pattern.lower().rstrip(".")
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])  # "*.example.com" matches subdomains, not the apex
    return host == pattern


@dataclass(frozen=True)
class EgressPolicy:
    """Where user-given URLs may go. Empty allowed_hosts means any public host."""

    allowed_hosts: tuple[str, ...] = ()
    allow_private_networks: tuple[str, ...] = ()
    allowed_ports: tuple[tuple[int, int], ...] = DEFAULT_ALLOWED_PORTS
    _exempt: tuple[IPNetwork, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        exempt = tuple(ipaddress.ip_network(n, strict=False) for n in self.allow_private_networks)
        object.__setattr__(self, "_exempt", exempt)
        object.__setattr__(self, "allowed_hosts", tuple(_ascii_pattern(p) for p in self.allowed_hosts))
        object.__setattr__(self, "allowed_ports", tuple(tuple(r) for r in self.allowed_ports))

    def is_allowed_address(self, ip: IPAddress | str) -> bool:
        """Public, or inside an operator's exemption (checked on the address and any IPv4 it embeds)."""
        addr = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
        if isinstance(addr, ipaddress.IPv6Address) and addr.scope_id:
            addr = ipaddress.IPv6Address(int(addr))
        candidates: list[IPAddress] = [addr]
        if isinstance(addr, ipaddress.IPv6Address):
            candidates += embedded_ipv4(addr)
        if any(c in net for c in candidates for net in self._exempt if net.version == c.version):
            return True
        return is_public_address(addr)

    def check_address(self, ip: IPAddress | str) -> None:
        """Raise DestinationNotAllowed unless `ip` may be connected to."""
        if not self.is_allowed_address(ip):
            raise DestinationNotAllowed()

    def check_addresses(self, ips: Iterable[IPAddress | str]) -> None:
        """Refuse when ANY of the addresses a name resolved to is refused (a mixed answer is an attack)."""
        for ip in ips:
            self.check_address(ip)

    def check_port(self, port: int) -> None:
        """Raise DestinationNotAllowed unless `port` is in an allowed range."""
        if not any(low <= port <= high for low, high in self.allowed_ports):
            raise DestinationNotAllowed()

    def check_url(self, url: str | httpx.URL) -> httpx.URL:
        """Validate a user-given URL and return it normalised; BadRequest or DestinationNotAllowed.

        This is the early, cheap check. The binding decision is `check_address` in the transport.
        """
        text = str(url)
        if any(ord(c) < 0x21 or c == "\x7f" for c in text) or "\\" in text:
            raise BadRequest("The URL contains whitespace, control characters or backslashes.")
        try:
            parts = urlsplit(text)
            port = parts.port
        except ValueError:
            raise BadRequest("The URL cannot be parsed.") from None
        if parts.scheme.lower() not in ("http", "https"):
            raise BadRequest("Only http and https URLs are allowed.")
        if "@" in parts.netloc:
            raise BadRequest("Credentials in the URL are not allowed; send an Authorization header.")
        if not parts.hostname:
            raise BadRequest("The URL has no host.")
        host = _ascii_host(canonical_host(parts.hostname))
        ip = _ip_or_none(host)
        netloc = f"[{host}]" if ip is not None and ip.version == 6 else host
        if port is not None:
            netloc = f"{netloc}:{port}"
        rebuilt = urlunsplit((parts.scheme.lower(), netloc, parts.path or "/", parts.query, ""))
        import httpx  # loaded with the external proxy's client, not at start-up (external_proxy.py)

        try:
            result = httpx.URL(rebuilt)
        except httpx.InvalidURL:
            raise BadRequest("The URL cannot be parsed.") from None
        # Two parsers must agree on the host, or the URL is ambiguous (parser-differential tricks).
        # raw_host is the A-label form that is dialled; httpx's .host decodes some "xn--" names, not all.
        if canonical_host(result.raw_host.decode("ascii")) != host:
            raise BadRequest("The URL's host is ambiguous.")
        default_port = 443 if result.scheme == "https" else 80
        self.check_port(default_port if result.port is None else result.port)  # port 0 is not "default"
        if ip is not None:
            self.check_address(ip)
        if self.allowed_hosts and not any(_host_matches(host, p) for p in self.allowed_hosts):
            raise DestinationNotAllowed()
        return result
