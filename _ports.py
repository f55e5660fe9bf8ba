"""Whether a server can listen on host:port, asked before it starts: `gsearch serve`,
`dashboard` and `serve-storage` refuse a taken port (or an address that is not this machine's)
in one line instead of a traceback from deep inside their server library."""

from __future__ import annotations

import os
import socket

from gsearch import GsearchError


def check_port(host: str, port: int, *, server: str = "") -> None:
    """Fail with one line now if host:port cannot be bound; `server` names what would listen
    there in the message ("the dashboard")."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        socket.create_server((host, port), family=family).close()
    except OSError as e:
        reason = os.strerror(e.errno) if e.errno else str(e)
        what = f" {server}" if server else ""
        raise GsearchError(f"cannot serve{what} on {host}:{port} ({reason}); "
                           "choose another --port") from None
