"""Knowledge distillation: a wider teacher, trained centrally on DS1, teaches the small student.

The teacher is trained exactly like the foundation model (class-weighted cross-entropy, epoch selected on
held-out DS1 patients), only wider. The student learns from ``alpha * CE + (1 - alpha) * T^2 * KL`` on the
teacher's tempered probabilities (``fitting.distillation_loss``); its epoch is selected on the same
held-out patients. ``alpha`` and ``T`` are fixed beforehand (Hinton et al.'s usual range), not tuned on DS2.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from training.config import ModelConfig, TrainConfig
from training.data.beat_dataset import BeatDataset
from training.optimize.fitting import soft_targets
from training.train import TrainedModel, train_centralized

#: 4x the foundation's filters, 2x its dense units (~ 28 k parameters): a teacher, not a device model.
TEACHER_MODEL = ModelConfig(conv_filters=(16, 32, 64), conv_kernels=(7, 5, 5), dense_units=64, dropout=0.2)
#: 1.5x the foundation's filters and units (~ 10 k parameters, ~ 11 KB of int8 weights): the largest round
#: width under the 16 KB weight budget, a student with room for what the teacher knows.
MID_MODEL = ModelConfig(conv_filters=(12, 24, 48), conv_kernels=(7, 5, 5), dense_units=48, dropout=0.2)


@dataclass(frozen=True)
class DistillConfig:
    alpha: float = 0.5  # weight of the hard-label loss; 1 - alpha goes to the teacher
    temperature: float = 4.0
    teacher: ModelConfig = field(default_factory=lambda: TEACHER_MODEL)

    def __post_init__(self) -> None:
        if not 0 <= self.alpha < 1:
            raise ValueError(f"alpha must be in [0, 1) (1 would ignore the teacher), got {self.alpha}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")


def train_teacher(train: BeatDataset, val: BeatDataset, cfg: TrainConfig, dcfg: DistillConfig) -> TrainedModel:
    """The teacher: centralized training of the wider network, selected on validation like the baseline."""
    return train_centralized(train, val, replace(cfg, model=dcfg.teacher), verbose=0)


def teacher_targets(teacher: TrainedModel, train: BeatDataset, dcfg: DistillConfig) -> np.ndarray:
    """The teacher's probabilities on the training beats, softened at the distillation temperature."""
    return soft_targets(teacher.predict_proba(train), dcfg.temperature)
