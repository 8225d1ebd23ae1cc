"""`fedstream demo --sensors`: edges that learn from live sensor streams.

Two brokers: the federation's, and a gateway broker the sensors publish on (one for the
demo's gateways, each under its own topic prefix). A replay per gateway publishes its share of
BasicMotions (smartwatch accelerometer and gyroscope at 10 Hz, four activities: standing,
running, walking, badminton; the `.ts` files aeon ships) as SenML readings, with the activity
of each 10 s recording as a label span. Edges store the readings, cut 2 s windows and train a
1-D convolution net on them; the cloud scores every version on the test split's windows,
fine-tunes on its own share of the training split and gates what it serves. Only updates,
status and receipts reach the federation's broker.

With `forecast` the streams carry no labels at all: edges learn, self-supervised, to predict
the next 0.3 s of the accelerometer from the last 2 s with a GRU, and every version is scored
by its mean absolute error (lower is better) on the test split's windows.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TextIO

from fedstream.broker import BrokerParams, Mosquitto
from fedstream.client import FleetAddress, FleetClient
from fedstream.demo import Processes, kept_backend_choices, wait_ready
from fedstream.operator import fleet_status, start_round
from fedstream.shared.errors import FedstreamError, Reason, TransportError
from fedstream.shared.learning.metrics import ACCURACY, MAE, Metric
from fedstream.shared.learning.series.archive import channels_of
from fedstream.shared.learning.sources import SOURCES
from fedstream.shared.protocol.commands import RoundStart
from fedstream.shared.protocol.control import EdgeStatus
from fedstream.shared.protocol.data import DataBatch

FEDERATION = "sensors-demo"
MODEL = "motion-cnn"
DATASET = "BasicMotions"
RATE_HZ = 10.0
LENGTH, STRIDE = 20, 10  # 2 s windows, a new one every second
CLASSES = 4
DEVICE = "watch"
# The training split is dealt into one part per edge plus the cloud's own part.
WINDOW_PARAMS = {"dataset": DATASET, "rate_hz": RATE_HZ, "length": LENGTH, "stride": STRIDE}
HORIZON, TARGETS = 3, ("accel_x", "accel_y", "accel_z")
READINGS_PER_CASE = 6 * 100  # six channels, 10 s at 10 Hz  # forecast: the next 0.3 s of these
Task = Literal["classify", "forecast"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SensorDemoParams:
    """How big a sensor demo to run.

    Attributes:
        rounds: Federated rounds.
        edges: Gateways, each with its own replay.
        workdir: Configs, logs and every service's data directory.
        speed: Replay pace (20: twenty times real time; timestamps keep 10 Hz).
        min_spans: Each edge holds this many labelled recordings before the first round.
        min_accuracy: Exit non-zero if the final accuracy is below this.
        ready_timeout_s: How long the fleet may take to come up.
        task: `classify` the activity from label spans, or `forecast` the accelerometer
            (no labels; regression scored by MAE).
    """

    rounds: int = 5
    edges: int = 3
    workdir: Path = Path("demo-sensors-run")
    speed: float = 20.0
    min_spans: int = 8
    min_accuracy: float = 0.0
    ready_timeout_s: float = 180.0
    task: Task = "classify"

    def __post_init__(self) -> None:
        if not (1 <= self.rounds <= 1000 and 1 <= self.edges <= 16 and self.speed > 0
                and self.min_spans >= 1 and self.task in ("classify", "forecast")):
            raise FedstreamError(Reason.BAD_CONFIG, "rounds must be 1-1000, edges 1-16, "
                                                    "speed > 0, min_spans >= 1 and task "
                                                    "classify or forecast")

    @property
    def forecast(self) -> bool:
        """True for the self-supervised forecasting variant."""
        return self.task == "forecast"


def cloud_config(workdir: Path, port: int, *, forecast: bool) -> Path:
    """The cloud: a 1-D CNN over [6 channels x 20 steps] scored on the test split's windows
    (or, forecasting, a GRU predicting 3 channels x 3 steps, scored by MAE), with the continual
    pipeline (fine-tuning, replay, gate) on."""
    path = workdir / "cloud.toml"
    window = ", ".join(f"{k} = {v!r}" if isinstance(v, str) else f"{k} = {v}"
                       for k, v in WINDOW_PARAMS.items())
    targets = ", ".join(f'"{t}"' for t in TARGETS)
    forecasting = f'task = "forecast", horizon = {HORIZON}, targets = [{targets}], {window}'
    model = (f"""[architecture]
family = "gru"
input_shape = [6, {LENGTH}]
task = "regression"
outputs = {len(TARGETS) * HORIZON}
params = {{hidden = 32}}

[eval_source]
name = "sensor_archive"
params = {{split = "test", {forecasting}}}
""" if forecast else f"""[architecture]
family = "cnn1d"
input_shape = [6, {LENGTH}]
outputs = {CLASSES}
params = {{channels = [16, 16], kernel = 5}}

[eval_source]
name = "sensor_archive"
params = {{split = "test", {window}}}
""")
    path.write_text(f"""\
data_dir = "{workdir / "cloud-data"}"
federation = "{FEDERATION}"
model = "{MODEL}"
threads = 1

[broker]
host = "127.0.0.1"
port = {port}

[log]
json_lines = true

[rounds]
epochs = 5
lr = {0.01 if forecast else 0.05}
batch_size = 32
min_samples = 20
max_windows = 400
deadline_s = 120.0

[continual]
enabled = true
min_window_rows = 20

[continual.finetune]
steps = 50
lr = {0.005 if forecast else 0.01}

{model}""")
    return path


def edge_config(workdir: Path, index: int, *, port: int, sensors_port: int,
                forecast: bool) -> Path:
    """Edge `index`: no data set, a `[sensors]` table taking the watch's six SenML channels
    from the gateway broker, and labels from its label topic (or, forecasting, none)."""
    path = workdir / f"edge-{index}.toml"
    targets = ", ".join(f'"{t}"' for t in TARGETS)
    labels = (f'labels = "forecast"\nhorizon = {HORIZON}\ntargets = [{targets}]' if forecast
              else f'labels = "topic"\nlabel_topic = "labels/edge-{index}"\n'
                   f"classes = {CLASSES}")
    channels = "".join(f"""
[[sensors.channels]]
name = "{c.name}"
topic = "sensors/edge-{index}/{DEVICE}"
format = "senml"
senml_name = "{DEVICE}:{c.name}"
unit = "{c.unit}"
""" for c in channels_of(DATASET, 6))
    path.write_text(f"""\
edge_id = "edge-{index}"
seed = {index}
data_dir = "{workdir / f"edge-{index}-data"}"
federation = "{FEDERATION}"
model = "{MODEL}"
threads = 1
status_every_s = 1.0

[broker]
host = "127.0.0.1"
port = {port}

[log]
json_lines = true

[sensors]
{labels}

[sensors.broker]
host = "127.0.0.1"
port = {sensors_port}

[sensors.align]
rate_hz = {RATE_HZ}
max_gap_s = 0.5

[sensors.windows]
length = {LENGTH}
stride = {STRIDE}
{channels}""")
    return path


class SensorFleet:
    """Brokers, cloud, edges and replays of a running sensor demo.

    Build it with `SensorFleet.running`; `round` runs one federated round.
    """

    def __init__(self, *, params: SensorDemoParams, federation: Mosquitto, gateway: Mosquitto,
                 procs: Processes, address: FleetAddress) -> None:
        self.params, self.federation, self.gateway = params, federation, gateway
        self.procs, self.address = procs, address

    @classmethod
    @contextmanager
    def running(cls, params: SensorDemoParams, *, out: TextIO) -> Iterator[SensorFleet]:
        """Start everything, give the cloud its own share, wait until every edge holds
        `min_spans` labelled recordings; stop everything on the way out."""
        shutil.rmtree(params.workdir, ignore_errors=True)
        params.workdir.mkdir(parents=True)
        parts = params.edges + 1
        with Mosquitto(BrokerParams(port=0, data_dir=params.workdir / "broker")) as fed, \
                Mosquitto(BrokerParams(port=0, data_dir=params.workdir / "gateway")) as gw:
            procs = Processes(params.workdir, env=kept_backend_choices())
            try:
                procs.spawn("cloud", "cloud", cloud_config(params.workdir, fed.port,
                                                           forecast=params.forecast))
                for i in range(params.edges):
                    procs.spawn(f"edge-{i}", "edge", edge_config(
                        params.workdir, i, port=fed.port, sensors_port=gw.port,
                        forecast=params.forecast))
                    procs.spawn_command(f"replay-{i}", _replay_args(i, parts, gw.port, params))
                address = FleetAddress.local(host=fed.host, port=fed.port,
                                             federation=FEDERATION, model=MODEL)
                print(f"federation broker on {fed.host}:{fed.port}, gateway broker on "
                      f"{gw.host}:{gw.port}; cloud, {params.edges} edges and their replays "
                      f"of {DATASET} at {params.speed:g}x starting (logs in "
                      f"{params.workdir}/)", file=out, flush=True)
                fleet = cls(params=params, federation=fed, gateway=gw, procs=procs,
                            address=address)
                wait_ready(address, edges=params.edges, procs=procs,
                           timeout_s=params.ready_timeout_s, out=out)
                fleet.give_cloud_data(parts, out)
                fleet.wait_for_data(out)
                yield fleet
            finally:
                procs.stop()

    def give_cloud_data(self, parts: int, out: TextIO) -> None:
        """The cloud's own windows, labelled (or with their forecasting targets): the last
        part of the training split."""
        task = ({"task": "forecast", "horizon": HORIZON, "targets": list(TARGETS)}
                if self.params.forecast else {})
        own = SOURCES.build("sensor_archive", split="train", part=parts - 1, parts=parts,
                            **WINDOW_PARAMS, **task).load()
        with FleetClient(self.address) as fleet:
            stored = fleet.send_data(DataBatch.of(own.features, own.y, window="cloud-share"))
        print(f"cloud data: {len(own)} windows of its own, {stored.detail}", file=out,
              flush=True)

    def wait_for_data(self, out: TextIO) -> None:
        """Until every edge's status says it holds `min_spans` recordings (labelled ones, or
        their readings when forecasting)."""
        give_up = time.monotonic() + self.params.ready_timeout_s
        key, need = (("readings", self.params.min_spans * READINGS_PER_CASE)
                     if self.params.forecast else ("spans", self.params.min_spans))
        while True:
            self.procs.check_alive()
            edges = self.edges()
            if len(edges) >= self.params.edges and all(
                    int(e.data.get(key, 0)) >= need for e in edges):
                print("edges hold: " + ", ".join(
                    f"{e.edge_id} {e.data.get('readings')} readings, {e.data.get('spans')} "
                    "labelled recordings" for e in edges), file=out, flush=True)
                return
            if time.monotonic() > give_up:
                raise TransportError(Reason.NO_REPLY, "the edges did not collect enough "
                                     f"readings in time: {[dict(e.data) for e in edges]}")
            time.sleep(0.5)

    def edges(self) -> list[EdgeStatus]:
        """The online edges as the cloud last saw them, by id."""
        return sorted((e for e in fleet_status(self.address).edges if e.online),
                      key=lambda e: e.edge_id)

    def round(self, out: TextIO) -> Mapping[str, Any]:
        """One federated round; the result with what each edge held and trained on."""
        result: dict[str, Any]
        try:
            result = dict(start_round(self.address, RoundStart(), wait=True, out=out).result)
        except FedstreamError as err:
            if err.reason not in (Reason.REGRESSED_NEWEST, Reason.REGRESSED_PAST):
                raise
            # start_round told why; in the demo a refused candidate is a result, not the end.
            print("  the demo goes on with the served model", file=out, flush=True)
            last = fleet_status(self.address).round
            assert last is not None
            result = {**last.result, "gate": str(err.reason)}
        result["edges"] = {e.edge_id: (int(e.data.get("readings", 0)),
                                       int(e.data.get("windows_trained", 0)))
                           for e in self.edges()}
        return result


def _replay_args(index: int, parts: int, port: int, params: SensorDemoParams) -> list[str]:
    labels = [] if params.forecast else ["--label-topic", f"labels/edge-{index}"]
    return [sys.executable, "-m", "fedstream", "sensors", "replay",
            "--broker", f"127.0.0.1:{port}", "--device", DEVICE,
            "--topic", f"sensors/edge-{index}", "--format", "senml", "--dataset", DATASET,
            "--split", "train", "--part", str(index), "--parts", str(parts),
            "--speed", str(params.speed), *labels, "--loop"]


def run_sensor_demo(params: SensorDemoParams, *, out: TextIO) -> int:
    """Run the demo and print a table of rounds; exit code 0 on success."""
    metric = MAE if params.forecast else ACCURACY
    with SensorFleet.running(params, out=out) as fleet:
        initial = fleet_status(fleet.address)
        start = float(initial.model_metrics.get(metric.name, float("nan")))
        print(f"fleet ready: model v{initial.model_version}, {metric.name} {start:.4f} on "
              f"{DATASET} test windows", file=out, flush=True)
        results = [fleet.round(out) for _ in range(params.rounds)]
    print_sensor_table(results, metric, out)
    final = float(results[-1][metric.name])
    if params.forecast and metric.loss_of(start, final) >= 0:
        print(f"final mae {final:.4f} is not below the initial {start:.4f}", file=out)
        return 1
    if not params.forecast and final < params.min_accuracy:
        print(f"final accuracy {final:.4f} is below {params.min_accuracy}", file=out)
        return 1
    return 0


def print_sensor_table(results: list[Mapping[str, Any]], metric: Metric, out: TextIO) -> None:
    """Round, version, the metric, time, then per edge: readings stored / windows trained on."""
    names = sorted({e for r in results for e in r["edges"]})
    print(f"\n{'round':>5} {'version':>7} {metric.name:>8} {'seconds':>8} {'updates':>7} "
          + " ".join(f"{n + ' stored/trained':>24}" for n in names) + "  gate", file=out)
    for i, r in enumerate(results, 1):
        cells = " ".join(f"{'{}/{}'.format(*r['edges'].get(n, (0, 0))):>24}" for n in names)
        print(f"{i:>5} {r['version']:>7} {r[metric.name]:>8.4f} {r['seconds']:>8.2f} "
              f"{r['updates']:>7} {cells}  {r.get('gate', 'promoted')}", file=out)
