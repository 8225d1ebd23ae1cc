"""The HTTP JSON front door of the inference service: aiohttp on its own thread and loop."""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import structlog
from aiohttp import hdrs, web

from fedstream.cloud.inference._tally import Tally
from fedstream.cloud.inference.access import Guard, RateLimitedError
from fedstream.cloud.inference.batcher import FAILED, MicroBatcher
from fedstream.shared.errors import (
    ConfigError,
    FedstreamError,
    ProtocolError,
    Reason,
    SecurityError,
)

log = structlog.get_logger(__name__)

VIA = "http"
# Bad input is the client's to fix (400); a full queue or no model yet is worth a retry (503).
_STATUS = {Reason.OVERLOADED: 503, Reason.NO_MODEL: 503, Reason.OVERSIZED: 413,
           Reason.UNAUTHORISED: 401, Reason.RATE_LIMITED: 429}
OPEN_PATHS = frozenset({"/healthz"})  # a load balancer's probe carries no token
_CHECK_FAILED = FedstreamError(Reason.INTERNAL, "the token check failed; see the service log")
_BYTES_PER_FEATURE = 32  # generous for a JSON number with its separator
_SHUTDOWN_S = 5.0


def parse_inputs(body: bytes, *, max_rows: int, cols: int) -> npt.NDArray[np.float32]:
    """The rows of a `{"inputs": [[number, ...], ...]}` request body as float32 [N, D].

    The row count and width are checked before any value is looked at, so a body of many
    tiny rows costs one list length, not a scan of every element.

    Raises:
        ProtocolError: BAD_FRAME for a body that is not JSON, not that shape, or holds
            anything but numbers (booleans and numeric strings included), or more than
            `max_rows` rows; SPEC_MISMATCH for rows not `cols` wide; NON_FINITE for a number
            too large for float32.
    """
    try:
        doc: Any = json.loads(body)
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError both derive from it
        raise ProtocolError(Reason.BAD_FRAME, f"body is not JSON: {err}") from err
    except RecursionError as err:  # [[[[...: nested deeper than the parser goes
        raise ProtocolError(Reason.BAD_FRAME, "body is nested too deeply") from err
    inputs = doc.get("inputs") if isinstance(doc, dict) else None
    if not (isinstance(inputs, list) and inputs and all(isinstance(r, list) for r in inputs)):
        raise ProtocolError(Reason.BAD_FRAME, 'expected {"inputs": [[number, ...], ...]}')
    if len(inputs) > max_rows:
        raise ProtocolError(Reason.BAD_FRAME, f"{len(inputs)} rows; at most {max_rows}")
    if any(len(row) != len(inputs[0]) for row in inputs):
        raise ProtocolError(Reason.BAD_FRAME, "rows of different lengths")
    if len(inputs[0]) != cols:
        raise ProtocolError(Reason.SPEC_MISMATCH,
                            f"{len(inputs[0])} features per row; the model takes {cols}")
    # numpy would quietly turn "1.5" and true into numbers; the API takes numbers only.
    if not all(type(v) is float or type(v) is int for row in inputs for v in row):
        raise ProtocolError(Reason.BAD_FRAME, "every feature must be a number")
    try:
        with np.errstate(over="ignore"):  # float32 overflow becomes inf, refused downstream
            return np.array(inputs, dtype=np.float32)
    except OverflowError as err:
        raise ProtocolError(Reason.NON_FINITE, "a feature does not fit a float") from err


class HttpApi:
    """`POST /v1/predict`, `GET /v1/model` and `GET /healthz` over the micro-batcher.

    Args:
        batcher: Answers the requests.
        tally: Counts served and rejected requests.
        host: Bind address.
        port: Bind port; 0 picks a free one, read it from `port` after `start`.
        guard: Admits requests to every path but `/healthz` (401, 429 otherwise); None
            admits all.
        tls: Serve HTTPS with this context; None serves plain HTTP.
    """

    def __init__(self, *, batcher: MicroBatcher, tally: Tally, host: str, port: int,
                 guard: Guard | None = None, tls: ssl.SSLContext | None = None) -> None:
        self._batcher, self._tally = batcher, tally
        self._host, self._port = host, port
        self._guard, self._tls = guard, tls
        # Room for the largest request the batcher takes, and never below aiohttp's 1 MiB.
        self._max_body = max(1 << 20, batcher.params.max_rows * batcher.params.cols
                             * _BYTES_PER_FEATURE)
        self._ready = threading.Event()
        self._stop_asked = threading.Event()
        self._failure: FedstreamError | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port once started (the configured one before)."""
        return self._port

    def start(self, timeout_s: float = 10.0) -> None:
        """Bind and serve on a new thread; returns once the socket listens.

        Raises:
            ConfigError: BAD_CONFIG when the address cannot be bound.
        """
        self._thread = threading.Thread(target=self._main, name="infer-http", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise ConfigError(Reason.BAD_CONFIG,
                              f"http {self._host}:{self._port} did not start in {timeout_s}s")
        if self._failure is not None:
            self._thread.join()
            raise self._failure

    def stop(self) -> None:
        """Close the listener and connections, then end the thread (again: no-op). Safe
        after a `start` that timed out: a late bind sees the request and closes at once."""
        self._stop_asked.set()
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._loop = None
        if self._thread is not None:
            self._thread.join()

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._serve(loop))
        finally:
            loop.close()

    async def _serve(self, loop: asyncio.AbstractEventLoop) -> None:
        middlewares = [] if self._guard is None else [self._admit]
        app = web.Application(client_max_size=self._max_body, middlewares=middlewares)
        app.add_routes([web.post("/v1/predict", self._predict),
                        web.get("/v1/model", self._model),
                        web.get("/healthz", self._health)])
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=_SHUTDOWN_S)
        await runner.setup()
        try:
            try:
                await web.TCPSite(runner, self._host, self._port, ssl_context=self._tls).start()
            except OSError as err:
                self._failure = ConfigError(Reason.BAD_CONFIG,
                                            f"http {self._host}:{self._port}: {err}")
                return
            self._port = int(runner.addresses[0][1])
            self._loop, self._stopping = loop, asyncio.Event()
            log.info("http_started", host=self._host, port=self._port)
            self._ready.set()
            if not self._stop_asked.is_set():  # else stop() came before the loop was known
                await self._stopping.wait()
        finally:
            self._ready.set()
            await runner.cleanup()
            if self._guard is not None:
                self._guard.close()
            log.info("http_stopped", port=self._port)

    @web.middleware
    async def _admit(self, request: web.Request,
                     handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
                     ) -> web.StreamResponse:
        assert self._guard is not None  # the middleware is installed only with a guard
        if request.path not in OPEN_PATHS:
            try:
                self._guard.admit(request.headers.get(hdrs.AUTHORIZATION), path=request.path,
                                  peer=request.remote or "?")
            except SecurityError as err:  # the guard flood-logs these itself
                self._tally.rejected(VIA, str(err.reason))
                return _refusal(err)
            except FedstreamError as err:  # the token file failed: refuse, keep its path here
                self._tally.rejected(VIA, str(err.reason))
                log.error("infer_rejected", via=VIA, reason=str(err.reason), detail=err.detail)
                return _refusal(_CHECK_FAILED)
        return await handler(request)

    async def _predict(self, request: web.Request) -> web.Response:
        arrived = time.monotonic()
        try:
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge as err:
                raise ProtocolError(Reason.OVERSIZED,
                                    f"body over {self._max_body} bytes") from err
            rows = parse_inputs(body, max_rows=self._batcher.params.max_rows,
                                cols=self._batcher.params.cols)
            answer = await asyncio.wrap_future(self._batcher.submit(rows))
        except FedstreamError as err:
            self._tally.rejected(VIA, str(err.reason))
            log.info("infer_rejected", via=VIA, reason=str(err.reason), detail=err.detail)
            return _refusal(err)
        except Exception as err:  # the per-request guard: a failed pass answers 500, not a crash
            self._tally.rejected(VIA, str(Reason.INTERNAL))
            log.exception("infer_rejected", via=VIA, reason=str(Reason.INTERNAL),
                          detail=repr(err))
            return _refusal(FAILED)
        self._tally.served(VIA, time.monotonic() - arrived)
        return web.json_response({"version": answer.version,
                                  "predictions": answer.predictions.tolist(),
                                  "scores": answer.scores.tolist()})

    async def _model(self, _request: web.Request) -> web.Response:
        model = self._batcher.model
        if model is None:
            return _refusal(FedstreamError(Reason.NO_MODEL, "no model version is served yet"))
        return web.json_response({"version": model.version, "precision": model.precision,
                                  "backend": model.backend.name})

    async def _health(self, _request: web.Request) -> web.Response:
        return web.json_response({"ok": True})


def _refusal(err: FedstreamError) -> web.Response:
    status = _STATUS.get(err.reason, 400 if isinstance(err, ProtocolError) else 500)
    headers = ({"Retry-After": str(err.retry_after_s)} if isinstance(err, RateLimitedError)
               else {"Retry-After": "1"} if status == 503
               else {"WWW-Authenticate": 'Bearer realm="fedstream"'} if status == 401 else None)
    return web.json_response({"ok": False, "reason": str(err.reason), "detail": err.detail},
                             status=status, headers=headers)
