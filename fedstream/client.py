"""The operator's side of the command protocol: ask the cloud, follow a round."""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy.typing as npt

from fedstream.shared.config import ServiceConfig
from fedstream.shared.errors import FedstreamError, ProtocolError, Reason, TransportError
from fedstream.shared.protocol import wire
from fedstream.shared.protocol.commands import Answer, Command, Reply
from fedstream.shared.protocol.connection import Connection
from fedstream.shared.protocol.control import RoundProgress, RoundState
from fedstream.shared.protocol.data import DataBatch
from fedstream.shared.protocol.infer import InferReply, InferRequest
from fedstream.shared.protocol.mqtt import Inbound, MqttClient
from fedstream.shared.protocol.topics import Topic, Topics
from fedstream.shared.security.identity import common_name

R = TypeVar("R", bound=Answer)
# The reply level of a client on the plain (development) listener, which has no identities.
ANONYMOUS = "anonymous"

# How long the CLI waits for the broker and for each of the cloud's replies.
DEFAULT_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetAddress:
    """Which cloud the CLI talks to: a broker, a federation on it, a model, and how long to wait.

    Args:
        conn: The broker.
        federation: Federation name (topic prefix).
        model: Model name.
        timeout_s: Seconds to wait for the broker and for each of the cloud's replies.
    """

    conn: Connection
    federation: str
    model: str
    timeout_s: float = DEFAULT_TIMEOUT_S

    @classmethod
    def from_config(cls, cfg: ServiceConfig, *,
                    timeout_s: float = DEFAULT_TIMEOUT_S) -> FleetAddress:
        """The cloud a service config names (its `[broker]`, federation and model)."""
        return cls(conn=Connection.from_config(cfg.broker), federation=cfg.federation,
                   model=cfg.model, timeout_s=timeout_s)

    @classmethod
    def local(cls, *, host: str, port: int, federation: str, model: str,
              timeout_s: float = DEFAULT_TIMEOUT_S) -> FleetAddress:
        """A cloud behind the broker at `host:port` (connection settings left at defaults)."""
        return cls(conn=Connection(host=host, port=port), federation=federation, model=model,
                   timeout_s=timeout_s)

    def __str__(self) -> str:
        return f"federation {self.federation!r} at {self.conn}"


class FleetClient:
    """Talks to one federation's cloud service over MQTT v5 request/response.

    Args:
        address: The broker, federation and model, and the reply timeout.
    """

    def __init__(self, address: FleetAddress) -> None:
        self.address = address
        self.topics = Topics(address.federation)
        self.model = address.model
        self.timeout_s = address.timeout_s
        session = uuid.uuid4().hex[:8]
        client_id = f"fedstream-cli-{session}"
        tls = address.conn.tls
        self._reply_to = self.topics.reply(
            ANONYMOUS if tls is None else common_name(tls.cert), session)
        self._rounds: queue.Queue[Inbound] = queue.Queue()
        self._round_topic = self.topics.round(self.model)
        self._progress_topic = self.topics.round_progress(self.model)
        # Set by a retained round state or model manifest: a cloud has served this federation
        # and model on this broker (they arrive right after subscribing).
        self._cloud_seen = threading.Event()
        self.mqtt = MqttClient(client_id=client_id, conn=address.conn,
                               on_message=self._on_message,
                               subscriptions=(self._reply_to, self._round_topic,
                                              self._progress_topic,
                                              self.topics.manifest(self.model)))

    def __enter__(self) -> FleetClient:
        self.mqtt.connect(self.timeout_s)
        return self

    def __exit__(self, *exc: object) -> None:
        self.mqtt.close()

    def command(self, cmd: Command, reply: type[R]) -> R:
        """Send a command on `cmd/<verb>` and return the cloud's answer, a `reply`.

        Raises:
            TransportError: no_reply if the cloud does not answer (naming the federation and
                the broker, and whether a cloud ever served the federation there).
            FedstreamError: with the cloud's reason when it refuses the command.
            ProtocolError: unknown_kind when the answer is neither a `reply` nor a refusal.
        """
        return self._ask(self.topics.command(cmd.VERB), wire.pack(cmd), reply)

    def send_data(self, batch: DataBatch) -> Reply:
        """Give the cloud labelled samples on its data topic and wait for its answer.

        Raises:
            TransportError: no_reply if the cloud does not answer.
            FedstreamError: with the cloud's reason when it refuses the batch.
        """
        return self._ask(self.topics.data(self.model), wire.pack(batch), Reply)

    def infer(self, features: npt.ArrayLike) -> InferReply:
        """Predictions for rows [N, D] from the model the cloud serves.

        Raises:
            TransportError: no_reply if the inference service does not answer.
            FedstreamError: with the service's reason when it refuses the rows.
        """
        msg = self._request(self.topics.infer(self.model),
                            wire.pack(InferRequest.of(features)), "inference service")
        return wire.expect(msg.payload, InferReply).checked()

    def _ask(self, topic: Topic, payload: bytes, reply: type[R]) -> R:
        answer = wire.unpack(self._request(topic, payload, "cloud").payload)
        if isinstance(answer, Reply) and not answer.ok:
            raise FedstreamError(_reason(answer.reason), answer.detail)
        if not isinstance(answer, reply):
            raise ProtocolError(Reason.UNKNOWN_KIND,
                                f"expected {reply.KIND}, got {answer.KIND}")
        return answer

    def _request(self, topic: Topic, payload: bytes, who: str) -> Inbound:
        """A request/response round trip; no answer is no_reply saying where nobody answered."""
        try:
            return self.mqtt.request(topic, payload, self._reply_to, timeout_s=self.timeout_s)
        except TransportError as err:
            if err.reason is not Reason.NO_REPLY:
                raise
            raise TransportError(Reason.NO_REPLY, self._nobody_answered(who)) from err

    def _nobody_answered(self, who: str) -> str:
        """Defect 8: a CLI pointed at the wrong federation (or broker) says so."""
        fed, where = self.address.federation, self.address.conn
        said = f"no {who} answered on federation {fed!r} at {where} within {self.timeout_s:g}s"
        if self._cloud_seen.is_set():
            return (f"{said}; a cloud has served model {self.model!r} on that federation "
                    f"there before, so it is stopped or busy (fedstream status --federation "
                    f"{fed})")
        return (f"{said}; no cloud has ever published model {self.model!r} on that federation "
                f"there: is a cloud serving that federation there? (fedstream status "
                f"--federation NAME, or the cloud config's federation and model)")

    def _on_message(self, msg: Inbound) -> None:
        if msg.retain and msg.payload:  # an empty retained payload is a cleared topic
            self._cloud_seen.set()
        if msg.topic in (str(self._round_topic), str(self._progress_topic)):
            self._rounds.put(msg)

    def wait_round(self, round_id: str, *, on_change: Callable[[RoundState], None],
                   grace_s: float = 30.0) -> RoundState:
        """Follow a round's retained state, and its count of updates in between, until it is
        published or failed. `on_change` gets each state, and the last one with each newer
        count.

        Raises:
            TransportError: no_reply if the round is not over `grace_s` after its deadline.
        """
        give_up: float | None = None
        last: RoundState | None = None
        while True:
            try:
                msg = self._rounds.get(timeout=1.0)
            except queue.Empty:
                if give_up is not None and time.time() > give_up:
                    raise TransportError(Reason.NO_REPLY,
                                         f"round {round_id} did not finish") from None
                continue
            if not msg.payload or msg.response_topic is not None:
                continue
            state = wire.unpack(msg.payload)
            if isinstance(state, RoundProgress) and last is not None:
                if state.round_id == round_id and state.received > last.received:
                    last = dataclasses.replace(last, received=state.received)
                    on_change(last)
                continue
            if not isinstance(state, RoundState) or state.round_id != round_id:
                continue
            give_up, last = state.deadline + grace_s, state
            on_change(state)
            if state.terminal:
                return state


def _reason(code: str) -> Reason:
    try:
        return Reason(code)
    except ValueError:
        return Reason.ROUND_FAILED
