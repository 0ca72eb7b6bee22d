/* tape_internal.h: what the tape's three files share (not part of the API).
 *   tape_build.c  builds a tape from a recorded step, checking that it can be
 *                 replayed exactly (the backward order for every target);
 *   tape_pack.c   turns the checked node lists into the replay's program;
 *   tape.c        replays it: forward, backward. */
#ifndef MICROGPT_TAPE_INTERNAL_H
#define MICROGPT_TAPE_INTERNAL_H

#include "tape.h"

#include <limits.h>
#include <string.h>

#define NEW(p, n) ((p) = calloc((size_t)((n) > 0 ? (n) : 1), sizeof *(p)))

/* How the forward computes a node. */
enum { F_ADD, F_MUL, F_ONE_CHILD, F_DOT, F_DERIVED, F_COPY, F_DOT4, F_MV4 };

/* Side by side. A sum in a register waits for its last addition (a few cycles)
 * before the next; four independent sums of the same length, each added in
 * its own order, fill those cycles. The forward runs four chains of one
 * length at once (the rows of one matrix) where none reads another's result;
 * the backward sums four nodes' pulls at once where none is a parent of
 * another. Each sum is the same sequence of additions as alone. */
#define SIDE 4
#define MAX_LANES 1024  /* the longest vector summed as a run, or read by a matrix's rows (its
                         * sums, or a gathered copy of it, live on the stack) */

/* tape_pack.c: the replay's program from the builder's checked node lists
 * (kinds, pull lists in the reference's order, parameter reads); frees those
 * lists and keeps only the nodes a replay reads. NULL, or why not. */
const char *tape_pack(tape_t *t);

#endif
