"""The two files a deployed fleet runs from: ``fleet.toml`` on the gateway and one bundle per device.

``fleet.toml`` sits at the root of the fleet folder (``pulsewire fleet init``) and names the fleet, the
broker URL and the registered devices; every other path follows from the folder layout, so the file
holds nothing secret and no path that could point outside the folder::

    ca/ca.crt, ca/ca.key              the fleet's certificate authority (ca.key: enrolling only)
    broker/                           server.crt/.key, acl, mosquitto.conf, state/ (the broker's files)
    aggregator/                       aggregator.crt/.key (TLS) and signing.key (Ed25519: models, releases, pins)
    clinic/                           clinic.crt/.key (TLS) and labels.key (Ed25519: clinician labels)
    public/                           ca.crt, signing.pub, labels.pub, devices/<device>.pub
    devices/<device>.pwdevice         the one file copied onto a device (its own keys + public keys)

A device bundle is TOML with the PEM texts inline: the CA certificate, the device's TLS certificate
and key, its Ed25519 update-signing key, and the fleet's two public keys. ``materialize`` writes the
TLS files paho needs (it reads certificates from files) into a private folder on the device.
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from broker.mqtt_link import BrokerSettings, parse_broker_url
from broker.topics import NAME_PATTERN

CONFIG_FILE = "fleet.toml"
BUNDLE_SUFFIX = ".pwdevice"
#: The identities of a fleet folder that hold a TLS certificate and are not devices.
SERVICE_IDENTITIES = ("aggregator", "clinic")


class FleetConfigError(ValueError):
    """A fleet file that cannot be used; the message says what to fix."""


def _name(kind: str, value: object) -> str:
    if not isinstance(value, str) or not NAME_PATTERN.match(value):
        raise FleetConfigError(f"{kind} {value!r}: use 1-64 letters, digits, '_', '.', '-'")
    return value


def _read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FleetConfigError(f"{path} not found; create a fleet with `pulsewire fleet init NAME --dir DIR`") from None
    except tomllib.TOMLDecodeError as exc:
        raise FleetConfigError(f"{path} is not valid TOML: {exc}") from None


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    text = str(value)
    if "\n" in text:
        if "'''" in text:
            raise FleetConfigError("a multi-line value may not contain '''")
        return f"'''\n{text}'''"
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class FleetSettings:
    """``fleet.toml``: what the gateway's services (aggregator, release and label commands) start from."""

    folder: Path
    name: str
    broker_url: str
    listen_host: str = "0.0.0.0"
    port: int = 8883
    server_names: tuple[str, ...] = ("localhost", "127.0.0.1")
    #: Registered devices: name -> the u32 id their wire headers carry.
    devices: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _name("fleet name", self.name)
        try:
            parse_broker_url(self.broker_url)
        except ValueError as exc:
            raise FleetConfigError(f"{self.folder / CONFIG_FILE}: broker_url: {exc}") from None
        if not 1 <= self.port <= 65535:
            raise FleetConfigError(f"port {self.port} must be 1-65535")
        ids = list(self.devices.values())
        for device, dev_id in self.devices.items():
            _name("device", device)
            if device in SERVICE_IDENTITIES or not isinstance(dev_id, int) or not 0 < dev_id < 2 ** 32:
                raise FleetConfigError(f"device {device!r} = {dev_id!r}: a device needs a name other than "
                                       f"{SERVICE_IDENTITIES} and a u32 id > 0")
        if len(set(ids)) != len(ids):
            raise FleetConfigError("two devices share an id; every device needs its own")

    # ------------------------------------------------------------------ files
    @classmethod
    def load(cls, path: Path) -> "FleetSettings":
        """``path`` is fleet.toml or the fleet folder."""
        path = Path(path)
        if path.is_dir():
            path = path / CONFIG_FILE
        raw = _read_toml(path)
        try:
            fleet = raw["fleet"]
            return cls(path.parent, fleet["name"], fleet["broker_url"], fleet.get("listen_host", "0.0.0.0"),
                       int(fleet.get("port", 8883)), tuple(fleet.get("server_names", ("localhost", "127.0.0.1"))),
                       {str(k): v for k, v in raw.get("devices", {}).items()})
        except (KeyError, TypeError, AttributeError) as exc:
            raise FleetConfigError(f"{path}: missing or malformed entry {exc}; expected [fleet] name, broker_url "
                                   "and a [devices] table") from None

    def save(self) -> Path:
        lines = ["# generated by pulsewire fleet init / device enroll; paths follow from this folder's layout",
                 "[fleet]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in (("name", self.name), ("broker_url", self.broker_url),
                                                          ("listen_host", self.listen_host), ("port", self.port),
                                                          ("server_names", self.server_names))]
        lines += ["", "[devices]"] + [f"{k} = {v}" for k, v in sorted(self.devices.items())]
        path = self.folder / CONFIG_FILE
        path.write_text("\n".join(lines) + "\n")
        return path

    # ------------------------------------------------------------------ layout
    @property
    def ca_cert(self) -> Path:
        return self.folder / "public" / "ca.crt"

    @property
    def signing_key(self) -> Path:
        return self.folder / "aggregator" / "signing.key"

    @property
    def signing_pub(self) -> Path:
        return self.folder / "public" / "signing.pub"

    @property
    def labels_key(self) -> Path:
        return self.folder / "clinic" / "labels.key"

    @property
    def labels_pub(self) -> Path:
        return self.folder / "public" / "labels.pub"

    def device_pub(self, device: str) -> Path:
        """The device's Ed25519 public key: the aggregator accepts only updates it signed."""
        return self.folder / "public" / "devices" / f"{_name('device', device)}.pub"

    def bundle(self, device: str) -> Path:
        return self.folder / "devices" / f"{_name('device', device)}{BUNDLE_SUFFIX}"

    @property
    def broker_folder(self) -> Path:
        return self.folder / "broker"

    def identity(self, name: str) -> tuple[Path, Path]:
        """(certificate, key) of a service identity: aggregator or clinic."""
        if name not in SERVICE_IDENTITIES:
            raise FleetConfigError(f"{name!r} is not a service identity of the fleet folder ({SERVICE_IDENTITIES}); "
                                   "devices connect with their bundle")
        return self.folder / name / f"{name}.crt", self.folder / name / f"{name}.key"

    def broker(self, identity: str, url: str | None = None) -> BrokerSettings:
        """Connection settings of ``identity`` (``url`` overrides the configured one, e.g. another host)."""
        cert, key = self.identity(identity)
        url = url or self.broker_url
        if not url.startswith("mqtts://"):
            return BrokerSettings(url)
        return BrokerSettings(url, str(self.ca_cert), str(cert), str(key))


@dataclass(frozen=True)
class DeviceBundle:
    """Everything one device needs, and no other identity's secret."""

    fleet: str
    device: str
    device_id: int
    broker_url: str
    ca_pem: str
    cert_pem: str
    key_pem: str
    #: Ed25519 private key that signs this device's federated updates.
    update_key_pem: str
    #: Public keys: global models, releases and rollbacks (signing.pub); clinician labels (labels.pub).
    signing_pub_pem: str
    labels_pub_pem: str

    def __post_init__(self) -> None:
        _name("fleet", self.fleet)
        _name("device", self.device)
        if not 0 < int(self.device_id) < 2 ** 32:
            raise FleetConfigError(f"device_id {self.device_id} must be a u32 > 0")
        parse_broker_url(self.broker_url)
        for field_name in ("ca_pem", "cert_pem", "key_pem", "update_key_pem", "signing_pub_pem", "labels_pub_pem"):
            if "-----BEGIN" not in getattr(self, field_name):
                raise FleetConfigError(f"bundle of {self.device}: {field_name} is not a PEM block; enroll the device "
                                       "again (`pulsewire device enroll`)")

    @classmethod
    def load(cls, path: Path) -> "DeviceBundle":
        raw = _read_toml(Path(path))
        try:
            return cls(**{k: raw[k] for k in cls.__dataclass_fields__})
        except (KeyError, TypeError) as exc:
            raise FleetConfigError(f"{path}: not a device bundle (missing {exc}); enroll the device again") from None

    def save(self, path: Path) -> Path:
        lines = [f"# generated by pulsewire device enroll: the bundle of device {self.device}. It holds this device's",
                 "# private keys: copy it onto this device only (mode 600), never anywhere else."]
        lines += [f"{k} = {_toml_value(getattr(self, k))}" for k in self.__dataclass_fields__]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def materialize(self, folder: Path, url: str | None = None) -> BrokerSettings:
        """Write the TLS files into ``folder`` (mode 700, keys 600) and return this device's settings."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o700)
        paths = {}
        for name, text in (("ca.crt", self.ca_pem), ("device.crt", self.cert_pem), ("device.key", self.key_pem)):
            fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(text)
            paths[name] = str(folder / name)
        url = url or self.broker_url
        if not url.startswith("mqtts://"):
            return BrokerSettings(url)
        return BrokerSettings(url, paths["ca.crt"], paths["device.crt"], paths["device.key"])
