"""Triton kernels of one WaveGlow coupling-network layer (imported lazily by ``tts.plugins.waveglow``).

Rows are phase-major (see ``tts.plugins.waveglow``): row ``(b, ph, f)`` is time position
``P*f + ph`` of item ``b``; the residual buffer has ``FP`` zero frames before and after the
``T`` frames of every ``(b, ph)`` block, so a dilated tap is a contiguous block of rows.
"""

import triton
import triton.language as tl


@triton.jit
def _tanh(x):
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0


@triton.jit
def wn_in_gate_kernel(x_ptr, w_ptr, mel_ptr, wc_ptr, cb_ptr, out_ptr,
                      T, TP, FP, P, dil, q0, n_ftiles, KC,
                      C: tl.constexpr, KT: tl.constexpr, HALF: tl.constexpr,
                      BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, PREC: tl.constexpr,
                      FLAT: tl.constexpr):
    """acts = tanh(a[:, :C]) * sigmoid(a[:, C:]); a = dilated conv(x) + cond(mel), one tile.

    x ``[B*P*TP, C]`` (phase-major, zero frames around each block); w ``[KT*C, 2C]`` (tap-major
    rows, the transposed in-layer weight); mel ``[B*T, KC]`` (mel im2col, bias column, zero
    columns up to KC); wc ``[P, KC, 2C]`` (this layer's conditioning per phase); out ``[B*P*T, C]``.
    ``FLAT``: the taps' ``KT*C`` reduction rows in one loop (software-pipelined across taps),
    else a loop per tap (``C / BK`` iterations each); the same sums in the same order either way.
    """
    pid = tl.program_id(0)
    NT: tl.constexpr = C // BN
    pid_n = pid % NT
    rest = pid // NT
    ft = rest % n_ftiles
    bp = rest // n_ftiles                      # b * P + ph
    ph = bp % P
    b = bp // P
    f = ft * BM + tl.arange(0, BM)
    fmask = f < T
    rk = tl.arange(0, BK)
    cols = pid_n * BN + tl.arange(0, BN)
    acc_t = tl.zeros((BM, BN), dtype=tl.float32)
    acc_s = tl.zeros((BM, BN), dtype=tl.float32)
    if FLAT:
        w_ptrs = w_ptr + rk[:, None] * (2 * C) + cols[None, :]
        for k in range(0, KT * C, BK):
            j = k // C                         # the tap
            q = ph + (j - HALF) * dil + q0 * P
            src = ((b * P + q % P) * TP + FP + q // P - q0 + f).to(tl.int64)
            a = tl.load(x_ptr + src[:, None] * C + (k - j * C + rk)[None, :], mask=fmask[:, None], other=0.0)
            wt = tl.load(w_ptrs + k * (2 * C))
            ws = tl.load(w_ptrs + k * (2 * C) + C)
            acc_t = tl.dot(a, wt, acc_t, input_precision=PREC)
            acc_s = tl.dot(a, ws, acc_s, input_precision=PREC)
    else:
        for j in tl.static_range(KT):
            q = ph + (j - HALF) * dil + q0 * P     # >= 0: position shift, offset by q0 whole frames
            phs = q % P
            df = q // P - q0
            src = ((b * P + phs) * TP + FP + df + f).to(tl.int64)
            a_ptrs = x_ptr + src[:, None] * C + rk[None, :]
            w_ptrs = w_ptr + (j * C + rk)[:, None] * (2 * C) + cols[None, :]
            for kk in range(0, C, BK):
                a = tl.load(a_ptrs + kk, mask=fmask[:, None], other=0.0)
                wt = tl.load(w_ptrs + kk * (2 * C))
                ws = tl.load(w_ptrs + kk * (2 * C) + C)
                acc_t = tl.dot(a, wt, acc_t, input_precision=PREC)
                acc_s = tl.dot(a, ws, acc_s, input_precision=PREC)
    m_ptrs = mel_ptr + (b * T + f).to(tl.int64)[:, None] * KC + rk[None, :]
    c_ptrs = wc_ptr + ph.to(tl.int64) * KC * (2 * C) + rk[:, None] * (2 * C) + cols[None, :]
    for kk in range(0, KC, BK):
        a = tl.load(m_ptrs + kk, mask=fmask[:, None], other=0.0)
        wt = tl.load(c_ptrs + kk * (2 * C))
        ws = tl.load(c_ptrs + kk * (2 * C) + C)
        acc_t = tl.dot(a, wt, acc_t, input_precision=PREC)
        acc_s = tl.dot(a, ws, acc_s, input_precision=PREC)
    bt = tl.load(cb_ptr + cols).to(tl.float32)
    bs = tl.load(cb_ptr + C + cols).to(tl.float32)
    y = _tanh(acc_t + bt[None, :]) * tl.sigmoid(acc_s + bs[None, :])
    rows = (bp * T + f).to(tl.int64)
    tl.store(out_ptr + rows[:, None] * C + cols[None, :], y.to(out_ptr.dtype.element_ty), mask=fmask[:, None])


@triton.jit
def wn_res_end_kernel(a_ptr, w_ptr, bias_ptr, x_ptr, e_ptr, end_ptr,
                      T, TP, FP, n_ftiles,
                      C: tl.constexpr, NR: tl.constexpr, NE: tl.constexpr, FIRST: tl.constexpr,
                      BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, PREC: tl.constexpr):
    """Residual and skip of one layer, the skip already through the flow's ``end`` 1x1.

    a ``[B*P*T, C]`` (gate output); w ``[C, NR]`` (NR = C: the residual 1x1 transposed; 0 in the
    last layer); ``x += a @ w + bias`` on the rows of the padded buffer; e ``[C, NE]``
    (``end_w @ W_skip`` transposed, zero columns up to NE); ``end (+)= a @ e`` (float32
    ``[B*P*T, NE]``). Per row tile: ``NR / BN`` residual programs, then one ``end`` program.
    """
    pid = tl.program_id(0)
    NT: tl.constexpr = NR // BN + 1
    pid_n = pid % NT
    rest = pid // NT
    ft = rest % n_ftiles
    bp = rest // n_ftiles
    f = ft * BM + tl.arange(0, BM)
    fmask = f < T
    m = fmask[:, None]
    rk = tl.arange(0, BK)
    rows = (bp * T + f).to(tl.int64)
    a_ptrs = a_ptr + rows[:, None] * C + rk[None, :]
    if pid_n < NT - 1:
        cols = pid_n * BN + tl.arange(0, BN)
        w_ptrs = w_ptr + rk[:, None] * NR + cols[None, :]
        acc = tl.zeros((BM, BN), dtype=tl.float32)
        for kk in range(0, C, BK):
            a = tl.load(a_ptrs + kk, mask=m, other=0.0)
            w = tl.load(w_ptrs + kk * NR)
            acc = tl.dot(a, w, acc, input_precision=PREC)
        xr = (bp * TP + FP + f).to(tl.int64)
        xp = x_ptr + xr[:, None] * C + cols[None, :]
        bias = tl.load(bias_ptr + cols).to(tl.float32)
        xv = tl.load(xp, mask=m, other=0.0).to(tl.float32)
        tl.store(xp, (xv + acc + bias[None, :]).to(x_ptr.dtype.element_ty), mask=m)
    else:
        ce = tl.arange(0, NE)
        e_ptrs = e_ptr + rk[:, None] * NE + ce[None, :]
        acc_e = tl.zeros((BM, NE), dtype=tl.float32)
        for kk in range(0, C, BK):
            a = tl.load(a_ptrs + kk, mask=m, other=0.0)
            e = tl.load(e_ptrs + kk * NE)
            acc_e = tl.dot(a, e, acc_e, input_precision=PREC)
        ep = end_ptr + rows[:, None] * NE + ce[None, :]
        if FIRST:
            tl.store(ep, acc_e, mask=m)
        else:
            tl.store(ep, tl.load(ep, mask=m, other=0.0) + acc_e, mask=m)
