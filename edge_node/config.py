"""The edge daemon's configuration (TOML + FEDSTREAM_* overrides)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from fedstream.edge_node.sensors.config import SensorsConfig
from fedstream.shared.config import Section, ServiceConfig, state_dir_field
from fedstream.shared.protocol.chunks import DEFAULT_CHUNK_SIZE


class SourceConfig(Section):
    """Where the edge's private training data comes from (a SOURCES name + its params)."""

    name: str = "digits"
    params: dict[str, Any] = Field(default_factory=dict)


class BackendConfig(Section):
    """Training backend and precision: "auto" measures every usable pair (stock torch, and
    IPEX where it matches torch; bf16 where the CPU has it) on the model, once per
    architecture and batch size (cached in the data directory), and takes the fastest."""

    name: str = "auto"
    precision: str = Field(default="auto", pattern="^(auto|fp32|bf16)$")
    tolerance: float = Field(default=0.02, ge=0, le=1,
                             description="a candidate whose loss after the measuring steps "
                                         "differs from fp32's by more (a share) is refused")
    wait_s: float = Field(default=30.0, ge=0,
                          description="a round arriving while the backend is measured waits "
                                      "this long, then is declined (backend_tuning); it is "
                                      "still trained if open when measuring ends")
    cache: Path | None = Field(default=None,
                               description="where measured choices are kept; default "
                                           "data_dir/backend-choice.json. Identical gateways "
                                           "may share one (its key names the CPU and "
                                           "versions), e.g. baked into their image")


class EdgeSecurityConfig(Section):
    """Signed objects: what `fedstream edge enrol` wrote for this gateway."""

    signing_key: Path | None = Field(
        default=None, description="this edge's Ed25519 key: every update is signed with it")
    cloud_key: Path | None = Field(
        default=None, description="the cloud's public key, pinned: a model whose manifest "
                                  "it did not sign is refused before training on it")


class EdgeConfig(ServiceConfig):
    """Everything `fedstream edge run` needs."""

    edge_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = 0
    chunk_size: int = Field(default=DEFAULT_CHUNK_SIZE, ge=1024, le=1 << 20)
    max_model_bytes: int = Field(default=512 << 20, ge=1024)
    data_dir: Path = state_dir_field("fedstream-edge", "the outbox lives here")
    resend_after_s: float = Field(default=30.0, gt=0,
                                  description="re-send an update with no receipt after this")
    status_every_s: float = Field(default=30.0, gt=0,
                                  description="republish the status (with what the data "
                                              "source holds) this often")
    source: SourceConfig = SourceConfig()
    sensors: SensorsConfig | None = Field(default=None,
                                          description="train on live sensor streams "
                                                      "instead of [source]")
    backend: BackendConfig = BackendConfig()
    security: EdgeSecurityConfig = EdgeSecurityConfig()

    @model_validator(mode="after")
    def _one_source(self) -> EdgeConfig:
        if self.sensors is not None and "source" in self.model_fields_set:
            raise ValueError("give [source] (a data set) or [sensors] (live streams), not both")
        return self
