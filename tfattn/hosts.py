"""Whether a download host resolves, so that offline loads fail in a second with one line
instead of after minutes of library retries and tracebacks."""

import socket


def host_resolves(host: str) -> bool:
    """True when `host` has an address (DNS answers); False offline."""
    try:
        socket.getaddrinfo(host, 443)
        return True
    except OSError:
        return False
