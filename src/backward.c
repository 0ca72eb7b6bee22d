/* backward.c: the reference's backward order, walked without recursion. */
#include "arena.h"

/* Depth-first post-order from root, children in order, each node once: the
 * reference's recursive build_topo with an explicit stack, leaves left out
 * (backward does nothing at a node without children; the root is always
 * written). A frame is (node, next edge); a node is marked when pushed, as the
 * recursion marks it on entry. */
int64_t arena_topo(arena_t *a, node_t root) {
    assert(root >= 0 && root < a->n_nodes);
    stamp_t stamp = arena_stamp(a);
    const edge_t *start = a->child_start;
    const node_t *child = a->child;
    stamp_t *visit = a->visit;
    node_t *out = a->topo, *snode = a->stack_node;
    int64_t *sedge = a->stack_edge;
    int64_t top = 0;

    /* v is the node being scanned, its next edge e of [.., end); the stack
     * holds the ancestors being scanned, each with the edge to resume at */
    node_t v = root;
    int64_t e = start[root], end = start[root + 1];
    visit[root] = stamp;
    for (;;) {
        while (e < end && ARENA_LIKELY(visit[child[e]] == stamp)) ++e;  /* reached already: about half the edges */
        if (e < end) {
            node_t c = child[e++];
            assert(c >= 0 && c < v);  /* children come before their parent */
            visit[c] = stamp;
            int64_t c_start = start[c], c_end = start[(int64_t)c + 1];  /* 64-bit + 1: an int32 one is its own add and sign extension (-fwrapv) */
            if (c_start == c_end) continue;  /* a leaf: backward has nothing to do there */
            snode[top] = v;  /* descend into c; come back to v's edge e */
            sedge[top] = e;
            ++top;
            v = c;
            e = c_start;
            end = c_end;
            continue;
        }
        *out++ = v;  /* every child done: post-order */
        if (top == 0) break;
        --top;
        v = snode[top];
        e = sedge[top];
        end = start[(int64_t)v + 1];
    }
    return out - a->topo;
}

int64_t arena_backward(arena_t *a, node_t root) {
    int64_t n = arena_topo(a, root);
    const edge_t *start = a->child_start;
    const node_t *child = a->child;
    const double *lg = a->local_grad;
    double *grad = a->grad;
    const node_t *topo = a->topo;

    uint8_t *tag = a->tag;
    const uint8_t *lg_int = a->lg_int;

    if (a->compact_made)  /* a compact sum (arena.h) is refused before any gradient is written */
        for (int64_t t = 0; t < n; ++t)
            if (tag[topo[t]] & TAG_NO_BACKWARD) return -2;
    grad[root] = 1.0;  /* the reference's self.grad = 1: an int */
    tag[root] |= TAG_GRAD_INT;
    for (int64_t t = n - 1; t >= 0; --t) {
        node_t v = topo[t];
        double gv = grad[v];
        uint8_t tv = tag[v];
        int64_t e = start[v];
        if ((tv & (TAG_GRAD_INT | TAG_TWO_EDGES)) == TAG_TWO_EDGES) {
            /* float * anything is a float, an add's or a multiply's two edges: most nodes */
            node_t c0 = child[e], c1 = child[e + 1];
            tag[c0] &= (uint8_t)~TAG_GRAD_INT;  /* int + float is a float */
            grad[c0] += lg[e] * gv;
            tag[c1] &= (uint8_t)~TAG_GRAD_INT;
            grad[c1] += lg[e + 1] * gv;  /* after c0's: c1 may be c0 (x * x) */
            continue;
        }
        int64_t end = start[(int64_t)v + 1];  /* read once: the tag writes below are bytes */
        if (!(tv & TAG_GRAD_INT)) {
            for (; e < end; ++e) {
                node_t c = child[e];
                tag[c] &= (uint8_t)~TAG_GRAD_INT;
                grad[c] += lg[e] * gv;
            }
            continue;
        }
        for (; e < end; ++e) {
            node_t c = child[e];
            double d = lg[e] * gv;
            if (lg_int[e]) {
                if (d == 0.0) d = 0.0;  /* an int product is never -0.0 */
            } else {
                tag[c] &= (uint8_t)~TAG_GRAD_INT;
            }
            grad[c] += d;
        }
    }
    return n;
}
