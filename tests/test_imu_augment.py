"""IMU training augmentation: copies are proper rotations of the phone frame (lengths kept, the same rotation for
acc and gyro), bounded by the stated angle, and only the training split gets them."""
import numpy as np
import pytest

from training.data.imu_augment import ImuAugment, augment_windows, rotations


def test_rotations_are_proper_and_bounded():
    r = rotations(500, 15.0, np.random.default_rng(0))
    assert np.allclose(r @ np.transpose(r, (0, 2, 1)), np.eye(3), atol=1e-9)
    assert np.allclose(np.linalg.det(r), 1.0)
    angle = np.degrees(np.arccos(np.clip((np.trace(r, axis1=1, axis2=2) - 1) / 2, -1, 1)))
    assert angle.max() <= 15.0 + 1e-6 and angle.max() > 10.0


def test_copies_keep_lengths_and_the_angle_between_acc_and_gyro():
    x = np.random.default_rng(1).normal(size=(4, 16, 6)).astype(np.float32)
    out = augment_windows(x, ImuAugment(copies=2, max_degrees=30.0, gain=0.0), np.random.default_rng(2))
    assert out.shape == (12, 16, 6) and np.array_equal(out[:4], x)
    for copy in (out[4:8], out[8:]):
        assert not np.allclose(copy, x)
        for a, b in ((slice(0, 3), slice(0, 3)), (slice(3, 6), slice(3, 6))):
            assert np.allclose(np.linalg.norm(copy[..., a], axis=2), np.linalg.norm(x[..., b], axis=2), atol=1e-5)
        dot = lambda v: np.sum(v[..., :3] * v[..., 3:], axis=2)  # noqa: E731 - one rotation for both sensors
        assert np.allclose(dot(copy), dot(x), atol=1e-4)
    with pytest.raises(ValueError, match="n, window, 6"):
        augment_windows(x[..., :5], ImuAugment(), np.random.default_rng(0))
    with pytest.raises(ValueError):
        ImuAugment(copies=-1)
