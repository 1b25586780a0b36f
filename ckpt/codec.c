/* Chunk codecs for checkpoint shards: none, zstd, shuffle-zstd (byte planes
 * of the fp32 words, then one zstd frame) and planes-zstd (exponent byte
 * isolated, each plane compressed alone or kept raw), plus the checksum. */
#include "ckpt_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>
#define ZSTD_STATIC_LINKING_ONLY   /* ZSTD_estimateCCtxSize_usingCParams: the zstd we link statically */
#include <zstd.h>

static const char *ckpt_codec_names[CKPT_N_CODECS] = {"none", "zstd", "shuffle-zstd", "planes-zstd"};

const char *ckpt_codec_name(int codec)
{
    return codec >= 0 && codec < CKPT_N_CODECS ? ckpt_codec_names[codec] : "unknown";
}

int ckpt_codec_from_name(const char *name)
{
    for (int i = 0; i < CKPT_N_CODECS; i++)
        if (name && strcmp(name, ckpt_codec_names[i]) == 0)
            return i;
    return -1;
}

const char *ckpt_array_name(int array)
{
    static const char *names[CKPT_N_ARRAYS] = {"params", "adam_m", "adam_v"};
    return array >= 0 && array < CKPT_N_ARRAYS ? names[array] : "unknown";
}

uint64_t ckpt_hash(const void *p, size_t n) { return XXH3_64bits(p, n); }

/* planes-zstd stores a 4 x u32 header: plane length, top bit = kept raw. */
#define CKPT_PLANE_RAW 0x80000000u
#define CKPT_PLANE_HDR 16
#define CKPT_PLANE_PROBE ((size_t)64 << 10)

size_t ckpt_codec_bound(int codec, size_t raw_len)
{
    switch (codec) {
    case CKPT_CODEC_NONE: return raw_len;
    case CKPT_CODEC_ZSTD:
    case CKPT_CODEC_SHUFFLE_ZSTD: return ZSTD_compressBound(raw_len);
    case CKPT_CODEC_PLANES_ZSTD: return CKPT_PLANE_HDR + raw_len;  /* raw planes cap it */
    default: return 0;
    }
}

size_t ckpt_codec_ws_bytes(int codec, int level, size_t raw_len)
{
    /* ZSTD_compressCCtx knows the source size, and zstd sizes its window
     * and tables to it; planes-zstd compresses one plane (a quarter) at a
     * time next to the shuffled planes and one plane's output. */
    size_t src = codec == CKPT_CODEC_PLANES_ZSTD ? raw_len / 4 : raw_len;
    size_t cctx = codec == CKPT_CODEC_NONE || raw_len == 0
                      ? 0 : ZSTD_estimateCCtxSize_usingCParams(ZSTD_getCParams(level, (unsigned long long)src, 0));
    switch (codec) {
    case CKPT_CODEC_SHUFFLE_ZSTD: return cctx + raw_len;
    case CKPT_CODEC_PLANES_ZSTD: return cctx + raw_len + ZSTD_compressBound(src);
    default: return cctx;
    }
}

void ckpt_codec_ws_free(ckpt_codec_ws *ws)
{
    ZSTD_freeCCtx(ws->cctx);
    ZSTD_freeDCtx(ws->dctx);
    free(ws->tmp);
    memset(ws, 0, sizeof *ws);
}

static int ckpt_ws_tmp(ckpt_codec_ws *ws, size_t need)
{
    if (ws->tmp_cap >= need)
        return 0;
    uint8_t *t = realloc(ws->tmp, need);
    if (!t)
        return -1;
    ws->tmp = t;
    ws->tmp_cap = need;
    return 0;
}

/* Plane p of word i holds byte p (little-endian) of the word. */
static void ckpt_shuffle(const uint8_t *src, uint8_t *dst, size_t n_words, int rotate)
{
    const uint32_t *w = (const uint32_t *)(const void *)src;
    uint8_t *p0 = dst, *p1 = dst + n_words, *p2 = dst + 2 * n_words, *p3 = dst + 3 * n_words;
    for (size_t i = 0; i < n_words; i++) {
        uint32_t x = w[i];
        if (rotate)
            x = (x << 1) | (x >> 31);
        p0[i] = (uint8_t)x;
        p1[i] = (uint8_t)(x >> 8);
        p2[i] = (uint8_t)(x >> 16);
        p3[i] = (uint8_t)(x >> 24);
    }
}

static void ckpt_unshuffle(const uint8_t *src, uint8_t *dst, size_t n_words, int rotate)
{
    uint32_t *w = (uint32_t *)(void *)dst;
    const uint8_t *p0 = src, *p1 = src + n_words, *p2 = src + 2 * n_words, *p3 = src + 3 * n_words;
    for (size_t i = 0; i < n_words; i++) {
        uint32_t x = (uint32_t)p0[i] | (uint32_t)p1[i] << 8 | (uint32_t)p2[i] << 16 | (uint32_t)p3[i] << 24;
        if (rotate)
            x = (x >> 1) | (x << 31);
        w[i] = x;
    }
}

static int ckpt_zstd(ckpt_codec_ws *ws, int level, const void *src, size_t n, void *dst, size_t cap,
                     size_t *out)
{
    if (!ws->cctx && !(ws->cctx = ZSTD_createCCtx()))
        return -1;
    size_t z = ZSTD_compressCCtx(ws->cctx, dst, cap, src, n, level);
    if (ZSTD_isError(z))
        return -1;
    *out = z;
    return 0;
}

static void ckpt_put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8), p[2] = (uint8_t)(v >> 16), p[3] = (uint8_t)(v >> 24);
}

static uint32_t ckpt_get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int ckpt_encode_planes(ckpt_codec_ws *ws, int level, const void *raw, size_t raw_len,
                              uint8_t *out, size_t cap, size_t *out_len)
{
    size_t nw = raw_len / 4, pos = CKPT_PLANE_HDR;
    /* Room for the shuffled planes plus one zstd attempt at a time. */
    if (ckpt_ws_tmp(ws, raw_len + ZSTD_compressBound(nw)) != 0)
        return -1;
    uint8_t *planes = ws->tmp, *z = ws->tmp + raw_len;
    ckpt_shuffle(raw, planes, nw, 1);
    for (int p = 0; p < 4; p++) {
        size_t zn = nw;
        const uint8_t *src = planes + (size_t)p * nw;
        /* Low mantissa planes are noise: a 64 KiB probe that gains under 2%
         * keeps the plane raw without paying for zstd on all of it. */
        size_t probe = nw < CKPT_PLANE_PROBE ? nw : CKPT_PLANE_PROBE;
        if (ckpt_zstd(ws, level, src, probe, z, ZSTD_compressBound(nw), &zn) != 0)
            return -1;
        int worth = zn * 50 < probe * 49;
        if (probe < nw && worth && ckpt_zstd(ws, level, src, nw, z, ZSTD_compressBound(nw), &zn) != 0)
            return -1;
        int keep_raw = !worth || zn >= nw;
        size_t len = keep_raw ? nw : zn;
        if (pos + len > cap)
            return -1;
        memcpy(out + pos, keep_raw ? src : z, len);
        ckpt_put32(out + 4 * p, (uint32_t)len | (keep_raw ? CKPT_PLANE_RAW : 0));
        pos += len;
    }
    *out_len = pos;
    return 0;
}

int ckpt_codec_encode(ckpt_codec_ws *ws, int codec, int level, const void *raw, size_t raw_len,
                      void *out, size_t cap, size_t *out_len, int *used_codec)
{
    int rc = -1;
    size_t n = 0;
    if (raw_len == 0 || raw_len % 4 != 0 || raw_len > CKPT_MAX_CHUNK)
        return -1;
    switch (codec) {
    case CKPT_CODEC_NONE:
        rc = 0;
        break;
    case CKPT_CODEC_ZSTD:
        rc = ckpt_zstd(ws, level, raw, raw_len, out, cap, &n);
        break;
    case CKPT_CODEC_SHUFFLE_ZSTD:
        if (ckpt_ws_tmp(ws, raw_len) != 0)
            return -1;
        ckpt_shuffle(raw, ws->tmp, raw_len / 4, 0);
        rc = ckpt_zstd(ws, level, ws->tmp, raw_len, out, cap, &n);
        break;
    case CKPT_CODEC_PLANES_ZSTD:
        rc = ckpt_encode_planes(ws, level, raw, raw_len, out, cap, &n);
        break;
    default:
        return -1;
    }
    if (rc != 0)
        return -1;
    if (codec == CKPT_CODEC_NONE || n >= raw_len) {
        /* Not worth decoding later: store the raw bytes. */
        if (cap < raw_len)
            return -1;
        memcpy(out, raw, raw_len);
        n = raw_len;
        codec = CKPT_CODEC_NONE;
    }
    *out_len = n;
    *used_codec = codec;
    return 0;
}

static int ckpt_unzstd(ckpt_codec_ws *ws, const void *in, size_t in_len, void *dst, size_t n,
                       char *err, size_t errcap)
{
    if (!ws->dctx && !(ws->dctx = ZSTD_createDCtx())) {
        snprintf(err, errcap, "out of memory for the zstd decoder");
        return -1;
    }
    unsigned long long want = ZSTD_getFrameContentSize(in, in_len);
    if (want != (unsigned long long)n) {
        snprintf(err, errcap, "zstd frame declares %s bytes, expected %zu",
                 want == ZSTD_CONTENTSIZE_ERROR ? "an invalid number of" :
                 want == ZSTD_CONTENTSIZE_UNKNOWN ? "an unknown number of" : "a different number of", n);
        return -1;
    }
    size_t got = ZSTD_decompressDCtx(ws->dctx, dst, n, in, in_len);
    if (ZSTD_isError(got) || got != n) {
        snprintf(err, errcap, "zstd: %s", ZSTD_isError(got) ? ZSTD_getErrorName(got) : "short output");
        return -1;
    }
    return 0;
}

static int ckpt_decode_planes(ckpt_codec_ws *ws, const uint8_t *in, size_t in_len, void *raw,
                              size_t raw_len, char *err, size_t errcap)
{
    size_t nw = raw_len / 4, pos = CKPT_PLANE_HDR;
    if (in_len < CKPT_PLANE_HDR) {
        snprintf(err, errcap, "planes header truncated (%zu bytes)", in_len);
        return -1;
    }
    if (ckpt_ws_tmp(ws, raw_len) != 0) {
        snprintf(err, errcap, "out of memory (%zu bytes)", raw_len);
        return -1;
    }
    for (int p = 0; p < 4; p++) {
        uint32_t h = ckpt_get32(in + 4 * p);
        size_t len = h & ~CKPT_PLANE_RAW;
        if (len > in_len - pos) {
            snprintf(err, errcap, "plane %d length %zu runs past the chunk", p, len);
            return -1;
        }
        uint8_t *dst = ws->tmp + (size_t)p * nw;
        if (h & CKPT_PLANE_RAW) {
            if (len != nw) {
                snprintf(err, errcap, "raw plane %d holds %zu bytes, expected %zu", p, len, nw);
                return -1;
            }
            memcpy(dst, in + pos, len);
        } else if (ckpt_unzstd(ws, in + pos, len, dst, nw, err, errcap) != 0) {
            return -1;
        }
        pos += len;
    }
    if (pos != in_len) {
        snprintf(err, errcap, "%zu trailing bytes after the planes", in_len - pos);
        return -1;
    }
    ckpt_unshuffle(ws->tmp, raw, nw, 1);
    return 0;
}

int ckpt_codec_decode(ckpt_codec_ws *ws, int codec, const void *in, size_t in_len, void *raw,
                      size_t raw_len, char *err, size_t errcap)
{
    if (raw_len == 0 || raw_len % 4 != 0 || raw_len > CKPT_MAX_CHUNK) {
        snprintf(err, errcap, "raw size %zu is not a whole number of floats within the chunk limit", raw_len);
        return -1;
    }
    switch (codec) {
    case CKPT_CODEC_NONE:
        if (in_len != raw_len) {
            snprintf(err, errcap, "stored %zu bytes, expected %zu", in_len, raw_len);
            return -1;
        }
        memcpy(raw, in, raw_len);
        return 0;
    case CKPT_CODEC_ZSTD:
        return ckpt_unzstd(ws, in, in_len, raw, raw_len, err, errcap);
    case CKPT_CODEC_SHUFFLE_ZSTD:
        if (ckpt_ws_tmp(ws, raw_len) != 0) {
            snprintf(err, errcap, "out of memory (%zu bytes)", raw_len);
            return -1;
        }
        if (ckpt_unzstd(ws, in, in_len, ws->tmp, raw_len, err, errcap) != 0)
            return -1;
        ckpt_unshuffle(ws->tmp, raw, raw_len / 4, 0);
        return 0;
    case CKPT_CODEC_PLANES_ZSTD:
        return ckpt_decode_planes(ws, in, in_len, raw, raw_len, err, errcap);
    default:
        snprintf(err, errcap, "unknown codec %d", codec);
        return -1;
    }
}
