# The compiled engine's memory layout. The C side (src/arena.h) owns the
# columns; this file declares them for Cython and lays out the two Python
# types: Arena (owns one arena_t) and Value (a handle into it).
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t

cdef extern from "arena.h":
    ctypedef int32_t node_t                 # a node's index in its arena
    ctypedef uint64_t epoch_t               # counts the arena's releases

    ctypedef enum op_t:
        OP_LEAF, OP_CONST, OP_ADD, OP_MUL, OP_POW, OP_LOG, OP_EXP, OP_RELU, OP_COUNT

    ctypedef enum status_t:
        ARENA_OK, ARENA_NOMEM, ARENA_ZERODIV, ARENA_DOMAIN, ARENA_RANGE, ARENA_TOO_LARGE

    ctypedef struct arena_t:
        # node columns, one entry per node, n_nodes used of cap_nodes
        double *data                        # forward value
        double *grad                        # accumulated gradient
        double *operand                     # exponent k of OP_POW, else 0
        uint8_t *op                         # op_t
        epoch_t *epoch                      # arena epoch at creation (stale-handle check)
        int64_t *child_start                # node i's edges: [child_start[i], child_start[i+1])
        int64_t n_nodes, cap_nodes
        # edge columns, children in the order the operation lists them
        node_t *child                       # the child's index
        double *local_grad                  # d(node)/d(child)
        int64_t n_edges, cap_edges
        node_t *topo                        # last depth-first post-order walked
        epoch_t cur_epoch

    int arena_init(arena_t *a) nogil
    void arena_free(arena_t *a) nogil
    void arena_release(arena_t *a, int64_t mark) nogil
    status_t arena_pow(double x, double k, double *out) nogil
    int64_t arena_backward(arena_t *a, node_t root) nogil
    int64_t arena_topo(arena_t *a, node_t root) nogil
    void arena_backward_by_index(arena_t *a, node_t root) nogil
    status_t arena_replay(arena_t *a, int64_t start) nogil
    int64_t arena_adam(arena_t *a, const node_t *idx, int64_t n, double *m, double *v,
                       double lr_t, double beta1, double beta2, double eps, int64_t step,
                       status_t *status) nogil
    node_t arena_leaf(arena_t *a, uint8_t op, double x) nogil
    node_t arena_unary(arena_t *a, uint8_t op, double x, double operand, node_t c0, double g0) nogil
    node_t arena_binary(arena_t *a, uint8_t op, double x,
                        node_t c0, double g0, node_t c1, double g1) nogil


cdef class Arena:
    cdef arena_t a                          # the columns (C-owned, freed in __dealloc__)
    cdef int64_t open_scopes                # graph() scopes entered and not yet exited


cdef class Value:
    cdef readonly Arena arena               # the owner; keeps the columns alive
    cdef node_t index                       # the node's row in every column
    cdef epoch_t epoch                      # must equal arena.a.epoch[index] to be valid
