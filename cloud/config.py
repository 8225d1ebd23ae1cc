"""The cloud consumer's configuration (TOML + FEDSTREAM_* overrides)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from fedstream.shared.config import Section, ServiceConfig, state_dir_field
from fedstream.shared.protocol.chunks import DEFAULT_CHUNK_SIZE


class SourceConfig(Section):
    """A data source from the SOURCES registry and its parameters."""

    name: str = "digits"
    params: dict[str, Any] = Field(default_factory=dict)


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


class IntakeConfig(Section):
    """Bounds on update reassembly."""

    max_update_bytes: int = Field(default=256 << 20, ge=1024)
    max_sender_bytes: int = Field(default=512 << 20, ge=1024,
                                  description="partial updates one edge may pin at once")
    max_total_bytes: int = Field(default=1 << 30, ge=1024)
    partial_timeout_s: float = Field(default=120.0, gt=0,
                                     description="a partial update idle this long leaves "
                                                 "memory; its journaled chunks stay until "
                                                 "its round is over")
    idle_s: float = Field(default=10.0, gt=0,
                          description="a partial update idle this long is answered with the "
                                      "chunks it lacks, so its edge sends only those")


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


class CloudConfig(ServiceConfig):
    """Everything `fedstream cloud run` needs."""

    layers: tuple[int, ...] = Field(default=(64, 100, 100, 10), min_length=2)
    seed: int = 0
    strategy: str = "fedavg"
    strategy_params: dict[str, int | float | str | bool | None] = Field(default_factory=dict)
    data_dir: Path = state_dir_field("fedstream-cloud",
                                     "journal, spooled updates and model versions")
    synchronous: str = Field(default="NORMAL", pattern="^(NORMAL|FULL)$",
                             description="FULL also survives power loss (fsync per commit)")
    blend_alpha: float = Field(default=1.0, gt=0, le=1, description="1 means plain FedAvg")
    chunk_size: int = Field(default=DEFAULT_CHUNK_SIZE, ge=1024, le=1 << 20)
    eval_source: SourceConfig = SourceConfig(params={"split": "test"})
    rounds: RoundConfig = RoundConfig()
    intake: IntakeConfig = IntakeConfig()
    continual: ContinualConfig = ContinualConfig()
    inference: InferenceConfig = InferenceConfig()
