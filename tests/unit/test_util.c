/* Unit tests of util/: the shortest round-trip number formatting every
 * machine-readable output uses (JSON, CSV, INI, Prometheus), and the bounded
 * file reader that refuses directories and endless devices.
 * module: util */
#include <float.h>
#include <json-c/json.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"
#include "tests/harness.h"

static int roundtrips(double v)
{
    char s[32];
    util_dtoa(v, s);
    return strtod(s, NULL) == v && (signbit(strtod(s, NULL)) == signbit(v));
}

static void test_dtoa_shortest(void)
{
    char s[32];
    EXPECT(!strcmp(util_dtoa(19.2, s), "19.2"));
    EXPECT(!strcmp(util_dtoa(1e-6, s), "1e-06"));
    EXPECT(!strcmp(util_dtoa(0.1, s), "0.1"));
    EXPECT(!strcmp(util_dtoa(98.32, s), "98.32"));
    EXPECT(!strcmp(util_dtoa(337920, s), "337920"));
    EXPECT(!strcmp(util_dtoa(0, s), "0"));
    EXPECT(!strcmp(util_dtoa(0.1 + 0.2, s), "0.30000000000000004"));
    EXPECT(!strcmp(util_dtoa(NAN, s), "NaN"));
    EXPECT(!strcmp(util_dtoa(INFINITY, s), "+Inf") && !strcmp(util_dtoa(-INFINITY, s), "-Inf"));
}

static void test_dtoa_roundtrip(void)
{
    static const double tricky[] = {0.1, 0.2, 0.3, 1.0 / 3, 2.0 / 3, 1e-6, 9.9999999999999995e-07, 19.199999999999999,
                                    5e-324, DBL_MIN, DBL_MAX, DBL_EPSILON, 1 + DBL_EPSILON, 123456789012345678.0,
                                    9007199254740993.0, 0.1 + 0.2, 1e21, 1e22, 1e23, -0.0, -1.5e-300,
                                    4.35, 2.675, 1.005, 100.0 / 3};
    for (size_t i = 0; i < sizeof tricky / sizeof tricky[0]; i++)
        EXPECT(roundtrips(tricky[i]));
    /* a deterministic spread over the whole exponent range */
    unsigned long long x = 88172645463325252ull;
    int bad = 0;
    for (int i = 0; i < 200000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        double d;
        memcpy(&d, &x, sizeof d);
        if (isfinite(d) && !roundtrips(d))
            bad++;
    }
    EXPECT(bad == 0);
}

static void test_json_num(void)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "spot", util_json_num(19.2));
    json_object_object_add(o, "eps", util_json_num(1e-6));
    json_object_object_add(o, "cost", util_json_num(162600));
    json_object_object_add(o, "never", util_json_num(INFINITY));
    const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
    EXPECT(!strcmp(s, "{\"spot\":19.2,\"eps\":1e-06,\"cost\":162600,\"never\":null}"));
    json_object *back = json_tokener_parse(s), *v;
    EXPECT(back && json_object_object_get_ex(back, "spot", &v) && json_object_get_double(v) == 19.2);
    json_object_put(back);
    json_object_put(o);
}

static void test_read_prefix(void)
{
    char *text = NULL;
    size_t len = 99;
    int more = 0;
    EXPECT(util_read_file("/tmp", &text, &len) == ST_NOINPUT && !text);
    EXPECT(util_read_prefix("/dev/zero", 4096, &text, &len, &more) == ST_OK && len == 4096 && more);
    free(text);
    text = NULL;
    EXPECT(util_read_prefix("/dev/null", 4096, &text, &len, &more) == ST_OK && len == 0 && !more);
    EXPECT(text && text[0] == 0);
    free(text);
    EXPECT(util_read_file("/nonexistent/x", &text, &len) == ST_NOINPUT);
}

int main(void)
{
    util_quiet = 1;
    harness_run("util_dtoa prints the shortest decimal", test_dtoa_shortest);
    harness_run("util_dtoa round-trips tricky and random doubles", test_dtoa_roundtrip);
    harness_run("util_json_num in JSON", test_json_num);
    harness_run("bounded reads: directories, /dev/zero, /dev/null", test_read_prefix);
    return harness_end();
}
