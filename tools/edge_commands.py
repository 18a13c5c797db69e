"""`pulsewire keys`, `certs`, `release` and `edge ...`: where the device's commands join the parser, in the
order `--help` lists them."""
from __future__ import annotations

from tools.edge_dp_reset import add_dp_reset_parser
from tools.edge_install import add_certs_parser, add_install_parser, add_keys_parser
from tools.edge_measure import add_bench_parser, add_score_parser
from tools.edge_run import add_run_parser, add_selftest_parser
from tools.release_commands import add_release_parser
from tools.robustness_commands import add_robustness_parser


def add_edge_parser(sub) -> None:
    add_keys_parser(sub)
    add_certs_parser(sub)
    add_release_parser(sub)

    edge = sub.add_parser("edge", help="the device pipeline: run it on a record or stream, score its output")
    esub = edge.add_subparsers(dest="edge_command", required=True)
    add_run_parser(esub)
    add_selftest_parser(esub)
    add_bench_parser(esub)
    add_robustness_parser(esub)
    add_install_parser(esub)
    add_dp_reset_parser(esub)
    add_score_parser(esub)
