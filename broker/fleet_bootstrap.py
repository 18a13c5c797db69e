"""``pulsewire fleet init`` and ``pulsewire device enroll``: a fleet folder whose private keys stay put.

Each private key is created in the one sub-folder of the component that uses it (see
``broker.fleet_config`` for the layout) and is never copied: the broker gets the CA *certificate*,
the aggregator gets its TLS key and the Ed25519 signing key, the clinician's tools the label key, and
a device bundle carries only that device's own keys plus public keys. The CA key is used only here,
to enroll devices; a careful operator keeps the folder's ``ca/`` offline between enrolments.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.fleet_config import (SERVICE_IDENTITIES, DeviceBundle, FleetConfigError, FleetSettings)
from broker.fleet_security import (RESERVED_NAMES, acl_text, config_text, issue_cert, new_tls_key,
                                   write_private_key)

log = logging.getLogger(__name__)
CERT_DAYS = 825


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _public_pem(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _signing_pair(private: Path, public: Path) -> None:
    key = Ed25519PrivateKey.generate()
    write_private_key(key, private)
    public.write_bytes(_public_pem(key))


def _load_ca(settings: FleetSettings):
    ca_dir = settings.folder / "ca"
    try:
        key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
    except FileNotFoundError:
        raise FleetConfigError(f"{ca_dir}/ca.key not found: enroll on the machine that holds the fleet's CA "
                               "(the folder `pulsewire fleet init` wrote)") from None
    return cert, key


def _mosquitto_conf(settings: FleetSettings, user: str | None) -> None:
    broker = settings.broker_folder
    state = broker / "state"
    state.mkdir(parents=True, exist_ok=True)
    (broker / "mosquitto.conf").write_text(config_text(broker, settings.port, settings.listen_host, state, user,
                                                       ca=broker / "ca.crt"))


def write_acl(settings: FleetSettings) -> Path:
    """The broker's ACL for every registered device (Mosquitto rereads it on SIGHUP)."""
    path = settings.broker_folder / "acl"
    path.write_text(acl_text(settings.name, sorted(settings.devices)))
    return path


def init_fleet(folder: Path, name: str, broker_host: str = "localhost", port: int = 8883,
               listen_host: str = "0.0.0.0", server_names: tuple[str, ...] = ("localhost", "127.0.0.1"),
               user: str | None = None) -> FleetSettings:
    """A new fleet folder; refuses to overwrite one (its CA would orphan every enrolled device)."""
    folder = Path(folder)
    if (folder / "fleet.toml").exists():
        raise FleetConfigError(f"{folder} already holds a fleet; pick another --dir (enroll devices with "
                               "`pulsewire device enroll`)")
    if broker_host not in server_names:
        server_names = (*server_names, broker_host)
    settings = FleetSettings(folder, name, f"mqtts://{broker_host}:{port}", listen_host, port, tuple(server_names))
    for sub in ("ca", "broker", "public/devices", "devices", *SERVICE_IDENTITIES):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for private in ("ca", "devices", *SERVICE_IDENTITIES):
        (folder / private).chmod(0o700)
    ca_key = new_tls_key()
    ca_name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, f"pulsewire {name} CA")])
    ca_cert = issue_cert(f"pulsewire {name} CA", ca_key, ca_name, ca_key, CERT_DAYS, ca=True)
    write_private_key(ca_key, folder / "ca" / "ca.key")
    for path in (folder / "ca" / "ca.crt", settings.ca_cert, settings.broker_folder / "ca.crt"):
        path.write_bytes(_pem(ca_cert))
    server_key = new_tls_key()
    write_private_key(server_key, settings.broker_folder / "server.key")
    (settings.broker_folder / "server.crt").write_bytes(
        _pem(issue_cert("server", server_key, ca_name, ca_key, CERT_DAYS, server_names=tuple(server_names))))
    for identity in SERVICE_IDENTITIES:
        cert, key_path = settings.identity(identity)
        key = new_tls_key()
        write_private_key(key, key_path)
        cert.write_bytes(_pem(issue_cert(identity, key, ca_name, ca_key, CERT_DAYS, client=True)))
        shutil.copyfile(settings.ca_cert, cert.parent / "ca.crt")
    _signing_pair(settings.signing_key, settings.signing_pub)
    _signing_pair(settings.labels_key, settings.labels_pub)
    _mosquitto_conf(settings, user)
    write_acl(settings)
    settings.save()
    log.info("fleet %s initialised in %s", name, folder)
    return settings


def enroll_device(settings: FleetSettings, device: str, device_id: int | None = None) -> tuple[FleetSettings, Path]:
    """Certificate, update-signing key, ACL entry and bundle of a new device; the updated settings and the
    bundle's path. Enrolling a name twice is refused (revoke first: a CRL is not generated yet)."""
    if device in RESERVED_NAMES:
        raise FleetConfigError(f"{device!r} is reserved for a fleet service; choose another device name")
    if device in settings.devices:
        raise FleetConfigError(f"device {device!r} is already enrolled (id {settings.devices[device]}); its bundle "
                               f"is {settings.bundle(device)}")
    device_id = device_id if device_id is not None else max(settings.devices.values(), default=0) + 1
    updated = FleetSettings(settings.folder, settings.name, settings.broker_url, settings.listen_host, settings.port,
                            settings.server_names, {**settings.devices, device: int(device_id)})  # validates
    ca_cert, ca_key = _load_ca(settings)
    tls_key = new_tls_key()
    cert = issue_cert(device, tls_key, ca_cert.subject, ca_key, CERT_DAYS, client=True)
    update_key = Ed25519PrivateKey.generate()
    settings.device_pub(device).parent.mkdir(parents=True, exist_ok=True)
    settings.device_pub(device).write_bytes(_public_pem(update_key))
    private = serialization.PrivateFormat.PKCS8
    bundle = DeviceBundle(
        settings.name, device, int(device_id), settings.broker_url, settings.ca_cert.read_text(),
        _pem(cert).decode(),
        tls_key.private_bytes(serialization.Encoding.PEM, private, serialization.NoEncryption()).decode(),
        update_key.private_bytes(serialization.Encoding.PEM, private, serialization.NoEncryption()).decode(),
        settings.signing_pub.read_text(), settings.labels_pub.read_text())
    path = bundle.save(settings.bundle(device))
    updated.save()
    write_acl(updated)
    log.info("device %s (id %d) enrolled in fleet %s", device, device_id, settings.name)
    return updated, path
