"""`pulsewire server ...`: run the fleet server, manage its accounts, snapshot its pages, bench its ingest."""
from __future__ import annotations

import argparse
import getpass
import logging
import sys
from pathlib import Path

DEFAULT_DB = "out/server/fleet.db"


def _fail(message: str) -> int:
    print(f"pulsewire: error: {message}", file=sys.stderr)
    return 2


def _registry(spec: str | None) -> dict[str, int]:
    if not spec:
        return {}
    try:
        return {name: int(dev_id) for name, dev_id in (item.split(":") for item in spec.split(",") if item)}
    except ValueError:
        raise ValueError(f"--devices {spec!r}: use NAME:ID,NAME:ID,... (e.g. p101:101,p106:106)") from None


def _key(path: str | None, flag: str):
    """A private key named by ``flag``, or None; only ever loaded when the flag is given (never implied)."""
    from broker.model_release import load_private_key

    if not path:
        return None
    try:
        return load_private_key(Path(path))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{flag} {path}: {exc} (give the PEM private key file)") from None


def _quiet_migrations() -> None:
    logging.getLogger("alembic").setLevel(logging.WARNING)


def cmd_serve(args: argparse.Namespace) -> int:
    _quiet_migrations()
    from broker.model_release import load_private_key, load_public_key
    from server.app_runner import FleetServer, ServerConfig, parse_listen
    from tools.broker_args import broker_settings

    if not args.fleet:
        return _fail("give --fleet NAME (the fleet's topic prefix pw/NAME/...) and --broker mqtt://HOST:PORT "
                     "(without --broker the dashboard serves the database only)")
    try:
        host, port = parse_listen(args.listen)
        cfg = ServerConfig(args.db, broker_settings(args, identity="clinic") or "", args.fleet, host, port,
                           _registry(args.devices),
                           load_public_key(Path(args.pubkey)) if args.pubkey else None,
                           load_private_key(Path(args.signing_key)) if args.signing_key else None,
                           release_signing_key=_key(args.release_signing_key, "--release-signing-key"),
                           labels_key=_key(args.labels_key, "--labels-key"),
                           aggregator_broker=(broker_settings(args, identity="aggregator") or "")
                           if args.release_signing_key else "",
                           secure_cookies=args.secure_cookies, all_fleets=args.all_fleets)
    except (ValueError, OSError) as exc:
        return _fail(str(exc))
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"pulsewire: warning: listening on {host}: put a TLS proxy in front (and use --secure-cookies)",
              file=sys.stderr)
    FleetServer(cfg).serve()
    return 0


def cmd_user_add(args: argparse.Namespace) -> int:
    _quiet_migrations()
    from server.auth import add_user
    from server.repository import Store

    if args.password_file:
        try:
            password = Path(args.password_file).read_text().rstrip("\n")
        except OSError as exc:
            return _fail(f"--password-file: {exc}")
    else:
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            return _fail("the passwords differ")
    try:
        store = Store(args.db)
        with store.session() as repo:
            add_user(repo, args.name, args.role, password)
            repo.audit("cli", "user added", f"user {args.name}", f"role {args.role}")
    except ValueError as exc:
        return _fail(str(exc))
    from server.db import display_url

    print(f"user {args.name} ({args.role}) added to {display_url(args.db)}")
    return 0


def cmd_consent(args: argparse.Namespace) -> int:
    """Record consent in the database; a running server publishes it when set through the dashboard or API,
    and every server start publishes all stored records (retained) on the bus."""
    _quiet_migrations()
    from broker.topics import NAME_PATTERN
    from server.repository import Store

    for what, value in (("--fleet", args.fleet), ("patient", args.patient)):
        if not NAME_PATTERN.match(value):
            return _fail(f"{what} {value!r}: use 1-64 letters, digits, '_', '.', '-'")
    store = Store(args.db)
    with store.session() as repo:
        row = repo.set_consent(args.fleet, args.patient, args.training == "yes", args.strip == "yes", "cli")
        print(f"consent of {args.patient} in {args.fleet}: training {row.training}, strips {row.strip} "
              f"(version {row.version})")
    return 0


def cmd_snapshot(args: argparse.Namespace) -> int:
    _quiet_migrations()
    from server.repository import Store
    from server.snapshot import write_snapshot

    if "://" not in args.db and not Path(args.db).is_file():
        return _fail(f"{args.db} not found (the server's database: run `pulsewire server` first)")
    pages = write_snapshot(Store(args.db), Path(args.out))
    print(f"{len(pages)} page(s) written; open {Path(args.out) / 'index.html'}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from tools.server_bench import run_command

    return run_command(args)


def add_server_parser(sub: argparse._SubParsersAction) -> None:
    from tools.broker_args import add_broker_args

    p = sub.add_parser("server", help="the fleet server: bus ingest, database and web dashboard",
                       description="Store everything the fleet says on the bus (devices, alerts, rounds, the "
                                   "privacy ledger, security events, releases) and serve the dashboard and the "
                                   "REST API (OpenAPI at /docs). Without a subcommand: run the server.")
    p.add_argument("--db", default=DEFAULT_DB, help="SQLite file or postgresql://USER@HOST:PORT/DB "
                                                    f"(default: {DEFAULT_DB})")
    add_broker_args(p, help_extra="the fleet's broker; without it the server serves the database only "
                                  "(over TLS it connects as the fleet's clinic identity)")
    p.add_argument("--fleet", help="fleet name (topic prefix pw/FLEET/...)")
    p.add_argument("--listen", default="127.0.0.1:8080", help="HOST:PORT of the web server (default: loopback only)")
    p.add_argument("--devices", help="enrolled devices NAME:ID,...; others are listed as unknown")
    p.add_argument("--pubkey", help="the aggregator's public key (PEM): releases are verified against it")
    p.add_argument("--signing-key", help="private key (PEM) that signs the consent records sent to devices")
    p.add_argument("--release-signing-key", help="the fleet's release signing key (aggregator/signing.key): adds "
                   "\"Roll back to version N\" to the models page (the pin is published as the aggregator: over "
                   "TLS give --fleet-config so its certificate is used); without it the page names the CLI command")
    p.add_argument("--labels-key", help="the clinic's label key (clinic/labels.key): clinicians send beat labels "
                   "of an alert to its device from the alerts page")
    p.add_argument("--all-fleets", action="store_true", help="also store the rounds, statuses and alerts of every "
                   "other fleet on the broker (each seed of `pulsewire fleet` runs as its own fleet)")
    p.add_argument("--secure-cookies", action="store_true", help="mark the session cookie Secure (behind TLS)")
    p.set_defaults(func=cmd_serve)
    ssub = p.add_subparsers(dest="server_command")

    user = ssub.add_parser("user", help="manage accounts").add_subparsers(dest="user_command", required=True)
    u = user.add_parser("add", help="add an account (password from a prompt or --password-file)",
                        description="Add a dashboard account; the password is stored as an Argon2id hash.")
    u.add_argument("name")
    u.add_argument("--role", required=True, choices=("clinician", "engineer"),
                   help="clinician: alerts and patients; engineer: fleet, rounds, privacy, security, models")
    u.add_argument("--password-file", help="read the password from this file instead of prompting")
    u.add_argument("--db", default=DEFAULT_DB, help=f"the server's database (default: {DEFAULT_DB})")
    u.set_defaults(func=cmd_user_add)

    c = ssub.add_parser("consent", help="record a patient's consent (training, ECG strips) in the database",
                        description="Store a consent record; the server publishes stored records (retained, "
                                    "signed with --signing-key) to the patient's devices when it starts.")
    c.add_argument("patient", help="the patient's pseudonym")
    c.add_argument("--fleet", required=True)
    c.add_argument("--training", choices=("yes", "no"), required=True, help="may their device train with the fleet")
    c.add_argument("--strip", choices=("yes", "no"), required=True, help="may their alerts carry an ECG strip")
    c.add_argument("--db", default=DEFAULT_DB, help=f"the server's database (default: {DEFAULT_DB})")
    c.set_defaults(func=cmd_consent)

    s = ssub.add_parser("snapshot", help="write the dashboard's pages as static HTML",
                        description="Render every dashboard page from the database into a folder (charts "
                                    "included, no live updates), e.g. at the end of make demo.")
    s.add_argument("--db", default=DEFAULT_DB, help=f"the server's database (default: {DEFAULT_DB})")
    s.add_argument("--out", required=True, help="folder for the pages")
    s.set_defaults(func=cmd_snapshot)

    b = ssub.add_parser("bench", help="ingest bench: N simulated devices against a real broker and server",
                        description="Start Mosquitto and the server, simulate N devices (a status every 10 s, "
                                    "alerts at a fleet-wide rate) and measure alerts lost, the publish-to-SSE "
                                    "latency and the server's RSS.")
    from tools.server_bench import add_bench_args

    add_bench_args(b)
    b.set_defaults(func=cmd_bench)
