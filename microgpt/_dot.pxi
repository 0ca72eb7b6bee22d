# A sum of products in one call: the hook behind model.dot (Value.dot). The
# model code's sum(wi * xi for wi, xi in zip(w, x)) makes, in this order, the
# product w0 * x0, the constant 0 (sum's start) and w0 * x0 + 0 (the start is
# added on the right, as Value.__radd__ does), then each w_k * x_k and the
# running sum plus it. This appends those very nodes, through the same append
# as x * y and x + y (arena_push_binary: the arithmetic of src/ops.h, the int tags,
# an int beyond a double refused), without a Python object per node. While a step
# is recorded compactly (begin_recording(arena, compact=True)), or a forward whose
# values only are read runs (set_compact: a sampler's), a sum of float products is
# two nodes instead: the constant 0 and one OP_DOT node over the 2 n operands (or,
# for a matrix row's consecutive weights, over w0 and the n x's), with the same
# value (src/arena.h arena_push_dot): most of a recorded step's nodes are
# these sums' inner nodes, and the tape's builder takes the chain whole. Included
# by _engine.pyx.


cdef object dot_nodes(object w, object x):
    """The sum's Value, or None where the operands are not two lists of live
    Values of one arena (the caller then runs the Python sum, which raises or
    mixes engines as it does everywhere else)."""
    if type(w) is not list or type(x) is not list:
        return None
    cdef list wl = <list>w, xl = <list>x
    cdef Py_ssize_t n = min(len(wl), len(xl)), k
    if n == 0 or type(wl[0]) is not Value:
        return None
    cdef Arena arena = (<Value>wl[0]).arena
    if arena is not None and arena.compact:
        s = compact_dot(arena, wl, xl, n)
        if s is not False:
            return s
    cdef object a, b
    for k in range(n):
        a, b = wl[k], xl[k]
        if type(a) is not Value or type(b) is not Value:
            return None
        if (<Value>a).arena is not arena or (<Value>b).arena is not arena:
            return None
        if not alive(<Value>a) or not alive(<Value>b):
            return None
    cdef arena_t *ar = &arena.a
    make_room(arena, 2 * n + 1, 4 * n)  # may move nodes: indices are read after it
    cdef int64_t mark = ar.n_nodes  # what an int beyond a double releases back to
    cdef node_t m, zero, acc = -1
    for k in range(n):
        m = arena_push_binary(ar, OP_MUL, (<Value>wl[k]).index, (<Value>xl[k]).index)
        if m < 0:
            return refuse_int_overflow(arena, mark)
        ar.held[m] = NULL  # an inner node: no handle
        if k == 0:
            zero = arena_leaf(ar, OP_CONST, 0.0)
            if zero < 0:
                raise_nomem()
            ar.tag[zero] |= TAG_DATA_INT  # sum's start is the int 0
            acc = arena_push_binary(ar, OP_ADD, m, zero)
        else:
            acc = arena_push_binary(ar, OP_ADD, acc, m)
        if acc < 0:
            return refuse_int_overflow(arena, mark)
        ar.held[acc] = NULL
    return make(arena, acc)


cdef object refuse_int_overflow(Arena arena, int64_t mark):
    """The sum's nodes so far released (none has a handle), then the refusal every
    int operation beyond a double gets (int_overflow, _value.pxi)."""
    arena_release(&arena.a, mark)
    int_overflow(arena, -1)


cdef object compact_dot(Arena arena, list wl, list xl, Py_ssize_t n):
    """The sum as its constant 0 and one OP_DOT node, the operands checked as they
    are written (one pass). None where one is not a live Value of this arena (the
    caller's plain sum raises or mixes engines); False where a product is of two
    ints (the node-by-node path: its int tags, -0.0 and refusal of an int beyond a
    double; an int times a float, as relu's int 0 times a weight, is the float
    product of their doubles, and a sum of floats from the int 0 is floats too).
    While a step is recorded, weights that are consecutive leaves (a matrix row's
    parameters) are written as a row: w0 and the x's, half the edges
    (arena_push_dot); the pairs otherwise. make_room may reclaim (not while a
    step is recorded) and so move nodes: the operands' indices are read after it."""
    make_room(arena, 2, 2 * n)
    cdef arena_t *ar = &arena.a
    cdef node_t *c = ar.child + ar.n_edges  # past the last edge: nothing is appended until the end
    cdef const uint8_t *tag = ar.tag
    cdef bint int_product = False
    cdef object a, b
    cdef Py_ssize_t k, j
    cdef node_t w0 = -1
    # a row: recording (nothing reclaims, so the weights stay put), and w0's a leaf
    cdef bint row = arena.recording and type(wl[0]) is Value and (<Value>wl[0]).arena is arena
    if row:
        w0 = (<Value>wl[0]).index
        row = 0 <= w0 < ar.n_nodes and ar.op[w0] == OP_LEAF
    for k in range(n):
        a, b = wl[k], xl[k]
        if (type(a) is not Value or type(b) is not Value or (<Value>a).arena is not arena
                or (<Value>b).arena is not arena or not alive_in(<Value>a, ar) or not alive_in(<Value>b, ar)):
            return None
        if row and ((<Value>a).index != w0 + k or ar.op[w0 + k] != OP_LEAF):
            row = False  # the pairs after all: those written so far are rewritten
            for j in range(k):
                c[2 * j] = (<Value>wl[j]).index
                c[2 * j + 1] = (<Value>xl[j]).index
        if row:
            c[1 + k] = (<Value>b).index
        else:
            c[2 * k] = (<Value>a).index
            c[2 * k + 1] = (<Value>b).index
        int_product |= (tag[(<Value>a).index] & tag[(<Value>b).index] & TAG_DATA_INT) != 0
    if int_product:
        return False
    if row:
        c[0] = w0
    arena.unmade += 2 * n - 1  # node by node: n products, the 0 and n additions,
    arena.unmade_edges += 4 * n - (n + 1 if row else 2 * n)  # 4 n edges, where the compact sum has these
    return make(arena, arena_push_dot(ar, n, row))


cdef int64_t dot_operands(const arena_t *a, int64_t i):
    """The operands of compact sum i as pairs (w0, x0, w1, x1, ...): 2 n of them."""
    cdef int64_t edges = a.child_start[i + 1] - a.child_start[i]
    return 2 * (edges - 1) if a.tag[i] & TAG_ROW_DOT else edges
