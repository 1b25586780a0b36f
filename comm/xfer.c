/* The NCCL data plane's host-side plans (xfer.h): device selection, the
 * per-round send/receive lists, the timeout state machine, the meaning of
 * NCCL results and the transport NCCL chose. Plain C, no CUDA. */
#include "xfer.h"
#include "comm.h"
#include "util/util.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cuda_xfer_local_rank(const char *(*get)(const char *), int *local, const char **from, char *why, size_t cap)
{
    static const char *vars[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = get(vars[i]);
        if (!v)
            continue;
        char *end = NULL;
        long x = strtol(v, &end, 10);
        if (!*v || *end || x < 0 || x > 1 << 20 || !isdigit((unsigned char)v[0])) {
            snprintf(why, cap, "%s = '%.40s' is not a local rank (a non-negative integer); the launcher set it, "
                     "or unset it to let MPI pick", vars[i], v);
            return -1;
        }
        *local = (int)x;
        *from = vars[i];
        return 1;
    }
    return 0;
}

int cuda_xfer_pick_device(int local, int ndev, char *why, size_t cap)
{
    if (ndev < 1) {
        snprintf(why, cap, "no CUDA device visible to this rank");
        return -1;
    }
    if (ndev == 1)
        return 0;
    if (local < ndev)
        return local;
    snprintf(why, cap, "local rank %d but only %d GPUs on this node: launch one rank per GPU (mpirun -np "
             "nodes x GPUs, --map-by ppr:%d:node)", local, ndev, ndev);
    return -1;
}

int cuda_xfer_ag_round(size_t n, int me, int W, size_t chunk, size_t k, cuda_xfer_op *ops)
{
    int nops = 0;
    size_t off, cnt;
    comm_piece(n, me, W, chunk, k, &off, &cnt);
    for (int r = 0; r < W; r++) {
        if (r == me)
            continue;
        cuda_xfer_op o = {r, off, cnt, 0, 0};
        comm_piece(n, r, W, chunk, k, &o.recv_off, &o.recv_count);
        if (o.send_count || o.recv_count)
            ops[nops++] = o;
    }
    return nops;
}

int cuda_xfer_ag_span_round(size_t n, size_t a, size_t b, int me, int W, size_t chunk, size_t k, cuda_xfer_op *ops)
{
    int nops = 0;
    size_t off, cnt;
    comm_span_piece(n, a, b, me, W, chunk, k, &off, &cnt);
    off -= a;
    for (int r = 0; r < W; r++) {
        if (r == me)
            continue;
        cuda_xfer_op o = {r, off, cnt, 0, 0};
        comm_span_piece(n, a, b, r, W, chunk, k, &o.recv_off, &o.recv_count);
        o.recv_off -= a;
        if (o.send_count || o.recv_count)
            ops[nops++] = o;
    }
    return nops;
}

size_t cuda_xfer_chain_rounds(size_t n, size_t a, size_t b, int W, size_t chunk)
{
    size_t J = comm_chain_chunks(n, a, b, W, chunk);
    return W > 1 && J > 0 ? J + (size_t)W - 1 : 0;
}

/* Chunk t - d when 0 <= t - d < J: its offset, count and owner; 0 if none. */
static int cuda_xfer_chunk_at(size_t n, size_t a, size_t b, int W, size_t chunk, size_t t, size_t d, size_t *off,
                              size_t *count, int *owner)
{
    if (t < d || t - d >= comm_chain_chunks(n, a, b, W, chunk))
        return 0;
    comm_chain_chunk(n, a, b, W, chunk, t - d, off, count, owner);
    return 1;
}

void cuda_xfer_chain_round_plan(size_t n, size_t a, size_t b, int me, int W, size_t chunk, size_t t,
                                cuda_xfer_chain_round *out)
{
    const cuda_xfer_msg none = {-1, -1, 0, 0};
    size_t off, cnt;
    int owner;
    out->send = out->recv = out->fin = none;
    out->add = 0;
    if (W < 2)
        return;
    /* send chunk t - me: rank 0 its own part, the others the partial sum
     * (finished at W-1: to the owner, unless W-1 owns it and wrote it) */
    if (cuda_xfer_chunk_at(n, a, b, W, chunk, t, (size_t)me, &off, &cnt, &owner)) {
        int slot = me == 0 ? -1 : (int)((t - (size_t)me) % CUDA_XFER_CHAIN_SLOTS);
        int to = me < W - 1 ? me + 1 : owner != me ? owner : -1;
        if (to >= 0)
            out->send = (cuda_xfer_msg){to, slot, off, cnt};
    }
    /* receive chunk t - me + 1 from me - 1, and add my part to it */
    if (me > 0 && cuda_xfer_chunk_at(n, a, b, W, chunk, t + 1, (size_t)me, &off, &cnt, &owner)) {
        int slot = (int)((t + 1 - (size_t)me) % CUDA_XFER_CHAIN_SLOTS);
        out->recv = (cuda_xfer_msg){me - 1, slot, off, cnt};
        out->add = 1;
        out->add_slot = slot;
        out->add_into_vector = me == W - 1 && owner == me;
        out->add_off = off;
        out->add_count = cnt;
    }
    /* the sum rank W-1 sends this round (chunk t - (W-1)), if it is mine */
    if (me < W - 1 && cuda_xfer_chunk_at(n, a, b, W, chunk, t, (size_t)(W - 1), &off, &cnt, &owner) && owner == me)
        out->fin = (cuda_xfer_msg){W - 1, -1, off, cnt};
}

void cuda_xfer_wait_begin(cuda_xfer_wait *w, double now, double timeout)
{
    w->start = now;
    w->timeout = timeout > 0 ? timeout : 0;
    w->state = CUDA_XW_WAITING;
    w->err = CUDA_NCCL_SUCCESS;
}

int cuda_xfer_wait_poll(cuda_xfer_wait *w, double now, int async, int done)
{
    if (w->state != CUDA_XW_WAITING)
        return w->state;
    if (async != CUDA_NCCL_SUCCESS && async != CUDA_NCCL_IN_PROGRESS) {
        w->err = async;
        w->state = CUDA_XW_FAILED;
    } else if (done) {
        w->state = CUDA_XW_DONE;
    } else if (w->timeout > 0 && now - w->start > w->timeout) {
        w->state = CUDA_XW_TIMED_OUT;
    }
    return w->state;
}

int cuda_xfer_status(int r)
{
    switch (r) {
    case CUDA_NCCL_SUCCESS:
        return ST_OK;
    case CUDA_NCCL_SYSTEM:
    case CUDA_NCCL_REMOTE:
        return ST_WATCHDOG;
    default:
        return ST_SOFTWARE;
    }
}

const char *cuda_xfer_advice(int r)
{
    switch (r) {
    case CUDA_NCCL_SYSTEM:
    case CUDA_NCCL_REMOTE:
        return "a peer or the network failed; exiting 86 so the job is restarted";
    case CUDA_NCCL_UNHANDLED_CUDA:
        return "a CUDA error inside NCCL; check the GPU (nvidia-smi) and the driver";
    default:
        return "a bug in spotrain's use of NCCL; please report it with NCCL_DEBUG=INFO output";
    }
}

/* The word after "via " up to the end of the line: "P2P/CUMEM/read",
 * "NET/AWS Libfabric/0/GDRDMA", "SHM/direct/direct". */
static void cuda_xfer_count(cuda_xfer_transports *t, const char *via, size_t len)
{
    t->channels++;
    if (len >= 3 && !strncmp(via, "P2P", 3))
        t->p2p++;
    else if (len >= 3 && !strncmp(via, "SHM", 3))
        t->shm++;
    else if (len >= 7 && !strncmp(via, "NET/IB/", 7))
        t->ib++;
    else if (len >= 10 && !strncmp(via, "NET/Socket", 10))
        t->socket++;
    else if (len > 4 && !strncmp(via, "NET/", 4)) {
        size_t e = 4;
        while (e < len && via[e] != '/')
            e++;
        t->other_net++;
        snprintf(t->other_name, sizeof t->other_name, "%.*s", (int)(e - 4 < 31 ? e - 4 : 31), via + 4);
    } else {
        t->channels--;   /* CollNet and future kinds: not a peer connection we count */
    }
}

void cuda_xfer_transport_scan(const char *text, size_t len, cuda_xfer_transports *t)
{
    memset(t, 0, sizeof *t);
    size_t i = 0;
    while (i < len) {
        size_t e = i;
        while (e < len && text[e] != '\n')
            e++;
        const char *line = text + i;
        size_t ll = e - i;
        const char *nccl = memmem(line, ll, "NCCL INFO ", 10);
        if (nccl) {
            size_t at = (size_t)(nccl - line) + 10;
            const char *via = memmem(line + at, ll - at, " via ", 5);
            const char *net = memmem(line + at, ll - at, "Using network ", 14);
            if (via && memmem(line + at, ll - at, "Channel ", 8)) {
                size_t v = (size_t)(via - line) + 5;
                cuda_xfer_count(t, line + v, ll - v);
            } else if (net) {
                size_t v = (size_t)(net - line) + 14;
                snprintf(t->network, sizeof t->network, "%.*s", (int)(ll - v < 31 ? ll - v : 31), line + v);
            }
        }
        i = e + 1;
    }
}

/* Appends ", WHAT (N connections)" (no comma first) when n > 0. */
static size_t cuda_xfer_add(char *out, size_t cap, size_t at, const char *what, int n)
{
    if (n <= 0 || at >= cap)
        return at;
    int w = snprintf(out + at, cap - at, "%s%s (%d connection%s)", at ? ", " : "", what, n, n == 1 ? "" : "s");
    return w > 0 ? at + (size_t)w : at;
}

int cuda_xfer_transport_line(const cuda_xfer_transports *t, char *out, size_t cap)
{
    char other[64];
    size_t at = 0;
    out[0] = 0;
    if (t->channels == 0) {
        snprintf(out, cap, "no peer connections seen (one rank, or NCCL's INFO log was not available)");
        return 0;
    }
    if (t->socket > 0) {
        int w = snprintf(out, cap, "fell back to sockets (NET/Socket: %d connection%s): expect a small fraction "
                         "of InfiniBand/EFA bandwidth; check that NCCL finds the fabric (NCCL_IB_HCA, the "
                         "aws-ofi-nccl plugin, NCCL_SOCKET_IFNAME)", t->socket, t->socket == 1 ? "" : "s");
        at = w > 0 ? (size_t)w : 0;
    }
    at = cuda_xfer_add(out, cap, at, "NET/IB between nodes", t->ib);
    snprintf(other, sizeof other, "NET/%s between nodes", t->other_name);
    at = cuda_xfer_add(out, cap, at, other, t->other_net);
    at = cuda_xfer_add(out, cap, at, "P2P (NVLink or PCIe) inside nodes", t->p2p);
    cuda_xfer_add(out, cap, at, "shared memory inside nodes", t->shm);
    return t->socket > 0;
}
