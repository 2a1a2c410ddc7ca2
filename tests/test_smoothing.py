"""The One Euro filter (diffupose/smoothing.py) and the acceleration error (diffupose/metrics.py)."""
import math

import numpy as np
import pytest

from diffupose.metrics import acceleration_error
from diffupose.smoothing import OneEuroFilter, make_smoother, smooth_clips


def _ema_alpha(cutoff, dt):
    return 1.0 / (1.0 + 1.0 / (2 * math.pi * cutoff * dt))


def test_beta_zero_is_the_low_pass_of_the_paper():
    """beta = 0: a first-order low-pass at min_cutoff, x_hat = a x + (1 - a) x_hat_prev, computed by hand."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 4, 3))
    a = _ema_alpha(2.0, 1 / 25)
    want = np.empty_like(x)
    want[0] = x[0]
    for t in range(1, len(x)):
        want[t] = a * x[t] + (1 - a) * want[t - 1]
    np.testing.assert_allclose(OneEuroFilter(25.0, min_cutoff=2.0, beta=0.0)(x), want, rtol=0, atol=1e-12)


def test_still_pose_jitter_is_removed_and_a_constant_kept():
    rng = np.random.default_rng(1)
    pose = rng.normal(size=(17, 3))
    noisy = pose + 0.02 * rng.normal(size=(400, 17, 3))
    # beta = 0: the cut-off is min_cutoff, so the jitter's spread falls by sqrt(a / (2 - a)) (0.37
    # at 1 Hz, 20 frames/s) against 1 for no filter; the default beta lets the jitter's own speed
    # raise the cut-off a little
    for beta, most in ((0.0, 0.4), (None, 0.6)):
        f = OneEuroFilter(20.0) if beta is None else OneEuroFilter(20.0, min_cutoff=1.0, beta=beta)
        ratio = (f(noisy)[50:] - pose).std() / (noisy[50:] - pose).std()
        assert 0.2 < ratio < most, (beta, ratio)
    np.testing.assert_allclose(OneEuroFilter(20.0)(np.broadcast_to(pose, (10, 17, 3))),
                               np.broadcast_to(pose, (10, 17, 3)), rtol=0, atol=1e-12)


def test_fast_motion_lags_less_with_beta():
    """A joint moving at 2 m/s: the speed term raises the cut-off, so the lag behind it shrinks."""
    t = np.arange(200) / 20.0
    x = np.zeros((200, 1, 3))
    x[:, 0, 0] = 2.0 * t
    lag = {b: float(np.abs(OneEuroFilter(20.0, min_cutoff=1.0, beta=b)(x)[-1, 0, 0] - x[-1, 0, 0])) for b in (0, 1, 10)}
    assert lag[0] > 0.25  # a 1 Hz low-pass trails a 2 m/s ramp by v * tau (0.32 m)
    assert lag[10] < lag[1] < lag[0] / 2, lag


def test_batches_give_the_same_as_one_call():
    rng = np.random.default_rng(2)
    x = np.cumsum(rng.normal(size=(57, 17, 3)), axis=0) * 0.01
    whole = OneEuroFilter(30.0)(x)
    f = OneEuroFilter(30.0)
    parts = np.concatenate([f(x[s:s + 10]) for s in range(0, 57, 10)])
    np.testing.assert_array_equal(parts, whole)


def test_joints_are_filtered_on_their_own():
    """A fast joint beside a still one does not change how the still one is smoothed."""
    rng = np.random.default_rng(3)
    still = 0.01 * rng.normal(size=(60, 1, 3))
    fast = np.cumsum(np.ones((60, 1, 3)), axis=0)
    both = OneEuroFilter(20.0, beta=1.0)(np.concatenate([still, fast], axis=1))
    np.testing.assert_allclose(both[:, :1], OneEuroFilter(20.0, beta=1.0)(still), rtol=0, atol=1e-15)


def test_gaps_are_longer_time_steps():
    """Frames 0, 1, 4 at 20 frames/s: the step from 1 to 4 is 0.15 s, not 0.05 s."""
    x = np.zeros((3, 1, 3))
    x[2] = 1.0
    gap = OneEuroFilter(20.0, beta=0.0)(x, frames=[0, 1, 4])
    a = _ema_alpha(1.0, 3 / 20)
    np.testing.assert_allclose(gap[2], a, rtol=1e-12)
    assert gap[2, 0, 0] > OneEuroFilter(20.0, beta=0.0)(x)[2, 0, 0]
    with pytest.raises(ValueError, match="frames must increase"):
        OneEuroFilter(20.0)(x, frames=[0, 2, 2])


def test_clips_start_fresh():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(20, 2, 3)), rng.normal(size=(15, 2, 3)) + 5.0
    out = smooth_clips(np.concatenate([a, b]), ["a"] * 20 + ["b"] * 15, 20.0)
    np.testing.assert_array_equal(out[:20], OneEuroFilter(20.0)(a))
    np.testing.assert_array_equal(out[20:], OneEuroFilter(20.0)(b))  # not pulled towards clip a's last pose


def test_settings_are_checked():
    assert make_smoother("none", 25.0) is None
    assert isinstance(make_smoother("oneeuro", 25.0), OneEuroFilter)
    for kw in ({"fps": 0.0}, {"fps": float("nan")}, {"fps": 25.0, "min_cutoff": 0.0}, {"fps": 25.0, "beta": -1.0}):
        with pytest.raises(ValueError):
            OneEuroFilter(**kw)
    with pytest.raises(ValueError, match="unknown smoother"):
        make_smoother("kalman", 25.0)


def test_acceleration_error_by_hand():
    """One joint of two off by +-1 mm on alternate frames: its second difference is 4 mm / frame^2,
    the other's 0, so the mean over joints is 2; a difference spanning two clips is not counted."""
    gt = np.cumsum(np.ones((10, 2, 3)), axis=0) * 0.1  # constant velocity: no acceleration of its own
    pred = gt.copy()
    pred[:, 0, 1] += 0.001 * (-1.0) ** np.arange(10)
    assert acceleration_error(pred, gt) == pytest.approx(2.0)
    assert acceleration_error(gt + 0.5, gt) == pytest.approx(0.0, abs=1e-9)  # an offset is not jitter
    jump = gt.copy()
    jump[5:] += 1.0  # a second clip starting elsewhere
    assert acceleration_error(jump, gt, clip_ids=[0] * 5 + [1] * 5) == pytest.approx(0.0, abs=1e-9)
    assert acceleration_error(jump, gt) > 100.0
    with pytest.raises(ValueError, match="three frames"):
        acceleration_error(gt[:4], gt[:4], clip_ids=[0, 0, 1, 1])
