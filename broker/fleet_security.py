"""A production Mosquitto set-up for one fleet: a CA, per-device certificates, TLS, ACLs, limits.

Every device and the aggregator authenticate with an X.509 client certificate whose common name is
their MQTT user name (``use_identity_as_username``). The ACL lets a device publish only on its own
update, status and alert topics and read only the global models and releases; the aggregator reads
every update and status and writes global models and releases. ``write_fleet_security`` produces the
whole folder; ``pulsewire certs`` calls it.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from broker.topics import ROOT, FleetTopics

AGGREGATOR_USER = "aggregator"
CLINIC_USER = "clinic"
#: Common names that are not devices (the broker's own certificate is "server").
RESERVED_NAMES = frozenset({AGGREGATOR_USER, CLINIC_USER, "server", "broker", "ca", "dashboard"})


@dataclass(frozen=True)
class FleetSecurity:
    folder: Path
    ca: Path
    server_cert: Path
    server_key: Path
    config: Path
    acl: Path

    def client(self, name: str) -> tuple[Path, Path]:
        """(certificate, key) of a device or of the aggregator."""
        return self.folder / f"{name}.crt", self.folder / f"{name}.key"


def new_tls_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def write_private_key(key, path: Path) -> None:
    """PEM, created with mode 600 (never readable by others, not even for an instant)."""
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    path.chmod(0o600)


def issue_cert(subject: str, key, issuer_name: x509.Name, issuer_key, days: int, ca: bool = False,
               server_names: tuple[str, ...] = (), client: bool = False) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(issuer_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server_names:
        alt = [x509.IPAddress(ipaddress.ip_address(n)) if n.replace(".", "").isdigit() else x509.DNSName(n)
               for n in server_names]
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    if client:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def aggregator_acl(fleet: str) -> list[str]:
    """What the aggregator (and `pulsewire release`, which runs with its certificate) may do."""
    t = FleetTopics(fleet)
    return [f"user {AGGREGATOR_USER}",
            f"topic read {t.all_updates()}", f"topic read {t.all_statuses()}", f"topic read {t.all_alerts()}",
            f"topic write {t.all_globals()}", f"topic readwrite {t.release()}", f"topic write {t.firmware()}",
            f"topic readwrite {t.pin()}", f"topic write {ROOT}/{fleet}/secagg/#",
            f"topic write {ROOT}/{fleet}/round/#", f"topic read {ROOT}/{fleet}/consent/+"]


def clinic_acl(fleet: str) -> list[str]:
    """The clinic's tools and the fleet server (`pulsewire server` runs with this certificate): read alerts,
    statuses, round events, releases and pins; write labels to any one device and patients' consent records."""
    t = FleetTopics(fleet)
    return [f"user {CLINIC_USER}", f"topic read {t.all_alerts()}", f"topic read {t.all_statuses()}",
            f"topic write {ROOT}/{fleet}/label/+", f"topic read {ROOT}/{fleet}/round/#",
            f"topic readwrite {ROOT}/{fleet}/consent/+", f"topic read {t.release()}", f"topic read {t.pin()}"]


def device_acl(fleet: str, device: str) -> list[str]:
    """One device: write only its own update, status and alert topics; read the fleet-wide downlinks and
    what is addressed to it alone (secure-aggregation shares, clinician labels)."""
    t = FleetTopics(fleet)
    return [f"user {device}",
            f"topic write {ROOT}/{fleet}/update/+/{device}", f"topic readwrite {t.status(device)}",
            f"topic write {t.alert(device)}",
            f"topic read {t.all_globals()}", f"topic read {t.release()}", f"topic read {t.firmware()}",
            f"topic read {t.pin()}", f"topic read {ROOT}/{fleet}/secagg/+", f"topic read {ROOT}/{fleet}/secagg/+/{device}",
            f"topic read {t.label(device)}", f"topic read {ROOT}/{fleet}/consent/+"]


def acl_text(fleet: str, devices: list[str]) -> str:
    """Mosquitto ACL, one block per certificate common name (``use_identity_as_username``): a certificate
    whose name has no block here can connect but neither read nor write anything."""
    blocks = [["# generated by pulsewire: every identity writes only its own topics and reads only what is "
               "meant for it"], aggregator_acl(fleet), clinic_acl(fleet)]
    blocks += [device_acl(fleet, d) for d in sorted(devices)]
    return "\n\n".join("\n".join(b) for b in blocks) + "\n"


def config_text(sec_folder: Path, port: int, host: str, state_dir: Path, user: str | None = None,
                ca: Path | None = None) -> str:
    """``sec_folder`` holds server.crt, server.key and acl; ``ca`` the CA certificate (default: beside them)."""
    lines = [
        "# generated by pulsewire: TLS with client certificates, ACLs, persistence and limits",
        "per_listener_settings false",
        f"listener {port} {host}",
        f"cafile {ca or sec_folder / 'ca.crt'}", f"certfile {sec_folder / 'server.crt'}",
        f"keyfile {sec_folder / 'server.key'}",
        "require_certificate true", "use_identity_as_username true", "tls_version tlsv1.2",
        "allow_anonymous false",
        f"acl_file {sec_folder / 'acl'}",
        "persistence true", f"persistence_location {state_dir}/", "autosave_interval 30",
        "max_packet_size 16777216",  # the wire format's largest message (16 MiB) fits
        "max_queued_messages 10000", "max_inflight_messages 100",
        f"log_dest file {state_dir}/mosquitto.log",
    ]
    if user:
        lines.append(f"user {user}")
    return "\n".join(lines) + "\n"


def write_fleet_security(folder: Path, fleet: str, devices: list[str], server_names: tuple[str, ...] = ("localhost", "127.0.0.1"),
                         port: int = 8883, host: str = "0.0.0.0", state_dir: Path | None = None,
                         days: int = 825, user: str | None = None) -> FleetSecurity:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = new_tls_key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"pulsewire {fleet} CA")])
    ca_cert = issue_cert(f"pulsewire {fleet} CA", ca_key, ca_name, ca_key, days, ca=True)
    (folder / "ca.crt").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    write_private_key(ca_key, folder / "ca.key")
    for name, server in [("server", True)] + [(d, False) for d in [AGGREGATOR_USER, *devices]]:
        key = new_tls_key()
        cert = issue_cert("server" if server else name, key, ca_name, ca_key, days,
                     server_names=server_names if server else (), client=not server)
        (folder / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        write_private_key(key, folder / f"{name}.key")
    (folder / "acl").write_text(acl_text(fleet, devices))
    state = Path(state_dir or folder / "state")
    state.mkdir(parents=True, exist_ok=True)
    (folder / "mosquitto.conf").write_text(config_text(folder, port, host, state, user))
    return FleetSecurity(folder, folder / "ca.crt", folder / "server.crt", folder / "server.key",
                         folder / "mosquitto.conf", folder / "acl")
