"""The CPU window of the transport solver, compiled by numba.

One call runs ``w`` Sinkhorn iterations on a tile of problems, one problem after the other: while a
problem's kernel (10 KiB at 51 x 51) is in L1, it is exponentiated, its ``w`` pairs of products and
its stopping statistic are made and, if asked, its plan's cost, so the kernel is read from memory
once per window. NumPy or torch would make each of those a pass over the whole tile, with a Python
call (and a GIL hand-over) per pass. The call releases the GIL.

``exp`` is Cephes' ``expf``: a polynomial and the exponent's bits, plain arithmetic that vectorises,
where a call to libm per value would not.

:func:`window_tiles` runs the window on a list of tiles as a C function of one pointer, so that
it is the callback of an OpenMP runtime's ``GOMP_parallel``: torch's own OpenMP team runs it, whose
threads are already awake (they spin a few milliseconds after each of torch's parallel kernels, and
threads of our own would compete with them for the cores). A pool's threads or the caller alone can
call it too; each thread takes the next tile from a shared counter.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import carray, cfunc, njit, types
from numba.extending import intrinsic

# Reassociation (vectorised sums), contraction and reciprocals; never assumes away NaN or inf,
# so a NaN in the weights still reaches the scores and is reported there.
_FAST = {"reassoc", "contract", "arcp", "nsz"}
_RUN = 32        # members staged at a time where they lie side by side (32 x 51 x 51 floats: 325 KiB)


def _array(dtype, ndim: int, layout: str = "A"):
    return types.Array(dtype, ndim, layout)


# One signature each, any strides ("A"): one compilation (cached on disk), whatever views come in.
_EXP = types.void(_array(types.float32, 1, "C"), types.float32, _array(types.float32, 1, "C"))
_WINDOW = types.void(_array(types.float32, 1, "C"), types.int64, _array(types.int64, 1, "C"), types.boolean,
                     types.float32, types.boolean, *[_array(types.float32, n) for n in (3, 3, 3, 3, 4, 3, 2)])


@intrinsic
def _wide_vectors(typingctx):
    """Let LLVM vectorise the calling function with the CPU's widest vectors. Its tuning for recent
    x86 cores prefers 256-bit ones (heavy 512-bit work lowered the clock of older cores); this
    window runs 10 % faster with 512-bit ones. A CPU without them is unaffected, and an llvmlite
    that refuses the attribute compiles the function as before."""
    def codegen(context, builder, signature, args):
        try:    # a string attribute, which llvmlite's own list of attributes does not name
            set.add(builder.function.attributes, '"prefer-vector-width"="512"')
        except Exception:  # pragma: no cover - another llvmlite
            pass
        return context.get_dummy_value()
    return types.void(), codegen


@intrinsic
def _as_float32(typingctx, bits):
    """The float32 whose bits are the low 32 of an integer (a register cast: no memory, vectorises)."""
    def codegen(context, builder, signature, args):
        value = args[0]
        if value.type.width != 32:
            value = builder.trunc(value, ir.IntType(32))
        return builder.bitcast(value, ir.FloatType())
    return types.float32(bits), codegen


@njit(_EXP, nogil=True, cache=True, error_model="numpy", fastmath=_FAST)
def _exp(x, shift, out):  # pragma: no cover - compiled
    """``out = exp(x + shift)`` of a contiguous float32 array, 0 under float32's normal range."""
    _wide_vectors()
    for k in range(x.size):
        v = x[k] + shift
        n = np.floor(v * np.float32(1.44269504088896341) + np.float32(0.5))
        n = min(max(n, np.float32(-126.0)), np.float32(127.0))
        r = v - n * np.float32(0.693359375) - n * np.float32(-2.12194440e-4)
        z = r * r
        p = np.float32(1.9875691500e-4)
        p = p * r + np.float32(1.3981999507e-3)
        p = p * r + np.float32(8.3334519073e-3)
        p = p * r + np.float32(4.1665795894e-2)
        p = p * r + np.float32(1.6666665459e-1)
        p = p * r + np.float32(5.0000001201e-1)
        e = (p * z + r + np.float32(1.0)) * _as_float32((np.int32(n) + np.int32(127)) << 23)   # times 2^n
        # 0 under the normal range; NaN fails the test and stays NaN
        out[k] = np.float32(0.0) if v <= np.float32(-87.3) else e


@njit(nogil=True, cache=True, error_model="numpy", fastmath=_FAST)
def _row_products(k, vector, out):  # pragma: no cover - compiled
    """``out[i] = sum_j k[i, j] vector[j]``, four rows at a time (independent sums; 2-D indexing,
    as row views keep LLVM from vectorising)."""
    _wide_vectors()
    rows, width = k.shape
    last = rows - rows % 4
    for i in range(0, last, 4):
        s0 = s1 = s2 = s3 = np.float32(0.0)
        for j in range(width):
            y = vector[j]
            s0 += k[i, j] * y
            s1 += k[i + 1, j] * y
            s2 += k[i + 2, j] * y
            s3 += k[i + 3, j] * y
        out[i] = s0
        out[i + 1] = s1
        out[i + 2] = s2
        out[i + 3] = s3
    for i in range(last, rows):
        s = np.float32(0.0)
        for j in range(width):
            s += k[i, j] * vector[j]
        out[i] = s
    return out


@njit(nogil=True, cache=True, error_model="numpy", fastmath=_FAST)
def _col_products(k, vector, out):  # pragma: no cover - compiled
    """``out[j] = sum_i vector[i] k[i, j]``, four rows at a time (a quarter of the loads and
    stores of ``out``)."""
    _wide_vectors()
    rows, width = k.shape
    out[:] = 0.0
    last = rows - rows % 4
    for i in range(0, last, 4):
        y0, y1, y2, y3 = vector[i], vector[i + 1], vector[i + 2], vector[i + 3]
        for j in range(width):
            out[j] += k[i, j] * y0 + k[i + 1, j] * y1 + k[i + 2, j] * y2 + k[i + 3, j] * y3
    for i in range(last, rows):
        y = vector[i]
        for j in range(width):
            out[j] += k[i, j] * y
    return out


@njit(_WINDOW, nogil=True, cache=True, error_model="numpy", fastmath=_FAST)
def window(storage, base, strides, transposed, shift, exponent, a, b, u, v, history, change,
           dot):  # pragma: no cover - compiled
    """``w = len(history)`` iterations on a tile, in place.

    Args:
        storage: the flat float32 memory the tile's kernels live in. Problem ``(g, c)``'s row ``i``
            starts at ``base + g * strides[0] + c * strides[1] + i * strides[2]`` and runs with unit
            stride: a row of ``prompts`` values, or of ``views`` when ``transposed``.
        shift, exponent: with ``exponent`` the memory holds ``X`` and the kernel is ``exp(X + shift)``
            (the plan's cost is then ``sum T X``); without, it holds the kernel.
        a: (groups, members, views), b: (groups, members, prompts): the marginals.
        u: (groups, members, views), v: (groups, members, prompts): the scalings, updated.
        history: (w, groups, members, views) gets ``u_t`` for ``t < w - 1`` (the last is ``u``);
            change: (w, groups, members) each problem's sum over views of ``|u_t - u_{t-1}|``.
        dot: (groups, members) gets ``sum T X`` of the last plan, or has no members (no cost).
    """
    _wide_vectors()
    groups, members = u.shape[0], u.shape[1]
    views, prompts = u.shape[2], v.shape[2]
    rows, cols = (prompts, views) if transposed else (views, prompts)
    width = (cols + 15) // 16 * 16       # rows padded with zeros to whole vectors: no scalar tails
    steps = history.shape[0]
    with_cost = dot.shape[1] > 0
    # Problems are staged first, a run of them at a time, as (rows, run, cols): where the tile's
    # groups (the scorer's prompts-major layout) or members (views-major) lie side by side in each
    # row, each row of a run is one stretch of memory, read in one stream at the prefetcher's pace,
    # not as 51 short pieces a problem (each a cache miss's latency); the exponent is then one long
    # vectorised loop over the run.
    along_groups = strides[0] == cols
    along_members = not along_groups and strides[1] == cols
    longest = groups if along_groups else (min(members, _RUN) if along_members else 1)
    staged = np.empty(rows * longest * cols, np.float32)
    gibbs = np.empty(rows * longest * cols, np.float32) if exponent else staged
    k = np.zeros((rows, width), np.float32)          # one problem's kernel, contiguous and padded
    row_side = np.zeros(rows, np.float32)            # the scaling along the rows (u, or v when transposed)
    col_side = np.zeros(width, np.float32)           # and along the columns
    row_out = np.empty(rows, np.float32)
    col_out = np.empty(width, np.float32)
    us, vs = (col_side, row_side) if transposed else (row_side, col_side)
    per_group = (members + longest - 1) // longest   # runs of members in each group
    runs = members if along_groups else groups * per_group
    for unit in range(runs):
        if along_groups:                 # all groups of member ``unit``
            g0, c0, run = 0, unit, groups
        else:                            # members c0.. of group g0 (one at a time unless side by side)
            g0, c0 = unit // per_group, unit % per_group * longest
            run = min(longest, members - c0)
        size = rows * run * cols
        for i in range(rows):
            source = storage[base + g0 * strides[0] + c0 * strides[1] + i * strides[2]:]
            target = staged[i * run * cols:]
            for n in range(run * cols):
                target[n] = source[n]
        if exponent:
            _exp(staged[:size], shift, gibbs[:size])
        for q in range(run):
            g, c = (g0 + q, c0) if along_groups else (g0, c0 + q)
            for i in range(rows):
                offset = (i * run + q) * cols
                for j in range(cols):
                    k[i, j] = gibbs[offset + j]
            for r in range(views):
                us[r] = u[g, c, r]
            for p in range(prompts):
                vs[p] = v[g, c, p]
            for t in range(steps):
                # u = a / (K v)
                kv = _col_products(k, row_side, col_out) if transposed else _row_products(k, col_side, row_out)
                moved = np.float32(0.0)
                for r in range(views):
                    y = a[g, c, r] / kv[r]
                    moved += abs(y - us[r])
                    us[r] = y
                change[t, g, c] = moved
                if t < steps - 1:        # the last is u itself
                    for r in range(views):
                        history[t, g, c, r] = us[r]
                # v = b / (K^T u)
                ku = _row_products(k, col_side, row_out) if transposed else _col_products(k, row_side, col_out)
                for p in range(prompts):
                    vs[p] = b[g, c, p] / ku[p]
            for r in range(views):
                u[g, c, r] = us[r]
            for p in range(prompts):
                v[g, c, p] = vs[p]
            if with_cost:                # sum T X, X being the staged values
                total = np.float32(0.0)
                for i in range(rows):
                    offset = (i * run + q) * cols
                    s = np.float32(0.0)
                    for j in range(cols):
                        s += k[i, j] * staged[offset + j] * col_side[j]
                    total += row_side[i] * s
                dot[g, c] = total


# A window on tiles is described by one int64 array (the callback's only argument):
# a head, then (g0, g1, c0, c1) for each tile. Arrays are (address, elements spanned, shape[4],
# strides[4] in bytes); the kernel is (address, elements, offset, strides[3] in elements).
COUNTER, TILES, TRANSPOSED, EXPONENT, SHIFT, KERNEL = 0, 1, 2, 3, 4, 5
STATE = KERNEL + 6              # a, b, u, v, history, change, dot
FIELDS = 10
HEAD = STATE + 7 * FIELDS


@intrinsic
def _float32_pointer(typingctx, address):
    """The float32 pointer at an integer address."""
    pointer = types.CPointer(types.float32)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(pointer))
    return pointer(address), codegen


@intrinsic
def _fetch_add(typingctx, array, index, value):
    """Atomically add ``value`` to ``array[index]`` (int64, contiguous); the value before."""
    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        return builder.atomic_rmw("add", builder.gep(data, [args[1]]), args[2], "monotonic")
    return types.int64(array, index, value), codegen


@njit(cache=True)
def _flat(d, at):  # pragma: no cover - compiled
    return carray(_float32_pointer(d[at]), (d[at + 1],))


@njit(cache=True)
def _view2(d, at):  # pragma: no cover - compiled
    return np.lib.stride_tricks.as_strided(_flat(d, at), shape=(d[at + 2], d[at + 3]),
                                           strides=(d[at + 6], d[at + 7]))


@njit(cache=True)
def _view3(d, at):  # pragma: no cover - compiled
    return np.lib.stride_tricks.as_strided(_flat(d, at), shape=(d[at + 2], d[at + 3], d[at + 4]),
                                           strides=(d[at + 6], d[at + 7], d[at + 8]))


@njit(cache=True)
def _view4(d, at):  # pragma: no cover - compiled
    return np.lib.stride_tricks.as_strided(_flat(d, at), shape=(d[at + 2], d[at + 3], d[at + 4], d[at + 5]),
                                           strides=(d[at + 6], d[at + 7], d[at + 8], d[at + 9]))


@cfunc(types.void(types.voidptr), nopython=True, cache=True)
def window_tiles(data):  # pragma: no cover - compiled
    """One thread's share of a window: of the described tiles, each next free one, until none is left."""
    d = carray(data, (HEAD,), np.int64)
    d = carray(data, (HEAD + 4 * d[TILES],), np.int64)
    storage = carray(_float32_pointer(d[KERNEL]), (d[KERNEL + 1],))
    base, strides = d[KERNEL + 2], d[KERNEL + 3:KERNEL + 6].copy()
    shift = d[SHIFT:SHIFT + 1].view(np.float64)[0]
    a, b, u, v = (_view3(d, STATE), _view3(d, STATE + FIELDS), _view3(d, STATE + 2 * FIELDS),
                  _view3(d, STATE + 3 * FIELDS))
    history, change, dot = _view4(d, STATE + 4 * FIELDS), _view3(d, STATE + 5 * FIELDS), _view2(d, STATE + 6 * FIELDS)
    while True:
        t = _fetch_add(d, COUNTER, 1)
        if t >= d[TILES]:
            return
        g0, g1, c0, c1 = d[HEAD + 4 * t], d[HEAD + 4 * t + 1], d[HEAD + 4 * t + 2], d[HEAD + 4 * t + 3]
        window(storage, base + g0 * strides[0] + c0 * strides[1], strides, d[TRANSPOSED] != 0, np.float32(shift),
               d[EXPONENT] != 0, a[g0:g1, c0:c1], b[g0:g1, c0:c1], u[g0:g1, c0:c1], v[g0:g1, c0:c1],
               history[:, g0:g1, c0:c1], change[:, g0:g1, c0:c1], dot[g0:g1, c0:c1])
