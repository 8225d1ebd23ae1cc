"""`fedstream` command line: run the services, drive rounds, show the fleet, run the demo."""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

from fedstream.cli_client import add_client_options, client_address
from fedstream.fleet_cli import add_fleet_parsers, add_json_option
from fedstream.install_cli import add_install_parser
from fedstream.security_cli import add_edge_identity_parsers, add_pki_parser
from fedstream.shared.errors import REASONS, FedstreamError
from fedstream.shared.logs import configure_logging
from fedstream.sim_cli import add_sim_parser
from fedstream.tokens_cli import add_token_parser

if TYPE_CHECKING:
    from fedstream.cloud.config import CloudConfig
    from fedstream.edge_node.config import EdgeConfig
    from fedstream.shared.notify import Notifier

Handler = Callable[[argparse.Namespace], int]
C = TypeVar("C", "CloudConfig", "EdgeConfig")


class Runnable(Protocol):
    """A service: runs until the stop event is set, telling systemd how it is doing."""

    def run(self, stop: threading.Event, notify: Notifier | None = None) -> None: ...


def _broker_run(args: argparse.Namespace) -> int:
    from fedstream.broker import BrokerParams, BrokerTls, broker_pid_file, run_broker
    from fedstream.shared.security.pki import acl_path, crl_path

    tls = None if args.pki is None else BrokerTls(
        ca=args.pki / "ca.crt", cert=args.pki / "broker.crt", key=args.pki / "broker.key",
        host=args.tls_host, port=args.tls_port, acl=acl_path(args.pki),
        crl=crl_path(args.pki))
    # With --pki the pid file sits beside the ACL and CRL, where `edge revoke` looks for it.
    pid_file = None if args.pki is None else broker_pid_file(args.pki)
    return run_broker(BrokerParams(host=args.host, port=args.port, data_dir=args.data_dir,
                                   tls=tls, pid_file=pid_file))


def _cloud_run(args: argparse.Namespace) -> int:
    from fedstream.cloud.config import CloudConfig
    from fedstream.cloud.wiring import build_cloud

    return _serve(args.config, CloudConfig, build_cloud)


def _edge_run(args: argparse.Namespace) -> int:
    from fedstream.edge_node.config import EdgeConfig
    from fedstream.edge_node.wiring import open_edge

    return _serve(args.config, EdgeConfig, open_edge)


def _serve(config: Path, config_cls: type[C], service: Callable[[C], Runnable]) -> int:
    """Load a service's config, set up logging and threads, check its data directory, run it
    until SIGINT/SIGTERM (under systemd, with its notify socket)."""
    from fedstream.shared.config import load_config
    from fedstream.shared.files import prepare_data_dir
    from fedstream.shared.lifecycle import stop_on_signals
    from fedstream.shared.notify import Notifier

    cfg = load_config(config_cls, config)
    configure_logging(json=cfg.log.json_lines, level=cfg.log.level)
    prepare_data_dir(cfg.data_dir)
    if cfg.threads is not None:
        # Several services on one small host oversubscribe the cores with torch's default pool.
        import torch

        torch.set_num_threads(cfg.threads)
    notify = Notifier.from_env()
    try:
        with stop_on_signals() as stop:
            service(cfg).run(stop, notify)
    finally:
        notify.close()
    return 0


def _round_start(args: argparse.Namespace) -> int:
    from fedstream.operator import start_round
    from fedstream.shared.protocol.commands import RoundStart
    from fedstream.shared.protocol.control import RoundMode

    # Flags not given stay None, the cloud's defaults; the cloud refuses the other mode's
    # flags (a buffer for a sync round) rather than ignore them.
    request = RoundStart(
        epochs=args.epochs, lr=args.lr, deadline_s=args.deadline, codec=args.codec,
        codec_params=dict(args.codec_param) or None,
        mode=RoundMode.ASYNC if args.asynchronous else None, fraction=args.fraction,
        edges=None if args.edges is None else tuple(e for e in args.edges.split(",") if e),
        buffer=args.buffer, max_staleness=args.max_staleness, max_windows=args.max_windows,
        max_age_s=args.max_age, min_samples=args.min_samples)
    start_round(client_address(args), request, wait=args.wait, out=sys.stdout)
    return 0


def _round_stop(args: argparse.Namespace) -> int:
    from fedstream.operator import stop_round

    stop_round(client_address(args), out=sys.stdout)
    return 0


def _model(args: argparse.Namespace) -> int:
    from fedstream.operator import model_command

    model_command(client_address(args), action=args.action, version=args.version, out=sys.stdout,
                  as_json=getattr(args, "json", False))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from fedstream.operator import predict

    predict(client_address(args), csv=args.csv, batch_rows=args.batch_rows, out=sys.stdout)
    return 0


def _demo(args: argparse.Namespace) -> int:
    if args.sensors:
        from fedstream.demo_sensors import SensorDemoParams, run_sensor_demo

        return run_sensor_demo(SensorDemoParams(
            rounds=args.rounds, edges=args.edges, min_accuracy=args.min_accuracy,
            speed=args.speed, workdir=args.workdir or Path("demo-sensors-run"),
            task="forecast" if args.forecast else "classify"),
            out=sys.stdout)
    from fedstream.demo import DemoParams, run_demo

    return run_demo(DemoParams(rounds=args.rounds, edges=args.edges,
                               workdir=args.workdir or Path("demo-run"),
                               min_accuracy=args.min_accuracy, continual=args.continual),
                    out=sys.stdout)


def _sensors_replay(args: argparse.Namespace) -> int:
    from fedstream.sensors_replay import ReplayParams, parse_broker, replay
    from fedstream.shared.lifecycle import stop_on_signals

    conn = parse_broker(args.broker, connect_timeout_s=args.connect_timeout)
    params = ReplayParams(
        device=args.device, topic=args.topic, format=args.format, dataset=args.dataset,
        split=args.split, part=args.part, parts=args.parts, seed=args.seed, rate_hz=args.rate,
        speed=args.speed, label_topic=args.label_topic, loop=args.loop, limit=args.limit,
        progress_s=args.progress)
    with stop_on_signals() as stop:
        done = replay(conn, params, stop=stop)
    print(f"published {done.messages} messages: {done.readings} readings of {done.cases} "
          f"cases, {done.spans} label spans, in {done.seconds:.1f} s")
    return 0


def _add_sensors_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                        ) -> None:
    """`fedstream sensors replay`."""
    sensors = sub.add_parser("sensors", help="sensor readings for the edges' local brokers")
    replay = sensors.add_subparsers(dest="action", required=True).add_parser(
        "replay", help="publish a packaged sensor archive (BasicMotions) as live readings")
    replay.add_argument("--broker", default="127.0.0.1:1883", help="HOST:PORT")
    replay.add_argument("--connect-timeout", type=float,
                        help="seconds to keep trying to reach the broker")
    replay.add_argument("--device", required=True, help="device name (topic level, SenML bn)")
    replay.add_argument("--topic", default="sensors",
                        help="topic prefix: readings go to PREFIX/DEVICE (bare: /CHANNEL)")
    replay.add_argument("--format", default="senml",
                        help="senml: a pack per step; json/msgpack: a flat map with ts; bare: "
                             "a number per channel topic, no timestamp (the edge uses arrival "
                             "time, so only meaningful at --speed 1)")
    replay.add_argument("--dataset", default="BasicMotions", help="dataset packaged in aeon")
    replay.add_argument("--split", default="train", help="train or test")
    replay.add_argument("--part", type=int, default=0, help="which part of the cases")
    replay.add_argument("--parts", type=int, default=1, help="parts the cases are dealt into")
    replay.add_argument("--seed", type=int, default=0, help="seed of the case shuffle")
    replay.add_argument("--rate", type=float, default=10.0, help="the dataset's rate in Hz")
    replay.add_argument("--speed", type=float, default=1.0,
                        help="publishing pace (10: ten times real time; timestamps keep the "
                             "dataset's rate)")
    replay.add_argument("--label-topic", help="topic for label spans (none if not given)")
    replay.add_argument("--loop", action="store_true", help="start over when done")
    replay.add_argument("--limit", type=int, help="stop after N cases (across loops)")
    replay.add_argument("--progress", type=float, default=10.0,
                        help="seconds between replay_progressed events (--log-level info)")
    replay.set_defaults(handler=_sensors_replay)


def _key_value(text: str) -> tuple[str, int | float | str | bool]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    value: int | float | str | bool = raw
    if raw.lower() in ("true", "false"):
        value = raw.lower() == "true"
    else:
        for kind in (int, float):
            try:
                value = kind(raw)
                break
            except ValueError:
                continue
    return key, value


def _add_round_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                      ) -> None:
    """`fedstream round start|stop`."""
    rnd = sub.add_parser("round", help="drive federated rounds and async sessions")
    rnd_actions = rnd.add_subparsers(dest="action", required=True)
    start = rnd_actions.add_parser("start", help="open a round (or, with --async, a session)")
    add_client_options(start)
    start.add_argument("--wait", action="store_true",
                       help="follow the round to its end (a session: print each version)")
    start.add_argument("--epochs", type=int)
    start.add_argument("--lr", type=float)
    start.add_argument("--deadline", type=float,
                       help="seconds to collect updates (a session: how long it runs)")
    start.add_argument("--async", dest="asynchronous", action="store_true",
                       help="open an async (FedBuff) session: any edge trains whenever it "
                            "holds a new version; a version every --buffer updates, until "
                            "--deadline or `round stop`")
    start.add_argument("--buffer", type=int, metavar="K",
                       help="async: aggregate every K accepted updates (0: the edges online)")
    start.add_argument("--max-staleness", type=int, metavar="S",
                       help="async: accept updates trained up to S versions before the "
                            "current one, weighted samples/sqrt(1+staleness)")
    start.add_argument("--fraction", type=float,
                       help="select a seeded random share of the online edges (0-1]")
    start.add_argument("--edges", help="select these edges (comma-separated ids)")
    start.add_argument("--codec",
                       help="update codec for this round (f32, f16, bf16, int8, topk, topk16)")
    start.add_argument("--codec-param", type=_key_value, action="append", default=[],
                       metavar="KEY=VALUE", help="codec parameter, e.g. density=0.02")
    start.add_argument("--max-windows", type=int, metavar="N",
                       help="edges train on their newest N samples (windows of a stream) only")
    start.add_argument("--max-age", type=float, metavar="SECONDS",
                       help="sensor edges train on windows from the last SECONDS of their "
                            "stream only")
    start.add_argument("--min-samples", type=int, metavar="N",
                       help="an edge with fewer samples declines the round (too_little_data)")
    start.set_defaults(handler=_round_start)
    stop = rnd_actions.add_parser("stop", help="end the open round or session now")
    add_client_options(stop)
    stop.set_defaults(handler=_round_stop)


def _add_broker_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`fedstream broker run`."""
    broker = sub.add_parser("broker", help="run the project's Mosquitto")
    broker_run = broker.add_subparsers(dest="action", required=True).add_parser("run")
    broker_run.add_argument("--host", default="127.0.0.1")
    broker_run.add_argument("--port", type=int, default=1883, help="0 picks a free port")
    broker_run.add_argument("--data-dir", type=Path, default=Path("broker-data"))
    broker_run.add_argument("--pki", type=Path,
                            help="a `fedstream pki init` directory: also open a TLS listener "
                                 "that requires a client certificate from its CA")
    broker_run.add_argument("--tls-host", default="127.0.0.1", help="TLS listener address")
    broker_run.add_argument("--tls-port", type=int, default=8883, help="TLS listener port")
    broker_run.set_defaults(handler=_broker_run)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="fedstream", description=__doc__)
    parser.add_argument("--log-level", default="warning", help="CLI log level")
    sub = parser.add_subparsers(dest="group", required=True)

    _add_broker_parsers(sub)
    add_pki_parser(sub)
    add_install_parser(sub)
    add_sim_parser(sub)

    for name, handler in (("cloud", _cloud_run), ("edge", _edge_run)):
        group = sub.add_parser(name, help=f"run the {name} service" + (
            "; enrol or revoke an edge's identity" if name == "edge" else ""))
        actions = group.add_subparsers(dest="action", required=True)
        run = actions.add_parser("run")
        run.add_argument("--config", type=Path, required=True, help="TOML config file")
        run.set_defaults(handler=handler)
        if name == "edge":
            add_edge_identity_parsers(actions, add_client_options)

    _add_round_parser(sub)
    _add_sensors_parser(sub)
    add_token_parser(sub)

    add_fleet_parsers(sub)

    model = sub.add_parser("model", help="the model registry: versions, lineage, promotion")
    model_actions = model.add_subparsers(dest="action", required=True)
    for action, text in (("list", "every version"),
                         ("show", "one version's lineage, forgetting metrics and accuracy "
                                  "matrix"),
                         ("rollback", "republish an earlier version as a new current one"),
                         ("promote", "serve a candidate the promotion gate rejected")):
        p = model_actions.add_parser(action, help=text)
        add_client_options(p)
        if action == "list":
            p.set_defaults(version=None)
        else:
            p.add_argument("version", type=int)
        if action in ("list", "show"):
            add_json_option(p)
        p.set_defaults(handler=_model)

    pred = sub.add_parser("predict", help="predictions from the served model for a CSV's rows")
    add_client_options(pred)
    pred.add_argument("--csv", type=Path, required=True,
                      help="rows of float features (a header line is skipped)")
    pred.add_argument("--batch-rows", type=int, default=256, help="rows per request")
    pred.set_defaults(handler=_predict)

    demo = sub.add_parser("demo", help="broker + cloud + edges on the digits data (or, with "
                                       "--sensors, on replayed sensor streams), N rounds")
    demo.add_argument("--rounds", type=int, default=5)
    demo.add_argument("--edges", type=int, default=3)
    demo.add_argument("--workdir", type=Path,
                      help="default: demo-run (demo-sensors-run with --sensors)")
    demo.add_argument("--sensors", action="store_true",
                      help="edges learn from live readings: BasicMotions smartwatch data "
                           "replayed over MQTT, a 1-D CNN, the cloud's continual pipeline on")
    demo.add_argument("--forecast", action="store_true",
                      help="--sensors: no labels; edges learn to forecast the accelerometer "
                           "(a GRU, regression scored by MAE)")
    demo.add_argument("--speed", type=float, default=20.0,
                      help="--sensors: replay pace (20: twenty times real time)")
    demo.add_argument("--min-accuracy", type=float, default=0.0,
                      help="exit non-zero if the final accuracy is below this")
    demo.add_argument("--continual", action=argparse.BooleanOptionalAction, default=True,
                      help="cloud data, fine-tuning, the promotion gate and serving")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `fedstream` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    configure_logging(json=False, level=args.log_level, stream=sys.stderr)
    try:
        return int(args.handler(args))
    except FedstreamError as err:
        print(f"fedstream: {err.reason}: {err.detail} ({REASONS[err.reason].help})",
              file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        return 130
