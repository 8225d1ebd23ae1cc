"""The inference service: the served model, its micro-batcher, and the HTTP and MQTT doors."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Self

import structlog
import torch

from fedstream.cloud.config import InferenceConfig
from fedstream.cloud.inference._tally import Tally
from fedstream.cloud.inference.access import Guard, server_tls
from fedstream.cloud.inference.batcher import BatcherParams, MicroBatcher
from fedstream.cloud.inference.http_api import HttpApi
from fedstream.cloud.inference.mqtt_api import MqttApi
from fedstream.cloud.inference.rate import RateLimiter, RateParams
from fedstream.cloud.inference.serving import EvalSet, ModelPreparer, ServedModel
from fedstream.cloud.inference.tokens import TokenStore
from fedstream.shared.errors import ConfigError, Reason
from fedstream.shared.protocol.arch import Architecture
from fedstream.shared.protocol.connection import Connection
from fedstream.shared.protocol.topics import Topics

log = structlog.get_logger(__name__)


class InferenceServer:
    """Predictions from the latest swapped-in model version over HTTP and MQTT v5.

    Args:
        cfg: The `[inference]` config section.
        arch: The served model's architecture.
        topics: The federation's topic tree.
        model: Model name; MQTT requests arrive on `topics.infer(model)`.
        conn: The broker the MQTT door connects to (its own connection).
        evaluation: Labelled (features, labels) rows that decide whether bf16 is accurate
            enough under precision "auto"; None serves fp32 there.
        tokens: The bearer tokens HTTP requests must carry under `auth = "token"`
            (`TokenStore.open(data_dir)`); not used under "none".

    Raises:
        ConfigError: a bad precision, backend or bound, evaluation rows of the wrong width,
            `auth = "token"` without `tokens`, or TLS files that cannot be loaded.
    """

    def __init__(self, *, cfg: InferenceConfig, arch: Architecture, topics: Topics,
                 model: str, conn: Connection, evaluation: EvalSet | None = None,
                 tokens: TokenStore | None = None) -> None:
        self.preparer = ModelPreparer(arch=arch, backend=cfg.backend,
                                      precision=cfg.precision, evaluation=evaluation,
                                      timing_rows=cfg.max_batch)
        self.batcher = MicroBatcher(BatcherParams(
            cols=arch.features, max_batch=cfg.max_batch, max_wait_ms=cfg.max_wait_ms,
            max_rows=cfg.max_rows, max_queue=cfg.max_queue))
        self.tally = Tally()
        self.http = HttpApi(batcher=self.batcher, tally=self.tally, host=cfg.http_host,
                            port=cfg.http_port, guard=_guard(cfg, tokens),
                            tls=None if cfg.tls_cert is None or cfg.tls_key is None
                            else server_tls(cfg.tls_cert, cfg.tls_key))
        self.mqtt = MqttApi(batcher=self.batcher, tally=self.tally, topics=topics, model=model,
                            conn=conn)
        self._swap_lock = threading.Lock()

    @property
    def http_port(self) -> int:
        """The HTTP port, as bound once started."""
        return self.http.port

    def start(self, timeout_s: float = 30.0) -> None:
        """Start the batcher, bind HTTP, connect MQTT; undo what started if a step fails.

        Raises:
            ConfigError: the HTTP address cannot be bound.
            TransportError: the broker cannot be reached within `timeout_s`.
        """
        try:
            self.batcher.start()
            self.http.start(timeout_s)
            self.mqtt.start(timeout_s)
        except BaseException:
            self.stop()
            raise

    def swap(self, version: int, tensors: Sequence[torch.Tensor]) -> ServedModel:
        """Prepare `tensors` as `version` on the caller's thread, then serve it atomically.

        Requests queue meanwhile and are answered by the previous version, except while the
        model is optimized and checked (tens of ms here): forward passes wait then, because
        IPEX's tracing patches torch process-wide (see serving.py). None fails or is dropped.

        Raises:
            ConfigError: SPEC_MISMATCH when the tensors do not fit the architecture.
        """
        started = time.perf_counter()
        with self._swap_lock:
            served = self.preparer.prepare(version, tensors)
            previous = self.batcher.model
            self.batcher.swap(served)
        log.info("model_swapped", version=version,
                 previous=None if previous is None else previous.version,
                 precision=served.precision, backend=served.backend.name, why=served.reason,
                 ms=round((time.perf_counter() - started) * 1000, 1))
        return served

    def stop(self) -> None:
        """Answer what is queued, then close HTTP and MQTT."""
        self.batcher.stop()
        self.http.stop()
        self.mqtt.stop()

    def status(self) -> dict[str, int | str]:
        """The served version, precision and backend, request counts and queue depth."""
        model = self.batcher.model
        return {"version": -1 if model is None else model.version,
                "precision": "" if model is None else model.precision,
                "backend": self.preparer.backend_name, "http_port": self.http.port,
                **self.tally.snapshot(), **self.batcher.stats()}

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, _type: type[BaseException] | None, _value: BaseException | None,
                 _tb: TracebackType | None) -> None:
        self.stop()


def _guard(cfg: InferenceConfig, tokens: TokenStore | None) -> Guard | None:
    if cfg.auth == "none":
        return None
    if tokens is None:  # fail closed: a token config never serves without its tokens
        raise ConfigError(Reason.BAD_CONFIG, 'inference.auth = "token" needs the token store')
    return Guard(check=tokens.check,
                 limiter=RateLimiter(RateParams(rate_per_s=cfg.rate_per_s, burst=cfg.burst)))
