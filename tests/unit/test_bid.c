/* Unit tests of `bid`: timestamps, the three history formats, sorting,
 * time-weighted statistics and trend, the persistent-bid model on a
 * synthetic history with a hand-computed answer, and malformed inputs.
 * module: money */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "money/bid.h"
#include "util/util.h"
#include "tests/harness.h"

#define NEAR(a, b, tol) (fabs((a) - (b)) <= (tol))

static int parse(bid_history *h, const char *text)
{
    memset(h, 0, sizeof *h);
    int rc = bid_parse(h, "test", text, strlen(text));
    if (!rc)
        rc = bid_finish(h);
    return rc;
}

static void test_time(void)
{
    double t;
    EXPECT(util_parse_time("2024-05-01T12:00:00Z", &t) == 0 && t == 1714564800.0);
    EXPECT(util_parse_time("2024-05-01T12:00:00.500Z", &t) == 0 && t == 1714564800.5);
    EXPECT(util_parse_time("2024-05-01T14:00:00+02:00", &t) == 0 && t == 1714564800.0);
    EXPECT(util_parse_time("2024-05-01 12:00:00", &t) == 0 && t == 1714564800.0);
    EXPECT(util_parse_time("2024-02-29T00:00:00Z", &t) == 0 && t == 1709164800.0);
    EXPECT(util_parse_time("1714564800", &t) == 0 && t == 1714564800.0);
    EXPECT(util_parse_time("2023-02-29T00:00:00Z", &t) != 0);
    EXPECT(util_parse_time("2024-13-01T00:00:00Z", &t) != 0);
    EXPECT(util_parse_time("2024-05-01T25:00:00Z", &t) != 0);
    EXPECT(util_parse_time("2024-05-01T12:00:00Zjunk", &t) != 0);
    EXPECT(util_parse_time("yesterday", &t) != 0);
    EXPECT(util_parse_time("-5", &t) != 0);
    EXPECT(util_parse_time("", &t) != 0);
}

/* 1.0 for 9 h then 3.0 for 1 h, ten times (100 h), closed by a record. */
static char *cyclic_csv(void)
{
    static char buf[8192];
    size_t o = (size_t)snprintf(buf, sizeof buf, "timestamp,zone,instance_type,price\n");
    for (int k = 0; k < 10; k++) {
        o += (size_t)snprintf(buf + o, sizeof buf - o, "%d,z1,p5,1.0\n", k * 36000);
        o += (size_t)snprintf(buf + o, sizeof buf - o, "%d,z1,p5,3.0\n", k * 36000 + 32400);
    }
    snprintf(buf + o, sizeof buf - o, "360000,z1,p5,1.0\n");
    return buf;
}

static void test_model_known_answer(void)
{
    bid_history h;
    bid_eval e, best;
    bid_stats st;
    EXPECT(parse(&h, cyclic_csv()) == ST_OK && h.n == 1 && h.s[0].n == 21);
    const bid_series *s = &h.s[0];
    EXPECT(bid_series_stats(s, 360000, 7, &st) == ST_OK);
    EXPECT(NEAR(st.mean, 1.2, 1e-12) && st.p50 == 1.0 && st.p95 == 3.0 && st.max == 3.0 && st.last == 1.0);
    EXPECT(NEAR(st.hours, 100, 1e-12));
    EXPECT(NEAR(bid_frac_above(s, 360000, 1.0), 0.1, 1e-12));
    /* cap 1.0: F = 0.9, 10 up-crossings in 100 h, 10 h of work, 0.5 h
     * recovery: run = 10 / (1 - 0.5 x 0.1/0.9) = 10.5882 h at $1. */
    bid_eval_cap(s, 360000, 1.0, 10, 0.5, &e);
    EXPECT(NEAR(e.avail, 0.9, 1e-12) && NEAR(e.upcross_per_hour, 0.1, 1e-12));
    EXPECT(NEAR(e.run_hours, 10 / (1 - 0.5 / 9), 1e-9) && NEAR(e.cost, 10.588235, 1e-5));
    EXPECT(NEAR(e.wall_hours, e.run_hours / 0.9, 1e-9));
    /* cap 3.0: never interrupted, pays the mean 1.2 -> 12.0 */
    bid_eval_cap(s, 360000, 3.0, 10, 0.5, &e);
    EXPECT(NEAR(e.cost, 12.0, 1e-9) && e.interruptions == 0);
    EXPECT(bid_best_cap(s, 360000, 10, 0.5, 0, &best) == 0);
    EXPECT(best.cap == 1.0 && NEAR(best.cost, 10.588235, 1e-5));
    /* 5 h recovery: cap 1.0 costs 10/(1 - 5/9) = 22.5 > 12: cap 3.0 wins */
    EXPECT(bid_best_cap(s, 360000, 10, 5, 0, &best) == 0);
    EXPECT(best.cap == 3.0 && NEAR(best.cost, 12.0, 1e-9));
    /* a deadline of 11 h rules out cap 1.0 (11.76 wall hours) */
    EXPECT(bid_best_cap(s, 360000, 10, 0.5, 11, &best) == 0 && best.cap == 3.0);
    EXPECT(bid_best_cap(s, 360000, 10, 0.5, 5, &best) == -1);
    bid_history_free(&h);
}

static void test_sweep_matches_direct(void)
{
    /* The one-pass optimiser must agree with evaluating each cap directly. */
    char buf[65536];
    size_t o = 0;
    unsigned x = 12345;
    for (int i = 0; i < 400; i++) {
        x = x * 1103515245u + 12345u;
        o += (size_t)snprintf(buf + o, sizeof buf - o, "%d,z,t,%.2f\n", i * 600 + (int)(x % 300),
                              0.5 + (double)((x >> 8) % 40) / 20);
    }
    bid_history h;
    EXPECT(parse(&h, buf) == ST_OK);
    const bid_series *s = &h.s[0];
    double end = s->pts[s->n - 1].ts + 1800;
    for (int r = 0; r < 3; r++) {
        double restart = r * 0.4;
        bid_eval best, e, min = {0};
        min.cost = INFINITY;
        EXPECT(bid_best_cap(s, end, 20, restart, 0, &best) == 0);
        for (int i = 0; i < s->n; i++) {
            bid_eval_cap(s, end, s->pts[i].price, 20, restart, &e);
            if (e.cost < min.cost)
                min = e;
        }
        bid_eval_cap(s, end, best.cap, 20, restart, &e);
        EXPECT(NEAR(e.cost, best.cost, 1e-9 * best.cost) && NEAR(e.avail, best.avail, 1e-12));
        EXPECT(NEAR(min.cost, best.cost, 1e-9 * best.cost));
    }
    bid_history_free(&h);
}

static void test_trend(void)
{
    /* hourly, rising 0.1 per day over 10 days: slope 0.1/day over 7 days */
    char buf[65536];
    size_t o = 0;
    for (int i = 0; i <= 240; i++)
        o += (size_t)snprintf(buf + o, sizeof buf - o, "%d,z,t,%.6f\n", 1700000000 + i * 3600, 1 + 0.1 * i / 24.0);
    bid_history h;
    bid_stats st;
    EXPECT(parse(&h, buf) == ST_OK);
    EXPECT(bid_series_stats(&h.s[0], h.s[0].pts[240].ts, 7, &st) == ST_OK);
    EXPECT(NEAR(st.trend_per_day, 0.1, 1e-4) && st.trend_points > 100);
    bid_history_free(&h);
}

static const char aws[] =
    "{\"SpotPriceHistory\": [\n"
    " {\"AvailabilityZone\":\"us-east-1b\",\"InstanceType\":\"p5.48xlarge\",\"ProductDescription\":\"Linux/UNIX\",\"SpotPrice\":\"40.000000\",\"Timestamp\":\"2024-05-01T02:00:00.000Z\"},\n"
    " {\"AvailabilityZone\":\"us-east-1a\",\"InstanceType\":\"p5.48xlarge\",\"ProductDescription\":\"Linux/UNIX\",\"SpotPrice\":\"30.000000\",\"Timestamp\":\"2024-05-01T02:00:00.000Z\"},\n"
    " {\"AvailabilityZone\":\"us-east-1a\",\"InstanceType\":\"p5.48xlarge\",\"ProductDescription\":\"Linux/UNIX\",\"SpotPrice\":\"20.000000\",\"Timestamp\":\"2024-05-01T00:00:00.000Z\"},\n"
    " {\"AvailabilityZone\":\"us-east-1b\",\"InstanceType\":\"p5.48xlarge\",\"ProductDescription\":\"Linux/UNIX\",\"SpotPrice\":\"10.000000\",\"Timestamp\":\"2024-05-01T00:00:00.000Z\"}\n"
    "]}\n";

static const char ali[] =
    "{\"RequestId\":\"x\",\"SpotPrices\":{\"SpotPriceType\":[\n"
    " {\"ZoneId\":\"cn-hangzhou-i\",\"InstanceType\":\"ecs.gn7-c12g1.3xlarge\",\"SpotPrice\":3.5,\"OriginPrice\":12.0,\"Timestamp\":\"2024-05-01T00:00:00Z\",\"NetworkType\":\"vpc\"},\n"
    " {\"ZoneId\":\"cn-hangzhou-i\",\"InstanceType\":\"ecs.gn7-c12g1.3xlarge\",\"SpotPrice\":4.5,\"OriginPrice\":12.5,\"Timestamp\":\"2024-05-01T06:00:00Z\",\"NetworkType\":\"vpc\"}\n"
    "]}}";

static void test_formats(void)
{
    bid_history h;
    bid_stats st;
    EXPECT(parse(&h, aws) == ST_OK && h.n == 2);
    /* sorted by zone, and each series by time (the file is newest first) */
    EXPECT(!strcmp(h.s[0].zone, "us-east-1a") && !strcmp(h.s[0].product, "Linux/UNIX"));
    EXPECT(h.s[0].n == 2 && h.s[0].pts[0].price == 20 && h.s[0].pts[1].price == 30);
    EXPECT(bid_series_stats(&h.s[0], 1714532400.0, 7, &st) == ST_OK);   /* end 03:00 */
    EXPECT(NEAR(st.mean, (20 * 2 + 30 * 1) / 3.0, 1e-9) && st.last == 30);
    bid_history_free(&h);

    EXPECT(parse(&h, ali) == ST_OK && h.n == 1 && h.s[0].n == 2);
    EXPECT(bid_series_stats(&h.s[0], h.s[0].pts[1].ts, 7, &st) == ST_OK && st.origin == 12.5);
    bid_history_free(&h);

    /* CSV without header, ISO times, blank and comment lines, CRLF, and a
     * duplicate timestamp where the later line wins */
    const char *csv = "# exported\r\n2024-05-01T00:00:00Z, z1 , t1, 1.5\r\n\r\n"
                      "2024-05-01T01:00:00Z,z1,t1,2.5\n2024-05-01T01:00:00Z,z1,t1,2.0\n";
    EXPECT(parse(&h, csv) == ST_OK && h.n == 1 && h.s[0].n == 2 && h.s[0].pts[1].price == 2.0);
    EXPECT(!strcmp(h.s[0].zone, "z1") && !strcmp(h.s[0].type, "t1"));
    bid_history_free(&h);
}

static void test_malformed(void)
{
    static const char *bad[] = {
        "",
        "   \n",
        "{\"SpotPriceHistory\": [",
        "{\"SpotPriceHistory\": []}",
        "{\"SpotPriceHistory\": {}}",
        "{\"SpotPriceHistory\": [1]}",
        "{\"SpotPriceHistory\": [{\"AvailabilityZone\":\"a\",\"InstanceType\":\"t\",\"SpotPrice\":{},\"Timestamp\":\"2024-05-01T00:00:00Z\"}]}",
        "{\"SpotPriceHistory\": [{\"AvailabilityZone\":\"a\",\"InstanceType\":\"t\",\"SpotPrice\":\"-1\",\"Timestamp\":\"2024-05-01T00:00:00Z\"}]}",
        "{\"SpotPriceHistory\": [{\"AvailabilityZone\":\"a\",\"InstanceType\":\"t\",\"SpotPrice\":\"NaN\",\"Timestamp\":\"2024-05-01T00:00:00Z\"}]}",
        "{\"SpotPriceHistory\": [{\"AvailabilityZone\":\"a\",\"InstanceType\":\"t\",\"SpotPrice\":\"1e999\",\"Timestamp\":\"2024-05-01T00:00:00Z\"}]}",
        "{\"SpotPriceHistory\": [{\"AvailabilityZone\":\"a\",\"InstanceType\":\"t\",\"SpotPrice\":\"1\",\"Timestamp\":\"soon\"}]}",
        "{\"SpotPriceHistory\": [{\"AvailabilityZone\":7,\"InstanceType\":\"t\",\"SpotPrice\":\"1\",\"Timestamp\":\"2024-05-01T00:00:00Z\"}]}",
        "{\"SpotPriceHistory\": [{\"InstanceType\":\"t\",\"SpotPrice\":\"1\",\"Timestamp\":\"2024-05-01T00:00:00Z\"}]}",
        "{\"SpotPrices\": {\"SpotPriceType\": {}}}",
        "{\"SpotPrices\": {\"SpotPriceType\": [{\"ZoneId\":\"z\",\"InstanceType\":\"t\",\"SpotPrice\":1,\"OriginPrice\":\"x\",\"Timestamp\":\"2024-05-01T00:00:00Z\"}]}}",
        "{\"Other\": 1}",
        "[1,2,3]",
        "{\"SpotPriceHistory\": []} trailing",
        "timestamp,zone,instance_type,price\n",
        "2024-05-01T00:00:00Z,z,t\n",
        "2024-05-01T00:00:00Z,z,t,1,extra\n",
        "2024-05-01T00:00:00Z,z,t,-3\n",
        "2024-05-01T00:00:00Z,z,t,nan\n",
        "2024-05-01T00:00:00Z,,t,1\n",
        "2024-05-01T00:00:00Z,z,t,1\nnot-a-time,z,t,1\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        bid_history h;
        int rc = parse(&h, bad[i]);
        if (rc != ST_DATA)
            fprintf(stderr, "    input %zu gave %d\n", i, rc);
        EXPECT(rc == ST_DATA);
        bid_history_free(&h);
    }
    bid_history h = {0};
    const char nul[] = "1,z,t,1\n\0\n";
    EXPECT(bid_parse(&h, "nul", nul, sizeof nul - 1) == ST_DATA);
    bid_history_free(&h);
}

int main(void)
{
    util_quiet = 1;
    harness_run("timestamps", test_time);
    harness_run("bid model known answer", test_model_known_answer);
    harness_run("optimiser sweep matches direct evaluation", test_sweep_matches_direct);
    harness_run("least-squares trend", test_trend);
    harness_run("AWS, Alibaba and CSV formats", test_formats);
    harness_run("malformed histories exit 65", test_malformed);
    return harness_end();
}
