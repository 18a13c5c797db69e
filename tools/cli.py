"""`pulsewire`: the one command line. Subcommands import TensorFlow only when they need it."""
from __future__ import annotations

import argparse
import logging
import os
import sys

from tools.data_args import add_data_args, cache_root, resolve_data_dir
from tools.experiment_args import add_federated_args, add_round_policy_args

log = logging.getLogger("pulsewire")


def build_parser() -> argparse.ArgumentParser:
    from tools.deploy_commands import add_device_parser
    from tools.edge_commands import add_edge_parser
    from tools.federated_commands import add_fleet_bench_parser, add_fleet_parser, add_simulate_parser
    from tools.training_commands import add_data_parser, add_foundation_parser
    from training.federated.registry import STRATEGIES  # numpy only: keeps --help fast

    parser = argparse.ArgumentParser(prog="pulsewire", description="pulsewire: federated TinyML for wearable ECG, from MIT-BIH to int8 TFLite.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    add_data_parser(sub)
    add_foundation_parser(sub)
    __import__("tools.classifier_cv").classifier_cv.add_classifier_cv_parser(sub)
    add_simulate_parser(sub, sorted(STRATEGIES))
    add_fleet_parser(sub, sorted(STRATEGIES))
    add_fleet_bench_parser(sub)
    __import__("tools.task_commands").task_commands.add_tasks_parser(sub)
    __import__("tools.task_report").task_report.add_report_parser(sub)

    from tools.aggregate_command import add_aggregate_parser

    add_aggregate_parser(sub, add_federated_args, add_round_policy_args, sorted(STRATEGIES))
    add_edge_parser(sub)
    add_device_parser(sub)
    __import__("tools.label_command").label_command.add_label_parser(sub)
    __import__("tools.optimize_commands").optimize_commands.add_optimize_parser(sub)
    __import__("tools.firmware_commands").firmware_commands.add_firmware_parser(sub)
    __import__("tools.hil_commands").hil_commands.add_hil_parser(sub)
    __import__("tools.server_commands").server_commands.add_server_parser(sub)
    __import__("tools.broker_commands").broker_commands.add_broker_parser(sub)
    __import__("tools.fleet_sim.cli").fleet_sim.cli.add_parser(sub)
    __import__("tools.fleet_sim.bench").fleet_sim.bench.add_parser(sub)
    __import__("tools.fleet_sim.fairness").fleet_sim.fairness.add_parser(sub)
    __import__("tools.aggregator_bench").aggregator_bench.add_parser(sub)
    __import__("tools.fedbuff_bench").fedbuff_bench.add_parser(sub)
    __import__("tools.fedbuff_sweep").fedbuff_sweep.add_parser(sub)
    __import__("tools.dp_noise_bench").dp_noise_bench.add_parser(sub)
    from tools.privacy_bench.command import add_parser as add_privacy_bench_parser

    add_privacy_bench_parser(sub, add_data_args)
    sub.choices["privacy-bench"].set_defaults(func=cmd_privacy_bench)
    return parser


def cmd_privacy_bench(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from tools.privacy_bench.command import run_command

    return run_command(args, resolve_data_dir(args) if set(args.parts) - {"secagg", "accounting"} else None, cache_root())


def main(argv: list[str] | None = None) -> int:
    from tools.quiet_tensorflow import silence_tensorflow_startup

    silence_tensorflow_startup()
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    from broker.launcher import BrokerUnavailable
    from training.data.mitdb import DataUnavailable, RecordError
    from training.federated.checkpoint import CheckpointError

    try:
        return args.func(args)
    except (DataUnavailable, RecordError, BrokerUnavailable, CheckpointError) as exc:
        print(f"pulsewire: error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        log.debug("missing file", exc_info=True)
        print(f"pulsewire: error: {exc.filename or exc}: no such file; check the path you passed", file=sys.stderr)
        return 2
    except ValueError as exc:  # configuration dataclasses say what to fix in their ValueError
        log.debug("invalid input", exc_info=True)
        print(f"pulsewire: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pulsewire: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
