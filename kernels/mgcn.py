"""Triton kernels of the modulated graph convolution (forward and backward) and their launchers.

The op, its contract and its reference live in diffupose/ops/mgcn.py (`mgcn_ref`); this module
has the kernels only. For x [B, J, Cin] viewed as R = B*J flat rows:

    pre = diag(a)[:, None] * (m * (x @ w[0])) + offdiag(a) @ (m * (x @ w[1])) + bias
    out = act(pre * (1 + scale) + shift) + residual

Tiling. A program owns whole samples: BM flat rows hold SPB = BM // J samples (rows
s0*J .. (s0+SPB)*J - 1, the tail of the tile masked) and a block of BN output channels. The
J x J aggregation inside each sample is one dot with the block-diagonal matrix A_big [BM, BM],
A_big[r, c] = offdiag(a)[j(r), j(c)] where rows r, c belong to the same sample, gathered from a
(J x J, cached) in registers: no padding of J per sample, and no data leaves the program.

Backward, three launches and a few small torch sums:
  1. `_mgcn_bwd_kernel`, the same tiles: recompute y0 = x @ w0, y1 = x @ w1 (only `pre` is
     saved), then dpre, dy0 = dL/dy0, dy1 = dL/dy1 (written to a scratch [R, 2, Cout]) and the
     per-program partials of dm, da, dbias (and dscale_shift: written directly when it has a row
     per sample, a partial when it is broadcast).
  2. `_matmul_kernel`: dx = dy0 @ w0^T + dy1 @ w1^T (K = 2*Cout, fp32 accumulation).
  3. `_matmul_kernel`: dw[t] = x^T @ dy_t, split over the rows into a few fp32 partials.
dx needs every output channel of a row, dw every row of a channel: neither fits the other's
tile, so they are separate GEMM passes; all reductions are fixed-order (deterministic).

Precision: fp32 inputs use tl.dot(input_precision="ieee") (fp32-accurate; tf32 would not be);
fp16/bf16 inputs go through the tensor cores with fp32 accumulation, the small fp32 dots of the
aggregation then in tf32 (as precise as the half inputs). Reductions by one-hot dots are ieee.
"""
from __future__ import annotations

import os
from typing import Optional

import torch
import triton
import triton.language as tl

from .launch import device_guard

_X_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# A tile keeps A_big [BM, BM] (BM >= J) in registers: at BM = 128 the kernels already spill tens
# of KB per thread on sm_90, so the Triton backend stops at 64 joints (skeletons have 15-17).
MAX_J = 64


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def _big_tiles() -> bool:
    """Tiles as big as the problem (up to 256): the interpreter pays milliseconds per program.
    A test can patch this to False to run the GPU tiling (many programs, K loops) there."""
    return _interpreting()


# ---------------------------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------------------------
@triton.jit
def _rows(pid_m, B, J, SPB, BM: tl.constexpr):
    """The BM rows of a tile: local index r, local sample, joint, validity, flat row (int64)."""
    r = tl.arange(0, BM)
    s_loc = r // J
    jj = r - s_loc * J
    s = pid_m * SPB + s_loc
    ok = (s_loc < SPB) & (s < B)
    row = s.to(tl.int64) * J + jj
    return r, s_loc, jj, s, ok, row


@triton.jit
def _xw(x_ptr, w_ptr, row, row_ok, n, n_ok, CIN, COUT, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
        PREC: tl.constexpr):
    """y0 = x @ w0, y1 = x @ w1 on the tile: [BM, BN] each, fp32 accumulation over Cin."""
    y0 = tl.zeros([BM, BN], dtype=tl.float32)
    y1 = tl.zeros([BM, BN], dtype=tl.float32)
    k = tl.arange(0, BK)
    for k0 in range(0, CIN, BK):
        kk = k0 + k
        k_ok = kk < CIN
        xt = tl.load(x_ptr + row[:, None] * CIN + kk[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        w_off = kk[:, None] * COUT + n[None, :]
        w_ok = k_ok[:, None] & n_ok[None, :]
        # fp32 parameters with half x: the dot runs in x's dtype (as the reference casts them)
        w0 = tl.load(w_ptr + w_off, mask=w_ok, other=0.0).to(xt.dtype)
        w1 = tl.load(w_ptr + CIN * COUT + w_off, mask=w_ok, other=0.0).to(xt.dtype)
        y0 = tl.dot(xt, w0, y0, input_precision=PREC)
        y1 = tl.dot(xt, w1, y1, input_precision=PREC)
    return y0, y1


@triton.jit
def _mgcn_fwd_kernel(x_ptr, w_ptr, m_ptr, a_ptr, bias_ptr, ss_ptr, res_ptr, out_ptr, pre_ptr,
                     B, J, CIN, COUT, SPB, ss_stride,
                     ACT: tl.constexpr, HAS_SS: tl.constexpr, HAS_RES: tl.constexpr, SAVE_PRE: tl.constexpr,
                     BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
                     PREC: tl.constexpr, AGG_PREC: tl.constexpr):
    # x [R, CIN]; w [2, CIN, COUT]; m [J, COUT]; a [J, J]; bias [COUT]; ss [1 or B, 2, COUT]
    # (ss_stride 0 when broadcast); res, out, pre [R, COUT]. Grid (cdiv(B, SPB), cdiv(COUT, BN)).
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    r, s_loc, jj, s, row_ok, row = _rows(pid_m, B, J, SPB, BM)
    n = pid_n * BN + tl.arange(0, BN)
    n_ok = n < COUT
    y0, y1 = _xw(x_ptr, w_ptr, row, row_ok, n, n_ok, CIN, COUT, BM, BN, BK, PREC)

    mod = tl.load(m_ptr + jj[:, None] * COUT + n[None, :], mask=n_ok[None, :], other=0.0).to(tl.float32)
    a_diag = tl.load(a_ptr + jj * (J + 1)).to(tl.float32)
    # A_big [BM, BM]: offdiag(a)[j(r), j(c)] within one sample (the own joint goes through w0)
    same = (s_loc[:, None] == s_loc[None, :]) & (r[:, None] != r[None, :]) & row_ok[None, :]
    a_big = tl.load(a_ptr + jj[:, None] * J + jj[None, :], mask=same, other=0.0).to(tl.float32)
    bias = tl.load(bias_ptr + n, mask=n_ok, other=0.0).to(tl.float32)
    pre = a_diag[:, None] * (mod * y0) + tl.dot(a_big, mod * y1, input_precision=AGG_PREC) + bias[None, :]

    ok = row_ok[:, None] & n_ok[None, :]
    u = pre
    if HAS_SS:
        ss_off = s.to(tl.int64)[:, None] * ss_stride + n[None, :]
        scale = tl.load(ss_ptr + ss_off, mask=ok, other=0.0).to(tl.float32)
        shift = tl.load(ss_ptr + ss_off + COUT, mask=ok, other=0.0).to(tl.float32)
        u = pre * (1.0 + scale) + shift
    if ACT == 1:
        u = tl.maximum(u, 0.0)
    elif ACT == 2:
        u = u / (1.0 + tl.exp(-u))
    offs = row[:, None] * COUT + n[None, :]
    if HAS_RES:
        u += tl.load(res_ptr + offs, mask=ok, other=0.0).to(tl.float32)
    tl.store(out_ptr + offs, u.to(out_ptr.dtype.element_ty), mask=ok)
    if SAVE_PRE:
        tl.store(pre_ptr + offs, pre.to(pre_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _mgcn_bwd_kernel(g_ptr, x_ptr, w_ptr, m_ptr, a_ptr, pre_ptr, ss_ptr,
                     dy_ptr, dss_ptr, dss_part_ptr, dbias_part_ptr, dm_part_ptr, da_part_ptr,
                     B, J, CIN, COUT, SPB, ss_stride,
                     ACT: tl.constexpr, HAS_SS: tl.constexpr, SS_PER_SAMPLE: tl.constexpr,
                     BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, JB: tl.constexpr, SB: tl.constexpr,
                     PREC: tl.constexpr, AGG_PREC: tl.constexpr):
    # g, pre [R, COUT]; x, w, m, a, ss as in the forward. Writes, for grid (P, Q) =
    # (cdiv(B, SPB), cdiv(COUT, BN)): dy [R, 2, COUT] (dL/d(x @ w0), dL/d(x @ w1)); dss [B, 2, COUT]
    # when SS_PER_SAMPLE, else dss_part [P, 2, COUT]; dbias_part [P, COUT]; dm_part [P, J, COUT];
    # da_part [P, Q, J, J]. JB >= J and SB >= SPB are the padded joint / sample counts (>= 16).
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    r, s_loc, jj, s, row_ok, row = _rows(pid_m, B, J, SPB, BM)
    n = pid_n * BN + tl.arange(0, BN)
    n_ok = n < COUT
    ok = row_ok[:, None] & n_ok[None, :]
    offs = row[:, None] * COUT + n[None, :]
    y0, y1 = _xw(x_ptr, w_ptr, row, row_ok, n, n_ok, CIN, COUT, BM, BN, BK, PREC)

    # epilogue backward: u = pre * (1 + scale) + shift, out = act(u) + residual
    g = tl.load(g_ptr + offs, mask=ok, other=0.0).to(tl.float32)
    pre = tl.load(pre_ptr + offs, mask=ok, other=0.0).to(tl.float32)
    u = pre
    if HAS_SS:
        ss_off = s.to(tl.int64)[:, None] * ss_stride + n[None, :]
        scale = tl.load(ss_ptr + ss_off, mask=ok, other=0.0).to(tl.float32)
        shift = tl.load(ss_ptr + ss_off + COUT, mask=ok, other=0.0).to(tl.float32)
        u = pre * (1.0 + scale) + shift
    if ACT == 1:
        dz = tl.where(u > 0.0, g, 0.0)
    elif ACT == 2:
        sig = 1.0 / (1.0 + tl.exp(-u))
        dz = g * (sig * (1.0 + u * (1.0 - sig)))
    else:
        dz = g
    dpre = dz
    if HAS_SS:
        dpre = dz * (1.0 + scale)
        if SS_PER_SAMPLE:
            # per-sample sums over the J rows of each sample: one-hot [SB, BM] dots
            sidx = tl.arange(0, SB)
            one_s = ((sidx[:, None] == s_loc[None, :]) & row_ok[None, :]).to(tl.float32)
            dscale = tl.dot(one_s, dz * pre, input_precision="ieee")
            dshift = tl.dot(one_s, dz, input_precision="ieee")
            s_glob = pid_m * SPB + sidx
            s_ok = (sidx < SPB) & (s_glob < B)
            d_off = s_glob.to(tl.int64)[:, None] * (2 * COUT) + n[None, :]
            d_ok = s_ok[:, None] & n_ok[None, :]
            tl.store(dss_ptr + d_off, dscale.to(dss_ptr.dtype.element_ty), mask=d_ok)
            tl.store(dss_ptr + d_off + COUT, dshift.to(dss_ptr.dtype.element_ty), mask=d_ok)
        else:
            p_off = pid_m.to(tl.int64) * (2 * COUT) + n
            tl.store(dss_part_ptr + p_off, tl.sum(dz * pre, axis=0), mask=n_ok)
            tl.store(dss_part_ptr + p_off + COUT, tl.sum(dz, axis=0), mask=n_ok)
    tl.store(dbias_part_ptr + pid_m.to(tl.int64) * COUT + n, tl.sum(dpre, axis=0), mask=n_ok)

    mod = tl.load(m_ptr + jj[:, None] * COUT + n[None, :], mask=n_ok[None, :], other=0.0).to(tl.float32)
    a_diag = tl.load(a_ptr + jj * (J + 1)).to(tl.float32)
    same = (s_loc[:, None] == s_loc[None, :]) & (r[:, None] != r[None, :]) & row_ok[:, None] & row_ok[None, :]
    # A_big^T: a_big_t[r, c] = offdiag(a)[j(c), j(r)]; dh1 = dL/d(m * y1) at the source rows
    a_big_t = tl.load(a_ptr + jj[None, :] * J + jj[:, None], mask=same, other=0.0).to(tl.float32)
    dh1 = tl.dot(a_big_t, dpre, input_precision=AGG_PREC)
    dy0 = dpre * a_diag[:, None] * mod
    dy1 = dh1 * mod
    dy_off = row[:, None] * (2 * COUT) + n[None, :]
    tl.store(dy_ptr + dy_off, dy0.to(dy_ptr.dtype.element_ty), mask=ok)
    tl.store(dy_ptr + dy_off + COUT, dy1.to(dy_ptr.dtype.element_ty), mask=ok)

    # per-joint sums over the samples of the tile: one-hot [JB, BM] dots
    jidx = tl.arange(0, JB)
    one_j = ((jidx[:, None] == jj[None, :]) & row_ok[None, :]).to(tl.float32)
    dm_rows = dpre * a_diag[:, None] * y0 + dh1 * y1
    dm = tl.dot(one_j, dm_rows, input_precision="ieee")  # [JB, BN]
    j_ok = jidx < J
    dm_off = pid_m.to(tl.int64) * J * COUT + jidx[:, None] * COUT + n[None, :]
    tl.store(dm_part_ptr + dm_off, dm, mask=j_ok[:, None] & n_ok[None, :])

    # da: off-diagonal from P[r, c] = <dpre[r], (m * y1)[c]> within a sample, summed per joint
    # pair; the diagonal from the own-joint term
    p = tl.dot(dpre, tl.trans(mod * y1), input_precision=AGG_PREC)  # [BM, BM]
    p = tl.where(same, p, 0.0)
    da = tl.dot(tl.dot(one_j, p, input_precision="ieee"), tl.trans(one_j), input_precision="ieee")  # [JB, JB]
    dd = tl.sum(one_j * tl.sum(dpre * mod * y0, axis=1)[None, :], axis=1)  # [JB]
    da += tl.where(jidx[:, None] == jidx[None, :], dd[:, None], 0.0)
    da_off = (pid_m.to(tl.int64) * tl.num_programs(1) + pid_n) * J * J + jidx[:, None] * J + jidx[None, :]
    tl.store(da_part_ptr + da_off, da, mask=j_ok[:, None] & j_ok[None, :])


@triton.jit
def _matmul_kernel(a_ptr, b_ptr, c_ptr, M, N, K, sam, sak, sbk, sbn, scm, scn,
                   a_toff, b_toff, a_goff, b_goff, c_goff, K_SPLIT, SPLIT,
                   TERMS: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
                   PREC: tl.constexpr):
    # c[gs] [M, N] = sum_{t < TERMS} a_t[:, ks] @ b_t[ks, :], with program_id(2) = gs = g * SPLIT + sp:
    # group g offsets a, b by g * a_goff, g * b_goff, term t by t * a_toff, t * b_toff, and split sp
    # takes the K range ks = [sp * K_SPLIT, (sp + 1) * K_SPLIT). c[gs] is at c_ptr + gs * c_goff.
    # fp32 accumulation; b is cast to a's dtype for the dot.
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    gs = tl.program_id(2)
    g = gs // SPLIT
    k_lo = (gs - g * SPLIT) * K_SPLIT
    k_hi = tl.minimum(K, k_lo + K_SPLIT)
    a_ptr += g.to(tl.int64) * a_goff
    b_ptr += g.to(tl.int64) * b_goff
    c_ptr += gs.to(tl.int64) * c_goff
    rm = (pid_m * BM + tl.arange(0, BM)).to(tl.int64)
    rn = (pid_n * BN + tl.arange(0, BN)).to(tl.int64)
    m_ok = rm < M
    n_ok = rn < N
    k = tl.arange(0, BK)
    acc = tl.zeros([BM, BN], dtype=tl.float32)
    for t in tl.static_range(TERMS):
        for k0 in range(k_lo, k_hi, BK):
            kk = (k0 + k).to(tl.int64)
            k_ok = kk < k_hi
            at = tl.load(a_ptr + t * a_toff + rm[:, None] * sam + kk[None, :] * sak, mask=m_ok[:, None] & k_ok[None, :],
                         other=0.0)
            bt = tl.load(b_ptr + t * b_toff + kk[:, None] * sbk + rn[None, :] * sbn, mask=k_ok[:, None] & n_ok[None, :],
                         other=0.0)
            acc = tl.dot(at, bt.to(at.dtype), acc, input_precision=PREC)
    tl.store(c_ptr + rm[:, None] * scm + rn[None, :] * scn, acc.to(c_ptr.dtype.element_ty),
             mask=m_ok[:, None] & n_ok[None, :])


# ---------------------------------------------------------------------------------------------
# launch configuration (fixed heuristics: autotuning cannot run in the interpreter and is unsafe
# inside CUDA-graph capture)
# ---------------------------------------------------------------------------------------------
def _p2(v: int, lo: int = 16) -> int:
    return max(lo, triton.next_power_of_2(max(1, v)))


def _precisions(x: torch.Tensor) -> tuple[str, str]:
    """(main GEMM, aggregation dots): fp32 must stay fp32-accurate; half goes through tf32."""
    return ("ieee", "ieee") if x.dtype == torch.float32 else ("tf32", "tf32")


# GPU tiles (BM, BN, BK, num_warps) per kernel, for fp32 / half x: of the configurations compiled
# for sm_90 with ptxas (no GPU at hand when they were chosen: untimed), those that spill least.
# The fp32 ieee dots run on the FMA units and hold many more registers than the tensor-core ones.
_GPU_TILES = {
    ("fwd", True): (64, 16, 32, 8), ("fwd", False): (64, 64, 32, 8),
    ("bwd", True): (64, 16, 32, 8), ("bwd", False): (64, 16, 32, 8),
    ("matmul", True): (64, 64, 32, 8), ("matmul", False): (64, 64, 32, 8),
}


def _mgcn_tiles(kind: str, x: torch.Tensor, B: int, J: int, cin: int, cout: int) -> tuple[int, int, int, int, int]:
    """(BM, SPB, BN, BK, num_warps) of the fused kernels: BM rows (a power of two >= J) hold
    SPB = BM // J whole samples."""
    if _big_tiles():
        bm, bn, bk, warps = min(_p2(B * J), 256), min(_p2(cout), 256), min(_p2(cin), 256), 4
    else:
        bm, bn, bk, warps = _GPU_TILES[(kind, x.dtype == torch.float32)]
    bm = max(bm, _p2(J))
    return bm, bm // J, bn, bk, warps


def _sm_count(device: torch.device) -> int:
    if device.type != "cuda":
        return 1
    return torch.cuda.get_device_properties(device).multi_processor_count


def _matmul(a, b, c, M, N, K, a_strides, b_strides, c_strides, terms=1, a_toff=0, b_toff=0, groups=1, a_goff=0,
            b_goff=0, c_goff=0, split=1, k_split=None, prec="ieee"):
    """Launch `_matmul_kernel` (see there); c holds groups * split outputs [M, N] c_goff apart."""
    if M == 0 or N == 0:
        return
    if _big_tiles():
        bm, bn, bk, warps = min(_p2(M), 256), min(_p2(N), 256), min(_p2(K), 256), 4
    else:
        bm, bn, bk, warps = _GPU_TILES[("matmul", a.dtype == torch.float32)]
    k_split = K if k_split is None else k_split
    grid = (triton.cdiv(M, bm), triton.cdiv(N, bn), groups * split)
    _matmul_kernel[grid](a, b, c, M, N, K, *a_strides, *b_strides, *c_strides, a_toff, b_toff, a_goff, b_goff, c_goff,
                         k_split, split, TERMS=terms, BM=bm, BN=bn, BK=bk, PREC=prec, num_warps=warps)


# ---------------------------------------------------------------------------------------------
# checks and launchers
# ---------------------------------------------------------------------------------------------
def _check_common(x, w, m, a, scale_shift, act) -> tuple[int, int, int, int]:
    """The checks of csrc/mgcn_check.h (as ValueError) plus the Triton backend's dtype rules."""
    if x.dim() != 3:
        raise ValueError(f"mgcn: x must be [B, J, C_in], got {tuple(x.shape)}")
    B, J, cin = x.shape
    if w.dim() != 3 or w.shape[0] != 2 or w.shape[1] != cin:
        raise ValueError(f"mgcn: w must be [2, {cin}, C_out], got {tuple(w.shape)}")
    cout = w.shape[2]
    if tuple(m.shape) != (J, cout):
        raise ValueError(f"mgcn: m must be [{J}, {cout}], got {tuple(m.shape)}")
    if tuple(a.shape) != (J, J):
        raise ValueError(f"mgcn: a must be [{J}, {J}], got {tuple(a.shape)}")
    if act not in (0, 1, 2):
        raise ValueError(f"mgcn: act must be 0 (none), 1 (relu) or 2 (silu), got {act}")
    if x.dtype not in _X_DTYPES:
        raise ValueError(f"mgcn (triton): x must be float32, float16 or bfloat16, got {x.dtype}")
    for name, t in (("w", w), ("m", m), ("a", a)):
        if t.dtype not in (torch.float32, x.dtype):
            raise ValueError(f"mgcn (triton): {name} must be float32 or x's dtype {x.dtype}, got {t.dtype}")
        if t.device != x.device:
            raise ValueError(f"mgcn: all inputs must be on {x.device}, {name} is on {t.device}")
    if scale_shift is not None:
        if scale_shift.dim() != 3 or scale_shift.shape[0] not in (1, B) or tuple(scale_shift.shape[1:]) != (2, cout):
            raise ValueError(f"mgcn: scale_shift must be [1 or {B}, 2, {cout}], got {tuple(scale_shift.shape)}")
        if scale_shift.dtype != x.dtype or scale_shift.device != x.device:
            raise ValueError(f"mgcn: scale_shift must have x's dtype and device ({x.dtype}, {x.device}), got "
                             f"{scale_shift.dtype} on {scale_shift.device}")
    if J > MAX_J:
        raise ValueError(f"mgcn (triton): at most {MAX_J} joints per sample (a tile keeps a joints x joints block "
                         f"in registers), got {J}; use backend 'cuda' or 'cpu'")
    return B, J, cin, cout


def mgcn_fwd(x: torch.Tensor, w: torch.Tensor, m: torch.Tensor, a: torch.Tensor, bias: torch.Tensor,
             scale_shift: Optional[torch.Tensor], residual: Optional[torch.Tensor], act: int,
             save_pre: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(out [B, J, Cout], pre [B, J, Cout] or empty) in x's dtype; see the module doc."""
    with device_guard(x):
        return _fwd(x, w, m, a, bias, scale_shift, residual, act, save_pre)


def _fwd(x, w, m, a, bias, scale_shift, residual, act, save_pre):
    B, J, cin, cout = _check_common(x, w, m, a, scale_shift, act)
    if tuple(bias.shape) != (cout,) or bias.device != x.device or bias.dtype not in (torch.float32, x.dtype):
        raise ValueError(f"mgcn: bias must be [{cout}] of float32 or x's dtype on {x.device}, got "
                         f"{tuple(bias.shape)} {bias.dtype} on {bias.device}")
    if residual is not None and (tuple(residual.shape) != (B, J, cout) or residual.dtype != x.dtype
                                 or residual.device != x.device):
        raise ValueError(f"mgcn: residual must be [{B}, {J}, {cout}] of x's dtype on {x.device}, got "
                         f"{tuple(residual.shape)} {residual.dtype} on {residual.device}")
    x, w, m, a, bias = (t.contiguous() for t in (x, w, m, a, bias))
    out = x.new_empty(B, J, cout)
    pre = x.new_empty(B, J, cout) if save_pre else x.new_empty(0)
    if out.numel() == 0:
        return out, pre
    ss = scale_shift.contiguous() if scale_shift is not None else None
    res = residual.contiguous() if residual is not None else None
    bm, spb, bn, bk, warps = _mgcn_tiles("fwd", x, B, J, cin, cout)
    prec, agg_prec = _precisions(x)
    grid = (triton.cdiv(B, spb), triton.cdiv(cout, bn))
    _mgcn_fwd_kernel[grid](
        x, w, m, a, bias, ss if ss is not None else x, res if res is not None else x, out, pre if save_pre else out,
        B, J, cin, cout, spb, 2 * cout if ss is not None and ss.shape[0] > 1 else 0,
        ACT=act, HAS_SS=ss is not None, HAS_RES=res is not None, SAVE_PRE=save_pre,
        BM=bm, BN=bn, BK=bk, PREC=prec, AGG_PREC=agg_prec, num_warps=warps)
    return out, pre


def mgcn_bwd(grad_out: torch.Tensor, x: torch.Tensor, w: torch.Tensor, m: torch.Tensor, a: torch.Tensor,
             pre: torch.Tensor, scale_shift: Optional[torch.Tensor], act: int):
    """(dx, dw, dm, da, dbias, dss): dx, dss in x's dtype, dw, dm, da in their parameter's
    dtype, dbias in w's dtype, dss summed over the batch when scale_shift has one row (empty
    without scale_shift)."""
    with device_guard(x):
        return _bwd(grad_out, x, w, m, a, pre, scale_shift, act)


def _bwd(grad_out, x, w, m, a, pre, scale_shift, act):
    B, J, cin, cout = _check_common(x, w, m, a, scale_shift, act)
    if pre.numel() == 0 and B * J * cout > 0:
        raise ValueError("mgcn_bwd: pre is empty: run mgcn_fwd with save_pre=True for training")
    for name, t in (("grad_out", grad_out), ("pre", pre)):
        if tuple(t.shape) != (B, J, cout) or t.device != x.device:
            raise ValueError(f"mgcn_bwd: {name} must be [{B}, {J}, {cout}] on {x.device}, got {tuple(t.shape)} on "
                             f"{t.device}")
    x, w, m, a, pre, grad_out = (t.contiguous() for t in (x, w, m, a, pre, grad_out))
    ss = scale_shift.contiguous() if scale_shift is not None else None
    per_sample = ss is not None and ss.shape[0] > 1
    dx = torch.empty_like(x)
    dss = torch.empty_like(ss) if ss is not None else x.new_empty(0)
    R = B * J
    if R == 0 or cout == 0:  # nothing flows back: every gradient is zero
        dx.zero_()
        dss.zero_()
        return dx, torch.zeros_like(w), torch.zeros_like(m), torch.zeros_like(a), w.new_zeros(cout), dss

    # pass 1: dy, partials of dm, da, dbias (, dss)
    bm, spb, bn, bk, warps = _mgcn_tiles("bwd", x, B, J, cin, cout)
    prec, agg_prec = _precisions(x)
    P, Q = triton.cdiv(B, spb), triton.cdiv(cout, bn)
    f32 = dict(device=x.device, dtype=torch.float32)
    dy = x.new_empty(R, 2, cout)
    dss_part = torch.empty(P, 2, cout, **f32) if ss is not None and not per_sample else dy
    dbias_part = torch.empty(P, cout, **f32)
    dm_part = torch.empty(P, J, cout, **f32)
    da_part = torch.empty(P, Q, J, J, **f32)
    _mgcn_bwd_kernel[(P, Q)](
        grad_out, x, w, m, a, pre, ss if ss is not None else x,
        dy, dss if per_sample else dy, dss_part, dbias_part, dm_part, da_part,
        B, J, cin, cout, spb, 2 * cout if per_sample else 0,
        ACT=act, HAS_SS=ss is not None, SS_PER_SAMPLE=per_sample,
        BM=bm, BN=bn, BK=bk, JB=_p2(J), SB=_p2(spb), PREC=prec, AGG_PREC=agg_prec, num_warps=warps)

    # pass 2: dx [R, Cin] = dy0 @ w0^T + dy1 @ w1^T (b[k, c] = w[t, c, k])
    _matmul(dy, w, dx, R, cin, cout, (2 * cout, 1), (1, cout), (cin, 1), terms=2, a_toff=cout, b_toff=cin * cout,
            prec=prec)

    # pass 3: dw[t] [Cin, Cout] = x^T @ dy_t, split over the rows so that enough programs run
    mm_bm, mm_bn = _GPU_TILES[("matmul", x.dtype == torch.float32)][:2]
    tiles = 2 * triton.cdiv(cin, mm_bm) * triton.cdiv(cout, mm_bn)
    split = 1 if _big_tiles() else max(1, min(triton.cdiv(2 * _sm_count(x.device), tiles), triton.cdiv(R, 512)))
    k_split = triton.cdiv(triton.cdiv(R, split), 64) * 64
    split = triton.cdiv(R, k_split)
    dw_out = torch.empty_like(w) if split == 1 else torch.empty(2, split, cin, cout, **f32)
    _matmul(x, dy, dw_out, cin, cout, R, (1, cin), (2 * cout, 1), (cout, 1), groups=2, b_goff=cout,
            c_goff=cin * cout, split=split, k_split=k_split, prec=prec)
    dw = dw_out if split == 1 else dw_out.sum(1).to(w.dtype)

    if ss is not None and not per_sample:
        dss = dss_part.sum(0, keepdim=True).to(x.dtype)
    return (dx, dw, dm_part.sum(0).to(m.dtype), da_part.sum((0, 1)).to(a.dtype), dbias_part.sum(0).to(w.dtype), dss)
