"""ServerApp: FedAvg over all clients, centralised accuracy on `test.npz`, timestamps to JSON.

Per round it records, in this process: `sent_unix` (time.time()) and the perf_counter start when
FedAvg's `configure_train` has built the train messages, i.e. just before `grid.send_and_receive`
pushes them; `wall_s` when `aggregate_train` has averaged the replies (send -> aggregated);
the clients' reported `train-s` by partition, and per client `to_clients_s` (sent -> its
ClientApp handler entered: delivery, process start and imports) and `from_clients_s` (handler
left -> aggregated: the reply's way back); then the global model's test accuracy, and
`evaluated_s` when it is known (sent -> evaluated, on the same clock as `wall_s`). No
client-side evaluation runs (fraction_evaluate 0) and round 0's evaluation is skipped, so the
first round's `sent_unix` follows start-up directly. All of it, with the parameter count and
the flwr/torch versions, goes to the run config's `result-file` when the run has finished.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import flwr
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from fedbench.task import accuracy, build_mlp, load_state, load_xy, number

app = ServerApp()


@dataclass
class RoundTimes:
    """What the ServerApp saw of one round."""

    round: int
    sent_unix: float
    wall_s: float = 0.0
    train_s: list[float] = field(default_factory=list)
    to_clients_s: list[float] = field(default_factory=list)
    from_clients_s: list[float] = field(default_factory=list)
    accuracy: float = 0.0
    evaluated_s: float = 0.0


class TimedFedAvg(FedAvg):
    """FedAvg that times each round from its train messages being sent to their aggregate."""

    def __init__(self, num_clients: int) -> None:
        super().__init__(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=num_clients,
                         min_available_nodes=num_clients)
        self.num_clients = num_clients
        self.rounds: list[RoundTimes] = []
        self._started = 0.0

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """Build the train messages (after waiting for the nodes), then start the clock."""
        messages = super().configure_train(server_round, arrays, config, grid)
        self.rounds.append(RoundTimes(round=server_round, sent_unix=time.time()))
        self._started = time.perf_counter()
        return messages

    def aggregate_train(self, server_round: int, replies: Iterable[Message],
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Average the replies, stop the clock and keep each client's training seconds."""
        replies = list(replies)
        result = super().aggregate_train(server_round, replies)
        wall_s = time.perf_counter() - self._started
        aggregated_unix = time.time()
        good = [msg for msg in replies if not msg.has_error()]
        if len(good) < self.num_clients:
            reasons = [msg.error.reason for msg in replies if msg.has_error()]
            raise RuntimeError(f"round {server_round}: {len(good)} of {self.num_clients} "
                               f"clients replied; errors: {reasons}")
        metrics = sorted((msg.content.metric_records["metrics"] for msg in good),
                         key=lambda record: number(record["partition-id"]))
        current = self.rounds[-1]
        current.wall_s = wall_s
        current.train_s = [number(record["train-s"]) for record in metrics]
        current.to_clients_s = [number(record["entered-unix"]) - current.sent_unix
                                for record in metrics]
        current.from_clients_s = [aggregated_unix - number(record["left-unix"])
                                  for record in metrics]
        return result

    def evaluated(self, accuracy: float) -> None:
        """Keep the round's test accuracy and the time from sending to knowing it."""
        self.rounds[-1].accuracy = accuracy
        self.rounds[-1].evaluated_s = time.perf_counter() - self._started


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run FedAvg for `num-server-rounds` rounds and write the timings to `result-file`."""
    config = context.run_config
    data_dir = Path(str(config["data-dir"]))
    model = build_mlp(load_state(data_dir / "init.npz"))
    x_test, y_test = load_xy(data_dir / "test.npz")
    strategy = TimedFedAvg(int(config["num-clients"]))

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if server_round == 0:
            return None
        model.load_state_dict(arrays.to_torch_state_dict())
        strategy.evaluated(accuracy(model, x_test, y_test))
        return MetricRecord({"accuracy": strategy.rounds[-1].accuracy})

    strategy.start(grid=grid, initial_arrays=ArrayRecord(model.state_dict()),
                   num_rounds=int(config["num-server-rounds"]), evaluate_fn=evaluate)
    result = {
        "rounds": [asdict(times) for times in strategy.rounds],
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "versions": {"flwr": flwr.__version__, "torch": torch.__version__,
                     "python": sys.version.split()[0]},
    }
    Path(str(config["result-file"])).write_text(json.dumps(result), encoding="utf-8")
