"""The server's one error type. A refusal is a one-line message (what is wrong and what to do)
and its kind; the kind gives the HTTP status, the same on every route but for one kind: the Open
Inference Protocol (the /v2/ routes) answers a request it cannot take with a 400 where the REST
routes answer 422."""

from __future__ import annotations

from gsearch import GsearchError

STATUS = {"malformed": 400, "not_found": 404, "not_allowed": 405, "timeout": 408,
          "too_large": 413, "media_type": 415, "invalid": 422, "busy": 503, "no_space": 507}
V2_PREFIX = "/v2/"  # the Open Inference Protocol's routes


class RequestError(GsearchError):
    """A request the server refuses: a one-line message, its kind (a key of STATUS) and the
    headers to send with it (Retry-After)."""

    def __init__(self, message: str, kind: str = "invalid", *,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.kind, self.headers = kind, headers


def status_of(kind: str, path: str) -> int:
    """The HTTP status of a refusal of this kind on the route at `path`."""
    if kind == "invalid" and path.startswith(V2_PREFIX):
        return 400  # the protocol's status for a bad request
    return STATUS[kind]


def too_large(max_bytes: int) -> str:
    """The refusal of a body over --max-upload-mb."""
    return (f"request body over the {max_bytes / 2**20:g} MB limit (--max-upload-mb); "
            "send a smaller file or fewer rows")


def out_of_space() -> RequestError:
    """The refusal of an upload that the server's temporary folder has no room for."""
    return RequestError("the server is out of disk space for uploads (its TMPDIR is full); retry "
                        "later, or ask its operator to free space", "no_space")
