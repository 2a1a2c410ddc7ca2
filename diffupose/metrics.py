"""Pose errors and the per-action tables.

Inputs are poses in metres (torch tensors or numpy arrays, [..., J, 3]); outputs are floats (or
float arrays) in millimetres. All arithmetic is float64 numpy.

- MPJPE (protocol #1): mean Euclidean joint error.
- P-MPJPE (protocol #2): the error after the similarity transform (scale, rotation, translation)
  that best aligns the prediction to the ground truth (orthogonal Procrustes); a reflection in
  the SVD solution is corrected to a proper rotation (det = +1).
- Per action (VideoPose3D's protocol): each action's error averaged over its frames, then the
  plain mean over actions ("Avg").
- Acceleration error: the second difference of the poses over time against the ground truth's
  (mm per frame squared), per clip: the jitter of a video lift.
- Oracle best-of-N: per frame, the hypothesis closest to the ground truth. It needs the ground
  truth to choose, so it is a bound, not a prediction: it is only ever reported in rows whose
  name contains "oracle", and nothing here uses it to choose the prediction of another row.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

import numpy as np

MM = 1000.0  # metres -> millimetres
_CHUNK = 1 << 16  # frames per chunk where per-frame SVDs or hypotheses would take a lot of memory

# Column headings of Table I (the Human3.6M actions); other labels are printed as they are.
ACTION_ABBREVIATIONS = {
    "Directions": "Dir.", "Discussion": "Disc.", "Eating": "Eat", "Greeting": "Greet", "Phoning": "Phone",
    "Photo": "Photo", "Posing": "Pose", "Purchases": "Purch.", "Sitting": "Sit", "SittingDown": "SitD.",
    "Smoking": "Smoke", "Waiting": "Wait", "WalkDog": "WalkD.", "Walking": "Walk", "WalkTogether": "WalkT.",
}


def _as_numpy(x, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch for numpy callers
        x = x.detach().cpu().double().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 2 or x.shape[-1] != 3:
        raise ValueError(f"{name}: expected poses [..., J, 3], got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    return x


def _pair(pred, gt) -> tuple[np.ndarray, np.ndarray]:
    p, g = _as_numpy(pred, "prediction"), _as_numpy(gt, "ground truth")
    if p.shape != g.shape:
        raise ValueError(f"prediction {p.shape} and ground truth {g.shape} differ in shape")
    return p, g


def _joint_distance(p: np.ndarray, g: np.ndarray) -> np.ndarray:
    d = p - g
    return np.sqrt(np.einsum("...k,...k->...", d, d))  # [..., J]; several times faster than linalg.norm here


# ---------------------------------------------------------------------------------------------
# per-frame errors
# ---------------------------------------------------------------------------------------------
def mpjpe_per_frame(pred, gt) -> np.ndarray:
    """[..., J, 3] x2 -> [...] mm: mean over joints of the Euclidean distance."""
    p, g = _pair(pred, gt)
    return _joint_distance(p, g).mean(axis=-1) * MM


def procrustes_align(pred, gt) -> np.ndarray:
    """pred [..., J, 3] aligned to gt by the least-squares similarity transform s R x + t, R a
    proper rotation. Returns the aligned prediction (metres, float64)."""
    p, g = _pair(pred, gt)
    shape = p.shape
    p, g = p.reshape(-1, *shape[-2:]), g.reshape(-1, *shape[-2:])
    mu_p, mu_g = p.mean(axis=1, keepdims=True), g.mean(axis=1, keepdims=True)
    P, G = p - mu_p, g - mu_g
    norm_p = np.sqrt((P ** 2).sum(axis=(1, 2)))  # [B]
    norm_g = np.sqrt((G ** 2).sum(axis=(1, 2)))
    # a collapsed prediction (all joints at one point) has no orientation: align its centre only
    ok = norm_p > 1e-12
    Pn = P / np.where(ok, norm_p, 1.0)[:, None, None]
    Gn = G / np.where(norm_g > 0, norm_g, 1.0)[:, None, None]
    # maximise tr(R^T Gn^T Pn): Gn^T Pn = U S Vt, R = V U^T with the last singular direction flipped
    # where det(V U^T) = -1 (the best proper rotation; Umeyama 1991)
    U, S, Vt = np.linalg.svd(np.matmul(np.swapaxes(Gn, 1, 2), Pn))  # H = Gn^T Pn  [B, 3, 3]
    V = np.swapaxes(Vt, 1, 2)
    sign = np.where(np.linalg.det(V @ np.swapaxes(U, 1, 2)) < 0, -1.0, 1.0)
    V[:, :, -1] *= sign[:, None]
    S[:, -1] *= sign
    R = V @ np.swapaxes(U, 1, 2)  # applied as P @ R
    scale = np.where(ok, S.sum(axis=1) * norm_g / np.where(ok, norm_p, 1.0), 0.0)  # [B]
    aligned = scale[:, None, None] * (P @ R) + mu_g
    return aligned.reshape(shape)


def p_mpjpe_per_frame(pred, gt) -> np.ndarray:
    """[..., J, 3] x2 -> [...] mm: MPJPE after Procrustes alignment (scale, rotation, translation)."""
    p, g = _pair(pred, gt)
    flat_p, flat_g = p.reshape(-1, *p.shape[-2:]), g.reshape(-1, *g.shape[-2:])
    out = np.empty(flat_p.shape[0])
    for i in range(0, flat_p.shape[0], _CHUNK):
        sl = slice(i, i + _CHUNK)
        out[sl] = _joint_distance(procrustes_align(flat_p[sl], flat_g[sl]), flat_g[sl]).mean(axis=-1) * MM
    return out.reshape(p.shape[:-2])


def mpjpe(pred, gt) -> float:
    """Mean per-joint position error, mm, over all frames and joints."""
    return float(mpjpe_per_frame(pred, gt).mean())


def p_mpjpe(pred, gt) -> float:
    """Procrustes-aligned MPJPE, mm, over all frames and joints."""
    return float(p_mpjpe_per_frame(pred, gt).mean())


def acceleration_error(pred, gt, clip_ids=None) -> float:
    """Acceleration error, mm per frame squared, as video pose papers report it (HMMR, VIBE): the
    mean over frames and joints of |a_pred - a_gt|, a = p[t+1] - 2 p[t] + p[t-1] per joint. pred,
    gt [F, J, 3], rows in time order; clip_ids [F] labels each row's clip (rows of a clip
    consecutive): no difference spans two clips. Measures jitter, which MPJPE hardly sees."""
    p, g = _pair(pred, gt)
    if p.ndim != 3:
        raise ValueError(f"acceleration_error: expected [frames, J, 3], got {p.shape}")
    ids = np.zeros(len(p), dtype=np.int64) if clip_ids is None else np.asarray(clip_ids)
    if ids.shape != (len(p),):
        raise ValueError(f"acceleration_error: {ids.shape} clip ids for {len(p)} frames")
    same = (ids[2:] == ids[1:-1]) & (ids[1:-1] == ids[:-2])  # the three frames of a difference in one clip
    if not same.any():
        raise ValueError("acceleration_error: no clip has three frames")
    acc = lambda x: x[2:] - 2.0 * x[1:-1] + x[:-2]  # noqa: E731
    return float(_joint_distance(acc(p)[same], acc(g)[same]).mean() * MM)


def oracle_per_frame(hypotheses, gt) -> tuple[np.ndarray, np.ndarray]:
    """Best-of-N bounds: hypotheses [N, H, J, 3], gt [N, J, 3] -> (min over H of MPJPE [N],
    min over H of P-MPJPE [N]), mm. Each minimum is taken on its own protocol's error."""
    h = _as_numpy(hypotheses, "hypotheses")
    g = _as_numpy(gt, "ground truth")
    if h.ndim != 4 or h.shape[0] != g.shape[0] or h.shape[2:] != g.shape[1:]:
        raise ValueError(f"hypotheses {h.shape} must be [N, H, J, 3] for ground truth {g.shape} [N, J, 3]")
    best1, best2 = np.empty(g.shape[0]), np.empty(g.shape[0])
    step = max(1, _CHUNK // h.shape[1])
    for i in range(0, g.shape[0], step):
        hs, gs = h[i:i + step], np.broadcast_to(g[i:i + step, None], h[i:i + step].shape)
        best1[i:i + step] = mpjpe_per_frame(hs, gs).min(axis=1)
        best2[i:i + step] = p_mpjpe_per_frame(hs, gs).min(axis=1)
    return best1, best2


# ---------------------------------------------------------------------------------------------
# per-action evaluation
# ---------------------------------------------------------------------------------------------
def per_action_mean(errors: np.ndarray, actions: np.ndarray, order: Sequence[str]) -> dict[str, float]:
    """{action: mean error over its frames, ..., "Avg": mean over the actions} in `order`."""
    row = {a: float(errors[actions == a].mean()) for a in order}
    row["Avg"] = float(np.mean([row[a] for a in order]))
    return row


def table_order(actions: np.ndarray, action_order: Sequence[str] = ()) -> list[str]:
    present = set(np.asarray(actions).astype(str).tolist())
    ordered = [a for a in action_order if a in present]
    return ordered + sorted(present - set(ordered))


@dataclass
class Evaluation:
    """Per-action errors (mm) of one method. Rows map action -> error plus "Avg" (mean over actions)."""

    actions: list[str]
    mpjpe: dict[str, float]
    p_mpjpe: dict[str, float]
    frames: dict[str, int]
    num_hypotheses: Optional[int] = None
    oracle_mpjpe: Optional[dict[str, float]] = None  # best-of-N, chosen with the ground truth
    oracle_p_mpjpe: Optional[dict[str, float]] = None
    extra: dict = field(default_factory=dict)

    def rows(self, method: str, protocol: str = "mpjpe") -> dict[str, dict[str, float]]:
        """Table rows for `method`: its own row and, where hypotheses were given, the oracle row,
        always named "<method> oracle (best of H)"."""
        if protocol not in ("mpjpe", "p_mpjpe"):
            raise ValueError(f"protocol must be 'mpjpe' or 'p_mpjpe', got {protocol!r}")
        out = {method: getattr(self, protocol)}
        oracle = getattr(self, "oracle_" + protocol)
        if oracle is not None:
            out[f"{method} oracle (best of {self.num_hypotheses})"] = oracle
        return out


def evaluate(pred, gt, actions, hypotheses=None, action_order: Sequence[str] = ()) -> Evaluation:
    """Per-action MPJPE and P-MPJPE of `pred` [N, J, 3] (the method's prediction, e.g. the mean of
    its hypotheses, chosen without the ground truth) against `gt` [N, J, 3], with `actions` [N]
    the label of each frame. With `hypotheses` [N, H, J, 3] also the oracle best-of-H errors.
    Columns follow `action_order` (labels not in it follow, sorted)."""
    actions = np.asarray(actions).astype(str)
    e1 = mpjpe_per_frame(pred, gt)
    e2 = p_mpjpe_per_frame(pred, gt)
    if e1.ndim != 1:
        raise ValueError(f"evaluate: expected pred and gt [N, J, 3], got {np.shape(pred)}")
    if actions.shape != e1.shape:
        raise ValueError(f"evaluate: {actions.shape[0] if actions.ndim else actions.shape} action labels for {e1.shape[0]} frames")
    if e1.shape[0] == 0:
        raise ValueError("evaluate: no frames")
    order = table_order(actions, action_order)
    ev = Evaluation(actions=order, mpjpe=per_action_mean(e1, actions, order),
                    p_mpjpe=per_action_mean(e2, actions, order),
                    frames={a: int((actions == a).sum()) for a in order})
    if hypotheses is not None:
        o1, o2 = oracle_per_frame(hypotheses, gt)
        ev.num_hypotheses = int(np.shape(hypotheses)[1])
        ev.oracle_mpjpe = per_action_mean(o1, actions, order)
        ev.oracle_p_mpjpe = per_action_mean(o2, actions, order)
    return ev


def evaluate_poseset(pred, poseset, hypotheses=None) -> Evaluation:
    """evaluate() against a PoseSet's ground truth and labels, in its table order."""
    return evaluate(pred, poseset.pose3d, poseset.action, hypotheses, poseset.action_order)


def format_table(rows: Mapping[str, Mapping[str, float]], actions: Sequence[str], title: str = "",
                 precision: int = 1, abbreviate: bool = True) -> str:
    """Table I as text: one row per method (e.g. "DiffuPose N=5"), one column per action, then Avg."""
    if not rows:
        raise ValueError("format_table: no rows")
    cols = list(actions) + ["Avg"]
    for name, row in rows.items():
        missing = [c for c in cols if c not in row]
        if missing:
            raise ValueError(f"format_table: row {name!r} has no value for {missing}")
    heads = [ACTION_ABBREVIATIONS.get(c, c) if abbreviate else c for c in cols]
    cells = {name: [f"{row[c]:.{precision}f}" for c in cols] for name, row in rows.items()}
    widths = [max(len(h), *(len(cells[n][i]) for n in rows)) for i, h in enumerate(heads)]
    name_w = max(len("Method"), *(len(n) for n in rows))
    lines = [title] if title else []
    lines.append("  ".join(["Method".ljust(name_w)] + [h.rjust(w) for h, w in zip(heads, widths)]))
    lines.append("-" * len(lines[-1]))
    for name in rows:
        lines.append("  ".join([name.ljust(name_w)] + [c.rjust(w) for c, w in zip(cells[name], widths)]))
    return "\n".join(lines)
