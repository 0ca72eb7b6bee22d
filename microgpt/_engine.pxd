# The compiled engine's contract with C: the headers of src/, declared for
# Cython, and the fields of the three Python types over them: Arena (owns one
# arena_t), Value (a handle into an arena), Tape (owns one recorded step).
# Sizes and layouts are C's (src/arena.h, src/tape/tape.h); nothing here repeats them.
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from cpython.ref cimport PyObject

cdef extern from "ops.h":
    ctypedef enum op_t:
        OP_LEAF, OP_CONST, OP_ADD, OP_MUL, OP_POW, OP_LOG, OP_EXP, OP_RELU, OP_CUSTOM, OP_DOT

    ctypedef enum status_t:
        OP_OK, OP_NOMEM, OP_ZERODIV, OP_DOMAIN, OP_RANGE, OP_TOO_LARGE, OP_POW_RANGE

    status_t op_add(double a, double b, double *out, double *lg) nogil
    status_t op_mul(double a, double b, double *out, double *lg) nogil
    status_t op_pow(double a, double k, double km1, double *out, double *lg) nogil
    status_t op_log(double a, double *out, double *lg) nogil
    status_t op_exp(double a, double *out, double *lg) nogil
    status_t op_relu(double a, double *out, double *lg) nogil

cdef extern from "arena.h":
    ctypedef int32_t node_t                 # a node's index in its arena
    ctypedef uint64_t epoch_t               # counts the arena's releases

    # the fields the glue reads (Cython needs them named; the columns' one table,
    # with every column's type and meaning, is ARENA_NODE_COLUMNS / ARENA_EDGE_COLUMNS)
    ctypedef struct arena_t:
        double *data                        # forward value          (per node)
        double *grad                        # accumulated gradient   (per node)
        uint8_t *op                         # op_t                   (per node)
        uint8_t *tag                        # TAG_* int tags         (per node)
        epoch_t *epoch                      # epoch at creation      (per node)
        void **held                         # its live handle or NULL (per node)
        uint32_t *child_start               # node i's edges: [child_start[i], child_start[i+1])
        int64_t n_nodes, cap_nodes
        node_t *child                       # the child's index      (per edge)
        double *local_grad                  # d(node)/d(child)       (per edge)
        uint8_t *lg_int                     # the local grad is an int (per edge)
        int64_t n_edges, cap_edges
        epoch_t cur_epoch

    enum:
        TAG_DATA_INT, TAG_GRAD_INT, TAG_K_INT, TAG_NO_BACKWARD, TAG_ROW_DOT
    void arena_tag(arena_t *a, int64_t i, int op, int k_int) nogil
    size_t arena_node_bytes() nogil
    size_t arena_edge_bytes() nogil
    int arena_column(const arena_t *a, const char *name, const void **rows, int64_t *n, char *code,
                     size_t *size) nogil
    const char *arena_column_names() nogil
    int arena_init(arena_t *a) nogil
    void arena_free(arena_t *a) nogil
    void arena_release(arena_t *a, int64_t mark) nogil
    int64_t arena_reclaim(arena_t *a, int64_t start, int64_t *moved) nogil
    int64_t arena_pop(arena_t *a, int64_t floor, int64_t least) nogil
    int64_t arena_next_held(const arena_t *a, int64_t i) nogil
    int arena_grow_nodes(arena_t *a, int64_t need) nogil
    int arena_grow_edges(arena_t *a, int64_t need) nogil
    int64_t arena_backward(arena_t *a, node_t root) nogil
    status_t arena_replay(arena_t *a, int64_t start, int *custom) nogil
    int64_t arena_adam(arena_t *a, const node_t *idx, int one_block, int64_t n, double *m, double *v,
                       double lr_t, double beta1, double beta2, double eps, double t,
                       status_t *status) nogil
    double adam_square(double g) nogil
    double adam_sqrt(double x) nogil
    int adam_lanes(int cap) nogil
    node_t arena_leaf(arena_t *a, uint8_t op, double x) nogil
    int arena_reserve(arena_t *a, int64_t nodes, int64_t edges) nogil
    node_t arena_push_const(arena_t *a, double c, int is_int) nogil
    node_t arena_push_binary(arena_t *a, int op, node_t x, node_t y) nogil
    node_t arena_push_dot(arena_t *a, int64_t n, int row) nogil
    node_t arena_dot_operand(const arena_t *a, int64_t i, int64_t k) nogil
    node_t arena_node(arena_t *a, uint8_t op, double x, double operand,
                      int n, const node_t *c, const double *lg) nogil

cdef extern from "tape/tape.h":
    ctypedef struct tape_t:
        pass

    ctypedef struct tape_counts_t:
        int64_t nodes, kept_nodes, forward, backward, pulls
        int64_t forward_side_by_side, pulls_side_by_side, pulls_by_matrix_rows, other_param_reads
        int64_t forward_runs, forward_in_runs, forward_strided, pulls_in_lanes, pulls_strided, pulls_single_runs, vectors_paired, vectors_by_eight
        int64_t forward_records, forward_by_steps, forward_scaled, matrix_panels, pulls_single_chained, weight_blocks_paired, short_vectors, vectors_shared_list, vectors_side_by_side, attention_rows, shifted_in_runs, values_from_rows, attention_rows_lean, attention_rows_stepped, keys_from_rows, logits_unwritten
        int64_t backward_steps, pulls_stepped
        int64_t weight_vectors_reused

    ctypedef struct record_t:
        const node_t *params
        int32_t n_params
        int64_t rec_start
        int32_t n_pos
        const int64_t *pos_end
        const node_t *loss_node
        node_t root
        int32_t n_cand
        const node_t *cand
        const node_t *logit
        const int32_t *tokens
        int32_t table_slot0, table_rows, table_cols
        int64_t n_derived
        const node_t *derived_node
        const double *derived_sign
        const int64_t *src_start
        const node_t *src
        int32_t consume
        int32_t verify_shifts

    tape_t *tape_build(arena_t *a, const record_t *r, const char **why) nogil
    void tape_free(tape_t *t) nogil
    status_t tape_forward(tape_t *t, const arena_t *a, const node_t *params,
                          const int32_t *tokens, int32_t start, int32_t n) nogil
    int tape_backward(tape_t *t, arena_t *a, const node_t *params, const int32_t *tokens) nogil
    void tape_set_params_at(tape_t *t, int64_t at) nogil
    int tape_params_in_one_block(const tape_t *t) nogil
    int32_t tape_positions(const tape_t *t) nogil
    int32_t tape_computed(const tape_t *t) nogil
    int32_t tape_token_limit(const tape_t *t) nogil
    double tape_loss(const tape_t *t) nogil
    double tape_prob(const tape_t *t, int32_t p, int32_t v) nogil
    int tape_logits_kept(const tape_t *t, int32_t p) nogil
    status_t tape_tempered_probs(const tape_t *t, int32_t p, double k, double *out) nogil
    tape_counts_t tape_counts(const tape_t *t, int32_t n) nogil
    size_t tape_bytes(const tape_t *t) nogil
    int tape_lanes() nogil


cdef class Arena:
    cdef arena_t a                          # the columns (C-owned, freed in __dealloc__)
    cdef int64_t open_scopes                # graph() scopes entered and not yet exited
    cdef bint recording                     # a step is being recorded (see Recording)
    cdef bint compact                       # Value.dot appends its sums compactly (OP_DOT): see set_compact
    cdef object spoiled                     # why the recording cannot be replayed, or None
    cdef list derived                       # (const node, sign, source nodes) noted while recording
    cdef int64_t pinned                     # nodes below it are never moved: a scope's or mark()'s mark
    cdef int64_t reclaimed                  # nodes reclaimed so far (for inspection)
    cdef int64_t unmade                     # nodes compact sums stood for and did not make (for counting)
    cdef int64_t unmade_edges               # ... and their edges
    cdef uint64_t moves                     # bumped whenever a live handle's node changes (a reclaim
                                            #   that moved nodes, Value.__init__ on a live handle):
                                            #   node indices cached before it must be taken again
    cdef unsigned long scope_thread         # the thread whose graph() scopes are open, if any


cdef class Value:
    cdef readonly Arena arena               # the owner; keeps the columns alive
    cdef node_t index                       # the node's row in every column
    cdef epoch_t epoch                      # must equal arena.a.epoch[index] to be valid


cdef class Rows:
    cdef Arena arena                        # where the Values live
    cdef tuple values                       # the Values (they keep their nodes live)
    cdef int64_t n
    cdef node_t *idx                        # (n,) each Value's node row, as last taken
    cdef epoch_t *epochs                    # (n,) ... and the epoch that node was made in
    cdef int64_t block_at                   # idx[i] == block_at + i for every i, or -1
    cdef bint taken                         # idx and epochs have been taken
    cdef uint64_t moves                     # arena.moves when they were taken
    cdef epoch_t checked_at                 # the arena's epoch when they were last checked

    cdef int refresh(self) except -1


cdef class Tape:
    cdef tape_t *t                          # the recorded step (C-owned, freed in __dealloc__)
    cdef Arena arena                        # where its parameters live
    cdef Rows params                        # the parameter Values, in the optimizer's order, and their rows
    cdef int32_t *tokens                    # the last forward's token ids (n_pos + 1)
    cdef bint forward_only                  # built without the backward's checks: no backward()
    cdef int32_t n_cand                     # candidates (probs) per position

    cdef int load_params(self) except -1
