"""MPJPE, P-MPJPE (with the reflection case), the oracle, per-action averaging and Table I text,
against hand-computed values."""
import numpy as np
import pytest
import torch

from diffupose import metrics
from diffupose.data.dataset import PoseSet
from diffupose.skeleton import H36M17


def random_rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


def test_mpjpe_by_hand():
    gt = np.zeros((2, 3, 3))
    pred = gt.copy()
    pred[0, :, 0] = 0.003  # 3 mm in x
    pred[0, :, 1] = 0.004  # 4 mm in y: 5 mm for every joint of frame 0
    pred[1, 0, 2] = 0.009  # frame 1: 9 mm on one joint of three: 3 mm
    np.testing.assert_allclose(metrics.mpjpe_per_frame(pred, gt), [5.0, 3.0])
    assert metrics.mpjpe(pred, gt) == pytest.approx(4.0)
    # torch in, same float out
    assert metrics.mpjpe(torch.tensor(pred, dtype=torch.float32), torch.tensor(gt)) == pytest.approx(4.0, rel=1e-6)


def test_similarity_transform_gives_zero_p_mpjpe():
    rng = np.random.default_rng(0)
    gt = rng.normal(scale=0.3, size=(20, 17, 3))
    pred = np.stack([1.7 * g @ random_rotation(rng).T + rng.normal(size=3) for g in gt])
    assert metrics.mpjpe(pred, gt) > 100
    assert metrics.p_mpjpe(pred, gt) < 1e-6
    assert metrics.p_mpjpe(torch.tensor(pred), torch.tensor(gt)) < 1e-6


def test_p_mpjpe_scale_by_hand():
    # a square against a rhombus stretched 2x in y: R = I, t = 0, s = <P, G> / |P|^2 = 6 / 10
    gt = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0]], dtype=float)
    pred = gt * np.array([1.0, 2.0, 1.0])
    aligned = metrics.procrustes_align(pred, gt)
    np.testing.assert_allclose(aligned, 0.6 * pred, atol=1e-12)
    # errors 0.4, 0.4, 0.2, 0.2 m
    assert metrics.p_mpjpe(pred, gt) == pytest.approx(300.0)


def test_reflection_is_corrected_to_a_proper_rotation():
    """pred is gt mirrored in x. Allowing the reflection would give 0; the best proper rotation
    keeps the axis of least spread (x) wrong: for points +-a x, +-b y, +-c z with a < b < c it is
    R = I with s = (b^2 + c^2 - a^2) / (a^2 + b^2 + c^2), which here makes the error exactly 80 mm."""
    a, b, c = 0.1, 0.3, 0.5
    gt = np.array([[a, 0, 0], [-a, 0, 0], [0, b, 0], [0, -b, 0], [0, 0, c], [0, 0, -c]])
    pred = gt * np.array([-1.0, 1.0, 1.0])
    s = (b * b + c * c - a * a) / (a * a + b * b + c * c)
    np.testing.assert_allclose(metrics.procrustes_align(pred, gt), s * pred, atol=1e-12)
    assert metrics.p_mpjpe(pred, gt) == pytest.approx(80.0)


def test_alignment_is_proper_and_least_squares_optimal_for_mirrored_poses():
    rng = np.random.default_rng(1)
    gt = rng.normal(scale=0.3, size=(8, 17, 3))
    pred = gt * np.array([-1.0, 1.0, 1.0]) + rng.normal(scale=0.01, size=gt.shape)
    aligned = metrics.procrustes_align(pred, gt)
    for p, g, al in zip(pred, gt, aligned):
        P = p - p.mean(0)
        M = np.linalg.lstsq(P, al - al.mean(0), rcond=None)[0]  # aligned = P @ (s R) + t
        assert np.linalg.det(M) > 0  # s > 0 and det R = +1
        np.testing.assert_allclose(al.mean(0), g.mean(0), atol=1e-12)
        best = ((al - g) ** 2).sum()
        for _ in range(20):  # no nearby proper similarity does better in least squares
            dR = random_rotation(rng) if _ == 0 else _small_rotation(rng)
            for ds in (0.98, 1.0, 1.02):
                other = ds * (al - al.mean(0)) @ dR + g.mean(0)
                assert ((other - g) ** 2).sum() >= best - 1e-12


def _small_rotation(rng, angle=0.05):
    w = rng.normal(size=3)
    w *= angle / np.linalg.norm(w)
    K = np.array([[0, -w[2], w[1]], [w[2], 0, -w[0]], [-w[1], w[0], 0]])
    th = np.linalg.norm(w)
    return np.eye(3) + np.sin(th) / th * K + (1 - np.cos(th)) / th ** 2 * K @ K


def test_collapsed_prediction_is_finite():
    gt = np.random.default_rng(2).normal(size=(1, 17, 3))
    pred = np.zeros_like(gt)
    expected = np.linalg.norm(gt - gt.mean(1, keepdims=True), axis=-1).mean() * 1000
    assert metrics.p_mpjpe(pred, gt) == pytest.approx(expected)


def test_bad_input():
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.mpjpe(np.zeros((2, 17, 3)), np.zeros((2, 16, 3)))
    with pytest.raises(ValueError, match=r"expected poses \[..., J, 3\]"):
        metrics.p_mpjpe(np.zeros((2, 17, 2)), np.zeros((2, 17, 2)))
    bad = np.zeros((2, 17, 3))
    bad[1, 3, 0] = np.nan
    with pytest.raises(ValueError, match="prediction: contains NaN"):
        metrics.mpjpe(bad, np.zeros((2, 17, 3)))


def test_per_action_averaging_by_hand():
    """Walking: 3 frames with errors 1, 2, 3 mm (mean 2); Eating: one frame of 10 mm. The average
    is over actions, (2 + 10) / 2 = 6, not over frames (16 / 4 = 4)."""
    gt = np.random.default_rng(3).normal(scale=0.3, size=(4, 17, 3))
    err_mm = np.array([1.0, 2.0, 3.0, 10.0])
    pred = gt.copy()
    pred[:, :, 1] += err_mm[:, None] / 1000
    actions = np.array(["Walking", "Walking", "Walking", "Eating"])
    ev = metrics.evaluate(pred, gt, actions, action_order=("Eating", "Walking"))
    assert ev.actions == ["Eating", "Walking"]
    assert ev.mpjpe == pytest.approx({"Eating": 10.0, "Walking": 2.0, "Avg": 6.0})
    assert ev.frames == {"Eating": 1, "Walking": 3}
    # a pure translation is removed by the alignment
    assert max(ev.p_mpjpe.values()) < 1e-6
    assert ev.oracle_mpjpe is None and list(ev.rows("DiffuPose N=1")) == ["DiffuPose N=1"]


def test_p_mpjpe_per_action_by_hand():
    gt = np.array([[[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0]]] * 3, dtype=float)
    pred = gt.copy()
    pred[0] *= np.array([1.0, 2.0, 1.0])  # 300 mm after alignment (see test_p_mpjpe_scale_by_hand)
    ev = metrics.evaluate(pred, gt, np.array(["A", "A", "B"]))
    assert ev.p_mpjpe == pytest.approx({"A": 150.0, "B": 0.0, "Avg": 75.0})


def test_oracle_is_reported_apart_and_never_changes_the_prediction_rows():
    rng = np.random.default_rng(4)
    gt = rng.normal(scale=0.3, size=(6, 17, 3))
    hyps = gt[:, None] + rng.normal(scale=0.05, size=(6, 5, 17, 3))
    hyps[0, 3] = gt[0]  # one exact hypothesis: the oracle error of frame 0 is 0
    pred = hyps.mean(axis=1)  # the aggregate, chosen without the ground truth
    actions = np.array(["Walking"] * 3 + ["Eating"] * 3)
    plain = metrics.evaluate(pred, gt, actions)
    ev = metrics.evaluate(pred, gt, actions, hypotheses=hyps)
    assert ev.mpjpe == plain.mpjpe and ev.p_mpjpe == plain.p_mpjpe
    per_hyp = metrics.mpjpe_per_frame(hyps, np.broadcast_to(gt[:, None], hyps.shape))  # [6, 5]
    best = per_hyp.min(axis=1)
    assert best[0] == 0.0
    assert ev.oracle_mpjpe["Walking"] == pytest.approx(best[:3].mean())
    assert ev.oracle_mpjpe["Eating"] == pytest.approx(best[3:].mean())
    best2 = metrics.p_mpjpe_per_frame(hyps, np.broadcast_to(gt[:, None], hyps.shape)).min(axis=1)
    assert ev.oracle_p_mpjpe["Eating"] == pytest.approx(best2[3:].mean())
    # no single hypothesis does better than the oracle (the mean of the 5 may: it averages noise)
    for h in range(5):
        single = metrics.evaluate(hyps[:, h], gt, actions)
        assert ev.oracle_mpjpe["Avg"] <= single.mpjpe["Avg"] and ev.oracle_p_mpjpe["Avg"] <= single.p_mpjpe["Avg"]
    for protocol in ("mpjpe", "p_mpjpe"):
        rows = ev.rows("DiffuPose N=5", protocol)
        assert list(rows) == ["DiffuPose N=5", "DiffuPose N=5 oracle (best of 5)"]
        assert rows["DiffuPose N=5"] == getattr(plain, protocol)
        assert all("oracle" in name for name, row in rows.items() if row is getattr(ev, "oracle_" + protocol))
    with pytest.raises(ValueError, match=r"must be \[N, H, J, 3\]"):
        metrics.evaluate(pred, gt, actions, hypotheses=hyps[:5])


def test_evaluate_checks_labels():
    with pytest.raises(ValueError, match="5 action labels for 4 frames"):
        metrics.evaluate(np.zeros((4, 17, 3)), np.zeros((4, 17, 3)), np.array(["A"] * 5))


def test_evaluate_poseset_uses_the_table_order():
    rng = np.random.default_rng(5)
    ps = PoseSet(pose3d=rng.normal(size=(4, 17, 3)), pose2d=np.zeros((4, 17, 2)),
                 action=np.array(["Walking", "Directions", "Photo", "Walking"]), subject=np.array(["S9"] * 4),
                 camera=np.zeros(4, int), skeleton=H36M17,
                 action_order=("Directions", "Discussion", "Photo", "Walking"))
    ev = metrics.evaluate_poseset(ps.pose3d, ps)
    assert ev.actions == ["Directions", "Photo", "Walking"] and ev.mpjpe["Avg"] == 0.0


def test_format_table():
    rows = {"DiffuPose N=1": {"Directions": 41.04, "Photo": 50.0, "Avg": 45.52},
            "DiffuPose N=5 oracle (best of 5)": {"Directions": 38.0, "Photo": 47.25, "Avg": 42.625}}
    text = metrics.format_table(rows, ["Directions", "Photo"], title="Protocol #1 (MPJPE, mm)")
    lines = text.splitlines()
    assert lines[0] == "Protocol #1 (MPJPE, mm)"
    assert lines[1].split() == ["Method", "Dir.", "Photo", "Avg"]
    assert lines[3].split() == ["DiffuPose", "N=1", "41.0", "50.0", "45.5"]
    assert lines[4].split()[-3:] == ["38.0", "47.2", "42.6"]
    assert len({len(l) for l in lines[1:]}) == 1  # columns line up
    full = metrics.format_table(rows, ["Directions", "Photo"], abbreviate=False, precision=2)
    assert "Directions" in full and "41.04" in full
    with pytest.raises(ValueError, match=r"row 'DiffuPose N=1' has no value for \['Posing'\]"):
        metrics.format_table(rows, ["Directions", "Posing"])
