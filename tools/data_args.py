"""Where the MIT-BIH records come from: the --data-dir/--offline flags, $MITDB_DIR and the cache folder
($PULSEWIRE_CACHE), shared by every command that loads beats."""
from __future__ import annotations

import argparse
import os
from pathlib import Path


def cache_root() -> Path:
    from training.data.mitdb import default_cache_root

    return default_cache_root()


def resolve_data_dir(args: argparse.Namespace) -> Path:
    from training.data.mitdb import locate_mitdb

    return locate_mitdb(args.data_dir or os.environ.get("MITDB_DIR"), cache_root(),
                        allow_download=not args.offline)


def add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="folder with the MIT-BIH WFDB files (default: $MITDB_DIR, else a "
                                      "cached download in $PULSEWIRE_CACHE or ~/.cache/pulsewire)")
    p.add_argument("--offline", action="store_true", help="never download; fail if no local copy is found")
