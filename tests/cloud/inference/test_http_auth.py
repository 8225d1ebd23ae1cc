"""HTTPS and bearer tokens on the HTTP inference door (cloud/inference/access.py, http_api.py,
the `[inference]` wiring): a real server on 127.0.0.1, real TLS handshakes, a real client."""

from __future__ import annotations

import http.client
import json
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import torch
from structlog.testing import capture_logs

from fedstream.broker import Mosquitto
from fedstream.cloud.config import CloudConfig, InferenceConfig
from fedstream.cloud.inference import BatcherParams, InferenceServer, MicroBatcher, ServedModel
from fedstream.cloud.inference._tally import Tally
from fedstream.cloud.inference.access import Guard, RateLimitedError, server_tls
from fedstream.cloud.inference.http_api import HttpApi
from fedstream.cloud.inference.rate import RateLimiter, RateParams
from fedstream.cloud.inference.tokens import TokenStore
from fedstream.shared.config import load_config
from fedstream.shared.errors import ConfigError, Reason
from fedstream.shared.protocol.arch import Architecture
from fedstream.shared.protocol.connection import Connection
from fedstream.shared.protocol.topics import Topics
from fedstream.shared.security.pki import Role, init_ca, issue

Rows = Callable[[int], npt.NDArray[np.float32]]
Reply = tuple[int, dict[str, str], Any]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA and the server's certificate for 127.0.0.1 (the broker role: server auth)."""
    root = tmp_path_factory.mktemp("http-pki")
    init_ca(root, "lab")
    issue(root, "broker", Role.BROKER, hosts=("127.0.0.1",))
    return root


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another federation's CA certificate, which did not sign the server's."""
    return init_ca(tmp_path_factory.mktemp("other-pki"), "elsewhere")


def _client_tls(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


def _call(port: int, method: str, path: str, *, token: str | None = None,
          body: bytes | None = None, tls: ssl.SSLContext | None = None) -> Reply:
    """One request to 127.0.0.1:`port` (HTTPS with `tls`), `token` as its Authorization."""
    conn = (http.client.HTTPConnection("127.0.0.1", port, timeout=10) if tls is None
            else http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=tls))
    headers = {"Content-Type": "application/json"} if body else {}
    if token is not None:
        headers["Authorization"] = token
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), json.loads(response.read())
    finally:
        conn.close()


def _predict(port: int, rows: npt.NDArray[np.float32], **kw: Any) -> Reply:
    return _call(port, "POST", "/v1/predict", body=json.dumps({"inputs": rows.tolist()}).encode(),
                 **kw)


class _Door:
    """A started batcher + HTTP API with a guard over a token store, optionally over TLS."""

    def __init__(self, *, tokens: TokenStore, rate: RateParams, tls: ssl.SSLContext | None,
                 clock: Callable[[], float] | None) -> None:
        self.batcher = MicroBatcher(BatcherParams(cols=8))
        self.tally = Tally()
        limiter = RateLimiter(rate)
        guard = (Guard(check=tokens.check, limiter=limiter) if clock is None
                 else Guard(check=tokens.check, limiter=limiter, clock=clock))
        self.api = HttpApi(batcher=self.batcher, tally=self.tally, host="127.0.0.1", port=0,
                           guard=guard, tls=tls)

    def call(self, method: str, path: str, **kw: Any) -> Reply:
        return _call(self.api.port, method, path, **kw)

    def predict(self, rows: npt.NDArray[np.float32], **kw: Any) -> Reply:
        return _predict(self.api.port, rows, **kw)


@pytest.fixture
def tokens(tmp_path: Path) -> Iterator[TokenStore]:
    """An empty token store in this test's data directory."""
    with TokenStore.open(tmp_path) as store:
        yield store


@pytest.fixture
def door(tokens: TokenStore, served: Callable[[int], ServedModel],
         started: Callable[[_Door], _Door]) -> Callable[..., _Door]:
    """Starts guarded doors serving version 1 (plain HTTP unless given TLS), stopped after
    the test."""
    def make(*, rate: RateParams | None = None, tls: ssl.SSLContext | None = None,
             clock: Callable[[], float] | None = None) -> _Door:
        d = started(_Door(tokens=tokens, rate=rate or RateParams(rate_per_s=1000.0, burst=1000),
                          tls=tls, clock=clock))
        d.batcher.swap(served(1))
        d.batcher.start()
        d.api.start()
        return d

    return make


def test_no_token_is_401_with_a_bearer_challenge_and_health_stays_open(
    door: Callable[..., _Door], rows: Rows
) -> None:
    """Without a token, predict and the model view answer 401 with WWW-Authenticate: Bearer;
    /healthz answers 200 and nothing reaches the batcher."""
    # Prepare
    d = door()

    # Execute
    predict = d.predict(rows(1))
    model = d.call("GET", "/v1/model")
    health = d.call("GET", "/healthz")

    # Assert
    for status, headers, body in (predict, model):
        assert (status, body["ok"], body["reason"]) == (401, False, "unauthorised")
        assert headers["WWW-Authenticate"].startswith("Bearer")
    assert (health[0], health[2]) == (200, {"ok": True})
    counts = d.tally.snapshot()
    assert (counts["reason.unauthorised"], counts["rejected.http"], counts["served"]) == (2, 2, 0)


@pytest.mark.parametrize("header", ["fst_x", "Basic dXNlcjpwdw==", "Bearer", "Bearer fst_nope",
                                    "Bearer " + "fst_" + "A" * 43],
                         ids=["no-scheme", "basic", "empty-bearer", "malformed", "unknown"])
def test_a_bad_credential_is_401(door: Callable[..., _Door], tokens: TokenStore, rows: Rows,
                                 header: str) -> None:
    """Another scheme, an empty bearer, or a secret no live token has: 401 unauthorised."""
    # Prepare
    d = door()
    tokens.create("ci-bot")

    # Execute
    status, headers, body = d.predict(rows(1), token=header)

    # Assert
    assert (status, body["reason"]) == (401, "unauthorised")
    assert "WWW-Authenticate" in headers


def test_a_good_token_is_served(door: Callable[..., _Door], tokens: TokenStore,
                                served: Callable[[int], ServedModel], rows: Rows) -> None:
    """A live token's request is answered 200 with the served version's predictions; the
    scheme is case-insensitive."""
    # Prepare
    d = door()
    secret = tokens.create("ci-bot")
    x = rows(2)

    # Execute
    status, _, body = d.predict(x, token=f"Bearer {secret}")
    view = d.call("GET", "/v1/model", token=f"bearer {secret}")

    # Assert
    assert (status, body["version"]) == (200, 1)
    assert body["predictions"] == served(1).predict(x)[0].tolist()
    assert (view[0], view[2]["version"]) == (200, 1)
    assert d.tally.snapshot()["served.http"] == 1


def test_a_token_revoked_by_another_store_is_refused_at_its_next_request(
    door: Callable[..., _Door], tokens: TokenStore, tmp_path: Path, rows: Rows
) -> None:
    """A second TokenStore on the same file (another process, to SQLite) revokes the token
    between two requests: the first is 200, the second 401."""
    # Prepare
    d = door()
    secret = tokens.create("ci-bot")
    before, _, _ = d.predict(rows(1), token=f"Bearer {secret}")

    # Execute
    with TokenStore.open(tmp_path) as other:
        other.revoke("ci-bot")
    after, headers, body = d.predict(rows(1), token=f"Bearer {secret}")

    # Assert
    assert (before, after, body["reason"]) == (200, 401, "unauthorised")
    assert "WWW-Authenticate" in headers


def test_over_the_rate_is_429_with_retry_after_per_token(
    door: Callable[..., _Door], tokens: TokenStore, rows: Rows
) -> None:
    """At 0.5 requests/s with a burst of 2 (the clock stopped), a token's third request is
    429 with Retry-After 2; another token still has its own burst."""
    # Prepare
    d = door(rate=RateParams(rate_per_s=0.5, burst=2), clock=lambda: 100.0)
    busy, calm = tokens.create("busy"), tokens.create("calm")

    # Execute
    replies = [d.predict(rows(1), token=f"Bearer {busy}") for _ in range(3)]
    other, _, _ = d.predict(rows(1), token=f"Bearer {calm}")

    # Assert
    assert [r[0] for r in replies] == [200, 200, 429]
    _, headers, body = replies[2]
    assert (body["ok"], body["reason"]) == (False, "rate_limited")
    assert headers["Retry-After"] == "2"
    assert other == 200
    counts = d.tally.snapshot()
    assert (counts["reason.rate_limited"], counts["served.http"]) == (1, 3)


def test_a_failing_token_store_refuses_with_500_and_keeps_its_detail(
    door: Callable[..., _Door], tokens: TokenStore, tmp_path: Path, rows: Rows
) -> None:
    """When the token file cannot be read the request is refused (500 internal, fail
    closed), counted as store_failed; the SQLite detail stays in the log."""
    # Prepare
    d = door()
    secret = tokens.create("ci-bot")
    tokens.close()

    # Execute
    with capture_logs() as logs:
        status, _, body = d.predict(rows(1), token=f"Bearer {secret}")

    # Assert
    assert (status, body["reason"]) == (500, "internal")
    assert str(tmp_path) not in body["detail"] and "closed" not in body["detail"]
    assert [e["reason"] for e in logs if e["event"] == "infer_rejected"] == ["store_failed"]
    assert d.tally.snapshot()["reason.store_failed"] == 1


@pytest.mark.parametrize(("rate_per_s", "retry_after_s"), [(1000.0, 1), (0.5, 2), (0.3, 4)],
                         ids=["sub-second", "whole", "rounded-up"])
def test_retry_after_is_the_wait_rounded_up_to_whole_seconds(rate_per_s: float,
                                                             retry_after_s: int) -> None:
    """A token over its burst of 1 is told to wait 1/rate seconds, rounded up, at least 1."""
    # Prepare
    guard = Guard(check=lambda _secret: "ci-bot", clock=lambda: 5.0,
                  limiter=RateLimiter(RateParams(rate_per_s=rate_per_s, burst=1)))
    guard.admit("Bearer fst_any", path="/v1/predict", peer="127.0.0.1")

    # Execute
    with pytest.raises(RateLimitedError) as info:
        guard.admit("Bearer fst_any", path="/v1/predict", peer="127.0.0.1")

    # Assert
    assert info.value.reason is Reason.RATE_LIMITED
    assert info.value.retry_after_s == retry_after_s


def test_a_flood_of_refusals_logs_one_line_and_a_summary(
    door: Callable[..., _Door], rows: Rows
) -> None:
    """Twenty unauthorised requests count twenty rejections but log one message_rejected and,
    when the door closes, one rejections_summarized with the other nineteen."""
    # Prepare
    d = door()

    # Execute
    with capture_logs() as logs:
        for _ in range(20):
            d.predict(rows(1), token="Bearer fst_wrong")
        d.api.stop()

    # Assert
    rejected = [e for e in logs if e["event"] == "message_rejected"]
    summaries = [e for e in logs if e["event"] == "rejections_summarized"]
    assert len(rejected) == 1
    assert rejected[0]["reason"] == "unauthorised" and "peer 127.0.0.1" in rejected[0]["detail"]
    assert [(s["reason"], s["count"]) for s in summaries] == [("unauthorised", 19)]
    assert d.tally.snapshot()["reason.unauthorised"] == 20


def test_https_with_a_good_token_is_served(door: Callable[..., _Door], tokens: TokenStore,
                                           pki: Path, rows: Rows) -> None:
    """Over TLS with a client trusting the federation CA, a good token gets 200."""
    # Prepare
    d = door(tls=server_tls(pki / "broker.crt", pki / "broker.key"))
    secret = tokens.create("ci-bot")

    # Execute
    status, _, body = d.predict(rows(1), token=f"Bearer {secret}", tls=_client_tls(pki / "ca.crt"))
    refused, _, _ = d.predict(rows(1), tls=_client_tls(pki / "ca.crt"))

    # Assert
    assert (status, body["version"]) == (200, 1)
    assert refused == 401


def test_plain_http_to_the_tls_port_fails_and_the_port_keeps_serving(
    door: Callable[..., _Door], tokens: TokenStore, pki: Path, rows: Rows
) -> None:
    """A plain-HTTP request to the HTTPS port gets no HTTP answer; HTTPS still works after."""
    # Prepare
    d = door(tls=server_tls(pki / "broker.crt", pki / "broker.key"))
    secret = tokens.create("ci-bot")

    # Execute
    with pytest.raises(ConnectionError):  # closed without an answer (RemoteDisconnected)
        d.call("GET", "/healthz")
    after, _, _ = d.predict(rows(1), token=f"Bearer {secret}", tls=_client_tls(pki / "ca.crt"))

    # Assert
    assert after == 200


def test_a_client_trusting_another_ca_refuses_the_server(
    door: Callable[..., _Door], pki: Path, other_ca: Path
) -> None:
    """A client that trusts only another federation's CA fails certificate verification."""
    # Prepare
    d = door(tls=server_tls(pki / "broker.crt", pki / "broker.key"))

    # Execute
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        d.call("GET", "/healthz", tls=_client_tls(other_ca))

    # Assert
    assert info.value.verify_message == "unable to get local issuer certificate"


def test_server_tls_needs_tls_1_2_and_loadable_files(pki: Path, tmp_path: Path) -> None:
    """The context refuses anything older than TLS 1.2; a missing key or a key that does not
    match the certificate is BAD_CONFIG naming the files."""
    # Prepare
    issue(pki, "stranger", Role.BROKER, hosts=("127.0.0.1",))

    # Execute
    context = server_tls(pki / "broker.crt", pki / "broker.key")
    with pytest.raises(ConfigError) as missing:
        server_tls(pki / "broker.crt", tmp_path / "none.key")
    with pytest.raises(ConfigError) as mismatched:
        server_tls(pki / "broker.crt", pki / "stranger.key")

    # Assert
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    for info in (missing, mismatched):
        assert info.value.reason is Reason.BAD_CONFIG
        assert "broker.crt" in info.value.detail


@pytest.fixture
def secured_server(broker: Mosquitto, federation: str, arch: Architecture, pki: Path,
                   tokens: TokenStore) -> Iterator[InferenceServer]:
    """A started server whose `[inference]` says auth = "token", one request per 1000 s with
    a burst of 1, and TLS with the server certificate."""
    cfg = InferenceConfig(http_port=0, precision="fp32", auth="token", rate_per_s=0.001,
                          burst=1, tls_cert=pki / "broker.crt", tls_key=pki / "broker.key")
    with InferenceServer(cfg=cfg, arch=arch, topics=Topics(federation), model="mlp",
                         conn=Connection(host=broker.host, port=broker.port),
                         tokens=tokens) as running:
        yield running


@pytest.mark.mosquitto
def test_the_inference_config_wires_tls_tokens_and_rate(
    secured_server: InferenceServer, tokens: TokenStore, pki: Path,
    weights: Callable[[int], list[torch.Tensor]], rows: Rows,
) -> None:
    """The configured server speaks HTTPS, refuses a request without a token, and limits a
    token to its burst."""
    # Prepare
    secret = tokens.create("ci-bot")
    secured_server.swap(3, weights(3))
    port, trusting = secured_server.http_port, _client_tls(pki / "ca.crt")

    # Execute
    anonymous, _, _ = _predict(port, rows(1), tls=trusting)
    first, _, body = _predict(port, rows(1), token=f"Bearer {secret}", tls=trusting)
    second, headers, _ = _predict(port, rows(1), token=f"Bearer {secret}", tls=trusting)

    # Assert
    assert (anonymous, first, body["version"], second) == (401, 200, 3, 429)
    assert int(headers["Retry-After"]) > 900  # one request per 1000 s
    status = secured_server.status()
    assert (status["reason.unauthorised"], status["reason.rate_limited"]) == (1, 1)


def test_token_auth_without_a_token_store_is_refused(arch: Architecture) -> None:
    """A server configured for tokens but given no store fails to build: it never serves
    unguarded."""
    # Execute
    with pytest.raises(ConfigError) as info:
        InferenceServer(cfg=InferenceConfig(auth="token"), arch=arch, topics=Topics("t"),
                        model="mlp", conn=Connection(host="127.0.0.1", port=1883))

    # Assert
    assert info.value.reason is Reason.BAD_CONFIG and "token store" in info.value.detail


@pytest.mark.parametrize(
    ("settings", "needle"),
    [
        ({"http_host": "0.0.0.0"}, 'set auth = "token"'),
        ({"http_host": "cloud.example.net"}, 'set auth = "token"'),
        ({"http_host": ""}, 'set auth = "token"'),
        ({"tls_cert": "server.crt"}, "tls_cert and tls_key go together"),
        ({"tls_key": "server.key"}, "tls_cert and tls_key go together"),
        ({"auth": "password"}, "inference.auth"),
        ({"auth": "token", "rate_per_s": 0}, "inference.rate_per_s"),
        ({"auth": "token", "burst": 0}, "inference.burst"),
    ],
    ids=["any-address", "host-name", "empty-host", "cert-only", "key-only",
         "unknown-auth", "zero-rate", "zero-burst"],
)
def test_unsafe_or_incomplete_http_settings_are_config_errors(
    tmp_path: Path, settings: dict[str, object], needle: str
) -> None:
    """An open endpoint off loopback, half a TLS pair, or a bad auth or rate value fails
    loading with BAD_CONFIG saying what to do."""
    # Prepare
    path = tmp_path / "cloud.toml"
    path.write_text("[inference]\n" + "".join(f"{k} = {json.dumps(v)}\n"
                                             for k, v in settings.items()))

    # Execute
    with pytest.raises(ConfigError) as info:
        load_config(CloudConfig, path)

    # Assert
    assert info.value.reason is Reason.BAD_CONFIG
    assert needle in info.value.detail


@pytest.mark.parametrize(
    "settings",
    [{}, {"http_host": "::1"}, {"http_host": "localhost"}, {"http_host": "127.0.0.2"},
     {"http_host": "0.0.0.0", "auth": "token"},
     {"tls_cert": "s.crt", "tls_key": "s.key"}],
    ids=["defaults", "ipv6-loopback", "localhost", "loopback-net", "open-with-tokens", "tls"],
)
def test_safe_http_settings_load(settings: dict[str, object]) -> None:
    """Loopback without tokens, any address with tokens, and a full TLS pair are accepted."""
    # Execute
    cfg = InferenceConfig(**settings)  # type: ignore[arg-type]

    # Assert
    assert cfg.auth in ("none", "token")
