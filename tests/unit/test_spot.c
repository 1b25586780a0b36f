/* Tests for spot/: metadata_url checks, the time formats, every provider's poller against tests/cli/fake_metadata.py (including
 * misbehaving answers), the file provider, signals and the watchdog. */
#include "spot/fetch.h"
#include "spot/spot.h"
#include "util/util.h"
#include "tests/harness.h"

#include <fcntl.h>
#include <json-c/json.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int srv_port;
static pid_t srv_pid;
static char tmp_dir[256];

/* ---- metadata_url ---- */

static int url_refused(const char *url)
{
    spot_opts c;
    memset(&c, 0, sizeof c);
    snprintf(c.provider, sizeof c.provider, "aws");
    snprintf(c.metadata_url, sizeof c.metadata_url, "%s", url);
    int rc = spot_start(&c, NULL);
    spot_stop();
    return rc == ST_CONFIG;
}

static void test_url(void)
{
    EXPECT(!url_refused("http://127.0.0.1:1/a?b=c"));
    EXPECT(!url_refused("http://127.0.0.1:1"));
    EXPECT(url_refused("https://x/"));
    EXPECT(url_refused("http://u@x/"));
    EXPECT(url_refused("http://x:0/"));
    EXPECT(url_refused("http://x:65536/"));
    EXPECT(url_refused("http://x:/"));
    EXPECT(url_refused("http:///p"));
    EXPECT(url_refused("http://x/a b"));
    EXPECT(url_refused("http://x/a\r\nX: y"));
}

static void test_times(void)
{
    double t;
    EXPECT(spot_parse_iso8601("2015-01-05T18:02:00Z", &t) == 0 && t == 1420480920.0);
    EXPECT(spot_parse_iso8601("2015-01-05T18:02:00.5Z", &t) == 0 && t == 1420480920.5);
    EXPECT(spot_parse_iso8601("2015-01-05T20:02:00+02:00", &t) == 0 && t == 1420480920.0);
    EXPECT(spot_parse_iso8601("2015-02-31T18:02:00Z", &t) == -1);
    EXPECT(spot_parse_iso8601("2015-01-05T18:02:00", &t) == -1);
    EXPECT(spot_parse_iso8601("2015-01-05T25:02:00Z", &t) == -1);
    EXPECT(spot_parse_iso8601("2015-01-05T18:02:00Zjunk", &t) == -1);
    EXPECT(spot_parse_iso8601("", &t) == -1);
    EXPECT(spot_parse_http_date("Mon, 19 Sep 2016 18:29:47 GMT", &t) == 0 && t == 1474309787.0);
    EXPECT(spot_parse_http_date("Mon, 19 Foo 2016 18:29:47 GMT", &t) == -1);
    EXPECT(spot_parse_http_date("Mon, 19 Sep 2016 18:29:47 UTC", &t) == -1);
    EXPECT(spot_parse_http_date("19 Sep 2016 18:29:47 GMT", &t) == -1);
}

/* ---- the fake metadata server ---- */

static int srv_start(void)
{
    char pf[300];
    snprintf(pf, sizeof pf, "%s/port", tmp_dir);
    srv_pid = fork();
    if (srv_pid == 0) {
        execlp("python3", "python3", "tests/cli/fake_metadata.py", "--port-file", pf, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 200; i++) {
        FILE *f = fopen(pf, "r");
        if (f) {
            int ok = fscanf(f, "%d", &srv_port) == 1;
            fclose(f);
            if (ok)
                return 0;
        }
        usleep(25000);
    }
    return -1;
}

static void srv_stop(void)
{
    if (srv_pid > 0) {
        kill(srv_pid, SIGTERM);
        waitpid(srv_pid, NULL, 0);
    }
}

/* GET /_control?query on the fake server; 0 when it said ok. */
static int ctl(const char *query)
{
    char url[512];
    spot_fetch_resp r;
    snprintf(url, sizeof url, "http://127.0.0.1:%d/_control?%s", srv_port, query);
    spot_fetch_req req = {.method = "GET", .url = url, .timeout = 5};
    if (spot_fetch(&req, &r) != ST_OK)
        return -1;
    int ok = r.status == 200;
    spot_fetch_free(&r);
    return ok ? 0 : -1;
}

/* One integer or string out of GET /_state. */
static json_object *srv_state(void)
{
    char url[128];
    spot_fetch_resp r;
    snprintf(url, sizeof url, "http://127.0.0.1:%d/_state", srv_port);
    spot_fetch_req req = {.method = "GET", .url = url, .timeout = 5};
    if (spot_fetch(&req, &r) != ST_OK)
        return NULL;
    json_object *o = json_tokener_parse(r.body);
    spot_fetch_free(&r);
    return o;
}

static int srv_count(const char *key)
{
    json_object *o = srv_state(), *v;
    int n = -1;
    if (o && json_object_object_get_ex(o, key, &v))
        n = json_object_get_int(v);
    json_object_put(o);
    return n;
}

static void reset_server(const char *mode)
{
    char q[64];
    ctl("notice=0&rebalance=0&expire_tokens=0&slow=0&garbage=&chunked=0&maint=NONE&vm=vm-test&"
        "event_vm=vm-test&event_type=Preempt&notbefore=&time=&hardened=0&action=terminate");
    snprintf(q, sizeof q, "mode=%s", mode);
    ctl(q);
}

static spot_opts test_cfg(const char *provider)
{
    spot_opts c;
    memset(&c, 0, sizeof c);
    snprintf(c.provider, sizeof c.provider, "%s", provider);
    snprintf(c.metadata_url, sizeof c.metadata_url, "http://127.0.0.1:%d", srv_port);
    c.poll_seconds = 0.05;
    c.grace_seconds = 60;
    return c;
}

/* spot_poll until a notice arrives or secs pass; 1 when one arrived. */
static int wait_notice(double secs, spot_notice *n, int *early)
{
    double end = util_now() + secs;
    int e = 0;
    while (util_now() < end) {
        int w = 0;
        if (spot_poll(n, &w))
            return 1;
        e |= w;
        if (early)
            *early |= e;
        usleep(10000);
    }
    return 0;
}

static void start(const spot_opts *c, const char *run_dir)
{
    spot_reset();
    EXPECT(spot_start(c, run_dir) == ST_OK);
}

static void test_aws(void)
{
    spot_notice n;
    int early = 0;
    reset_server("aws");
    ctl("rebalance=1");
    spot_opts c = test_cfg("aws");
    start(&c, NULL);
    EXPECT(!wait_notice(0.4, &n, &early));
    EXPECT(early == 1);                          /* the rebalance recommendation, once */
    int again = 0;
    spot_poll(&n, &again);
    EXPECT(again == 0);
    ctl("notice=1&time=2099-01-02T03:04:05Z&action=stop");
    EXPECT(wait_notice(2, &n, NULL));
    EXPECT(!strcmp(n.source, "aws") && strstr(n.detail, "stop") != NULL);
    EXPECT(n.deadline == 4071006245.0);
    spot_stop();
    EXPECT(!strcmp(spot_provider_name(), "aws"));
}

/* A notice standing when the poller starts is marked as such, with the
 * provider's own time; one that comes later is not. */
static void test_at_start(void)
{
    spot_notice n;
    reset_server("aws");
    ctl("notice=1&time=2020-01-01T00:00:00Z");
    spot_opts c = test_cfg("aws");
    start(&c, NULL);
    spot_first_round(5);
    EXPECT(spot_poll(&n, NULL) == 1);            /* seen before spot_first_round returned */
    EXPECT(n.at_start == 1 && n.given == 1577836800.0);
    EXPECT(fabs(n.deadline - util_wall()) < 3);  /* the past time means now */
    spot_stop();
    reset_server("aws");
    start(&c, NULL);
    spot_first_round(5);
    EXPECT(spot_poll(&n, NULL) == 0);
    ctl("notice=1&time=2020-01-01T00:00:00Z");
    EXPECT(wait_notice(2, &n, NULL));
    EXPECT(n.at_start == 0 && n.given == 1577836800.0);
    spot_stop();
    /* no poller: returns at once */
    spot_first_round(5);
}

static void test_aws_token_renewal(void)
{
    spot_notice n;
    reset_server("aws");
    spot_opts c = test_cfg("aws");
    start(&c, NULL);
    EXPECT(!wait_notice(0.3, &n, NULL));
    int puts = srv_count("token_puts");
    EXPECT(puts >= 1);
    ctl("expire_tokens=1");
    EXPECT(!wait_notice(0.3, &n, NULL));
    ctl("notice=1");
    EXPECT(wait_notice(2, &n, NULL));
    double left = n.deadline - util_wall();
    EXPECT(left > 100 && left <= 121);           /* "now + 120 s" from the server */
    EXPECT(srv_count("token_puts") == puts + 1); /* renewed once, then reused */
    EXPECT(srv_count("unauthorized") >= 1);
    spot_stop();
}

/* Misbehaving answers are logged and ignored; when the service recovers the
 * notice gets through. */
static void test_hostile(void)
{
    static const char *kinds[] = {"junk", "badjson", "huge", "badlen", "badchunk", "close",
                                  "bigbody", "bighead", "bigbody", "bighead", "redirect", "redirect"};
    spot_notice n;
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        char q[64];
        reset_server(i % 2 ? "gcp" : "aws");
        ctl("notice=1");
        snprintf(q, sizeof q, "garbage=%s", kinds[i]);
        ctl(q);
        spot_opts c = test_cfg(i % 2 ? "gcp" : "aws");
        start(&c, NULL);
        int stopped = wait_notice(0.3, &n, NULL);
        EXPECT(!stopped);
        if (stopped)
            fprintf(stderr, "    garbage=%s stopped training\n", kinds[i]);
        ctl("garbage=");
        EXPECT(wait_notice(2, &n, NULL));
        spot_stop();
    }
    EXPECT(srv_count("redirected") == 0);        /* no redirect was followed, for aws nor gcp */
    /* a well-formed answer that is not a notice either */
    reset_server("aws");
    ctl("notice=1&action=reboot");
    spot_opts c = test_cfg("aws");
    start(&c, NULL);
    EXPECT(!wait_notice(0.3, &n, NULL));
    spot_stop();
}

static void test_slow(void)
{
    spot_notice n;
    reset_server("gcp");
    ctl("notice=1&slow=2.5");
    spot_opts c = test_cfg("gcp");
    start(&c, NULL);
    EXPECT(!wait_notice(1.5, &n, NULL));
    double t0 = util_now();
    spot_stop();
    EXPECT(util_now() - t0 < 1.5);               /* a hung request ends at its deadline */
    reset_server("gcp");
}

static void test_chunked(void)
{
    spot_notice n;
    reset_server("aws");
    ctl("chunked=1&notice=1");
    spot_opts c = test_cfg("aws");
    start(&c, NULL);
    EXPECT(wait_notice(2, &n, NULL) && !strcmp(n.source, "aws"));
    spot_stop();
}

static void test_gcp(void)
{
    spot_notice n;
    int early = 0;
    reset_server("gcp");
    ctl("maint=MIGRATE_ON_HOST_MAINTENANCE");
    spot_opts c = test_cfg("gcp");
    start(&c, NULL);
    EXPECT(!wait_notice(0.3, &n, &early) && early);
    ctl("notice=1");
    EXPECT(wait_notice(2, &n, NULL) && !strcmp(n.source, "gcp"));
    double left = n.deadline - util_wall();
    EXPECT(left > 25 && left <= 30.1);
    spot_stop();
    reset_server("gcp");
    ctl("maint=TERMINATE_ON_HOST_MAINTENANCE");
    start(&c, NULL);
    EXPECT(wait_notice(2, &n, NULL) && strstr(n.detail, "TERMINATE") != NULL);
    spot_stop();
}

static void test_azure(void)
{
    spot_notice n;
    reset_server("azure");
    ctl("notice=1&event_vm=someone-else");
    spot_opts c = test_cfg("azure");
    start(&c, NULL);
    EXPECT(!wait_notice(0.4, &n, NULL));         /* another VM's event must not stop us */
    EXPECT(ctl("event_vm=VM-TEST&notbefore=Mon,%2019%20Sep%202016%2018:29:47%20GMT") == 0);
    EXPECT(wait_notice(2, &n, NULL) && !strcmp(n.source, "azure"));
    /* NotBefore in the past: the deadline is now */
    EXPECT(fabs(n.deadline - util_wall()) < 3);
    spot_stop();
    EXPECT(spot_azure_ack() == ST_OK);
    EXPECT(srv_count("acks") == 1);
    json_object *st = srv_state(), *v;
    EXPECT(st && json_object_object_get_ex(st, "ack_body", &v) &&
           strstr(json_object_get_string(v), "602d9444-d2cd-49c7-8624-8643e7171297") != NULL);
    json_object_put(st);

    /* vm_name from the config wins over the metadata service's answer */
    reset_server("azure");
    ctl("notice=1&event_vm=configured-name&event_type=Terminate");
    snprintf(c.vm_name, sizeof c.vm_name, "configured-name");
    start(&c, NULL);
    EXPECT(wait_notice(2, &n, NULL));
    double left = n.deadline - util_wall();
    EXPECT(left > 25 && left <= 31);
    spot_stop();
}

static void test_alibaba(void)
{
    spot_notice n;
    reset_server("alibaba");
    spot_opts c = test_cfg("alibaba");
    start(&c, NULL);
    EXPECT(!wait_notice(0.3, &n, NULL));
    ctl("notice=1&time=2099-01-02T03:04:05Z");
    EXPECT(wait_notice(2, &n, NULL) && !strcmp(n.source, "alibaba"));
    EXPECT(n.deadline == 4071006245.0);
    spot_stop();
    /* hardened mode: the first answer is 403, then a token is fetched */
    reset_server("alibaba");
    ctl("hardened=1&notice=1");
    int puts = srv_count("token_puts");
    start(&c, NULL);
    EXPECT(wait_notice(2, &n, NULL));
    EXPECT(srv_count("token_puts") == puts + 1);
    spot_stop();
    /* not a time: ignored */
    reset_server("alibaba");
    ctl("notice=1&time=soon");
    start(&c, NULL);
    EXPECT(!wait_notice(0.3, &n, NULL));
    spot_stop();
}

static void test_auto(void)
{
    static const char *modes[] = {"aws", "gcp", "azure", "alibaba"};
    spot_notice n;
    for (int i = 0; i < 4; i++) {
        reset_server(modes[i]);
        ctl("notice=1");
        spot_opts c = test_cfg("auto");
        start(&c, NULL);
        EXPECT(wait_notice(3, &n, NULL) && !strcmp(n.source, modes[i]));
        spot_stop();
        EXPECT(!strcmp(spot_provider_name(), modes[i]));
    }
    /* nothing answers: not an error, no notice */
    spot_opts c = test_cfg("auto");
    snprintf(c.metadata_url, sizeof c.metadata_url, "http://127.0.0.1:1");
    start(&c, NULL);
    EXPECT(!wait_notice(0.3, &n, NULL));
    spot_stop();
    /* bad config is refused up front */
    snprintf(c.metadata_url, sizeof c.metadata_url, "https://x");
    EXPECT(spot_start(&c, NULL) == ST_CONFIG);
    snprintf(c.provider, sizeof c.provider, "oracle");
    EXPECT(spot_start(&c, NULL) == ST_CONFIG);
    snprintf(c.provider, sizeof c.provider, "file");
    EXPECT(spot_start(&c, NULL) == ST_CONFIG);
    snprintf(c.provider, sizeof c.provider, "none");
    EXPECT(spot_start(&c, NULL) == ST_OK);
}

static void test_file_and_events(void)
{
    spot_notice n;
    char path[400], run[300], ev[400];
    snprintf(path, sizeof path, "%s/notice", tmp_dir);
    snprintf(run, sizeof run, "%s/run", tmp_dir);
    snprintf(ev, sizeof ev, "%s/events.jsonl", run);
    mkdir(run, 0755);
    spot_opts c = test_cfg("file");
    snprintf(c.notice_file, sizeof c.notice_file, "%s", path);
    start(&c, run);
    EXPECT(!wait_notice(0.2, &n, NULL));
    FILE *f = fopen(path, "w");
    fputs("preStop \"hook\"\n", f);
    fclose(f);
    EXPECT(wait_notice(1, &n, NULL) && !strcmp(n.source, "file"));
    EXPECT(strstr(n.detail, "preStop") != NULL);
    spot_stop();
    /* the record is one valid JSON line */
    char *text = NULL;
    size_t len = 0;
    EXPECT(util_read_file(ev, &text, &len) == ST_OK);
    json_object *o = text ? json_tokener_parse(text) : NULL, *v;
    EXPECT(o && json_object_object_get_ex(o, "event", &v) && !strcmp(json_object_get_string(v), "notice"));
    EXPECT(o && json_object_object_get_ex(o, "source", &v) && !strcmp(json_object_get_string(v), "file"));
    EXPECT(o && json_object_object_get_ex(o, "deadline", &v) && json_object_get_double(v) > util_wall());
    EXPECT(text && strchr(text, '\n') == text + len - 1);
    json_object_put(o);
    free(text);
    /* a file left from before the start is stale until it changes */
    start(&c, run);
    EXPECT(!wait_notice(0.3, &n, NULL));
    struct timespec ts[2] = {{0, UTIME_NOW}, {0, UTIME_NOW}};
    EXPECT(utimensat(AT_FDCWD, path, ts, 0) == 0);
    EXPECT(wait_notice(1, &n, NULL));
    spot_stop();
    unlink(path);
}

/* ---- signals and watchdog ---- */

static void test_signals(void)
{
    spot_notice n;
    spot_reset();
    EXPECT(spot_signals_install(42) == ST_OK);
    EXPECT(spot_poll(&n, NULL) == 0);
    raise(SIGUSR1);
    EXPECT(spot_poll(&n, NULL) == 1 && !strcmp(n.source, "SIGUSR1"));
    EXPECT(fabs(n.deadline - util_wall() - 42) < 2);
    /* a later notice with an earlier deadline moves it, the source stays */
    spot_notice_post("aws", "test", util_wall() + 5);
    EXPECT(spot_poll(&n, NULL) == 1 && !strcmp(n.source, "SIGUSR1") && n.deadline < util_wall() + 6);
    spot_reset();
    raise(SIGTERM);
    EXPECT(spot_poll(&n, NULL) == 1 && !strcmp(n.source, "SIGTERM"));
    spot_reset();
    /* second SIGINT: out at once with 130 */
    pid_t pid = fork();
    if (pid == 0) {
        spot_reset();
        raise(SIGINT);
        if (!spot_poll(&n, NULL))
            _exit(1);
        raise(SIGINT);
        _exit(2);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 130);
}

static void test_watchdog(void)
{
    pid_t pid = fork();
    if (pid == 0) {
        spot_watchdog_start(0.3);
        for (int i = 0; i < 20; i++) {   /* kicked: survives 1 s */
            spot_watchdog_kick();
            usleep(50000);
        }
        sleep(5);                        /* then silent: must fire */
        _exit(0);
    }
    double t0 = util_now();
    int st = 0;
    waitpid(pid, &st, 0);
    double took = util_now() - t0;
    EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == ST_WATCHDOG);
    EXPECT(took > 1.0 && took < 2.5);
    pid = fork();
    if (pid == 0) {
        spot_watchdog_start(0.2);
        spot_watchdog_kick();
        spot_watchdog_stop();
        usleep(500000);
        spot_watchdog_start(0);          /* 0 disables */
        usleep(300000);
        _exit(0);
    }
    waitpid(pid, &st, 0);
    EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

int main(void)
{
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/test_spot.XXXXXX");
    if (!mkdtemp(tmp_dir))
        return 1;
    util_quiet = getenv("SPOT_VERBOSE") ? 0 : 1;
    harness_run("metadata_url checks", test_url);
    harness_run("time formats", test_times);
    harness_run("signals", test_signals);
    harness_run("watchdog", test_watchdog);
    if (srv_start() != 0) {
        printf("FAIL fake metadata server did not start\n");
        harness_fail++;
    } else {
        harness_run("aws notice, time and rebalance", test_aws);
        harness_run("aws token renewal on 401", test_aws_token_renewal);
        harness_run("a notice standing at start", test_at_start);
        harness_run("hostile answers are ignored", test_hostile);
        harness_run("slow service times out", test_slow);
        harness_run("chunked answers", test_chunked);
        harness_run("gcp preempted and maintenance", test_gcp);
        harness_run("azure scheduled events", test_azure);
        harness_run("alibaba termination-time", test_alibaba);
        harness_run("auto detection", test_auto);
        srv_stop();
    }
    harness_run("file provider and events.jsonl", test_file_and_events);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", tmp_dir);
    return harness_end();
}
