"""What bounds the server's memory and keeps /health answering, whatever the requests.

- BodyLimit caps a request body at --max-upload-mb while it streams in, and gives it
  --body-timeout seconds to arrive from its first byte read (408 after: a client sending a byte
  a second holds no slot for good).
- A JSON body waits, unread, until the values it may hold fit in a budget of --max-values per
  CPU (answer_body: from its Content-Length a value takes at least 2 bytes; at most --max-values,
  so at most one big body per CPU is in memory, whatever the model's width; one that can hold at
  most SMALL_VALUES values, or one row of the model, goes straight through). It is handled in a worker thread, where
  check_json_size bounds its nesting (MAX_DEPTH), its arrays and objects (the rows allowed: each
  row is one) and its values (rows x features, the rows allowed being --max-rows and at most
  --max-values / features) from a numpy scan of its bytes, so an oversized body is refused (413)
  before a Python object is built for each of its values.
- An upload waits until its samples fit in DECODE_BUDGET (the most one upload may have; each
  takes at least a CPU's share) and is decoded in a worker thread.
- At most MAX_WAITING requests wait for either (Slots); one more is answered 503 with Retry-After.
- After a heavy request, give_back_memory hands what it freed back to the system.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
from contextlib import asynccontextmanager
from typing import Callable

import numpy as np
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request

from gsearch.serve.errors import RequestError, too_large

MAX_DEPTH = 32       # JSON nesting refused beyond this (a request needs 4; parameters some more)
SLACK = 64           # arrays/objects a body may hold beside its rows (inputs, outputs, parameters)
SMALL_VALUES = 4096  # JSON bodies that can hold at most this many values go straight through
MAX_WAITING = 64     # heavy requests waiting for a slot, per process; beyond, 503 and Retry-After
RETRY_AFTER_S = 2    # the Retry-After of that 503
DECODE_BUDGET = 600 * 48_000 * 2  # samples decoded at once, all uploads together: the most one
                                  # upload may hold (data.audio: 10 min of 48 kHz stereo)


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, None elsewhere (macOS, musl)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_TRIM = _malloc_trim()


def give_back_memory() -> None:
    """Hand the heap memory freed by a heavy request back to the system. glibc's malloc keeps
    what a thread freed in that thread's arena, and the server's worker threads are many: without
    this, the RSS left after big requests adds up, request after request."""
    if _TRIM is not None:
        _TRIM(0)


class BodyLimit:
    """ASGI middleware capping request bodies at `max_bytes` while they stream in: a declared
    Content-Length over the cap is answered 413 before any byte is read; a body that streams
    past it (chunked, or longer than declared) stops being read with a 413."""

    def __init__(self, app, *, max_bytes: int, timeout_s: float):
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            message = {"error": too_large(self.max_bytes)}
            return await JSONResponse(message, status_code=413)(scope, receive, send)
        received, deadline, complete = 0, None, False

        async def limited_receive():
            nonlocal received, deadline, complete
            if complete:  # the body is in: waiting for a disconnect is not bounded here
                return await receive()
            loop = asyncio.get_running_loop()
            deadline = deadline or loop.time() + self.timeout_s  # from the first read
            try:
                message = await asyncio.wait_for(receive(), deadline - loop.time())
            except TimeoutError:  # FastAPI passes an HTTPException on as it is
                raise HTTPException(408) from None
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:  # FastAPI passes an HTTPException on as it is
                    raise HTTPException(413)
            return message

        await self.app(scope, limited_receive, send)


class Slots:
    """An asyncio semaphore of `total` units, taken in order of arrival (a big request is not
    passed over forever by small ones), `least` units at least per holder, at most `total`. At
    most MAX_WAITING requests wait; one more is answered 503 with Retry-After at once."""

    def __init__(self, total: int, what: str, *, least: int = 1):
        self.total, self.what, self.least = total, what, max(1, min(least, total))
        self.used = self.waiting = 0
        self._line = asyncio.Lock()          # FIFO: the first in line waits for room
        self._room = asyncio.Condition()

    @asynccontextmanager
    async def take(self, units: int | None = 1):
        units = self.total if units is None else max(self.least, min(units, self.total))
        if self.waiting >= MAX_WAITING:
            raise RequestError(f"the server is busy ({self.waiting} {self.what} waiting); retry in "
                               f"{RETRY_AFTER_S} s", "busy",
                               headers={"Retry-After": str(RETRY_AFTER_S)})
        self.waiting += 1
        try:
            async with self._line:
                async with self._room:
                    await self._room.wait_for(lambda: self.used + units <= self.total)
                    self.used += units
        finally:
            self.waiting -= 1
        try:
            yield
        finally:
            async with self._room:
                self.used -= units
                self._room.notify_all()


async def read_body(request: Request) -> bytearray:
    """The request's body, grown in place as it streams in (Starlette's request.body() joins its
    chunks: for a moment twice the body in memory)."""
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
    except ClientDisconnect:  # nobody left to answer: no traceback in the log either
        raise RequestError("the client closed the connection before its body was complete",
                           "malformed") from None
    return body


async def answer_body(request: Request, slots: Slots, *, max_values: int, n_features: int,
                      answer: Callable[[bytearray, str], bytes | Response]) -> Response:
    """answer(body, content type), JSON bytes (or a Response) made in a worker thread. Before its
    body is read, the request takes the values it may hold from `slots` (a value is at least 2
    bytes; a body of unknown length may hold `max_values`, a request's worth). One with room for
    at most SMALL_VALUES values, or a row of short numbers of the model (8 bytes a value), goes
    straight through."""
    kind = request.headers.get("content-type", "")
    length = request.headers.get("content-length", "")
    values = -(-int(length) // 2) if length.isdigit() else max_values
    if values <= max(SMALL_VALUES, 4 * n_features):  # cheap: never waits behind big ones (the
        # thread pool bounds how many are handled at once)
        raw = await read_body(request)
        return _response(await run_in_threadpool(answer, raw, kind))
    async with slots.take(min(values, max_values)):
        raw = await read_body(request)  # at most --max-upload-mb (BodyLimit)
        body = await run_in_threadpool(_answer_big, answer, raw, kind)
    del raw  # not kept while the answer is sent
    return _response(body)


def _response(body: bytes | Response) -> Response:
    return body if isinstance(body, Response) else Response(body, media_type="application/json")


def too_slow(timeout_s: float) -> RequestError:
    """The refusal of a body that did not arrive within --body-timeout."""
    return RequestError(f"the request body did not arrive within {timeout_s:g} s (--body-timeout);"
                        " send it faster, or split it", "timeout", headers={"Connection": "close"})


def _answer_big(answer: Callable[[bytearray, str], bytes | Response], raw: bytearray,
                kind: str) -> bytes | Response:
    try:
        return answer(raw, kind)
    finally:
        give_back_memory()


def scan_json(raw: bytes, chunk: int = 1 << 20) -> tuple[int, int, int]:
    """(deepest nesting, arrays and objects, commas) of a JSON text, counted outside strings by
    a few numpy passes over each 1 MB of bytes: no Python object per value. Escaped backslashes
    and quotes are dropped first, so every quote left opens or closes a string."""
    if b"\\" in raw:  # copies of the body only where it has escapes
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    inside, depth, deepest, containers, commas = 0, 0, 0, 0, 0
    for start in range(0, len(raw), chunk):
        b = np.frombuffer(raw, np.uint8, count=min(chunk, len(raw) - start), offset=start)
        parity = (np.cumsum(b == 34, dtype=np.int64) + inside) & 1  # 1: inside a string
        outside = parity == 0
        opens = ((b == 91) | (b == 123)) & outside
        closes = ((b == 93) | (b == 125)) & outside
        levels = depth + np.cumsum(opens.view(np.int8) - closes.view(np.int8), dtype=np.int64)
        deepest = max(deepest, int(levels.max()))
        depth, inside = int(levels[-1]), int(parity[-1])
        containers += int(np.count_nonzero(opens))
        commas += int(np.count_nonzero((b == 44) & outside))
    return deepest, containers, commas


def check_json_size(raw: bytes, *, max_rows: int, n_features: int, example: str) -> None:
    """Refuse a JSON body whose bytes hold more than a request may (nesting, rows, values)
    before it is parsed: RequestError (400 for the nesting, 413 for the rest)."""
    deepest, containers, commas = scan_json(raw)
    if deepest > MAX_DEPTH:
        raise RequestError(f"the JSON is nested {deepest} deep, more than the {MAX_DEPTH} "
                           f"allowed; send {example}", "malformed")
    if containers > max(max_rows, 3 * n_features) + SLACK:  # or 3 per feature's own tensor
        raise RequestError(f"the body holds {containers} JSON arrays and objects, more than the "
                           f"{max_rows} rows allowed (--max-rows; each row is one); split the "
                           "request", "too_large")
    if commas > (max_rows + 1) * (n_features + 4) + 8 * n_features + SLACK:
        raise RequestError(f"the body holds over {commas} values, more than {max_rows} rows of "
                           f"{n_features} features (--max-rows, --max-values); split the request",
                           "too_large")
