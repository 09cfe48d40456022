"""Refuse network connections in the offline profiles, so a hidden download fails loudly.

The embedded and smoke profiles must never reach the network. ``CLIPNB_OFFLINE=1`` (set by the
Makefile for those profiles and by the test suite) makes any socket connection to a non-loopback
address raise, in this process and in every notebook kernel that imports clipnb.
"""

from __future__ import annotations

import ipaddress
import os
import socket

_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


class NetworkBlockedError(RuntimeError):
    """Raised when code tries to reach the network in an offline profile."""


def _is_loopback(address: object) -> bool:
    if isinstance(address, tuple) and address:
        host = address[0]
    elif isinstance(address, str | bytes):
        return True  # AF_UNIX path: local by definition
    else:
        return False
    if isinstance(host, bytes):
        host = host.decode()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_original_connect = socket.socket.connect
_original_connect_ex = socket.socket.connect_ex


def _guarded_connect(self: socket.socket, address: object) -> None:
    if not _is_loopback(address):
        raise NetworkBlockedError(
            f"clipnb is offline (CLIPNB_OFFLINE=1) and refused a connection to {address!r}. "
            "The embedded and smoke profiles must not download anything; use PROFILE=full with a "
            "local weights cache for pretrained models."
        )
    return _original_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: object) -> int:
    if not _is_loopback(address):
        _guarded_connect(self, address)  # raises with the explanation
    return _original_connect_ex(self, address)


def block_network() -> None:
    """Patch ``socket.connect`` so that only loopback connections succeed."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]


def offline_requested() -> bool:
    return os.environ.get("CLIPNB_OFFLINE", "") == "1"
