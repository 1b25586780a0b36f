/* The metadata exchange of a build without libcurl (DEVICE=1): providers
 * that ask a metadata service are refused at start with one line; file and
 * none need no HTTP and work as everywhere. */
#include "fetch.h"

#include "util/util.h"

#include <string.h>

int spot_fetch_ready(const char *provider)
{
    return util_fail(ST_UNAVAILABLE, "spot.provider = %s needs the metadata HTTP client, which this build lacks "
                     "(made without libcurl, e.g. make device-build); use spot.provider = file or none, or a "
                     "regular build", provider);
}

int spot_fetch(const spot_fetch_req *req, spot_fetch_resp *r)
{
    memset(r, 0, sizeof *r);
    r->why = "no HTTP client in this build";
    return ST_UNAVAILABLE;
}

void spot_fetch_free(spot_fetch_resp *r) {}
