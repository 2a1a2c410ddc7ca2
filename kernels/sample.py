"""Triton kernels of the whole sampler (diffupose::sample's contract) and their launcher.

The op, its contract and its reference live in diffupose/ops/sample.py (`sample_ref`); this
module has the kernels only. Same function as the CPU op (csrc/sample_cpu.cpp) and the CUDA one
(csrc/cuda/sample_cuda.cu): for y [B, J, 2] and the packed weights, N hypotheses per frame through
every step of DDIM / DDPM, the flip average, optional root centring, mean and spread.

Shape of the work. `_sample_kernel` is persistent over the whole sampler: a program owns a tile
of NS whole samples (with flip, rows [ns, 2 ns) are their mirrored twins, as diffusion.denoise
batches them; BM >= rows, a power of two) and runs every layer of every step:

    x_T = philox noise                               -> hyp [M, J, 3] (the state, in place)
    per step: ha = act(conv_in([x_t | y]))           ha  [BM, d]   program scratch (fp32)
              per block: hb = act(conv1(ha) * (1 + scale) + shift); ha += act(conv2(hb))
              eps = conv_out(ha)[:, :3]              eps [BM, 4]   program scratch
              x = sampler_update(x, flip-averaged eps, z)
    end: root centring (optional)
then `_sample_aggregate_kernel` per frame: mean and spread over the N hypotheses.

Activations cannot stay in registers across layers in Triton (a GEMM needs its input's K
columns in slices, and a register tensor cannot be sliced), so each program keeps them in its
own slice of a global scratch buffer (a few tens of KB per program, L2-resident on a GPU) with a
CTA barrier (tl.debug_barrier) between a layer's writes and the next layer's reads. A layer runs in
chunks of BN output channels: H0 | H1 = src @ [w0 | w1][:, chunk] (tl.dot over K in BK slices),
then the J x J aggregation as one dot with the block-diagonal affinity A_big [BM, BM] (as in
kernels/mgcn.py), bias and epilogue into the destination (never the chunk's source).

Precision: fp32 y -> every dot in fp32 (input_precision="ieee"); fp16 / bf16 y -> the hidden
layers' GEMMs in fp16 on the tensor cores with fp32 accumulation (the input layer, out layer,
aggregation, epilogue and update stay fp32): the CUDA kernel's rule. Noise: kernels/sampler.py's
philox_normal (the counters of sampler_step), read from rng_state on the device.

Capture: the step coefficients and the flip permutation are small device tensors cached per
value and device (made on the first call: the engine's warm-up), rng_state is read in the kernel.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .launch import device_guard
from .sampler import philox_normal

MAX_J = 64  # A_big [BM, BM] lives in registers (kernels/mgcn.py's limit)
_KEEP = {}  # (kind, values, device) -> the cached device tensor of coefs / perm


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def _big_tiles() -> bool:
    """One tile of up to 512 rows and one chunk per layer: the interpreter pays milliseconds per
    program and per op. A test patches this to False to run the GPU tiling there (several
    programs, ragged last tile, 64-channel chunks with a ragged last one, K in slices)."""
    return _interpreting()


# ---------------------------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------------------------
@triton.jit
def _a_big(a_ptr, r, s_loc, jj, row_ok, J):
    """A_big [BM, BM]: offdiag(a)[j(r), j(c)] for rows r, c of one sample (own joint via w0)."""
    same = (s_loc[:, None] == s_loc[None, :]) & (r[:, None] != r[None, :]) & row_ok[None, :]
    return tl.load(a_ptr + jj[:, None] * J + jj[None, :], mask=same, other=0.0)


@triton.jit
def _aggregate(h0, h1, a_big, m_ptr, a_ptr, bias_ptr, jj, n, n_ok, J, COUT):
    """pre = a_jj m_j H0 + offdiag(a) @ (m H1) + bias on a chunk [BM, BN]."""
    mod = tl.load(m_ptr + jj[:, None] * COUT + n[None, :], mask=n_ok[None, :], other=0.0)
    a_diag = tl.load(a_ptr + jj * (J + 1))
    bias = tl.load(bias_ptr + n, mask=n_ok, other=0.0)
    return a_diag[:, None] * (mod * h0) + tl.dot(a_big, mod * h1, input_precision="ieee") + bias[None, :]


@triton.jit
def _gemm_halves(src_ptr, w_ptr, row, row_ok, n, n_ok, K, COUT, BM: tl.constexpr, BN: tl.constexpr,
                 BK: tl.constexpr, HALF: tl.constexpr):
    """H0, H1 [BM, BN] = src [rows, K] @ w[:, n], w[:, COUT + n] of the packed [w0 | w1] [K, 2 COUT]."""
    h0 = tl.zeros([BM, BN], dtype=tl.float32)
    h1 = tl.zeros([BM, BN], dtype=tl.float32)
    kk = tl.arange(0, BK)
    for k0 in range(0, K, BK):
        k = k0 + kk
        k_ok = k < K
        a = tl.load(src_ptr + row[:, None] * K + k[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        w_off = k[:, None] * (2 * COUT) + n[None, :]
        w_ok = k_ok[:, None] & n_ok[None, :]
        w0 = tl.load(w_ptr + w_off, mask=w_ok, other=0.0)
        w1 = tl.load(w_ptr + COUT + w_off, mask=w_ok, other=0.0)
        if HALF:  # tensor cores: fp16 inputs, fp32 accumulation
            a = a.to(tl.float16)
            h0 = tl.dot(a, w0.to(tl.float16), h0)
            h1 = tl.dot(a, w1.to(tl.float16), h1)
        else:
            h0 = tl.dot(a, w0, h0, input_precision="ieee")
            h1 = tl.dot(a, w1, h1, input_precision="ieee")
    return h0, h1


@triton.jit
def _hidden_conv(src_ptr, dst_ptr, lay_ptr, film_ptr, r, s_loc, jj, row, row_ok, J, D,
                 ACT: tl.constexpr, FILM: tl.constexpr, RESIDUAL: tl.constexpr,
                 BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, HALF: tl.constexpr):
    """dst = act(conv(src) [* (1 + scale) + shift]) [+ dst], a [d -> d] layer packed at lay_ptr."""
    m_ptr = lay_ptr + D * 2 * D
    a_ptr = m_ptr + J * D
    bias_ptr = a_ptr + J * J
    a_big = _a_big(a_ptr, r, s_loc, jj, row_ok, J)
    for n0 in range(0, D, BN):
        n = n0 + tl.arange(0, BN)
        n_ok = n < D
        h0, h1 = _gemm_halves(src_ptr, lay_ptr, row, row_ok, n, n_ok, D, D, BM, BN, BK, HALF)
        u = _aggregate(h0, h1, a_big, m_ptr, a_ptr, bias_ptr, jj, n, n_ok, J, D)
        if FILM:
            scale = tl.load(film_ptr + n, mask=n_ok, other=0.0)
            shift = tl.load(film_ptr + D + n, mask=n_ok, other=0.0)
            u = u * (1.0 + scale[None, :]) + shift[None, :]
        if ACT == 1:
            u = tl.maximum(u, 0.0)
        elif ACT == 2:
            u = u / (1.0 + tl.exp(-u))
        offs = row[:, None] * D + n[None, :]
        ok = row_ok[:, None] & n_ok[None, :]
        if RESIDUAL:  # the same element is loaded and stored by the same thread: no barrier needed
            u += tl.load(dst_ptr + offs, mask=ok, other=0.0)
        tl.store(dst_ptr + offs, u, mask=ok)


@triton.jit
def _sample_kernel(y_ptr, w_ptr, film_ptr, coef_ptr, perm_ptr, rng_ptr, rng_stride, hyp_ptr, ws_ptr,
                   M, N, J, D, NB, S, NS, cstride, root,
                   ACT: tl.constexpr, FLIP: tl.constexpr, CENTER: tl.constexpr, NOISE: tl.constexpr,
                   HALF: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
                   EB: tl.constexpr, INTERP: tl.constexpr):
    # y [B, J, 2]; w: every layer's (w [cin, 2 cout], m [J, cout], a [J, J], bias [cout]) flat, in
    # the op's order (input 5 -> D, blocks D -> D, out D -> 3); film [S, NB, 2, D]; coef [S, 6];
    # perm [J] int32; hyp [M, J, 3] (state, result); ws [programs, 2 BM D + 4 BM] scratch.
    # Grid (cdiv(M, NS),): program t owns samples [t NS, t NS + ns_t).
    pid = tl.program_id(0)
    s0 = pid * NS
    ns_t = tl.minimum(NS, M - s0)
    twins = 2 if FLIP else 1
    e0 = s0.to(tl.int64) * J * 3  # the tile's first element: its noise counters
    ws = ws_ptr + pid.to(tl.int64) * (2 * BM * D + 4 * BM)
    ha_ptr = ws
    hb_ptr = ws + BM * D
    eps_ptr = ws + 2 * BM * D  # [BM, 4]

    # the tile's rows: r = q J + j, q < ns_t a sample, q >= ns_t its twin (joint perm[j], x negated)
    r = tl.arange(0, BM)
    s_loc = r // J
    jj = r - s_loc * J
    row_ok = s_loc < ns_t * twins
    twin = s_loc >= ns_t
    k_src = tl.where(twin, s_loc - ns_t, s_loc)
    if FLIP:
        j_src = tl.where(twin, tl.load(perm_ptr + jj, mask=row_ok, other=0), jj)
    else:
        j_src = jj
    sx = tl.where(twin, -1.0, 1.0)
    row = r  # rows of the scratch

    # the tile's elements (samples only) for the sampler update: i = (k J + j) 3 + c
    i = tl.arange(0, EB)
    ik = i // (J * 3)
    ij = (i // 3) % J
    ic = i % 3
    i_ok = ik < ns_t
    seed = tl.load(rng_ptr)
    offset = tl.load(rng_ptr + rng_stride)
    x = philox_normal(seed, offset + e0 + i, INTERP)  # x_T ~ N(0, I)
    tl.store(hyp_ptr + e0 + i, x, mask=i_ok)
    tl.debug_barrier()

    # packed layer offsets
    in_size = 5 * 2 * D + J * D + J * J + D
    hid_size = D * 2 * D + J * D + J * J + D
    out_ptr_w = w_ptr + in_size + 2 * NB * hid_size
    kk = tl.arange(0, 16)  # the input layer's 5 channels, padded for tl.dot
    src_off = (s0 + k_src).to(tl.int64)
    cs64 = cstride.to(tl.int64)
    for st in range(S):
        # input layer: [x_t | y] -> ha
        xa = tl.load(hyp_ptr + src_off[:, None] * (J * 3) + j_src[:, None] * 3 + kk[None, :],
                     mask=row_ok[:, None] & (kk[None, :] < 3), other=0.0)
        ya = tl.load(y_ptr + ((src_off // N)[:, None] * J + j_src[:, None]) * 2 + (kk[None, :] - 3),
                     mask=row_ok[:, None] & (kk[None, :] >= 3) & (kk[None, :] < 5), other=0.0)
        inp = xa + ya
        inp = tl.where((kk[None, :] == 0) | (kk[None, :] == 3), sx[:, None] * inp, inp)
        a_in = w_ptr + 5 * 2 * D + J * D
        a_big = _a_big(a_in, r, s_loc, jj, row_ok, J)
        for n0 in range(0, D, BN):
            n = n0 + tl.arange(0, BN)
            n_ok = n < D
            w_off = kk[:, None] * (2 * D) + n[None, :]
            w_ok = (kk[:, None] < 5) & n_ok[None, :]
            h0 = tl.dot(inp, tl.load(w_ptr + w_off, mask=w_ok, other=0.0), input_precision="ieee")
            h1 = tl.dot(inp, tl.load(w_ptr + D + w_off, mask=w_ok, other=0.0), input_precision="ieee")
            u = _aggregate(h0, h1, a_big, w_ptr + 5 * 2 * D, a_in, a_in + J * J, jj, n, n_ok, J, D)
            if ACT == 1:
                u = tl.maximum(u, 0.0)
            elif ACT == 2:
                u = u / (1.0 + tl.exp(-u))
            tl.store(ha_ptr + row[:, None] * D + n[None, :], u, mask=row_ok[:, None] & n_ok[None, :])
        tl.debug_barrier()
        # residual blocks: hb = conv1(ha) with this step's FiLM; ha += conv2(hb)
        for b in range(NB):
            lay = w_ptr + in_size + (2 * b) * hid_size
            film = film_ptr + (st * NB + b) * 2 * D
            _hidden_conv(ha_ptr, hb_ptr, lay, film, r, s_loc, jj, row, row_ok, J, D, ACT, True, False,
                         BM, BN, BK, HALF)
            tl.debug_barrier()
            _hidden_conv(hb_ptr, ha_ptr, lay + hid_size, film, r, s_loc, jj, row, row_ok, J, D, ACT, False, True,
                         BM, BN, BK, HALF)
            tl.debug_barrier()
        # out layer: the 3 eps channels (fp32), no activation
        m_out = out_ptr_w + D * 6
        a_out = m_out + J * 3
        n = tl.arange(0, 16)
        n_ok = n < 3
        h0, h1 = _gemm_halves(ha_ptr, out_ptr_w, row, row_ok, n, n_ok, D, 3, BM, 16, BK, False)
        eps = _aggregate(h0, h1, _a_big(a_out, r, s_loc, jj, row_ok, J), m_out, a_out, a_out + J * J, jj, n, n_ok,
                         J, 3)
        tl.store(eps_ptr + row[:, None] * 4 + n[None, :], eps, mask=row_ok[:, None] & n_ok[None, :])
        tl.debug_barrier()
        # the flip average (the twin's prediction mirrored back), then the sampler update
        e = tl.load(eps_ptr + (ik * J + ij) * 4 + ic, mask=i_ok, other=0.0)
        if FLIP:
            pj = tl.load(perm_ptr + ij, mask=i_ok, other=0)
            t = tl.load(eps_ptr + ((ns_t + ik) * J + pj) * 4 + ic, mask=i_ok, other=0.0)
            e = 0.5 * (e + tl.where(ic == 0, -t, t))
        sqrt_abar = tl.load(coef_ptr + st * 6)
        sqrt_1m_abar = tl.load(coef_ptr + st * 6 + 1)
        c_x0 = tl.load(coef_ptr + st * 6 + 2)
        c_eps = tl.load(coef_ptr + st * 6 + 3)
        sigma = tl.load(coef_ptr + st * 6 + 4)
        clip = tl.load(coef_ptr + st * 6 + 5)
        x = tl.load(hyp_ptr + e0 + i, mask=i_ok, other=0.0)
        # csrc/common/sampler_math.h::sampler_update, IEEE divisions (kernels/sampler.py says why)
        x0 = tl.math.div_rn(x - sqrt_1m_abar * e, sqrt_abar)
        x0c = tl.minimum(tl.maximum(x0, -clip), clip)
        e = tl.where(clip > 0.0, tl.math.div_rn(x - sqrt_abar * x0c, sqrt_1m_abar), e)
        x0 = tl.where(clip > 0.0, x0c, x0)
        v = c_x0 * x0 + c_eps * e
        if NOISE:  # sigma 0 in a noiseless step: v + 0 * z is v
            base = offset + e0 + cs64 * (st + 1)  # int64: (steps + 1) * stride passes 2^31 at big batches
            v += sigma * philox_normal(seed, base + i, INTERP)
        tl.store(hyp_ptr + e0 + i, v, mask=i_ok)
        tl.debug_barrier()
    if CENTER:  # every sample is whole in this tile
        x = tl.load(hyp_ptr + e0 + i, mask=i_ok, other=0.0)
        x_root = tl.load(hyp_ptr + e0 + (ik * J + root) * 3 + ic, mask=i_ok, other=0.0)
        tl.debug_barrier()
        tl.store(hyp_ptr + e0 + i, x - x_root, mask=i_ok)


@triton.jit
def _sample_aggregate_kernel(hyp_ptr, mean_ptr, spread_ptr, N, J, JB: tl.constexpr):
    # hyp [B, N, J, 3] -> mean [B, J, 3], spread [B, J] = sqrt(mean_n |x - mean|^2); one program per frame
    f = tl.program_id(0).to(tl.int64)
    j = tl.arange(0, JB)[:, None]
    c = tl.arange(0, 4)[None, :]
    ok = (j < J) & (c < 3)
    offs = j * 3 + c
    base = hyp_ptr + f * N * J * 3
    s = tl.zeros([JB, 4], dtype=tl.float32)
    for n in range(N):
        s += tl.load(base + n * J * 3 + offs, mask=ok, other=0.0)
    mu = s / N
    tl.store(mean_ptr + f * J * 3 + offs, mu, mask=ok)
    s2 = tl.zeros([JB, 4], dtype=tl.float32)
    for n in range(N):
        dv = tl.where(ok, tl.load(base + n * J * 3 + offs, mask=ok, other=0.0) - mu, 0.0)
        s2 += dv * dv
    jj = tl.arange(0, JB)
    tl.store(spread_ptr + f * J + jj, tl.sqrt(tl.sum(s2, axis=1) / N), mask=jj < J)


# ---------------------------------------------------------------------------------------------
# launcher
# ---------------------------------------------------------------------------------------------
def _kept(kind: str, values: tuple, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A small device tensor of host values, made once per value and device (never in a capture)."""
    key = (kind, values, dtype, device)
    t = _KEEP.get(key)
    if t is None:
        t = _KEEP[key] = torch.tensor(values if values else (0,), dtype=dtype, device=device)
    return t


def _check(y, weights, film, coefs, rng_state, n_hyp, counter_stride, flip_perm, act, root) -> tuple[int, int, int]:
    """The checks of csrc/sample_cpu.cpp, as ValueError; returns (nb, d, steps)."""
    if y.dim() != 3 or y.shape[2] != 2 or not y.is_floating_point():
        raise ValueError(f"sample: y must be floating-point [B, J, 2], got {tuple(y.shape)}")
    B, J, _ = y.shape
    if not 1 <= J <= MAX_J:
        raise ValueError(f"sample: the Triton kernel takes 1 to {MAX_J} joints, got {J}")
    if n_hyp < 1:
        raise ValueError(f"sample: n_hyp must be >= 1, got {n_hyp}")
    if len(weights) < 8 or len(weights) % 8:
        raise ValueError("sample: weights must be 4 tensors per layer for the input layer, 2 per block and the out "
                         f"layer, got {len(weights)}")
    nb = (len(weights) // 4 - 2) // 2
    d = weights[1].shape[1]
    if film.dim() != 4 or tuple(film.shape[1:]) != (nb, 2, d):
        raise ValueError(f"sample: film must be [steps, {nb}, 2, {d}], got {tuple(film.shape)}")
    S = film.shape[0]
    if S < 1 or len(coefs) != 6 * S:
        raise ValueError(f"sample: coefs must hold 6 numbers for each of the film's {S} steps, got {len(coefs)}")
    shapes = [((5, 2 * d), (J, d), (J, J), (d,))] + [((d, 2 * d), (J, d), (J, J), (d,))] * (2 * nb) + \
             [((d, 6), (J, 3), (J, J), (3,))]
    for layer, want in enumerate(shapes):
        for i, (t, s) in enumerate(zip(weights[4 * layer:4 * layer + 4], want)):
            if tuple(t.shape) != s or t.dtype != torch.float32 or t.device != y.device:
                raise ValueError(f"sample: weights[{4 * layer + i}] must be float32 {list(s)} on {y.device}, got "
                                 f"{t.dtype} {list(t.shape)} on {t.device}: pack them with diffupose.ops.sample")
    if rng_state.dtype != torch.int64 or rng_state.numel() != 2 or rng_state.device != y.device:
        raise ValueError(f"sample: rng_state must be an int64 tensor [seed, offset] on {y.device}")
    if counter_stride < B * n_hyp * J * 3:
        raise ValueError(f"sample: counter_stride {counter_stride} is smaller than the {B * n_hyp * J * 3} elements "
                         "of a step")
    if flip_perm and (len(flip_perm) != J or not all(0 <= v < J for v in flip_perm)):
        raise ValueError(f"sample: flip_perm must be empty or a permutation of {J} joints")
    if act not in (0, 1, 2) or not 0 <= root < J:
        raise ValueError(f"sample: act must be 0, 1 or 2 and root a joint of {J}, got {act} and {root}")
    return nb, d, S


def sample_triton(y: torch.Tensor, weights: list, film: torch.Tensor, coefs: list, rng_state: torch.Tensor,
                  n_hyp: int, counter_stride: int, flip_perm: list, act: int, root: int,
                  center_root: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """diffupose::sample's arguments and results (see csrc/ops.cpp), on the Triton kernels: float32
    hyp [B, n_hyp, J, 3], mean [B, J, 3], spread [B, J]; y's dtype picks the GEMM precision."""
    nb, d, S = _check(y, weights, film, coefs, rng_state, n_hyp, counter_stride, flip_perm, act, root)
    with device_guard(y):
        return _launch(y, weights, film, coefs, rng_state, n_hyp, counter_stride, flip_perm, act, root,
                       center_root, nb, d, S)


def _launch(y, weights, film, coefs, rng_state, n_hyp, counter_stride, flip_perm, act, root, center_root, nb, d, S):
    B, J, _ = y.shape
    M = B * n_hyp
    dev = y.device
    hyp = torch.empty(M, J, 3, dtype=torch.float32, device=dev)
    mean = torch.empty(B, J, 3, dtype=torch.float32, device=dev)
    spread = torch.empty(B, J, dtype=torch.float32, device=dev)
    if M == 0:
        return hyp.view(B, n_hyp, J, 3), mean, spread
    half = y.dtype in (torch.float16, torch.bfloat16)
    twins = 2 if flip_perm else 1
    if _big_tiles():
        ns = max(1, min(M, 512 // (twins * J)))
        bn = bk = max(16, min(256, triton.next_power_of_2(d)))
    else:  # a 64-row tile (as the CUDA kernel's), 64-channel chunks
        ns = max(1, min(M, 64 // (twins * J)))
        bn, bk = 64, 32
    bm = max(16, triton.next_power_of_2(ns * twins * J))
    eb = max(16, triton.next_power_of_2(ns * J * 3))
    tiles = triton.cdiv(M, ns)
    coef_t = _kept("coefs", tuple(float(c) for c in coefs), torch.float32, dev)
    perm_t = _kept("perm", tuple(int(p) for p in flip_perm), torch.int32, dev)
    wflat = torch.cat([w.reshape(-1) for w in weights])
    yf = y.detach().float().contiguous()
    filmf = film.detach().float().contiguous()
    ws = torch.empty(tiles, 2 * bm * d + 4 * bm, dtype=torch.float32, device=dev)
    rng = rng_state.reshape(-1)  # the live state tensor: a captured graph reads it on every replay
    noise = any(float(coefs[6 * s + 4]) != 0.0 for s in range(S))
    _sample_kernel[(tiles,)](yf, wflat, filmf, coef_t, perm_t, rng, rng.stride(0), hyp, ws,
                             M, n_hyp, J, d, nb, S, ns, int(counter_stride), int(root),
                             ACT=int(act), FLIP=bool(flip_perm), CENTER=bool(center_root), NOISE=noise, HALF=half,
                             BM=bm, BN=bn, BK=bk, EB=eb, INTERP=_interpreting(), num_warps=4)
    _sample_aggregate_kernel[(B,)](hyp, mean, spread, n_hyp, J, JB=max(16, triton.next_power_of_2(J)), num_warps=1)
    return hyp.view(B, n_hyp, J, 3), mean, spread
