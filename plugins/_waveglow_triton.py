"""Triton kernel of WaveGlow's gated activation on rows (imported lazily by ``tts.plugins.waveglow``)."""

import triton
import triton.language as tl


@triton.jit
def gated_rows_kernel(in_ptr, out_ptr, R, C, in_row_stride, out_row_stride,
                      BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_C)
    m = (rows[:, None] < R) & (cols[None, :] < C)
    base = in_ptr + rows[:, None].to(tl.int64) * in_row_stride + cols[None, :]
    a_t = tl.load(base, mask=m, other=0.0).to(tl.float32)
    a_s = tl.load(base + C, mask=m, other=0.0).to(tl.float32)
    th = 2.0 * tl.sigmoid(2.0 * a_t) - 1.0
    y = th * tl.sigmoid(a_s)
    dst = out_ptr + rows[:, None].to(tl.int64) * out_row_stride + cols[None, :]
    tl.store(dst, y.to(out_ptr.dtype.element_ty), mask=m)
