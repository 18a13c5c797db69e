"""A device in a deployed fleet (`pulsewire edge run --join`): rounds, clinician labels, its own head.

Three parts share the device's state folder: the federated client (``DeviceClient`` with the
``HeadLearner``: head deltas signed with the device's key, global models checked against the fleet's
signing key), a listener for the clinic's signed labels on ``pw/{fleet}/label/{device}``, and the
serving side: the runtime classifies with the personalized head once there is one (persisted in
``head.npz``; ``population_head`` keeps the model's own head), swapped in between two beats.
"""
from __future__ import annotations

import logging
import threading
from collections import Counter
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from broker.clinician_labels import verify_labels
from broker.fleet_config import DeviceBundle
from broker.mqtt_link import BrokerSettings, Message, MqttLink
from broker.topics import FleetTopics
from broker.wire import WireError
from edge_runtime.classifier import BeatClassifier
from edge_runtime.fed_client import DeviceClient
from edge_runtime.labelled_beats import BeatMemory, LabelStore
from edge_runtime.local_dp import LocalDP
from edge_runtime.personal_head import BaseModel, HeadClassifier, HeadFile, HeadLearner
from edge_runtime.personalize import Head, HeadConfig

log = logging.getLogger(__name__)


class FleetMember:
    def __init__(self, bundle: DeviceBundle, broker: BrokerSettings, state_dir: Path, base: BaseModel,
                 consent: bool = False, population_head: bool = False, local_dp: LocalDP | None = None,
                 head_cfg: HeadConfig = HeadConfig()) -> None:
        self.bundle = bundle
        self.state_dir = Path(state_dir)
        self.population_head = population_head
        self.memory = BeatMemory()
        self.labels = LabelStore(self.state_dir)
        self.head_file = HeadFile(self.state_dir)
        self.learner = HeadLearner(self.labels, base, head_cfg, consent)
        self.counts: Counter[str] = Counter()
        self._runtime = None
        self._lock = threading.Lock()
        self.head: Head | None = None if population_head else self.head_file.load(base.sha256)
        update_key = serialization.load_pem_private_key(bundle.update_key_pem.encode(), password=None)
        signing_pub = serialization.load_pem_public_key(bundle.signing_pub_pem.encode())
        self._labels_pub = serialization.load_pem_public_key(bundle.labels_pub_pem.encode())
        self.client = DeviceClient(bundle.device, bundle.device_id, bundle.fleet, broker, self.learner,
                                   signing_key=update_key, aggregator_key=signing_pub, local_dp=local_dp)
        self.labels_link = MqttLink(broker, f"pw-{bundle.fleet}-{bundle.device}-labels",
                                    [FleetTopics(bundle.fleet).label(bundle.device)], self._on_labels)

    # ------------------------------------------------------------------ serving
    def classifier(self) -> BeatClassifier | HeadClassifier:
        """What the runtime should classify with now."""
        base = self.learner.base
        if self.head is not None and not self.population_head:
            return HeadClassifier(base, self.head)
        return base.classifier

    def attach(self, runtime) -> None:
        """The runtime to swap classifiers in (``EdgeRuntime.swap_classifier``, between beats)."""
        self._runtime = runtime

    def _serve(self) -> None:
        if self._runtime is not None:
            self._runtime.swap_classifier(self.classifier())

    def on_new_model(self, classifier: BeatClassifier, content: bytes) -> None:
        """A release or a rollback changed the installed model: the head is retrained on its features."""
        base = BaseModel(content, classifier)
        self.learner.set_base(base)
        with self._lock:
            self.head = None if self.population_head else self.learner.personalize()
            if self.head is not None:
                self.head_file.save(self.head, base.sha256)
        self._serve()

    # ------------------------------------------------------------------ labels (network thread)
    def _on_labels(self, msg: Message) -> None:
        if not msg.payload:
            return
        try:
            doc = verify_labels(msg.payload, self._labels_pub, self.bundle.fleet, self.bundle.device)
        except (WireError, ValueError) as exc:
            self.counts[f"labels_refused_{getattr(exc, 'reason', 'invalid')}"] += 1
            log.warning("%s: labels refused: %s", self.bundle.device, exc)
            return
        wanted = dict(zip(doc.beats, doc.labels))
        found, waves, rr = self.memory.lookup(list(wanted))
        self.counts["label_beats_unknown"] += len(wanted) - len(found)
        if not found:
            log.warning("%s: labels of alert %s name no beat this device remembers", self.bundle.device, doc.alert_id)
            return
        self.labels.add(doc.alert_id, found, waves, rr, [wanted[s] for s in found])
        self.counts["label_beats_applied"] += len(found)
        log.info("%s: %d labelled beat(s) of alert %s stored (%d in all)", self.bundle.device, len(found),
                 doc.alert_id, len(self.labels))
        if self.population_head:
            return
        try:
            with self._lock:
                self.head = self.learner.personalize()
                if self.head is not None:
                    self.head_file.save(self.head, self.learner.base.sha256)
            self._serve()
        except Exception:  # a failed retraining must not take the network thread down; the old head stays
            self.counts["personalize_failed"] += 1
            log.exception("%s: personalization failed", self.bundle.device)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self.labels_link.start(wait=False)
        self.client.start(wait=False)

    def stop(self) -> None:
        self.client.stop()
        self.labels_link.stop()
