"""Training configuration: one frozen dataclass, validated, hashed into every exported model."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from edge_runtime.signal_config import SignalConfig
from edge_runtime.template_features import feature_set_named


@dataclass(frozen=True)
class ModelConfig:
    """A compact 1D-CNN: three conv blocks on the waveform, RR features joined before the head."""

    conv_filters: tuple[int, ...] = (8, 16, 32)
    conv_kernels: tuple[int, ...] = (7, 5, 5)
    dense_units: int = 32
    dropout: float = 0.2

    def __post_init__(self) -> None:
        if len(self.conv_filters) != len(self.conv_kernels) or not self.conv_filters:
            raise ValueError("conv_filters and conv_kernels need the same, non-zero length")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class TrainConfig:
    signal: SignalConfig = field(default_factory=SignalConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    epochs: int = 60
    batch_size: int = 256
    learning_rate: float = 2e-3
    #: Early stopping on validation macro F1 (held-out DS1 patients), best weights restored.
    patience: int = 10
    #: Epochs before selection starts: on four held-out patients an undertrained epoch-1 net can
    #: score best by luck (seen in the first benchmark: two of three seeds kept epoch 1).
    min_epochs: int = 5
    #: Class weight = (n / (k * n_c)) ** power; 0.5 (square root) beat full inverse frequency in
    #: calibration runs (ECG-NOTES.md): full weights flood S and F with N beats.
    class_weight_power: float = 0.5
    max_class_weight: float = 20.0
    #: Leads whose beats train (and validate) the model: "MLII", and "other" for each record's second
    #: channel (V1/V2/V4/V5) as more single-lead examples of the same input contract, so the model does
    #: not learn MLII's morphology as the only shape a ventricular beat can have.
    leads: tuple[str, ...] = ("MLII",)
    #: Add one perturbed copy (noise, wander, DC steps, mains: ``training.data.augment``) of every
    #: training lead; validation and test beats stay clean.
    augment: bool = False
    #: Per-class logit offsets folded into the output bias after training (``training.calibration``):
    #: "none", "prior" (undo the class weights' shift at decision time) or "fitted" (searched on the
    #: validation patients). The `foundation` command uses "prior" (it won on held-out DS1 patients for
    #: centralized training, docs/classifier.md); the library default leaves models as trained.
    logit_offsets: str = "none"
    #: Model input features by set name (``edge_runtime.template_features.FEATURE_SETS``): "rr" (the 7 RR
    #: features) or "rr+template" (plus beat-versus-template morphology and two RR ratios). The edge runtime
    #: and the C front-end compute both from the exported model's metadata. The one place the default lives:
    #: `--features` of every command and ``training.data.feature_sets.load_feature_beats`` read it.
    features: str = "rr+template"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise ValueError("epochs, batch_size and patience must be >= 1")
        if not 1 <= self.min_epochs <= self.epochs:
            raise ValueError(f"min_epochs must be in [1, epochs={self.epochs}], got {self.min_epochs}")
        if self.learning_rate <= 0:
            raise ValueError("learning_rate must be positive")
        if not 0 <= self.class_weight_power <= 1:
            raise ValueError("class_weight_power must be in [0, 1]")
        if self.logit_offsets not in ("none", "prior", "fitted"):
            raise ValueError(f"logit_offsets must be 'none', 'prior' or 'fitted', got {self.logit_offsets!r}")
        feature_set_named(self.features)  # ValueError naming the known sets
        object.__setattr__(self, "leads", tuple(self.leads))  # JSON gives lists; hashing and tags need a tuple
        if not self.leads or len(set(self.leads)) != len(self.leads) or set(self.leads) - {"MLII", "other"}:
            raise ValueError(f"leads must be distinct names out of ('MLII', 'other'), got {self.leads}")

    def check_rr_width(self, width: int) -> None:
        """Beats whose RR rows have ``width`` columns can train this config's model only if ``features`` names
        that many: a model trained on other columns would be exported under the wrong input contract."""
        names = feature_set_named(self.features)
        if width != len(names):
            raise ValueError(f"the beats carry {width} RR-input columns, feature set {self.features!r} has "
                             f"{len(names)}: load them with training.data.feature_sets.load_feature_beats or "
                             "with_feature_set")

    def training_lead_tags(self) -> tuple[str, ...]:
        """Lead tags of the beats that train: the clean leads and, with ``augment``, their perturbed copies."""
        return self.leads + (tuple(f"{lead}/aug" for lead in self.leads) if self.augment else ())

    def to_dict(self) -> dict:
        return asdict(self)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]
