"""The compiled engine: the Value graph in a C arena (src/arena.h).

Glue only: the .pyx converts and raises, C computes and returns status codes.
A ``Value`` here is a small handle (arena, index, epoch) into contiguous
columns; each operation appends exactly the nodes the pure engine (_pure.py,
the specification) creates, with the same children in the same order and the
same arithmetic (src/ops.h, shared with every replay), so both engines build
the same graph and compute the same floats. Backward and Adam run in C.

Handles are not tracked by Python's cyclic garbage collector (they cannot form
cycles: an Arena refers to no Value), so a step's 60,000 temporaries cost no
collection passes. Memory follows the live graph: a node is live while its
handle exists or a live node has it as a child (an optimizer or a tape holds
its parameters' handles). When the columns are full the arena reclaims the
rest before it grows, sliding live nodes down in creation order and
re-pointing their handles (``reclaim``). A graph scope (``graph()``) is the
fast path: it releases the nodes made inside it at once; a handle to a
released node raises StaleValueError on any use.

The parts, one job each (Cython includes, compiled as one module):
    _arena.pxi   Arena (the columns) and graph scopes
    _value.pxi   the operations and the Value handle
    _dot.pxi     a sum of products in one call (model.dot's hook)
    _rows.pxi    the node rows of a list of Values, for C loops (Adam, a tape)
    _adam.pxi    Adam over parameter nodes
    _tape.pxi    recording a step and replaying it (src/tape/)
"""
cimport cython
from libc.stdint cimport int32_t, int64_t, uint8_t
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memcmp, memset
from array import array
import threading

from .errors import ArenaMismatchError, StaleValueError

cdef extern from *:
    """
    #ifndef MICROGPT_CHECKED
    #define MICROGPT_CHECKED 0
    #endif
    """
    int MICROGPT_CHECKED

name = "compiled"
checked = bool(MICROGPT_CHECKED)  # built with MICROGPT_BOUNDSCHECK=1: Cython checks and C asserts

OP_NAMES = ("leaf", "const", "add", "mul", "pow", "log", "exp", "relu", "custom")


# ---------------------------------------------------------------- helpers

cdef inline bint alive(Value v) noexcept:
    """Whether v's node still exists (not released, not reused). A handle made
    by Value.__new__ without __init__ has no arena and is never alive."""
    if <object>v.arena is None:
        return False
    cdef arena_t *a = &v.arena.a
    return v.index < a.n_nodes and a.epoch[v.index] == v.epoch


cdef int raise_stale(Value v) except -1:
    if <object>v.arena is None:
        raise StaleValueError("this Value was never initialised (made by Value.__new__ without __init__)")
    cdef str threads = ""
    if threading.active_count() > 1:  # another thread's scope may have released it
        threads = "; with several threads, " + THREADS
    raise StaleValueError(
        "this Value belongs to a graph that was released (its graph() scope ended); "
        "read .data inside the scope, or create it outside" + threads)


cdef inline int check(Value v) except -1:
    if not alive(v):
        raise_stale(v)
    return 0


cdef int raise_nomem() except -1:
    raise MemoryError("the arena could not grow (out of memory or more than 2**31 nodes)")


cdef int remember(Arena arena, node_t i, Value h) except -1:
    """Note h as node i's handle (a borrowed pointer: h's dealloc clears it).
    Every live handle is in the table: that is how reclaiming finds what is held."""
    cdef int64_t cap
    cdef PyObject **t
    if i >= arena.handles_cap:
        cap = arena.a.cap_nodes if arena.a.cap_nodes > i else <int64_t>i + 1
        t = <PyObject **>realloc(arena.handles, cap * sizeof(PyObject *))
        if t == NULL:
            h.arena = None  # a handle outside the table could not keep its node: never alive
            raise_nomem()
        memset(t + arena.handles_cap, 0, (cap - arena.handles_cap) * sizeof(PyObject *))
        arena.handles = t
        arena.handles_cap = cap
    arena.handles[i] = <PyObject *>h
    return 0


cdef inline void forget(Value h) noexcept:
    """Clear h's entry in its arena's handle table, if it is h's."""
    if <object>h.arena is None:
        return
    cdef Arena arena = h.arena
    if h.index < arena.handles_cap and arena.handles[h.index] == <PyObject *>h:
        arena.handles[h.index] = NULL


cdef inline Value make(Arena arena, node_t i):
    """The handle for node i (just appended): a new object, the node's one handle
    (a handle left at index i by a released node is stale and stays so)."""
    if i < 0:
        raise_nomem()
    cdef Value h = Value.__new__(Value)
    h.arena = arena
    h.index = i
    h.epoch = arena.a.cur_epoch
    remember(arena, i, h)
    return h


cdef int reclaim(Arena arena) except -1:
    """Reclaim the nodes above arena.pinned that no handle reaches, directly or
    through live parents (src/arena.c arena_reclaim), and re-point the live
    handles at their nodes' new rows. Not while a step is recorded: a recording
    notes node indices. Returns the number of nodes reclaimed."""
    cdef arena_t *a = &arena.a
    cdef int64_t lo = arena.pinned, n = a.n_nodes, i, top
    if arena.recording or lo >= n:
        return 0
    cdef node_t *keep = <node_t *>malloc((n - lo) * sizeof(node_t))
    if keep == NULL:
        return 0  # growing instead is always correct
    memset(keep, 0, (n - lo) * sizeof(node_t))
    top = n if n < arena.handles_cap else arena.handles_cap
    cdef PyObject *h
    for i in range(lo, top):
        h = arena.handles[i]
        if h != NULL:
            if (<Value>h).epoch == a.epoch[i]:
                keep[i - lo] = 1
            else:
                arena.handles[i] = NULL  # a stale handle (its node was released): off the table
    cdef int64_t freed = arena_reclaim(a, lo, keep)
    for i in range(lo, top):  # new rows are never above old ones: one pass upwards
        h = arena.handles[i]
        if h != NULL:
            arena.handles[i] = NULL
            (<Value>h).index = keep[i - lo]
            arena.handles[keep[i - lo]] = h
    free(keep)
    arena.reclaimed += freed
    if freed > 0:
        arena.moves += 1
    return freed


cdef inline int make_room(Arena arena, int64_t nodes, int64_t edges) except -1:
    """Before appending up to nodes nodes with edges edges: when the columns are
    full, reclaim first, and grow only if that left less than half of them free.
    Called before an operation reads the node indices it appends with (they may move)."""
    cdef arena_t *a = &arena.a
    if a.n_nodes + nodes <= a.cap_nodes and a.n_edges + edges <= a.cap_edges:
        return 0
    reclaim(arena)
    if 2 * (a.n_nodes + nodes) > a.cap_nodes:
        arena_grow_nodes(a, 2 * (a.n_nodes + nodes))  # on failure the append itself grows or fails
    if 2 * (a.n_edges + edges) > a.cap_edges:
        arena_grow_edges(a, 2 * (a.n_edges + edges))
    return 0


cdef int raise_status(status_t s) except -1:
    if s == OP_ZERODIV:
        raise ZeroDivisionError("0.0 cannot be raised to a negative power")
    if s == OP_DOMAIN:
        raise ValueError("math domain error")
    if s == OP_RANGE:
        raise OverflowError("math range error")
    raise_nomem()


include "_arena.pxi"
include "_value.pxi"
include "_dot.pxi"
include "_rows.pxi"
include "_adam.pxi"
include "_tape.pxi"


# ---------------------------------------------------------------- the module's engine API

cdef Arena _default_arena = Arena()


def default_arena():
    """The arena that Value(x) and graph() use."""
    return _default_arena


def graph():
    """Scope one graph in the default arena: its nodes are released on exit."""
    return GraphScope(_default_arena)
