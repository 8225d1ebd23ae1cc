"""Who may use the HTTP door: TLS on the wire, then a live bearer token under its rate."""

from __future__ import annotations

import math
import ssl
import time
from collections.abc import Callable
from pathlib import Path

from fedstream.cloud.inference.rate import RateLimiter
from fedstream.cloud.rejections import RejectionLog
from fedstream.shared.errors import ConfigError, Reason, SecurityError

# One log bucket for every refused credential: keying the flood log by peer address would let
# a client with many addresses grow it.
UNAUTHENTICATED = "unauthenticated"


class RateLimitedError(SecurityError):
    """RATE_LIMITED, with the whole seconds a client should wait (HTTP `Retry-After`).

    Args:
        detail: What was exceeded.
        retry_after_s: Seconds until the next request would be allowed, rounded up, >= 1.
    """

    def __init__(self, detail: str, *, retry_after_s: int) -> None:
        super().__init__(Reason.RATE_LIMITED, detail)
        self.retry_after_s = retry_after_s


class Guard:
    """Admits a request carrying `Authorization: Bearer <token>` of a live token that is
    under its rate; counts and flood-logs (`cloud/rejections.py`) those it refuses.

    Args:
        check: The token's name for a secret; raises SecurityError (UNAUTHORISED) for an
            unknown or revoked one (`TokenStore.check`).
        limiter: A bucket per token name.
        clock: Monotonic seconds, for the buckets and the log intervals.
    """

    def __init__(self, *, check: Callable[[str], str], limiter: RateLimiter,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._check, self._limiter, self._clock = check, limiter, clock
        self._rejections = RejectionLog()

    def admit(self, authorization: str | None, *, path: str, peer: str) -> str:
        """The calling token's name, once its token is live and one request is spent.

        Args:
            authorization: The request's `Authorization` header, if any.
            path: The request path (logged with a refusal).
            peer: The client address (logged with a refusal, never sent back).

        Raises:
            SecurityError: UNAUTHORISED without a bearer token, or with an unknown or
                revoked one.
            RateLimitedError: RATE_LIMITED when the token is over its rate.
        """
        now = self._clock()
        self._rejections.flush(now)
        scheme, _, secret = (authorization or "").strip().partition(" ")
        try:
            if scheme.lower() != "bearer" or not secret.strip():
                raise SecurityError(Reason.UNAUTHORISED,
                                    "send the header Authorization: Bearer <token>")
            name = self._check(secret.strip())
        except SecurityError as err:
            self._refused(err, sender=UNAUTHENTICATED, path=path, peer=peer, now=now)
            raise
        wait = self._limiter.take(name, now)
        if wait > 0:
            params = self._limiter.params
            over = RateLimitedError(f"over {params.rate_per_s:g} requests/s (burst "
                                    f"{params.burst}); retry in {wait:.2f} s",
                                    retry_after_s=max(1, math.ceil(wait)))
            self._refused(over, sender=name, path=path, peer=peer, now=now)
            raise over
        return name

    def close(self) -> None:
        """Log the summary of every interval still open (the door is closing).

        The log closes only intervals that ended, so the clock is put past the end of all;
        their `seconds` then read up to one interval long (never `inf`: that is no JSON).
        """
        self._rejections.flush(self._clock() + self._rejections.interval_s)

    def _refused(self, err: SecurityError, *, sender: str, path: str, peer: str,
                 now: float) -> None:
        self._rejections.record(sender=sender, reason=str(err.reason), topic=path,
                                detail=f"{err.detail} (peer {peer})", now=now)


def server_tls(cert: Path, key: Path) -> ssl.SSLContext:
    """A server TLS context from a certificate chain and its key; TLS 1.2 at least.

    Raises:
        ConfigError: BAD_CONFIG when a file is missing or not a certificate or its key.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certfile=str(cert), keyfile=str(key))
    except (OSError, ValueError) as err:  # ssl.SSLError is an OSError
        raise ConfigError(Reason.BAD_CONFIG, f"inference TLS files {cert}, {key}: {err}",
                          ) from err
    return context
