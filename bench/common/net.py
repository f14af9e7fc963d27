"""Free ports and HTTP polls on this host, never through a proxy from the environment."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    """An unused TCP port of 127.0.0.1 (the kernel's pick; a small race, fine here)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """Status and body of a GET; an HTTP error status is an answer, not an exception."""
    try:
        with OPENER.open(url, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_ok(url: str, timeout_s: float, interval_s: float = 0.5) -> None:
    """Poll ``url`` until it answers 200; ``TimeoutError`` with the last answer."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while True:
        try:
            status, body = http_get(url)
        except OSError as exc:
            status, body = 0, str(exc).encode()
        if status == 200:
            return
        last = f"{status} {body[:300].decode(errors='replace')}"
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} not ready after {timeout_s:.0f} s ({last})")
        time.sleep(interval_s)
