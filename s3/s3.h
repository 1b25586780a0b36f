/* A self-contained S3 client for checkpoints: s3:// URLs, credentials (env,
 * credentials file, IMDSv2 instance role), signed requests through libcurl's
 * own SigV4, retries with backoff, parallel multipart upload, ranged GETs,
 * list/head/delete. The uploader (ckpt/upload.c) drives it after each commit;
 * the reader (ckpt/remote.c) for resume and ckpt commands on s3:// paths. */
#ifndef SPOTRAIN_S3_H
#define SPOTRAIN_S3_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    char remote[1024];           /* s3://bucket[/prefix] */
    char endpoint[512];          /* "" = https://s3.REGION.amazonaws.com; set = path-style */
    char region[64];             /* "" = AWS_REGION, AWS_DEFAULT_REGION, else us-east-1 */
    char credentials_file[1024]; /* "" = AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials */
    char profile[128];           /* "" = AWS_PROFILE or "default" */
    char metadata_url[512];      /* IMDS base; "" = http://169.254.169.254; "off" = never */
    double connect_timeout;      /* seconds to connect */
    double low_speed_seconds;    /* a transfer under 1 KiB/s this long is a timeout */
    double request_timeout;      /* whole request; 0 = none (large parts) */
    int retries;                 /* extra attempts after the first */
    double backoff_base, backoff_max;  /* seconds */
    size_t part_bytes;           /* multipart part size (>= 5 MiB on AWS) */
    int parallel;                /* parts in flight; memory = parallel * part_bytes */
} s3_opts;

void s3_opts_default(s3_opts *o);

typedef struct {
    char bucket[64];
    char prefix[1024];           /* no leading or trailing '/'; may be "" */
} s3_url;

/* "s3://bucket/prefix/..." -> bucket and prefix. ST_CONFIG with one line
 * naming the URL and the rule it breaks. */
int s3_url_parse(const char *url, s3_url *out);
/* Object key of a checkpoint file: PREFIX/step-%08d/NAME (no prefix: no
 * leading '/'). name "" gives the step's own key prefix with a trailing '/'.
 * 0, or -1 when it does not fit. */
int s3_ckpt_key(const s3_url *u, int64_t step, const char *name, char *out, size_t cap);

typedef struct {
    char key_id[128];
    char secret[128];
    char token[4096];            /* session token; "" when none */
    double expires;              /* wall-clock epoch seconds; 0 = never */
    char source[32];             /* env | file | imds */
} s3_creds;

/* INI text of a credentials file -> the profile's keys. ST_OK, ST_NOINPUT when
 * the profile is absent, ST_CONFIG when the profile lacks a key. */
int s3_creds_parse_file(const char *text, const char *profile, s3_creds *out);
/* The IMDS credentials JSON ({"AccessKeyId","SecretAccessKey","Token",
 * "Expiration"}) -> creds. ST_DATA on anything missing. */
int s3_creds_parse_imds(const char *json, size_t len, s3_creds *out);
/* Env, then the credentials file, then IMDSv2. ST_CONFIG when none has any. */
int s3_creds_load(const s3_opts *o, s3_creds *out);

/* Seconds to wait before retry number attempt (0-based): exponential from
 * base, capped at max, "equal jitter" (half fixed, half random by u in
 * [0,1)), so waits grow and clients spread out. */
double s3_backoff(int attempt, double base, double max, double u);
/* Whether an HTTP status (0 = no response: timeout, dropped connection) is
 * worth another attempt: 5xx, 408, 429 and 0. */
int s3_retryable(int http_status);

/* XML answers (s3xml.c, no network; fuzzed). */
typedef struct {
    char key[1024];
    uint64_t size;
    char etag[128];
} s3_object;
typedef int (*s3_list_fn)(void *ctx, const s3_object *obj);
/* First <name>...</name> in xml, entity-decoded into out. 0 found, -1 absent
 * or too long. */
int s3_xml_text(const char *xml, size_t len, const char *name, char *out, size_t cap);
/* One ListObjectsV2 page: calls fn for each <Contents>; *truncated and
 * next_token from IsTruncated / NextContinuationToken. ST_DATA on malformed
 * entries; fn's non-zero return stops and is returned. */
int s3_xml_list_page(const char *xml, size_t len, s3_list_fn fn, void *ctx, int *truncated,
                     char *next_token, size_t cap);

/* The client. Thread-safe: operations may run from several threads. */
typedef struct s3_client s3_client;
typedef struct {
    uint64_t requests, retries, refreshes, bytes_up, bytes_down;
} s3_stats;

int s3_open(s3_client **c, const s3_opts *o);
void s3_close(s3_client *c);
const s3_url *s3_client_url(const s3_client *c);
void s3_get_stats(s3_client *c, s3_stats *out);

int s3_create_bucket(s3_client *c);   /* tests and benches */
int s3_put_object(s3_client *c, const char *key, const void *buf, size_t len);
/* Exactly len bytes from off; ST_DATA when the object is shorter. */
int s3_get_range(s3_client *c, const char *key, uint64_t off, size_t len, void *buf);
/* ST_OK with obj filled, ST_NOINPUT when the key does not exist. */
int s3_head_object(s3_client *c, const char *key, s3_object *obj);
int s3_list_objects(s3_client *c, const char *prefix, s3_list_fn fn, void *ctx);
int s3_delete_object(s3_client *c, const char *key);

/* Multipart, step by step. Parts are numbered from 1. */
int s3_mpu_create(s3_client *c, const char *key, char *upload_id, size_t cap);
int s3_mpu_part(s3_client *c, const char *key, const char *upload_id, int part_no,
                const void *buf, size_t len, char *etag, size_t cap);
int s3_mpu_complete(s3_client *c, const char *key, const char *upload_id, char (*etags)[128],
                    int n_parts);
int s3_mpu_abort(s3_client *c, const char *key, const char *upload_id);
/* [off, off+len) of fd as one object: a single PUT when it fits one part,
 * else multipart with opts.parallel parts in flight, each read from the
 * file straight into its request's send buffer (no part-sized buffers).
 * A read error fails at once (ST_IOERR), without retries. On failure the
 * multipart upload is aborted; nothing else is touched. */
int s3_upload_fd(s3_client *c, const char *key, int fd, uint64_t off, uint64_t len);
/* Any thread: requests in flight end at once and later ones fail at the
 * start with ST_TEMPFAIL (a run exiting at its deadline). Not undone. */
void s3_cancel(s3_client *c);

#endif
