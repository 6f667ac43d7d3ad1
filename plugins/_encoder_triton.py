"""Triton kernel of the Tacotron2 encoder's bidirectional LSTM step (imported lazily by ``tts.plugins.encoder``)."""

import triton
import triton.language as tl


@triton.jit
def _tanh(x):
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0


@triton.jit(do_not_specialize=["t"])
def bilstm_step_kernel(gx_ptr, w_ptr, h_in, h_out, c_ptr, y_ptr, t, B, T,
                       H: tl.constexpr, BB: tl.constexpr, BH: tl.constexpr, BK: tl.constexpr):
    # grid (2 * H / BH, cdiv(B, BB)). Program (p, b): direction d = p // (H / BH), hidden units
    # h0 .. h0 + BH of it, rows {i, f, g, o} x BH of W_hh[d], batch rows b * BB .. + BB.
    pid = tl.program_id(0)
    NPH: tl.constexpr = H // BH
    R: tl.constexpr = 4 * BH
    d = pid // NPH
    h0 = (pid % NPH) * BH
    r = tl.arange(0, R)
    rows = (r // BH) * H + h0 + (r % BH)
    offs_b = tl.program_id(1) * BB + tl.arange(0, BB)
    bm = offs_b < B
    wd = w_ptr + d * (4 * H * H)
    hd = h_in + d * B * H
    acc = tl.zeros((BB, R, BK), dtype=tl.float32)
    for k0 in tl.static_range(0, H, BK):
        kk = k0 + tl.arange(0, BK)
        w = tl.load(wd + rows[:, None] * H + kk[None, :]).to(tl.float32)                   # [R, BK]
        x = tl.load(hd + offs_b[:, None] * H + kk[None, :], mask=bm[:, None], other=0.0)   # [BB, BK]
        acc += x[:, None, :] * w[None, :, :]
    pre = tl.sum(acc, axis=2)                                                              # [BB, R]
    g = tl.load(gx_ptr + ((t * 2 + d) * B + offs_b[:, None]) * (4 * H) + rows[None, :],
                mask=bm[:, None], other=0.0)
    pre += g.to(tl.float32)
    a3 = tl.reshape(pre, (BB, 4, BH))
    gi = tl.arange(0, 4)[None, :, None]
    pi = tl.sum(tl.where(gi == 0, a3, 0.0), axis=1)
    pf = tl.sum(tl.where(gi == 1, a3, 0.0), axis=1)
    pg = tl.sum(tl.where(gi == 2, a3, 0.0), axis=1)
    po = tl.sum(tl.where(gi == 3, a3, 0.0), axis=1)
    offs_h = h0 + tl.arange(0, BH)
    m = bm[:, None] & (offs_h[None, :] < H)
    ptr = (d * B + offs_b[:, None]) * H + offs_h[None, :]
    c = tl.load(c_ptr + ptr, mask=m, other=0.0)
    c_new = tl.sigmoid(pf) * c + tl.sigmoid(pi) * _tanh(pg)
    h = tl.sigmoid(po) * _tanh(c_new)
    tl.store(c_ptr + ptr, c_new, mask=m)
    tl.store(h_out + ptr, h, mask=m)
    yp = y_ptr + ((d * B + offs_b[:, None]) * T + t) * H + offs_h[None, :]
    tl.store(yp, h.to(y_ptr.dtype.element_ty), mask=m)


KERNELS = {"bilstm_step": bilstm_step_kernel}
