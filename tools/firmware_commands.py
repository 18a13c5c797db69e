"""`pulsewire firmware ...`: where the firmware commands join the parser, in the order `--help` lists them."""
from __future__ import annotations

from tools.firmware_bench import add_bench_parser
from tools.firmware_generate import add_generate_parser
from tools.firmware_release import add_keyheader_parser, add_release_parser


def add_firmware_parser(sub) -> None:
    fw = sub.add_parser("firmware", help="generate C for a microcontroller from an int8 model; firmware bench")
    fsub = fw.add_subparsers(dest="firmware_command", required=True)
    add_generate_parser(fsub)
    add_bench_parser(fsub)
    add_release_parser(fsub)
    add_keyheader_parser(fsub)
