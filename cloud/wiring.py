"""Builds the cloud consumer from its config: the one place that opens stores, loads
evaluation data and connects the parts. Everything it builds only assigns in its
constructor, so each part is testable on its own, in-process."""

from __future__ import annotations

import queue
from collections.abc import Callable

import torch

from fedstream.cloud.config import CloudConfig
from fedstream.cloud.continual_stage import ContinualStage
from fedstream.cloud.coordinator import Coordinator
from fedstream.cloud.data_intake import DataIntake
from fedstream.cloud.finetune import FineTuner
from fedstream.cloud.inference import InferenceServer
from fedstream.cloud.inference.tokens import TokenStore
from fedstream.cloud.intake import Intake
from fedstream.cloud.metrics import CloudMetrics
from fedstream.cloud.outlet import Outlet
from fedstream.cloud.publisher import ModelPublisher
from fedstream.cloud.receiver import UpdateReceiver
from fedstream.cloud.redelivery import Redelivery
from fedstream.cloud.service import CloudService, Subscriptions
from fedstream.cloud.signatures import UpdateSignatures
from fedstream.cloud.store import CloudStore
from fedstream.shared.errors import ConfigError
from fedstream.shared.learning.model import load_tensors, spec_of
from fedstream.shared.learning.models import build_model
from fedstream.shared.learning.sources import SOURCES, Dataset
from fedstream.shared.learning.tasks import evaluate, task_for
from fedstream.shared.metrics import MetricsEndpoint
from fedstream.shared.notify import Pulse
from fedstream.shared.protocol.arch import Architecture
from fedstream.shared.protocol.connection import Connection
from fedstream.shared.protocol.mqtt import Inbound, MqttClient
from fedstream.shared.protocol.topics import Topics
from fedstream.shared.security.signing import load_signer


def build_cloud(cfg: CloudConfig) -> CloudService:
    """The cloud service `cfg` describes, with its stores open and not yet connected.

    Raises:
        ConfigError: bad evaluation data, codec, strategy or continual settings.
        StoreError: the data directory's journal or files cannot be opened.
    """
    topics = Topics(cfg.federation)
    subs = Subscriptions.of(topics, cfg.model, data=cfg.continual.enabled)
    inbox: queue.Queue[Inbound] = queue.Queue()
    conn = Connection.from_config(cfg.broker)
    mqtt = MqttClient(client_id=f"fedstream-cloud-{cfg.federation}-{cfg.model}", conn=conn,
                      on_message=inbox.put, subscriptions=subs.all(), persistent=True,
                      manual_ack=True)
    store = CloudStore.open(cfg.data_dir, synchronous=cfg.synchronous)
    data = DataIntake.open(cfg, store) if cfg.continual.enabled else None
    arch = cfg.architecture.build()
    held_out = load_eval(cfg, arch)
    inference = InferenceServer(
        cfg=cfg.inference, arch=arch, topics=topics, model=cfg.model, conn=conn,
        evaluation=None if held_out.labels is None else (held_out.features, held_out.labels),
        tokens=TokenStore.open(cfg.data_dir) if cfg.inference.auth == "token" else None,
    ) if cfg.inference.enabled else None
    security = cfg.security
    publisher = ModelPublisher(mqtt=mqtt, topics=topics, model=cfg.model,
                               spec=spec_of(build_model(arch)), arch=arch,
                               chunk_size=cfg.chunk_size,
                               signer=None if security.signing_key is None
                               else load_signer(security.signing_key))
    metrics = CloudMetrics()
    pulse = Pulse()  # the watchdog, from inside a fine-tune on the loop
    outlet = Outlet(mqtt=mqtt, topics=topics, model=cfg.model, publisher=publisher,
                    inference=inference, metrics=metrics,
                    redelivery=Redelivery(cfg.redeliver_after_s))
    coordinator = Coordinator.open(cfg=cfg, store=store,
                                   evaluate=make_evaluator(arch, held_out),
                                   publish_model=outlet.publish_model,
                                   publish_round=outlet.publish_round,
                                   publish_progress=outlet.publish_progress,
                                   stage=make_stage(cfg, arch, data, pulse))
    intake = Intake(spec=coordinator.spec, params=cfg.intake,
                    signatures=UpdateSignatures(keyring=store.keys, federation=cfg.federation,
                                                model=cfg.model,
                                                required=security.require_signed_updates))
    receiver = UpdateReceiver(
        intake=intake, store=store, coordinator=coordinator, send=outlet.send_to_edge,
        on_verdict=lambda row: metrics.verdict(row, coordinator.current.version))
    service = CloudService(cfg=cfg, topics=topics, subs=subs, inbox=inbox, mqtt=mqtt,
                           store=store, data=data, inference=inference,
                           coordinator=coordinator, intake=intake, receiver=receiver,
                           outlet=outlet, metrics=MetricsEndpoint(cfg.metrics,
                                                                  metrics.registry),
                           pulse=pulse)
    metrics.watch(service.live)
    return service


def load_eval(cfg: CloudConfig, arch: Architecture) -> Dataset:
    """The configured held-out source, checked against the model's architecture.

    Raises:
        ConfigError: bad_config when its task, width, classes or targets do not fit.
    """
    data = SOURCES.build(cfg.eval_source.name, **cfg.eval_source.params).load()
    try:
        data.check_fits(arch)
    except ConfigError as err:
        raise ConfigError(err.reason, f"eval_source {cfg.eval_source.name}: {err.detail}") from err
    return data


def make_evaluator(arch: Architecture,
                   data: Dataset) -> Callable[[list[torch.Tensor]], dict[str, float]]:
    """Every metric of the task (accuracy, or MAE and RMSE) on the held-out `data`."""
    features, targets = torch.tensor(data.features), torch.tensor(data.y)
    model, task = build_model(arch), task_for(arch.task)

    def scores(tensors: list[torch.Tensor]) -> dict[str, float]:
        load_tensors(model, tensors)
        return evaluate(model, task, features, targets)

    return scores


def make_stage(cfg: CloudConfig, arch: Architecture, data: DataIntake | None,
               pulse: Pulse | None = None) -> ContinualStage | None:
    """The fine-tune-and-judge stage when continual learning is on (with fine-tuning only
    when it has steps to run; `pulse` is pinged through each step)."""
    if data is None:
        return None
    tune = cfg.continual.finetune
    tuner = FineTuner(arch, tune, cfg.seed, data_dir=cfg.data_dir,
                      on_step=pulse) if tune.steps else None
    return ContinualStage(data=data, arch=arch, cfg=cfg.continual, tuner=tuner)
