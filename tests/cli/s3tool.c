/* A test and bench driver for s3/s3.c (not installed): one operation per
 * run against S3_REMOTE at S3_ENDPOINT, so scripts can check what the client
 * did with an independent client (boto3).
 *   s3tool mb | put KEY FILE [LEN] | get KEY OFF LEN OUT | head KEY | ls PREFIX | rm KEY
 * put's LEN (default: the file's size) may exceed the file, to test a source
 * that ends early.
 * get's OUT "-" keeps the bytes in memory only (the bench's transport
 * figure); any other OUT is replaced by rename, so never name a device.
 * module: s3 */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "s3/s3.h"
#include "util/util.h"

static int print_obj(void *ctx, const s3_object *o)
{
    printf("%s %" PRIu64 "\n", o->key, o->size);
    return 0;
}

static const char *env(const char *n, const char *d)
{
    const char *v = getenv(n);
    return v && *v ? v : d;
}

int main(int argc, char **argv)
{
    s3_opts o;
    s3_client *c = NULL;
    int rc = ST_USAGE, fd = -1;
    char *buf = NULL;
    s3_opts_default(&o);
    snprintf(o.remote, sizeof o.remote, "%s", env("S3_REMOTE", ""));
    snprintf(o.endpoint, sizeof o.endpoint, "%s", env("S3_ENDPOINT", ""));
    snprintf(o.metadata_url, sizeof o.metadata_url, "%s", env("S3_METADATA_URL", "off"));
    o.part_bytes = (size_t)atoll(env("S3_PART_BYTES", "8388608"));
    o.parallel = atoi(env("S3_PARALLEL", "4"));
    o.retries = atoi(env("S3_RETRIES", "5"));
    o.backoff_base = atof(env("S3_BACKOFF", "0.05"));
    o.low_speed_seconds = atof(env("S3_LOW_SPEED_SECONDS", "30"));
    if (argc < 2) {
        fprintf(stderr, "usage: s3tool mb | put KEY FILE [LEN] | get KEY OFF LEN OUT | head KEY | ls PREFIX | rm KEY\n");
        return ST_USAGE;
    }
    if ((rc = s3_open(&c, &o)) != ST_OK)
        goto out;
    double t0 = util_now();
    const char *op = argv[1];
    uint64_t moved = 0;
    if (strcmp(op, "mb") == 0) {
        rc = s3_create_bucket(c);
    } else if (strcmp(op, "put") == 0 && (argc == 4 || argc == 5)) {
        struct stat st;
        fd = open(argv[3], O_RDONLY);
        if (fd < 0 || fstat(fd, &st) != 0) {
            rc = util_fail(ST_NOINPUT, "%s: cannot open", argv[3]);
            goto out;
        }
        moved = argc == 5 ? (uint64_t)atoll(argv[4]) : (uint64_t)st.st_size;
        rc = s3_upload_fd(c, argv[2], fd, 0, moved);
    } else if (strcmp(op, "get") == 0 && argc == 6) {
        size_t len = (size_t)atoll(argv[4]);
        buf = malloc(len ? len : 1);
        rc = buf ? s3_get_range(c, argv[2], (uint64_t)atoll(argv[3]), len, buf) : ST_SOFTWARE;
        if (rc == ST_OK && strcmp(argv[5], "-") != 0)
            rc = util_write_atomic(argv[5], buf, len);
        moved = len;
    } else if (strcmp(op, "head") == 0 && argc == 3) {
        s3_object ob;
        rc = s3_head_object(c, argv[2], &ob);
        if (rc == ST_OK)
            printf("%s %" PRIu64 " %s\n", ob.key, ob.size, ob.etag);
    } else if (strcmp(op, "ls") == 0 && argc == 3) {
        rc = s3_list_objects(c, argv[2], print_obj, NULL);
    } else if (strcmp(op, "rm") == 0 && argc == 3) {
        rc = s3_delete_object(c, argv[2]);
    } else {
        rc = util_fail(ST_USAGE, "s3tool: unknown operation or wrong argument count: %s", op);
    }
    double dt = util_now() - t0;
    s3_stats s;
    s3_get_stats(c, &s);
    fprintf(stderr, "s3tool: %s rc=%d requests=%" PRIu64 " retries=%" PRIu64 " refreshes=%" PRIu64
                    " bytes=%" PRIu64 " seconds=%.3f MB/s=%.1f\n",
            op, rc, s.requests, s.retries, s.refreshes, moved, dt, dt > 0 ? (double)moved / dt / 1e6 : 0.0);
out:
    if (fd >= 0)
        close(fd);
    free(buf);
    s3_close(c);
    return rc;
}
