/* Unit tests of the S3 client's pure parts: s3:// URLs, checkpoint object
 * keys, credentials file and IMDS JSON parsing, the backoff schedule and the
 * retry classes, and the XML answers. No network. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "s3/s3.h"
#include "util/util.h"
#include "tests/harness.h"

static void t_url(void)
{
    s3_url u;
    EXPECT(s3_url_parse("s3://my-bucket/runs/x/", &u) == ST_OK);
    EXPECT(strcmp(u.bucket, "my-bucket") == 0 && strcmp(u.prefix, "runs/x") == 0);
    EXPECT(s3_url_parse("s3://bkt", &u) == ST_OK && strcmp(u.prefix, "") == 0);
    EXPECT(s3_url_parse("s3://a.b.c//p", &u) == ST_OK && strcmp(u.prefix, "p") == 0);
    EXPECT(s3_url_parse("http://bkt/p", &u) == ST_CONFIG);
    EXPECT(s3_url_parse("s3://BK/p", &u) == ST_CONFIG);
    EXPECT(s3_url_parse("s3://ab/p", &u) == ST_CONFIG);
    EXPECT(s3_url_parse("s3://-bkt/p", &u) == ST_CONFIG);
    EXPECT(s3_url_parse("s3://bkt/a//b", &u) == ST_CONFIG);
    EXPECT(s3_url_parse("s3://bkt/a\nb", &u) == ST_CONFIG);
}

static void t_keys(void)
{
    s3_url u;
    char k[256];
    s3_url_parse("s3://bkt/runs/x", &u);
    EXPECT(s3_ckpt_key(&u, 1200, "manifest.json", k, sizeof k) == 0);
    EXPECT(strcmp(k, "runs/x/step-00001200/manifest.json") == 0);
    EXPECT(s3_ckpt_key(&u, 7, "", k, sizeof k) == 0 && strcmp(k, "runs/x/step-00000007/") == 0);
    s3_url_parse("s3://bkt", &u);
    EXPECT(s3_ckpt_key(&u, 3, "shard-00001.bin", k, sizeof k) == 0 && strcmp(k, "step-00000003/shard-00001.bin") == 0);
    EXPECT(s3_ckpt_key(&u, 3, "x", k, 8) == -1);
    EXPECT(s3_ckpt_key(&u, -1, "x", k, sizeof k) == -1);
}

static void t_creds_file(void)
{
    const char *text = "# comment\n[default]\naws_access_key_id = AKIA1\naws_secret_access_key=SEC1\n\n"
                       "[profile ci]\r\nAWS_ACCESS_KEY_ID=AKIA2 \r\naws_secret_access_key = SEC2\r\n"
                       "aws_session_token = TOK2\r\n[half]\naws_access_key_id=X\n";
    s3_creds c;
    EXPECT(s3_creds_parse_file(text, "default", &c) == ST_OK);
    EXPECT(strcmp(c.key_id, "AKIA1") == 0 && strcmp(c.secret, "SEC1") == 0 && c.token[0] == 0);
    EXPECT(strcmp(c.source, "file") == 0);
    EXPECT(s3_creds_parse_file(text, "ci", &c) == ST_OK);
    EXPECT(strcmp(c.key_id, "AKIA2") == 0 && strcmp(c.secret, "SEC2") == 0 && strcmp(c.token, "TOK2") == 0);
    EXPECT(s3_creds_parse_file(text, "half", &c) == ST_CONFIG);
    EXPECT(s3_creds_parse_file(text, "nope", &c) == ST_NOINPUT);
    EXPECT(s3_creds_parse_file("", "default", &c) == ST_NOINPUT);
}

/* What inih brings and the hand parser did: "[profile x]" and blanks
 * around the name, ':' as well as '=', comments, and a session token far
 * longer than inih's default 200-byte line. */
static void t_creds_file_forms(void)
{
    static char text[6000];
    char tok[2101];
    s3_creds c;
    memset(tok, 'T', sizeof tok - 1);
    tok[sizeof tok - 1] = 0;
    snprintf(text, sizeof text, "; top comment\n[ spaced ]\naws_access_key_id: AKIA3\n# inside\n"
             "aws_secret_access_key = SEC3\n[profile   long]\naws_access_key_id = AKIA4\n"
             "aws_secret_access_key = SEC4\naws_session_token = %s\n[other]\naws_access_key_id = NOT\n", tok);
    EXPECT(s3_creds_parse_file(text, "spaced", &c) == ST_OK);
    EXPECT(strcmp(c.key_id, "AKIA3") == 0 && strcmp(c.secret, "SEC3") == 0 && c.token[0] == 0);
    EXPECT(s3_creds_parse_file(text, "long", &c) == ST_OK);
    EXPECT(strcmp(c.key_id, "AKIA4") == 0 && strcmp(c.token, tok) == 0);
    EXPECT(s3_creds_parse_file(text, "profile", &c) == ST_NOINPUT);
    EXPECT(s3_creds_parse_file(text, "other", &c) == ST_CONFIG);
}

/* s3_creds_load picks the profile: s3.profile, else AWS_PROFILE, else
 * default; the file from s3.credentials_file. */
static void t_creds_profile(void)
{
    char path[] = "/tmp/test_s3_creds.XXXXXX";
    int fd = mkstemp(path);
    const char *text = "[default]\naws_access_key_id = AKIA1\naws_secret_access_key = SEC1\n"
                       "[profile ci]\naws_access_key_id = AKIA2\naws_secret_access_key = SEC2\n"
                       "[half]\naws_access_key_id = X\n";
    EXPECT(fd >= 0 && write(fd, text, strlen(text)) == (ssize_t)strlen(text));
    close(fd);
    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("AWS_SECRET_ACCESS_KEY");
    unsetenv("AWS_PROFILE");
    s3_opts o;
    s3_creds c;
    s3_opts_default(&o);
    snprintf(o.credentials_file, sizeof o.credentials_file, "%s", path);
    snprintf(o.metadata_url, sizeof o.metadata_url, "off");
    EXPECT(s3_creds_load(&o, &c) == ST_OK && strcmp(c.key_id, "AKIA1") == 0);
    setenv("AWS_PROFILE", "ci", 1);
    EXPECT(s3_creds_load(&o, &c) == ST_OK && strcmp(c.key_id, "AKIA2") == 0 && strcmp(c.secret, "SEC2") == 0);
    snprintf(o.profile, sizeof o.profile, "default");   /* the setting beats AWS_PROFILE */
    EXPECT(s3_creds_load(&o, &c) == ST_OK && strcmp(c.key_id, "AKIA1") == 0);
    snprintf(o.profile, sizeof o.profile, "half");
    EXPECT(s3_creds_load(&o, &c) == ST_CONFIG);
    EXPECT(strstr(util_last_error(), "profile [half] lacks aws_access_key_id or aws_secret_access_key; add both"));
    snprintf(o.profile, sizeof o.profile, "nope");
    EXPECT(s3_creds_load(&o, &c) == ST_CONFIG);
    EXPECT(strstr(util_last_error(), "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, add "
                  "profile [nope] to "));
    unsetenv("AWS_PROFILE");
    unlink(path);
}

static void t_creds_imds(void)
{
    const char *j = "{\"Code\":\"Success\",\"Type\":\"AWS-HMAC\",\"AccessKeyId\":\"ASIA1\",\"SecretAccessKey\":\"S\","
                    "\"Token\":\"T\",\"Expiration\":\"2026-12-01T06:00:00Z\"}";
    s3_creds c;
    EXPECT(s3_creds_parse_imds(j, strlen(j), &c) == ST_OK);
    EXPECT(strcmp(c.key_id, "ASIA1") == 0 && strcmp(c.token, "T") == 0 && c.expires == 1796104800.0);
    const char *bad = "{\"AccessKeyId\":\"A\",\"SecretAccessKey\":\"S\",\"Token\":\"T\"}";
    EXPECT(s3_creds_parse_imds(bad, strlen(bad), &c) == ST_DATA);
    EXPECT(s3_creds_parse_imds("nope", 4, &c) == ST_DATA);
}

static void t_backoff(void)
{
    /* Equal jitter: [cap/2, cap) with cap = base * 2^attempt, at most max. */
    EXPECT(s3_backoff(0, 0.2, 20, 0) == 0.1);
    EXPECT(s3_backoff(0, 0.2, 20, 0.999) < 0.2);
    EXPECT(s3_backoff(3, 0.2, 20, 0) == 0.8);
    EXPECT(s3_backoff(10, 0.2, 20, 0) == 10.0);
    EXPECT(s3_backoff(10, 0.2, 20, 0.99999) < 20.0);
    EXPECT(s3_backoff(1000, 0.2, 20, 0.5) <= 20.0);
    for (int a = 0; a < 8; a++)
        EXPECT(s3_backoff(a + 1, 0.2, 100, 0) > s3_backoff(a, 0.2, 100, 0));
    EXPECT(s3_retryable(0) && s3_retryable(500) && s3_retryable(503) && s3_retryable(429) && s3_retryable(408));
    EXPECT(!s3_retryable(400) && !s3_retryable(403) && !s3_retryable(404) && !s3_retryable(200));
}

static int count_cb(void *ctx, const s3_object *o)
{
    int *n = ctx;
    if (*n == 0 && (strcmp(o->key, "p/a&b") != 0 || o->size != 12))
        return 99;
    (*n)++;
    return 0;
}

static void t_xml(void)
{
    const char *err = "<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code><Message>The key &lt;x&gt; &#38; y"
                      "</Message><CodeX>no</CodeX></Error>";
    char out[64];
    EXPECT(s3_xml_text(err, strlen(err), "Code", out, sizeof out) == 0 && strcmp(out, "NoSuchKey") == 0);
    EXPECT(s3_xml_text(err, strlen(err), "Message", out, sizeof out) == 0 && strcmp(out, "The key <x> & y") == 0);
    EXPECT(s3_xml_text(err, strlen(err), "Nope", out, sizeof out) == -1);
    EXPECT(s3_xml_text(err, strlen(err), "Message", out, 4) == -1);
    const char *list = "<ListBucketResult><IsTruncated>true</IsTruncated><Contents><Key>p/a&amp;b</Key>"
                       "<Size>12</Size><ETag>&quot;e1&quot;</ETag></Contents><Contents><Key>p/c</Key><Size>0</Size>"
                       "</Contents><NextContinuationToken>tok/1=</NextContinuationToken></ListBucketResult>";
    int n = 0, more = 0;
    char tok[64];
    EXPECT(s3_xml_list_page(list, strlen(list), count_cb, &n, &more, tok, sizeof tok) == ST_OK);
    EXPECT(n == 2 && more == 1 && strcmp(tok, "tok/1=") == 0);
    const char *bad = "<ListBucketResult><Contents><Key>k</Key><Size>-3</Size></Contents></ListBucketResult>";
    n = 0;
    EXPECT(s3_xml_list_page(bad, strlen(bad), count_cb, &n, &more, tok, sizeof tok) == ST_DATA);
    const char *trunc = "<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>";
    EXPECT(s3_xml_list_page(trunc, strlen(trunc), count_cb, &n, &more, tok, sizeof tok) == ST_DATA);
}

int main(void)
{
    util_quiet = 1;
    harness_run("s3_url_parse", t_url);
    harness_run("s3_ckpt_key", t_keys);
    harness_run("s3_creds_file", t_creds_file);
    harness_run("s3_creds_file forms", t_creds_file_forms);
    harness_run("s3_creds_load profile selection", t_creds_profile);
    harness_run("s3_creds_imds", t_creds_imds);
    harness_run("s3_backoff", t_backoff);
    harness_run("s3_xml", t_xml);
    return harness_end();
}
