"""`pulsewire edge dp-reset`: the explicit, logged step that starts a device's lost local-DP ledger afresh."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def cmd_dp_reset(args: argparse.Namespace) -> int:
    """Start a device's local-DP ledger afresh: the explicit, logged step a device with a lost ledger needs."""
    from edge_runtime.ledger_store import LEDGER_FILE, LedgerStore, reset_ledger

    state = Path(args.state_dir)
    if not state.is_dir():
        print(f"pulsewire: error: {state} is not a directory; give the device's state folder (where its alert "
              f"spool and {LEDGER_FILE} live)", file=sys.stderr)
        return 2
    if not args.yes:
        store = LedgerStore(state, 1.0) if (state / LEDGER_FILE).exists() else None
        now = (store.lost or f"intact: {len(store.ledger.rows)} release(s), epsilon {store.ledger.epsilon:.4g}"
               if store else "no ledger")
        if store is not None:
            store.close()
        print(f"pulsewire: error: the ledger in {state} is {now}. Resetting forgets every release it holds and "
              f"lets the device spend a new budget; repeat with --yes to do it (the reset is logged and kept in "
              f"the new ledger)", file=sys.stderr)
        return 2
    moved = reset_ledger(state, args.reason)
    print(f"privacy ledger in {state} reset" + (f"; the old one is kept as {moved}" if moved else ""))
    return 0


def add_dp_reset_parser(esub) -> None:
    p = esub.add_parser("dp-reset", help="start a device's local-DP ledger afresh (after it was lost); logged",
                        description="A device whose privacy ledger is missing or damaged refuses to train. This "
                                    "starts a new, empty ledger in its state folder, keeps the old file beside "
                                    "it and records the reset (with --reason) in the new ledger.")
    p.add_argument("--state-dir", required=True, help="the device's state folder (alert spool and ledger)")
    p.add_argument("--reason", default="operator reset", help="why: kept with the reset")
    p.add_argument("--yes", action="store_true", help="really reset (without it: show the ledger's state)")
    p.set_defaults(func=cmd_dp_reset)
