# Recording a step and replaying it (src/tape/tape.h). A recording is an ordinary
# step of the per-operation path with three things noted on the side: where
# each position ends, the numbers derived from data (DerivedNumber), and
# anything that spoils it (a .data read the recorder was not told about, a
# derived number used in arithmetic it cannot follow). Included by _engine.pyx.


class ReplayRefused(Exception):
    """A recorded step that cannot be replayed exactly; the message says why."""


def _spoiling(method):
    def spoiled(self, *args):
        if args and isinstance(args[0], Value):
            return NotImplemented  # Value's own operator takes it (a constant leaf)
        spoil(self.arena, f"a number derived from data went through {method}, "
                          f"which a replay cannot follow")
        return getattr(float, method)(float(self), *args)
    spoiled.__name__ = method
    return spoiled


class DerivedNumber(float):
    """A float computed from data while a step is recorded (Value.max_data).

    It is the plain number to every reader; a replay knows where it came from
    (sign * max over source nodes) and recomputes it. Negation keeps that
    knowledge; other arithmetic on it spoils the recording (the step itself is
    still right: it runs on the per-operation path).
    """

    def __new__(cls, value, arena, sources, sign):
        self = float.__new__(cls, value)
        self.arena, self.sources, self.sign = arena, sources, sign
        return self

    def __neg__(self):
        return DerivedNumber(-float(self), self.arena, self.sources, -self.sign)

    for _m in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__",
               "__truediv__", "__rtruediv__", "__floordiv__", "__rfloordiv__", "__mod__",
               "__rmod__", "__pow__", "__rpow__", "__abs__", "__pos__", "__round__",
               "__trunc__", "__floor__", "__ceil__", "__int__"):
        locals()[_m] = _spoiling(_m)
    del _m


cdef void note_derived(Arena arena, node_t node, object number):
    """A DerivedNumber became the constant leaf node."""
    arena.derived.append((node, number.sign, number.sources))


def simd_lanes():
    """The widest SIMD lanes the tape's kernels take in this process: 'plain',
    'avx2' or 'avx512' (the processor's, or fewer as MICROGPT_SIMD says)."""
    return ("plain", "avx2", "avx512")[tape_lanes()]


def begin_recording(Arena arena not None, bint compact=False):
    """Start noting, on arena, what a replay of the step being built needs.
    compact: Value.dot appends each sum of floats as one OP_DOT node (its inner
    nodes not made; _dot.pxi), a graph only a tape is built from: the arena's
    backward refuses it."""
    if arena.recording:
        raise RuntimeError("this arena is already recording a step")
    arena.recording = True
    arena.compact = compact
    arena.spoiled = None
    arena.derived = []


def set_compact(Arena arena not None, bint compact):
    """Value.dot appends each sum of float products as one OP_DOT node (compact)
    or node by node, outside a recording (which sets its own): for a forward
    whose values only are read, such as a sampler's (the arena's backward
    refuses a compact node). Returns the setting it replaces."""
    if arena.recording:
        raise RuntimeError("a recording sets its own way of appending sums")
    was, arena.compact = arena.compact, compact
    return was


def end_recording(Arena arena not None):
    """Stop; returns (why the step cannot be replayed or None, derived numbers)."""
    arena.recording = False
    arena.compact = False
    derived, arena.derived = arena.derived, []
    return arena.spoiled, derived


cdef node_t node_of(Arena arena, object v) except -2:
    if type(v) is not Value or (<Value>v).arena is not arena:
        raise TypeError("expected a Value of the recording arena")
    check(<Value>v)
    return (<Value>v).index


cdef class Tape:
    """A recorded step of up to n_pos positions, replayed in C (src/tape/tape.h).

    ``forward(tokens)`` returns the mean loss over len(tokens) - 1 positions
    (None if an operation would raise: the caller then runs the model code,
    which raises as the reference does); ``backward()`` adds the parameters'
    gradients into the arena (False, adding nothing, if one is not finite).
    """

    def __dealloc__(self):
        tape_free(self.t)
        free(self.tokens)

    @property
    def n_pos(self):
        return tape_positions(self.t)

    @property
    def nbytes(self):
        return tape_bytes(self.t)

    def counts(self, int n):
        """What a replay of n positions runs: nodes, forward instructions,
        forward instructions run four (or more) sums at once, backward nodes, pulls
        (gradient terms) and parameter reads."""
        if not 1 <= n <= tape_positions(self.t):
            raise ValueError(f"the tape holds 1 to {tape_positions(self.t)} positions, not {n}")
        cdef tape_counts_t c = tape_counts(self.t, n)
        return dict(nodes=c.nodes, kept_nodes=c.kept_nodes, forward=c.forward,
                    forward_side_by_side=c.forward_side_by_side, backward=c.backward,
                    pulls=c.pulls, pulls_side_by_side=c.pulls_side_by_side,
                    pulls_by_matrix_rows=c.pulls_by_matrix_rows, other_param_reads=c.other_param_reads,
                    forward_runs=c.forward_runs, forward_in_runs=c.forward_in_runs, forward_strided=c.forward_strided,
                    pulls_in_lanes=c.pulls_in_lanes, pulls_strided=c.pulls_strided,
                    pulls_single_runs=c.pulls_single_runs, pulls_single_chained=c.pulls_single_chained,
                    vectors_paired=c.vectors_paired, vectors_by_eight=c.vectors_by_eight,
                    forward_records=c.forward_records, forward_by_steps=c.forward_by_steps, forward_scaled=c.forward_scaled,
                    matrix_panels=c.matrix_panels,
                    weight_blocks_paired=c.weight_blocks_paired, short_vectors=c.short_vectors,
                    weight_vectors_reused=c.weight_vectors_reused,
                    vectors_shared_list=c.vectors_shared_list, vectors_side_by_side=c.vectors_side_by_side,
                    attention_rows=c.attention_rows, shifted_in_runs=c.shifted_in_runs,
                    values_from_rows=c.values_from_rows, attention_rows_lean=c.attention_rows_lean,
                    attention_rows_stepped=c.attention_rows_stepped, keys_from_rows=c.keys_from_rows,
                    logits_unwritten=c.logits_unwritten,
                    backward_steps=c.backward_steps, pulls_stepped=c.pulls_stepped,
                    params_in_one_block=bool(tape_params_in_one_block(self.t)))

    cdef int load_params(self) except -1:
        """The parameters' rows now (Rows.refresh: raises if one was released),
        and whether they are one block of nodes (the replay copies them as one)."""
        self.params.refresh()
        tape_set_params_at(self.t, self.params.block_at)
        return 0

    def forward(self, tokens):
        """The forward of every position of tokens (len(tokens) - 1 of them);
        the loss, or None if an operation would raise."""
        return self.forward_from(tokens, 0)

    def forward_from(self, tokens, int start):
        """The forward of positions start .. len(tokens) - 2 only: the positions
        before start as the last forward left them (a sampler's cache, grown a
        position per call; tokens[:start + 1] must be the tokens they were
        computed with). Returns the loss over every position, or None if an
        operation would raise."""
        cdef int64_t n = len(tokens) - 1, p
        if not 1 <= n <= tape_positions(self.t):
            raise ValueError(f"the tape holds 1 to {tape_positions(self.t)} positions, not {n}")
        if not 0 <= start < n or (start > 0 and tape_computed(self.t) < start):
            raise ValueError(f"positions from {start} need the ones before it computed")
        for p in range(start, n + 1):
            tok = tokens[p]
            if not 0 <= tok < tape_token_limit(self.t):
                raise ValueError(f"token id {tok} is outside the recorded vocabulary")
            self.tokens[p] = tok
        self.load_params()
        if tape_forward(self.t, &self.arena.a, self.params.idx, self.tokens, <int32_t>start,
                        <int32_t>n) != OP_OK:
            return None  # (and no position counts as computed)
        return tape_loss(self.t)

    def probs(self, int p):
        """The candidates' values (probs) at position p after a forward over it."""
        if not 0 <= p < tape_computed(self.t):
            raise ValueError(f"position {p} has not been computed")
        cdef int32_t v
        return [tape_prob(self.t, p, v) for v in range(self.n_cand)]

    @property
    def has_logits(self):
        """Whether a sampler can read this tape's logits at every position (tempered_probs)."""
        return all(tape_logits_kept(self.t, p) for p in range(tape_positions(self.t)))

    def tempered_probs(self, int p, double k):
        """The sampler's probabilities at position p after a forward over it:
        softmax(logits / temperature) as the model code computes it (k =
        temperature ** -1); None if one of its operations would raise."""
        if not 0 <= p < tape_computed(self.t) or not tape_logits_kept(self.t, p):
            raise ValueError(f"position {p} has not been computed, or its logits are not kept")
        cdef double *out = <double *>malloc(self.n_cand * sizeof(double))
        if out == NULL:
            raise MemoryError()
        try:
            if tape_tempered_probs(self.t, p, k, out) != OP_OK:
                return None
            return [out[v] for v in range(self.n_cand)]
        finally:
            free(out)

    def backward(self):
        if self.forward_only:
            raise RuntimeError("this tape was built for forward passes only (a sampler's)")
        if tape_computed(self.t) == 0:
            raise RuntimeError("backward() of a tape needs a forward() first")
        self.load_params()  # (nothing to do unless the arena released or moved since forward)
        return bool(tape_backward(self.t, &self.arena.a, self.params.idx, self.tokens))


def build_tape(Arena arena not None, list params, int64_t rec_start, list pos_end, list losses,
               Value root not None, list cands, list logits, list tokens, int table_slot0,
               int table_rows, int table_cols, list derived, int verify_shifts=0, bint consume=False):
    """A Tape of the step just recorded in arena (its nodes still alive), or
    ReplayRefused. cands and logits: per position, the Values of probs and of
    logits; derived: as end_recording returned it. verify_shifts: how many other
    targets the backward order is checked for (0: all; -1: none, and the tape
    can only run forward). consume: the build rewrites the recorded nodes' edges
    instead of copying them (the caller releases those nodes after, built or
    refused, and reads none of them)."""
    cdef int64_t N = len(pos_end), V = len(cands[0]) if cands else 0, P = len(params), k, j, s
    cdef int64_t n_src = sum(len(d[2]) for d in derived), D = len(derived)
    if N == 0 or len(losses) != N or len(cands) != N or len(logits) != N or len(tokens) != N + 1:
        raise ValueError("a recording needs one end, loss, probs and logits per position")
    cdef Tape tape = Tape.__new__(Tape)
    tape.arena = arena
    tape.forward_only = verify_shifts < 0
    tape.n_cand = <int32_t>V
    tape.params = Rows(arena, params)
    cdef node_t *ints = <node_t *>malloc((P + N + 2 * N * V + D + n_src + 1) * sizeof(node_t))
    cdef int64_t *longs = <int64_t *>malloc((N + D + 1) * sizeof(int64_t))
    cdef int32_t *toks = <int32_t *>malloc((N + 1) * sizeof(int32_t))
    cdef double *signs = <double *>malloc((D + 1) * sizeof(double))
    tape.tokens = <int32_t *>malloc((N + 1) * sizeof(int32_t))
    if not (ints and longs and toks and signs and tape.tokens):
        free(ints); free(longs); free(toks); free(signs)
        raise MemoryError()
    cdef record_t r
    cdef const char *why = NULL
    try:
        for k in range(P):
            ints[k] = node_of(arena, params[k])
        for k in range(N):
            longs[k] = pos_end[k]
            ints[P + k] = node_of(arena, losses[k])
            if len(cands[k]) != V or len(logits[k]) != V:
                raise ValueError("every position needs the same number of probs and logits")
            for j in range(V):
                ints[P + N + k * V + j] = node_of(arena, cands[k][j])
                ints[P + N + N * V + k * V + j] = node_of(arena, logits[k][j])
        for k in range(N + 1):
            toks[k] = tokens[k]
        s = 0
        for k in range(D):
            node, sign, sources = derived[k]
            ints[P + N + 2 * N * V + k] = node
            signs[k] = sign
            longs[N + k] = s
            for src in sources:
                ints[P + N + 2 * N * V + D + s] = src
                s += 1
        longs[N + D] = s
        r.params = ints
        r.n_params = <int32_t>P
        r.rec_start = rec_start
        r.n_pos = <int32_t>N
        r.pos_end = longs
        r.loss_node = ints + P
        r.root = node_of(arena, root)
        r.n_cand = <int32_t>V
        r.cand = ints + P + N
        r.logit = ints + P + N + N * V
        r.tokens = toks
        r.table_slot0, r.table_rows, r.table_cols = table_slot0, table_rows, table_cols
        r.n_derived = D
        r.derived_node = ints + P + N + 2 * N * V
        r.derived_sign = signs
        r.src_start = longs + N
        r.src = ints + P + N + 2 * N * V + D
        r.verify_shifts = verify_shifts
        r.consume = consume
        tape.t = tape_build(&arena.a, &r, &why)
    finally:
        free(ints); free(longs); free(toks); free(signs)
    if tape.t == NULL:
        if why != NULL and why == b"out of memory":
            raise MemoryError("out of memory building a tape")
        raise ReplayRefused((<bytes>why).decode() if why != NULL else "unknown")
    return tape
