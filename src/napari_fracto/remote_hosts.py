"""Where an endpoint really is, whether images may go there, and which API key may go with them.

The one implementation for the Analyze and Evaluate widgets, the CLI and evaluation (issue 17):

- `endpoint_url(base_url)`: the URL requests really go to (an empty setting means `$OPENAI_BASE_URL`,
  else api.openai.com), so a warning never names api.openai.com for another host.
- `is_local_host(url)`: "local" means loopback (127/8, ::1, IPv4-mapped loopback, `localhost`) or a
  host the user confirmed. Hosts are read with `ipaddress` and the C library's IPv4 forms, so
  `http://134744072/v1` and `http://0x08080808/v1` are 8.8.8.8, not a local single-label name. A LAN
  address or name is not local: a key or an image goes there only after the user says so.
- `CONSENT` (a `Consent`): the hosts confirmed in this process; `CONSENT.warning(url)` is the text to
  show (None when no question is needed), `CONSENT.confirm(url)` records the yes.
- `key_variable` / `resolve_api_key`: the key belongs to one endpoint. The variable named in the
  configuration is the only one read; with none named, a provider's own variable is used for its own
  host only (OPENAI_API_KEY for api.openai.com, GEMINI_API_KEY for Gemini) and no key otherwise.

Pure standard library: no Qt, no openai import.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
from urllib.parse import urlsplit

from napari_fracto.errors import UserError

OPENAI_DEFAULT_URL = "https://api.openai.com/v1"
OPENAI_HOST = "api.openai.com"
GEMINI_HOST = "generativelanguage.googleapis.com"
PROVIDER_KEY_VARIABLES = {OPENAI_HOST: "OPENAI_API_KEY", GEMINI_HOST: "GEMINI_API_KEY"}

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class RemoteHostError(UserError, ValueError):
    """A remote endpoint cannot be used as configured (no key for it, images not allowed to go there)."""


def endpoint_url(base_url: str | None) -> str:
    """The URL requests go to: the setting, else $OPENAI_BASE_URL (as the openai client), else OpenAI."""
    return (base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_DEFAULT_URL).strip().rstrip("/")


def host_of(base_url: str | None) -> str:
    """The host name or address of the endpoint, lower case, without brackets or port ('' when none)."""
    try:
        return (urlsplit(endpoint_url(base_url)).hostname or "").lower().rstrip(".")
    except ValueError:  # e.g. an unbalanced "[" in the URL
        return ""


def ip_of(host: str) -> IPAddress | None:
    """The address a host string means to the resolver, without DNS: IPv4 in any form inet_aton reads
    (dotted, decimal 134744072, hex 0x08080808, octal, short 127.1) and IPv6 (scoped, IPv4-mapped)."""
    if not host:
        return None
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if all(part for part in host.split(".")) and all(c in "0123456789abcdefx." for c in host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _is_loopback(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback or address.is_unspecified  # 0.0.0.0 and :: connect to this machine


def is_local_host(base_url: str | None, confirmed: set[str] | frozenset[str] = frozenset()) -> bool:
    """True for loopback endpoints and hosts in `confirmed`; everything else may leave the machine."""
    host = host_of(base_url)
    if not host:
        return False
    if host in confirmed:
        return True
    address = ip_of(host)
    if address is not None:
        return _is_loopback(address)
    return host == "localhost" or host.endswith(".localhost")  # RFC 6761: always loopback


def remote_warning_text(base_url: str | None) -> str:
    """What to tell the user before images go to a non-local endpoint; names the real host."""
    host = host_of(base_url) or endpoint_url(base_url)
    return (
        f"Images will be sent to {host}, a server that is not this computer (from {endpoint_url(base_url)}). "
        "Do not send unpublished or confidential images unless you are allowed to share them with whoever "
        "runs that server; use a server on this computer (vLLM, `transformers serve` on 127.0.0.1) or the "
        "local transformers backend to keep them here."
    )


class Consent:
    """The hosts the user has confirmed in this process; one shared instance, `CONSENT`."""

    def __init__(self) -> None:
        self._confirmed: set[str] = set()
        self._lock = threading.Lock()

    def confirmed(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._confirmed)

    def warning(self, base_url: str | None) -> str | None:
        """The question to ask before sending to `base_url`; None when it is local or confirmed."""
        if is_local_host(base_url, self.confirmed()):
            return None
        return remote_warning_text(base_url)

    def confirm(self, base_url: str | None) -> None:
        """Record the user's yes for this endpoint's host (for the rest of the process)."""
        host = host_of(base_url)
        if host:
            with self._lock:
                self._confirmed.add(host)

    def forget(self) -> None:
        with self._lock:
            self._confirmed.clear()


CONSENT = Consent()


def key_variable(base_url: str | None, api_key_env: str = "") -> str | None:
    """The one environment variable whose key may be sent to `base_url` (None: no key goes there)."""
    named = (api_key_env or "").strip()
    if named:
        return named
    return PROVIDER_KEY_VARIABLES.get(host_of(base_url))


def resolve_api_key(base_url: str | None, api_key_env: str = "", explicit: str | None = None) -> str | None:
    """The key for this endpoint: one typed in for it, else the variable `key_variable` names, else None."""
    if explicit:
        return explicit
    variable = key_variable(base_url, api_key_env)
    return (os.environ.get(variable) or None) if variable else None


def missing_key_message(base_url: str | None, api_key_env: str = "") -> str:
    """Why no key was found for an endpoint that needs one, and how to give it."""
    host = host_of(base_url) or endpoint_url(base_url)
    variable = key_variable(base_url, api_key_env) or "NAME"
    return (
        f"no API key for {host}: ${variable} is not set. Set it in the environment (or name the variable "
        "that holds this server's key with --api-key-env NAME), or enter the key in the Analyze widget's "
        "backend settings"
    )


def require_key(base_url: str | None, api_key_env: str = "", explicit: str | None = None) -> str | None:
    """The key for this endpoint; RemoteHostError when one is expected (a named variable, a provider's
    own host) but not set. None for servers that need no key (vLLM, `transformers serve`): no key of
    another endpoint is ever sent in its place."""
    key = resolve_api_key(base_url, api_key_env, explicit)
    if key is None and key_variable(base_url, api_key_env) is not None:
        raise RemoteHostError(missing_key_message(base_url, api_key_env))
    return key
