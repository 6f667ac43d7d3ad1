"""Triton kernels of the Tacotron2 decoder step (imported lazily by ``tts.plugins.decoder``, where
each kernel's launch wrapper and PyTorch twin are)."""

import triton
import triton.language as tl


@triton.jit
def _tanh(x):
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0


# Programmatic dependent launch (PDL, sm_90+): the step's kernels take a constexpr PDL (0: off;
# 1: wait for the predecessor, then let the next kernel launch) and are launched with
# launch_pdl=True when it is 1. A kernel reads only model weights (and buffers that are constant
# within a CUDA graph: memory, pm, lengths) before _gdc_wait, and every program calls _gdc_wait on
# every path before it reads state or writes anything. So when a program passes its wait, every
# earlier kernel has completed (each of them waited on its own predecessor before it could
# complete), and no write-after-read hazard between nodes remains. PDL=0: _gdc_wait is a no-op.
# PDL=3: the kernels' PDL code paths (prologue loads first) without the griddepcontrol
# instructions, for the interpreter (no inline asm there) and tests.

@triton.jit
def _gdc_wait(PDL: tl.constexpr):
    if PDL == 1:
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()

@triton.jit
def _acc_segment(acc, x_ptr, sx, K, w_ptr, sw, col0, offs_b, B, offs_n, N,
                 BK: tl.constexpr):
    # acc [BB, BN] += x[offs_b, :K] @ w[offs_n, col0:col0+K]^T
    return _acc_segment_from(acc, 0, x_ptr, sx, K, w_ptr, sw, col0, offs_b, B, offs_n, N, BK)

@triton.jit
def _acc_segment_from(acc, k_lo, x_ptr, sx, K, w_ptr, sw, col0, offs_b, B, offs_n, N,
                      BK: tl.constexpr):
    # _acc_segment over the chunks k_lo, k_lo + BK, ... of the segment
    offs_k = tl.arange(0, BK)
    for k0 in range(k_lo, K, BK):
        kk = k0 + offs_k
        xm = (offs_b[:, None] < B) & (kk[None, :] < K)
        x = tl.load(x_ptr + offs_b[:, None] * sx + kk[None, :], mask=xm, other=0.0).to(tl.float32)
        wm = (offs_n[None, :] < N) & (kk[:, None] < K)
        w = tl.load(w_ptr + offs_n[None, :] * sw + (col0 + kk)[:, None], mask=wm,
                    other=0.0).to(tl.float32)
        acc += tl.sum(x[:, :, None] * w[None, :, :], axis=1)
    return acc

@triton.jit
def _w_chunk0(w_ptr, sw, col0, K, offs_n, N, BK: tl.constexpr):
    # the weight tile [BK, BN] of _acc_segment's first chunk (loaded before the PDL wait)
    kk = tl.arange(0, BK)
    return tl.load(w_ptr + offs_n[None, :] * sw + (col0 + kk)[:, None],
                   mask=(offs_n[None, :] < N) & (kk[:, None] < K), other=0.0)

@triton.jit
def _acc_chunk0(acc, w0, x_ptr, sx, K, offs_b, B, BK: tl.constexpr):
    # the first chunk of _acc_segment with its weight tile w0 already loaded
    kk = tl.arange(0, BK)
    x = tl.load(x_ptr + offs_b[:, None] * sx + kk[None, :], mask=(offs_b[:, None] < B) & (kk[None, :] < K),
                other=0.0).to(tl.float32)
    acc += tl.sum(x[:, :, None] * w0.to(tl.float32)[None, :, :], axis=1)
    return acc

@triton.jit
def linear_act_kernel(x_ptr, sx, K, w_ptr, out_ptr, so, B, N, seed_ptr, step_ptr, step_i, p,
                      salt, RELU: tl.constexpr, DROPOUT: tl.constexpr,
                      BB: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, PDL: tl.constexpr = 0):
    offs_n = tl.program_id(0) * BN + tl.arange(0, BN)
    offs_b = tl.program_id(1) * BB + tl.arange(0, BB)
    acc = tl.zeros((BB, BN), dtype=tl.float32)
    if PDL != 0:
        w0 = _w_chunk0(w_ptr, K, 0, K, offs_n, N, BK)
        _gdc_wait(PDL)
        acc = _acc_chunk0(acc, w0, x_ptr, sx, K, offs_b, B, BK)
        acc = _acc_segment_from(acc, BK, x_ptr, sx, K, w_ptr, K, 0, offs_b, B, offs_n, N, BK)
    else:
        acc = _acc_segment(acc, x_ptr, sx, K, w_ptr, K, 0, offs_b, B, offs_n, N, BK)
    if RELU:
        acc = tl.maximum(acc, 0.0)
    if DROPOUT:
        seed = tl.load(seed_ptr)
        step = tl.load(step_ptr) + step_i
        offs = ((step * 4 + salt) * 65536 + offs_b[:, None]) * 65536 + offs_n[None, :]
        r = tl.rand(seed, offs)
        acc = tl.where(r >= p, acc / (1.0 - p), 0.0)
    m = (offs_b[:, None] < B) & (offs_n[None, :] < N)
    tl.store(out_ptr + offs_b[:, None] * so + offs_n[None, :], acc, mask=m)

@triton.jit
def attention_context_kernel(e_ptr, mem_ptr, aw_ptr, ac_ptr, ctx_ptr, al_ptr, al_stride_b,
                             step_ptr, step_i, T, E, len_ptr, cnt_ptr, rec_ptr, rec_stride_b, end_mass,
                             TB: tl.constexpr, BT: tl.constexpr, BE: tl.constexpr,
                             ALIGN: tl.constexpr, COUNT: tl.constexpr = 0, PDL: tl.constexpr = 0):
    b = tl.program_id(0)
    pe = tl.program_id(1)
    offs_all = tl.arange(0, TB)
    offs_e = pe * BE + tl.arange(0, BE)
    em = offs_e < E
    acc = tl.zeros((BE,), dtype=tl.float32)
    offs_t0 = tl.arange(0, BT)
    if PDL != 0:
        # memory is constant within a graph: its first T chunk before the wait
        mem0 = tl.load(mem_ptr + (b * T + offs_t0[:, None]) * E + offs_e[None, :],
                       mask=(offs_t0 < T)[:, None] & em[None, :], other=0.0).to(tl.float32)
        _gdc_wait(PDL)
    e_all = tl.load(e_ptr + b * T + offs_all, mask=offs_all < T, other=float("-inf"))
    mx = tl.max(e_all, axis=0)
    den = tl.sum(tl.exp(e_all - mx), axis=0)
    t_lo = 0
    if PDL != 0:
        e = tl.load(e_ptr + b * T + offs_t0, mask=offs_t0 < T, other=float("-inf"))
        w = tl.exp(e - mx) / den
        acc += tl.sum(w[:, None] * mem0, axis=0)
        t_lo = BT
    for t0 in range(t_lo, T, BT):
        offs_t = t0 + offs_t0
        tm = offs_t < T
        e = tl.load(e_ptr + b * T + offs_t, mask=tm, other=float("-inf"))
        w = tl.exp(e - mx) / den
        mem = tl.load(mem_ptr + (b * T + offs_t[:, None]) * E + offs_e[None, :],
                      mask=tm[:, None] & em[None, :], other=0.0).to(tl.float32)
        acc += tl.sum(w[:, None] * mem, axis=0)
    tl.store(ctx_ptr + b * E + offs_e, acc, mask=em)
    if pe == 0:
        am = offs_all < T
        w_all = tl.exp(e_all - mx) / den
        tl.store(aw_ptr + b * T + offs_all, w_all, mask=am)
        cum = tl.load(ac_ptr + b * T + offs_all, mask=am, other=0.0) + w_all
        tl.store(ac_ptr + b * T + offs_all, cum, mask=am)
        if ALIGN:
            step = tl.load(step_ptr) + step_i
            tl.store(al_ptr + b * al_stride_b + step * T + offs_all, w_all, mask=am)
        if COUNT:
            # the attention stop rule's count: steps with the cumulative weight of the row's last
            # input position at least end_mass (tts.models.tacotron2.count_end_frames)
            last = tl.maximum(tl.load(len_ptr + b) - 1, 0)
            mass = tl.sum(tl.where(offs_all == last, cum, 0.0), axis=0)
            cnt = tl.load(cnt_ptr + b) + (mass >= end_mass).to(tl.int32)
            tl.store(cnt_ptr + b, cnt)
            step_c = tl.load(step_ptr) + step_i
            tl.store(rec_ptr + b * rec_stride_b + step_c, cnt)

@triton.jit
def projection_kernel(x1, K1, x2, K2, w_ptr, b_ptr, frame_ptr, mel_ptr, mel_stride_b,
                      gate_ptr, gate_stride_b, nf_ptr, len_ptr, step_ptr, step_i, threshold,
                      B, NF, cnt_ptr, lim_ptr, end_frames, min_steps,
                      BB: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, STOP: tl.constexpr = 0,
                      PDL: tl.constexpr = 0):
    offs_n = tl.program_id(0) * BN + tl.arange(0, BN)
    offs_b = tl.program_id(1) * BB + tl.arange(0, BB)
    N = NF + 1
    KT = K1 + K2
    acc = tl.zeros((BB, BN), dtype=tl.float32)
    if PDL != 0:
        w0 = _w_chunk0(w_ptr, KT, 0, K1, offs_n, N, BK)
        bias = tl.load(b_ptr + offs_n, mask=offs_n < N, other=0.0)
        _gdc_wait(PDL)
        acc = _acc_chunk0(acc, w0, x1, K1, K1, offs_b, B, BK)
        acc = _acc_segment_from(acc, BK, x1, K1, K1, w_ptr, KT, 0, offs_b, B, offs_n, N, BK)
    else:
        acc = _acc_segment(acc, x1, K1, K1, w_ptr, KT, 0, offs_b, B, offs_n, N, BK)
    acc = _acc_segment(acc, x2, K2, K2, w_ptr, KT, K1, offs_b, B, offs_n, N, BK)
    if PDL == 0:
        bias = tl.load(b_ptr + offs_n, mask=offs_n < N, other=0.0)
    y = acc + bias[None, :]
    step = tl.load(step_ptr) + step_i
    bm = offs_b < B
    fm = bm[:, None] & (offs_n[None, :] < NF)
    tl.store(frame_ptr + offs_b[:, None] * NF + offs_n[None, :], y, mask=fm)
    tl.store(mel_ptr + offs_b[:, None] * mel_stride_b + step * NF + offs_n[None, :], y, mask=fm)
    is_gate = offs_n[None, :] == NF
    gate = tl.sum(tl.where(is_gate, y, 0.0), axis=1)                  # [BB]
    if (tl.program_id(0) * BN <= NF) & (NF < tl.program_id(0) * BN + BN):
        tl.store(gate_ptr + offs_b * gate_stride_b + step, gate, mask=bm)
        nf = tl.load(nf_ptr + offs_b, mask=bm, other=0)
        nf = tl.where(tl.sigmoid(gate) <= threshold, nf, 0)
        ln = tl.load(len_ptr + offs_b, mask=bm, other=0) + nf
        if STOP:
            # the attention stop rule after the gate (tts.engines.tacotron2_step.attention_stop_step):
            # a row whose attention ended stops as if its gate had fired; a row at its budget stops
            cnt = tl.load(cnt_ptr + offs_b, mask=bm, other=0)
            drop = tl.where((cnt >= end_frames) & (step + 1 >= min_steps), nf, 0)
            nf = nf - drop
            ln = ln - drop
            lim = tl.load(lim_ptr + offs_b, mask=bm, other=0)
            nf = tl.where(ln < lim, nf, 0)
        tl.store(nf_ptr + offs_b, nf, mask=bm)
        tl.store(len_ptr + offs_b, ln, mask=bm)


# ----------------------------------------------------------------------------- LSTM cell
# A program owns the rows {i, f, g, o} x BH of the concatenated weight [4H, K1 + K2 + K3] and
# streams them in chunks of BK; the cell update is fused into the epilogue.

@triton.jit
def _x_tile(x1, K1, x2, K2, x3, K3, offs_b, B, kk):
    # x[offs_b, kk] of the concatenation [x1 | x2 | x3] (f32); 0 outside
    bm = (offs_b < B)[:, None]
    k = kk[None, :]
    v = tl.load(x1 + offs_b[:, None] * K1 + k, mask=bm & (k < K1), other=0.0)
    k2 = k - K1
    v += tl.load(x2 + offs_b[:, None] * K2 + k2, mask=bm & (k2 >= 0) & (k2 < K2), other=0.0)
    k3 = k2 - K2
    v += tl.load(x3 + offs_b[:, None] * K3 + k3, mask=bm & (k3 >= 0) & (k3 < K3), other=0.0)
    return v.to(tl.float32)

@triton.jit
def _lstm2_w(k0, k_end, KT, w_ptr, rows, BK: tl.constexpr):
    kk = k0 + tl.arange(0, BK)
    return tl.load(w_ptr + rows[:, None] * KT + kk[None, :], mask=(kk < k_end)[None, :], other=0.0)  # [R, BK]

@triton.jit
def _lstm2_chunk(acc, k0, k_end, KT, x1, K1, x2, K2, x3, K3, w_ptr, rows, offs_b, B,
                 BK: tl.constexpr, DOT: tl.constexpr, SEG: tl.constexpr):
    w = _lstm2_w(k0, k_end, KT, w_ptr, rows, BK)
    return _lstm2_mac(acc, w, k0, k_end, x1, K1, x2, K2, x3, K3, offs_b, B, BK, DOT, SEG)

@triton.jit
def _lstm2_mac(acc, w, k0, k_end, x1, K1, x2, K2, x3, K3, offs_b, B,
               BK: tl.constexpr, DOT: tl.constexpr, SEG: tl.constexpr):
    # acc += x[:, k0:k0 + BK] @ w^T with the chunk's weight tile w [R, BK] already loaded
    kk = k0 + tl.arange(0, BK)
    km = kk < k_end
    if SEG:
        # every chunk lies inside one input segment (BK divides K1, K2, K3): one load of x
        in1 = k0 < K1
        in2 = k0 < K1 + K2
        xp = tl.where(in1, x1 + k0, tl.where(in2, x2 + (k0 - K1), x3 + (k0 - K1 - K2)))
        sx = tl.where(in1, K1, tl.where(in2, K2, K3))
        x = tl.load(xp + offs_b[:, None] * sx + tl.arange(0, BK)[None, :],
                    mask=(offs_b < B)[:, None] & km[None, :], other=0.0)
    else:
        x = _x_tile(x1, K1, x2, K2, x3, K3, offs_b, B, kk)   # [BB, BK]; w is 0 where kk >= k_end
    if DOT == 2:
        # transposed: acc [R, BB] += w @ x^T (w is the A operand as loaded, x^T the B operand);
        # x = hi + lo in fp16 as below
        hi = x.to(tl.float16)
        acc = tl.dot(w, tl.trans(hi), acc)
        lo = (x - hi.to(tl.float32)).to(tl.float16)
        acc = tl.dot(w, tl.trans(lo), acc)
    elif DOT:
        # x = hi + lo in fp16 (x keeps ~22 bits), w exact: two tensor-core products, f32 accumulation
        hi = x.to(tl.float16)
        lo = (x - hi.to(tl.float32)).to(tl.float16)
        wt = tl.trans(w)
        acc = tl.dot(hi, wt, acc)
        acc = tl.dot(lo, wt, acc)
    else:
        acc += x[:, None, :] * w.to(tl.float32)[None, :, :]                                # [BB, R, BK]
    return acc

@triton.jit
def _lstm2_rest(acc, I0: tl.constexpr, k_start, k_end, KT, x1, K1, x2, K2, x3, K3, w_ptr, rows, offs_b, B,
                BK: tl.constexpr, NIT: tl.constexpr, DOT: tl.constexpr, SEG: tl.constexpr):
    # chunks I0 .. NIT - 1 of a program
    for i in range(I0, NIT):
        acc = _lstm2_chunk(acc, k_start + i * BK, k_end, KT, x1, K1, x2, K2, x3, K3, w_ptr, rows,
                           offs_b, B, BK, DOT, SEG)
    return acc

@triton.jit
def _lstm2_epilogue(acc, b_ptr, c_ptr, h_out, offs_b, B, h0, H,
                    BB: tl.constexpr, BH: tl.constexpr):
    # acc [BB, 4 * BH]: gate-major pre-activations of hidden units h0 .. h0 + BH
    a3 = tl.reshape(acc, (BB, 4, BH))
    gi = tl.arange(0, 4)[None, :, None]
    offs_h = h0 + tl.arange(0, BH)
    a3 = a3 + tl.load(b_ptr + gi * H + offs_h[None, None, :])
    pi = tl.sum(tl.where(gi == 0, a3, 0.0), axis=1)
    pf = tl.sum(tl.where(gi == 1, a3, 0.0), axis=1)
    pg = tl.sum(tl.where(gi == 2, a3, 0.0), axis=1)
    po = tl.sum(tl.where(gi == 3, a3, 0.0), axis=1)
    m = (offs_b[:, None] < B) & (offs_h[None, :] < H)
    ptr = offs_b[:, None] * H + offs_h[None, :]
    c = tl.load(c_ptr + ptr, mask=m, other=0.0)
    c_new = tl.sigmoid(pf) * c + tl.sigmoid(pi) * _tanh(pg)
    tl.store(c_ptr + ptr, c_new, mask=m)
    tl.store(h_out + ptr, tl.sigmoid(po) * _tanh(c_new), mask=m)

@triton.jit
def lstm_cell2_kernel(x1, K1, x2, K2, x3, K3, w_ptr, b_ptr, c_ptr, h_out, ws_ptr, ws_split, cnt_ptr,
                      B, H, KCH,
                      BB: tl.constexpr, BH: tl.constexpr, BK: tl.constexpr, NIT: tl.constexpr,
                      SPLIT: tl.constexpr, DOT: tl.constexpr, SEG: tl.constexpr = False,
                      PDL: tl.constexpr = 0):
    # grid (H / BH, cdiv(B, BB), SPLIT). Program (h, b, s): rows {i, f, g, o} x BH of the weight,
    # K range [s * KCH, (s + 1) * KCH) of the concatenated input, NIT chunks of BK.
    # SPLIT > 1: partial sums to ws[s], the last program of a tile (counter) adds them in
    # fixed order (deterministic) and applies the cell update; counters are left at 0.
    # PDL: the first weight chunk is loaded before the wait.
    pid_h = tl.program_id(0)
    pid_b = tl.program_id(1)
    s = tl.program_id(2)
    KT = K1 + K2 + K3
    R: tl.constexpr = 4 * BH
    r = tl.arange(0, R)
    h0 = pid_h * BH
    rows = (r // BH) * H + h0 + (r % BH)
    offs_b = pid_b * BB + tl.arange(0, BB)
    k_start = s * KCH
    k_end = tl.minimum(k_start + KCH, KT)
    if DOT == 2:
        acc = tl.zeros((R, BB), dtype=tl.float32)
    elif DOT:
        acc = tl.zeros((BB, R), dtype=tl.float32)
    else:
        acc = tl.zeros((BB, R, BK), dtype=tl.float32)
    if PDL != 0:
        w0 = _lstm2_w(k_start, k_end, KT, w_ptr, rows, BK)
        _gdc_wait(PDL)
        acc = _lstm2_mac(acc, w0, k_start, k_end, x1, K1, x2, K2, x3, K3, offs_b, B, BK, DOT, SEG)
        acc = _lstm2_rest(acc, 1, k_start, k_end, KT, x1, K1, x2, K2, x3, K3, w_ptr, rows, offs_b, B,
                          BK, NIT, DOT, SEG)
    else:
        acc = _lstm2_rest(acc, 0, k_start, k_end, KT, x1, K1, x2, K2, x3, K3, w_ptr, rows, offs_b, B,
                          BK, NIT, DOT, SEG)
    if DOT == 2:
        acc = tl.trans(acc)
    elif not DOT:
        acc = tl.sum(acc, axis=2)
    if SPLIT == 1:
        _lstm2_epilogue(acc, b_ptr, c_ptr, h_out, offs_b, B, h0, H, BB, BH)
    else:
        offs = offs_b[:, None] * (4 * H) + rows[None, :]
        tl.store(ws_ptr + s * ws_split + offs, acc)
        tl.debug_barrier()
        tile = pid_b * tl.num_programs(0) + pid_h
        done = tl.atomic_add(cnt_ptr + tile, 1, sem="acq_rel")
        if done == SPLIT - 1:
            tot = tl.zeros((BB, R), dtype=tl.float32)
            for j in tl.static_range(SPLIT):
                tot += tl.load(ws_ptr + j * ws_split + offs, cache_modifier=".cg")
            tl.atomic_xchg(cnt_ptr + tile, 0)
            _lstm2_epilogue(tot, b_ptr, c_ptr, h_out, offs_b, B, h0, H, BB, BH)

@triton.jit
def location_energy2_kernel(pq_ptr, wl_ptr, aw_ptr, ac_ptr, pm_ptr, v_ptr, len_ptr, out_ptr,
                            T, A, SWA, SWC, SWK,
                            KS: tl.constexpr, BT: tl.constexpr, BA: tl.constexpr, PDL: tl.constexpr = 0):
    # attention energies with the location convolution's taps unrolled (KS constexpr): all loads
    # issue at once instead of KS dependent rounds of L2 latency. wl [A, 2, KS] with strides
    # (SWA, SWC, SWK); in the engine's row-major layout a program's rows stay in L1.
    b = tl.program_id(0)
    offs_t = tl.program_id(1) * BT + tl.arange(0, BT)
    offs_a = tl.arange(0, BA)
    am = offs_a < A
    tm = offs_t < T
    PAD: tl.constexpr = (KS - 1) // 2
    if PDL != 0:
        # pm, v and the lengths are constant within a graph: before the wait
        pm = tl.load(pm_ptr + (b * T + offs_t[:, None]) * A + offs_a[None, :],
                     mask=tm[:, None] & am[None, :], other=0.0).to(tl.float32)
        v = tl.load(v_ptr + offs_a, mask=am, other=0.0).to(tl.float32)
        n = tl.load(len_ptr + b)
        _gdc_wait(PDL)
    acc = tl.zeros((BT, BA), dtype=tl.float32)
    for j in tl.static_range(KS):
        src = offs_t + (j - PAD)
        sm = (src >= 0) & (src < T)
        w0 = tl.load(aw_ptr + b * T + src, mask=sm, other=0.0)
        w1 = tl.load(ac_ptr + b * T + src, mask=sm, other=0.0)
        k0 = tl.load(wl_ptr + offs_a * SWA + j * SWK, mask=am, other=0.0).to(tl.float32)
        k1 = tl.load(wl_ptr + offs_a * SWA + SWC + j * SWK, mask=am, other=0.0).to(tl.float32)
        acc += w0[:, None] * k0[None, :] + w1[:, None] * k1[None, :]
    pq = tl.load(pq_ptr + b * A + offs_a, mask=am, other=0.0)
    if PDL == 0:
        pm = tl.load(pm_ptr + (b * T + offs_t[:, None]) * A + offs_a[None, :],
                     mask=tm[:, None] & am[None, :], other=0.0).to(tl.float32)
        v = tl.load(v_ptr + offs_a, mask=am, other=0.0).to(tl.float32)
    e = tl.sum(_tanh(acc + pq[None, :] + pm) * v[None, :], axis=1)
    if PDL == 0:
        n = tl.load(len_ptr + b)
    e = tl.where(offs_t < n, e, float("-inf"))
    tl.store(out_ptr + b * T + offs_t, e, mask=tm)

@triton.jit
def location_energy3_kernel(pq_ptr, wl_ptr, aw_ptr, ac_ptr, pm_ptr, v_ptr, len_ptr, out_ptr,
                            T, A, SWA, SWC, SWK,
                            KS: tl.constexpr, BT: tl.constexpr, BA: tl.constexpr, KP: tl.constexpr,
                            PDL: tl.constexpr = 0, PREC: tl.constexpr = "tf32x3"):
    # location_energy2_kernel as one tensor-core product per program: the location features of BT
    # positions are im2col [BT, 2 KS] (attention weights and their running sum, KS taps each)
    # @ wl^T [2 KS, A], in PREC: tf32x3 (three tf32 products: float32 accuracy) or ieee (an fp32 engine)
    b = tl.program_id(0)
    offs_t = tl.program_id(1) * BT + tl.arange(0, BT)
    offs_a = tl.arange(0, BA)
    am = offs_a < A
    tm = offs_t < T
    PAD: tl.constexpr = (KS - 1) // 2
    kc = tl.arange(0, KP)
    ch = kc // KS
    tap = kc - ch * KS
    kv = kc < 2 * KS
    wt = tl.load(wl_ptr + offs_a[None, :] * SWA + ch[:, None] * SWC + tap[:, None] * SWK,
                 mask=kv[:, None] & am[None, :], other=0.0)                      # [KP, BA]
    pm = tl.load(pm_ptr + (b * T + offs_t[:, None]) * A + offs_a[None, :],
                 mask=tm[:, None] & am[None, :], other=0.0).to(tl.float32)
    v = tl.load(v_ptr + offs_a, mask=am, other=0.0).to(tl.float32)
    n = tl.load(len_ptr + b)
    _gdc_wait(PDL)
    src = offs_t[:, None] + tap[None, :] - PAD                                    # [BT, KP]
    sm = (src >= 0) & (src < T) & kv[None, :]
    xa = tl.load(aw_ptr + b * T + src, mask=sm & (ch[None, :] == 0), other=0.0)
    xc = tl.load(ac_ptr + b * T + src, mask=sm & (ch[None, :] == 1), other=0.0)
    loc = tl.dot(xa + xc, wt, input_precision=PREC)                               # [BT, BA]
    pq = tl.load(pq_ptr + b * A + offs_a, mask=am, other=0.0)
    e = tl.sum(_tanh(loc + pq[None, :] + pm) * v[None, :], axis=1)
    e = tl.where(offs_t < n, e, float("-inf"))
    tl.store(out_ptr + b * T + offs_t, e, mask=tm)



KERNELS = {
    "linear_act": linear_act_kernel, "attention_context": attention_context_kernel,
    "projection": projection_kernel, "lstm_cell2": lstm_cell2_kernel,
    "location_energy2": location_energy2_kernel, "location_energy3": location_energy3_kernel,
}
