"""The cloud consumer's configuration (TOML + FEDSTREAM_* overrides)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from fedstream.shared.config import Section, ServiceConfig, state_dir_field
from fedstream.shared.errors import ProtocolError
from fedstream.shared.protocol.arch import Architecture, TaskKind
from fedstream.shared.protocol.chunks import DEFAULT_CHUNK_SIZE


class SourceConfig(Section):
    """A data source from the SOURCES registry and its parameters."""

    name: str = "digits"
    params: dict[str, Any] = Field(default_factory=dict)


class ArchitectureConfig(Section):
    """The model the federation trains, by family; it travels in every manifest, so edges
    build the same model without configuring it."""

    family: str = Field(default="mlp", description="mlp, cnn1d, gru, transformer or a plug-in")
    input_shape: tuple[int, ...] = Field(default=(64,), min_length=1, max_length=3,
                                         description="how a sample's feature row is read: "
                                                     "[features] or [channels, steps]")
    task: TaskKind = TaskKind.CLASSIFICATION
    outputs: int = Field(default=10, ge=1, description="classes, or predicted values")
    # Checked (and lists made tuples) by `Architecture`, the one check the manifest also gets;
    # a parameter left out takes the family's own default (mlp: hidden = [100, 100]).
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("params", mode="after")
    @classmethod
    def _lists_as_tuples(cls, params: dict[str, Any]) -> dict[str, Any]:
        return {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}

    @model_validator(mode="after")
    def _valid(self) -> ArchitectureConfig:
        self.build()  # raises ValueError (as ProtocolError) for pydantic to report
        return self

    @classmethod
    def of(cls, arch: Architecture) -> ArchitectureConfig:
        """The config table that describes `arch`."""
        return cls(family=arch.family, input_shape=arch.input_shape, task=arch.task,
                   outputs=arch.outputs, params=dict(arch.params))

    def build(self) -> Architecture:
        """The architecture value the manifest carries."""
        try:
            return Architecture(family=self.family, input_shape=tuple(self.input_shape),
                                task=self.task, outputs=self.outputs, params=self.params)
        except ProtocolError as err:
            raise ValueError(err.detail) from err


class RoundConfig(Section):
    """Defaults for every round; `fedstream round start` may override the training ones."""

    epochs: int = Field(default=5, ge=1, le=1000)
    lr: float = Field(default=0.05, gt=0, le=10)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    batch_size: int = Field(default=32, ge=1, le=65536)
    deadline_s: float = Field(default=120.0, gt=0)
    quorum: int = Field(default=1, ge=1, description="updates needed when the deadline passes")
    fraction: float = Field(default=1.0, gt=0, le=1,
                            description="share of online edges selected, seeded per round")
    codec: str = Field(default="f32", description="update codec edges encode with")
    codec_params: dict[str, int | float | str | bool] = Field(default_factory=dict)
    buffer: int = Field(default=0, ge=0, le=1 << 20,
                        description="async sessions: aggregate every K accepted updates; "
                                    "0 means the number of edges online at open")
    max_staleness: int = Field(default=1, ge=0,
                               description="async sessions: accept updates trained on up to "
                                           "this many versions before the current one")
    session_s: float = Field(default=3600.0, gt=0,
                             description="async sessions: how long one runs unless stopped")
    max_windows: int = Field(default=0, ge=0, le=1 << 40,
                             description="edges train on at most their newest N samples "
                                         "(windows of a sensor stream); 0: all")
    max_age_s: float = Field(default=0.0, ge=0, le=1e12,
                             description="sensor edges train only on windows from the last T "
                                         "seconds of their stream; 0: all")
    min_samples: int = Field(default=1, ge=1, le=1 << 40,
                             description="an edge with fewer samples declines the round "
                                         "(too_little_data) instead of sending an update")


class IntakeConfig(Section):
    """Bounds on update reassembly."""

    max_update_bytes: int = Field(default=256 << 20, ge=1024)
    max_sender_bytes: int = Field(default=512 << 20, ge=1024,
                                  description="partial updates one edge may pin at once")
    max_total_bytes: int = Field(default=1 << 30, ge=1024,
                                 description="partial updates held at once; accepted updates "
                                             "kept decoded for the fold have a budget of "
                                             "this size of their own")
    partial_timeout_s: float = Field(default=120.0, gt=0,
                                     description="a partial update idle this long leaves "
                                                 "memory; its journaled chunks stay until "
                                                 "its round is over")
    idle_s: float = Field(default=10.0, gt=0,
                          description="a partial update idle this long is answered with the "
                                      "chunks it lacks, so its edge sends only those")


class DefenceConfig(Section):
    """Bounds on what one update can do to the aggregate (cloud/defences.py), on by default."""

    sample_cap: float = Field(default=1.0, ge=0, le=1e6,
                              description="a weight counts at most this many times the "
                                          "round's median (0: off)")
    clip: float = Field(default=1.0, ge=0, le=1e6,
                        description="an update is scaled to at most this many times the "
                                    "round's median norm (0: off)")
    max_samples: int = Field(default=1_000_000, ge=1,
                             description="no update's weight counts for more than this")


class FinetuneConfig(Section):
    """Cloud fine-tuning of each aggregate on fresh cloud data mixed with replay."""

    steps: int = Field(default=0, ge=0, le=1_000_000, description="0 turns fine-tuning off")
    batch_size: int = Field(default=64, ge=1, le=65536)
    lr: float = Field(default=0.01, gt=0, le=10)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    replay_ratio: float = Field(default=0.5, ge=0, le=1,
                                description="share of each batch drawn from the replay buffer")
    anchor: Literal["none", "l2sp", "ewc"] = Field(
        default="none", description="penalty pulling the weights toward the aggregate's")
    anchor_weight: float = Field(default=0.1, ge=0,
                                 description="strength of the pull (a decay of lr x weight "
                                             "per step for l2sp)")
    backend: str = Field(default="auto", description="auto, torch or ipex")
    precision: str = Field(default="auto", description="auto (measured), fp32 or bf16")


class GateConfig(Section):
    """When a candidate may replace the serving model (accuracy on the evaluation windows)."""

    enabled: bool = True
    tolerance_newest: float = Field(default=0.02, ge=0, le=1,
                                    description="allowed accuracy drop on the newest window")
    tolerance_past: float = Field(default=0.02, ge=0, le=1,
                                  description="allowed drop of the mean over past windows")


class ContinualConfig(Section):
    """The cloud's own data: replay buffer, evaluation windows, fine-tuning and the promotion
    gate (off by default: the cloud then publishes every aggregate as before)."""

    enabled: bool = False
    replay_capacity: int = Field(default=5000, ge=1, le=10_000_000)
    window_s: float = Field(default=3600.0, gt=0, description="length of an evaluation window")
    max_rows_per_window: int = Field(default=2000, ge=1)
    data_dir: Path | None = Field(default=None,
                                  description="CSV/NPZ files loaded once; file stem = window")
    eval_fraction: float = Field(default=0.3, gt=0, lt=1,
                                 description="share of each window's rows kept for scoring "
                                             "only, never trained on")
    min_window_rows: int = Field(default=20, ge=1,
                                 description="windows with fewer evaluation rows are neither "
                                             "scored nor judged: their accuracy is noise")
    finetune: FinetuneConfig = FinetuneConfig()
    gate: GateConfig = GateConfig()


class InferenceConfig(Section):
    """Predictions from the current promoted model over MQTT v5 and HTTP (off by default)."""

    enabled: bool = False
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535, description="0 picks a free port")
    max_batch: int = Field(default=64, ge=1, le=65536,
                           description="rows one forward pass may take from queued requests")
    max_wait_ms: float = Field(default=0.0, ge=0, le=1000,
                               description="extra wait for a batch to fill; 0 batches what "
                                           "queued during the previous forward pass")
    max_rows: int = Field(default=1024, ge=1, le=1 << 20, description="rows per request")
    max_queue: int = Field(default=10_000, ge=1, description="queued rows before refusing")
    backend: str = Field(default="auto", description="auto, torch or ipex")
    precision: str = Field(default="auto",
                           description="auto: bf16 when within 0.5 point of fp32 and faster")
    auth: Literal["none", "token"] = Field(
        default="none", description="token: HTTP requests need a bearer token from "
                                    "`fedstream token create`; none: only on loopback")
    rate_per_s: float = Field(default=50.0, gt=0, le=1e6,
                              description="HTTP requests per second one token may keep up")
    burst: int = Field(default=100, ge=1, le=1 << 20,
                       description="HTTP requests one token may send at once when idle")
    tls_cert: Path | None = Field(default=None, description="serve HTTPS with this "
                                                            "certificate (PEM, chain first)")
    tls_key: Path | None = Field(default=None, description="the certificate's private key")

    @model_validator(mode="after")
    def _http_secured(self) -> InferenceConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: set both for HTTPS, or "
                             "neither for plain HTTP")
        if self.auth == "none" and not self._is_loopback(self.http_host):
            raise ValueError(f'http_host {self.http_host!r} is not a loopback address and '
                             'auth = "none" would answer anyone who can reach it: set auth = '
                             '"token" (tokens come from `fedstream token create`), or bind '
                             'http_host = "127.0.0.1"')
        return self

    @staticmethod
    def _is_loopback(host: str) -> bool:
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:  # a host name other than localhost, or "" (every interface)
            return False


class SecurityConfig(Section):
    """Signed objects: an enrolled edge's updates are always checked against its key."""

    require_signed_updates: bool = Field(
        default=False, description="refuse updates of edges without an enrolled key "
                                   "(`fedstream edge enrol`), not only forged ones")
    signing_key: Path | None = Field(
        default=None, description="the cloud's Ed25519 key (`fedstream pki init` makes "
                                  "cloud.sign.key): every manifest is signed with it, and "
                                  "edges pin its public half")


class CloudConfig(ServiceConfig):
    """Everything `fedstream cloud run` needs."""

    architecture: ArchitectureConfig = ArchitectureConfig()
    seed: int = 0
    strategy: str = "fedavg"
    strategy_params: dict[str, int | float | str | bool | None] = Field(default_factory=dict)
    data_dir: Path = state_dir_field("fedstream-cloud",
                                     "journal, spooled updates and model versions")
    synchronous: str = Field(default="NORMAL", pattern="^(NORMAL|FULL)$",
                             description="FULL also survives power loss (fsync per commit "
                                         "and per spooled update)")
    blend_alpha: float = Field(default=1.0, gt=0, le=1, description="1 means plain FedAvg")
    redeliver_after_s: float = Field(default=30.0, ge=0,
                                     description="publish the model (and the open round) "
                                                 "again when an online edge still lacks it "
                                                 "this long after it went out: brokers whose "
                                                 "nodes do not share retained messages "
                                                 "(ejabberd); 0: never")
    chunk_size: int = Field(default=DEFAULT_CHUNK_SIZE, ge=1024, le=1 << 20)
    eval_source: SourceConfig = SourceConfig(params={"split": "test"})
    rounds: RoundConfig = RoundConfig()
    intake: IntakeConfig = IntakeConfig()
    defences: DefenceConfig = DefenceConfig()
    continual: ContinualConfig = ContinualConfig()
    inference: InferenceConfig = InferenceConfig()
    security: SecurityConfig = SecurityConfig()

    @model_validator(mode="before")
    @classmethod
    def _no_layers(cls, data: Any) -> Any:
        if isinstance(data, dict) and "layers" in data:
            raise ValueError("'layers' was replaced by the [architecture] table: family = "
                             "\"mlp\", input_shape = [inputs], outputs = classes, "
                             "params.hidden = [hidden sizes]")
        return data
