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
re-pointing their handles (``reclaim``). The default arena also drops the
nodes on top that no handle names when the top node's handle goes (a graph
thrown away whole, 256 nodes or more: nothing to slide). A graph scope (``graph()``) is the
fast path: it releases the nodes made inside it at once; a handle to a
released node raises StaleValueError on any use.

The parts, one job each (Cython includes, compiled as one module):
    _handles.pxi the Value handles' life: made, noted in the handle table, freed
    _arena.pxi   Arena (the columns) and graph scopes
    _value.pxi   the operations and the Value handle
    _slots.pxi   x + y and x * y: the type's own slots, the per-operation hot path
    _fields.pxi  .data and .grad read and written straight from the descriptor
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
import errno
import os
import threading

from .adam_inputs import check_betas, check_second_moments, check_step
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

# bytes the arena's columns take for one node (node columns, backward scratch) and one edge
NODE_BYTES, EDGE_BYTES = int(arena_node_bytes()), int(arena_edge_bytes())
OP_NAMES = ("leaf", "const", "add", "mul", "pow", "log", "exp", "relu", "custom", "dot")


# ---------------------------------------------------------------- helpers

cdef inline bint alive(Value v) noexcept:
    """Whether v's node still exists (not released, not reused). A handle made
    by Value.__new__ without __init__ has no arena and is never alive."""
    if <object>v.arena is None:
        return False
    return alive_in(v, &v.arena.a)


cdef inline bint alive_in(Value v, arena_t *a) noexcept:
    """alive(v), for a v known to belong to the arena a. Its index is below the
    capacity (which never shrinks), and a row past the last node has epoch 0
    or one no live handle has (src/arena.h): the epoch alone says it."""
    return a.epoch[v.index] == v.epoch


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
    raise MemoryError("the arena could not grow (out of memory, or more than 2**31 - 1 nodes or 2**32 - 1 edges)")


cdef int reclaim(Arena arena) except -1:
    """Reclaim the nodes above arena.pinned that no handle reaches, directly or
    through live parents (src/reclaim.c arena_reclaim), and re-point the handles
    of the nodes that moved at their new rows. Not while a step is recorded: a
    recording notes node indices. Returns the number of nodes reclaimed."""
    cdef arena_t *a = &arena.a
    cdef int64_t moved, i
    if arena.recording or arena.pinned >= a.n_nodes:
        return 0
    cdef int64_t freed = arena_reclaim(a, arena.pinned, &moved)
    i = arena_next_held(a, moved)
    while i < a.n_nodes:
        (<Value>a.held[i]).index = <node_t>i
        i = arena_next_held(a, i + 1)
    arena.reclaimed += freed
    if freed > 0:
        arena.moves += 1
    return freed


cdef inline int make_room(Arena arena, int64_t nodes, int64_t edges) except -1:
    """Before appending up to nodes nodes with edges edges: when the columns are
    full, reclaim first, and grow only if that left less than half of them free.
    Called before an operation reads the node indices it appends with (they may
    move). On return there is room, or MemoryError was raised."""
    if has_room(&arena.a, nodes, edges):
        return 0
    return make_room_when_full(arena, nodes, edges)


cdef inline bint has_room(arena_t *a, int64_t nodes, int64_t edges) noexcept:
    return a.n_nodes + nodes <= a.cap_nodes and a.n_edges + edges <= a.cap_edges


cdef int make_room_when_full(Arena arena, int64_t nodes, int64_t edges) except -1:
    cdef arena_t *a = &arena.a
    cdef int64_t n = a.n_nodes + nodes, e = a.n_edges + edges  # the graph as appended, before reclaiming
    reclaim(arena)
    if 2 * (a.n_nodes + nodes) > a.cap_nodes:
        arena_grow_nodes(a, 2 * (a.n_nodes + nodes))  # on failure, the exact room below
    if 2 * (a.n_edges + edges) > a.cap_edges:
        arena_grow_edges(a, 2 * (a.n_edges + edges))
    # the edge columns hold as many edges per node as the graph appends (~1.9
    # for a GPT step), so both run out together: a reclaim sweeps every node
    # row, and edges running out while the node columns are half empty would
    # reclaim twice as often
    if e * a.cap_nodes > n * a.cap_edges:
        arena_grow_edges(a, e * a.cap_nodes // n)  # on failure, the room below
    if arena_reserve(a, nodes, edges) != OP_OK:
        raise_nomem()
    return 0


cdef int raise_status(status_t s) except -1:
    if s == OP_ZERODIV:
        raise ZeroDivisionError("0.0 cannot be raised to a negative power")
    if s == OP_DOMAIN:
        raise ValueError("math domain error")
    if s == OP_RANGE:
        raise OverflowError("math range error")  # as math.exp says it
    if s == OP_POW_RANGE:
        raise OverflowError(errno.ERANGE, os.strerror(errno.ERANGE))  # as float ** says it
    raise_nomem()


include "_handles.pxi"
include "_arena.pxi"
include "_value.pxi"
include "_slots.pxi"
include "_fields.pxi"
include "_dot.pxi"
include "_rows.pxi"
include "_adam.pxi"
include "_tape.pxi"


# ---------------------------------------------------------------- the module's engine API

_default_arena = Arena()


def default_arena():
    """The arena that Value(x) and graph() use."""
    return _default_arena


def graph():
    """Scope one graph in the default arena: its nodes are released on exit."""
    return GraphScope(_default_arena)
