"""ClientApp: one local epoch on this node's partition, timed around the epoch only.

A SuperNode's `--node-config "partition-id=I num-partitions=3"` picks `part-I.npz` in the run's
`data-dir`. The reply carries the trained arrays and a MetricRecord with `num-examples` (FedAvg's
weight), `train-s` (time.perf_counter around the epoch), `partition-id`, and the time.time()
at which the handler was entered (`entered-unix`) and left (`left-unix`, reply record built).
"""

from __future__ import annotations

import time
from pathlib import Path

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedbench.task import build_mlp, load_xy, number, train_epoch

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received model for one epoch and reply with it and the epoch's seconds."""
    entered = time.time()
    config = context.run_config
    partition = int(context.node_config["partition-id"])
    server_round = int(number(msg.content.config_records["config"]["server-round"]))
    x, y = load_xy(Path(str(config["data-dir"])) / f"part-{partition}.npz")
    model = build_mlp(msg.content.array_records["arrays"].to_torch_state_dict())
    start = time.perf_counter()
    train_epoch(model, x, y, lr=float(config["learning-rate"]),
                momentum=float(config["momentum"]), batch_size=int(config["batch-size"]),
                seed=1000 * server_round + partition)
    train_s = time.perf_counter() - start
    arrays = ArrayRecord(model.state_dict())
    metrics = MetricRecord({"num-examples": len(y), "train-s": train_s, "partition-id": partition,
                            "entered-unix": entered, "left-unix": time.time()})
    content = RecordDict({"arrays": arrays, "metrics": metrics})
    return Message(content=content, reply_to=msg)
