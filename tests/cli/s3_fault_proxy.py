#!/usr/bin/env python3
# A fault-injecting HTTP proxy on 127.0.0.1 in front of an S3 server (moto)
# for tests/cli/cli_s3.sh, cli_remote.sh and cli_remote_read.sh: forwards requests unchanged, except that it can fail
# the next N with 500/503, drop the connection, cut the next N GET answers
# half way through their body, answer slowly, or refuse a session token
# with 403 ExpiredToken.
# module: s3
#   python3 tests/cli/s3_fault_proxy.py --upstream PORT --port-file FILE
# Control: GET /_control?fail=N&status=503&drop=N&cut=N&slow=SECONDS&expired_token=T
#          &match=TEXT       faults hit only requests whose "METHOD /path?query RANGE"
#                            contains TEXT ("" = every request; RANGE: the Range
#                            header's value, e.g. "bytes=0-16383", or "")
#          &slow_count=N     only the next N matching requests are slow (-1 = all)
#          &slow_match=TEXT  slowness hits the requests TEXT matches instead
#                            (so one chunk can be slow while another fails)
#          &expire_after=N   after N more ranged GETs that carry a session token,
#                            every token seen so far is refused with 403
#                            ExpiredToken (a credential expiring mid-transfer;
#                            tokens issued later pass)
#          GET /_state -> JSON counters; "overtook": answers sent while an
#                            earlier-arrived slow request was still waiting.
# Every request that reaches either port has its SigV4 signature recomputed
# with botocore from the request as received (moto checks none): a signed
# header that was not sent, a wrong signature or an unsigned request is
# recorded, and GET /_badsig lists them one a line (tests/cli/lib.sh's t_end
# fails on any). A second port (--clean-port-file) forwards without faults,
# so the tests' direct traffic is checked too.
import argparse, hashlib, http.client, json, os, re, sys, threading, time, urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
STATE = {"fail": 0, "status": 503, "drop": 0, "cut": 0, "slow": 0.0, "expired_token": "", "match": "",
         "slow_count": -1, "expire_after": -1, "slow_match": ""}
COUNT = {"requests": 0, "failed": 0, "dropped": 0, "cut": 0, "expired": 0, "slowed": 0, "aborts": 0,
         "matched": 0, "expired_ranged": 0, "overtook": 0}
SLEEPING = [0]   # slow requests now waiting
SEEN_TOKENS = set()
EXPIRED_TOKENS = set()
UPSTREAM = [0]
BADSIG = []      # one line per request whose signature did not verify

# The secret of each access key the tests use (lib.sh, cli_s3.sh's
# credentials file, fake_metadata.py's role keys ASIAFAKE<n>/secret<n>).
SECRETS = {"testing": "testing", "FILEKEY": "FILESECRET"}


def secret_for(key):
    m = re.fullmatch(r"ASIAFAKE(\d+)", key)
    return "secret" + m.group(1) if m else SECRETS.get(key)


def sig_problem(method, path, headers, body):
    """None when the request's SigV4 signature verifies, else why not."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.compat import HTTPHeaders
    from botocore.credentials import Credentials
    auth = headers.get("Authorization", "")
    m = re.fullmatch(r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request,\s*"
                     r"SignedHeaders=([^,]+),\s*Signature=([0-9a-f]{64})", auth)
    if not m:
        return "no SigV4 Authorization header (%r)" % auth[:80]
    key, day, region, service, signed, sig = m.groups()
    names = signed.split(";")
    missing = [n for n in names if headers.get(n) is None]
    if missing:
        return "signed header(s) %s not sent" % ",".join(missing)
    secret = secret_for(key)
    if secret is None:
        return "unknown access key %s" % key
    stamp = headers.get("x-amz-date", "")
    if stamp[:8] != day:
        return "x-amz-date %r does not match the credential date %s" % (stamp, day)
    sha = headers.get("x-amz-content-sha256", "")
    if re.fullmatch(r"[0-9a-f]{64}", sha) and sha != hashlib.sha256(body).hexdigest():
        return "x-amz-content-sha256 is not the body's hash"

    class Replay(S3SigV4Auth):
        # The headers the client says it signed, with the values it sent.
        def headers_to_sign(self, request):
            hm = HTTPHeaders()
            for n in names:
                hm[n] = headers.get(n)
            return hm

        def _normalize_url_path(self, p):
            return p

    req = AWSRequest(method=method, url="http://%s%s" % (headers.get("Host", "localhost"), path),
                     headers=dict(headers.items()), data=body)
    req.context["timestamp"] = stamp
    a = Replay(Credentials(key, secret, headers.get("x-amz-security-token")), service, region)
    want = a.signature(a.string_to_sign(req, a.canonical_request(req)), req)
    return None if want == sig else "signature does not verify"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def reply(self, status, body, ctype="application/xml"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def handle_any(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        u = urllib.parse.urlsplit(self.path)
        if u.path == "/_control":
            with LOCK:
                for k, v in urllib.parse.parse_qsl(u.query, keep_blank_values=True):
                    STATE[k] = type(STATE[k])(v)
                if "expire_after" in u.query:
                    SEEN_TOKENS.clear()
                    EXPIRED_TOKENS.clear()
            return self.reply(200, b"ok", "text/plain")
        if u.path == "/_state":
            with LOCK:
                return self.reply(200, json.dumps(COUNT).encode(), "application/json")
        if u.path == "/_badsig":
            with LOCK:
                return self.reply(200, "".join(x + "\n" for x in BADSIG).encode(), "text/plain")
        why = sig_problem(self.command, self.path, self.headers, body)
        with LOCK:
            if why:
                BADSIG.append("%s %s: %s" % (self.command, self.path, why))
            if self.server.clean:
                action = slow = None
            else:
                COUNT["requests"] += 1
                action, slow = self.fault()
        self.forward(body, action, slow)

    def fault(self):
        """Under LOCK: which fault (or none) this request gets, and how slow."""
        u = urllib.parse.urlsplit(self.path)
        action = None
        tok = self.headers.get("x-amz-security-token", "")
        if self.command == "DELETE" and "uploadId=" in u.query:
            COUNT["aborts"] += 1
        ranged = self.command == "GET" and "Range" in self.headers
        if tok and tok not in EXPIRED_TOKENS:
            SEEN_TOKENS.add(tok)
            if STATE["expire_after"] > 0 and ranged:
                STATE["expire_after"] -= 1
                if STATE["expire_after"] == 0:
                    EXPIRED_TOKENS.update(SEEN_TOKENS)
        what = "%s %s %s" % (self.command, self.path, self.headers.get("Range", ""))
        hit = STATE["match"] in what
        slow_hit = STATE["slow_match"] in what if STATE["slow_match"] else hit
        COUNT["matched"] += hit and STATE["match"] != ""
        if (STATE["expired_token"] and tok == STATE["expired_token"]) or tok in EXPIRED_TOKENS:
            action = "expired"
            COUNT["expired"] += 1
            COUNT["expired_ranged"] += ranged
        elif not hit:
            pass
        elif STATE["drop"] > 0:
            STATE["drop"] -= 1
            action = "drop"
            COUNT["dropped"] += 1
        elif STATE["cut"] > 0 and self.command == "GET" and "Range" in self.headers:
            STATE["cut"] -= 1
            action = "cut"
            COUNT["cut"] += 1
        elif STATE["fail"] > 0:
            STATE["fail"] -= 1
            action = "fail"
            COUNT["failed"] += 1
        slow = STATE["slow"] if slow_hit and action is None and STATE["slow_count"] != 0 else 0
        if slow:
            COUNT["slowed"] += 1
            SLEEPING[0] += 1
            if STATE["slow_count"] > 0:
                STATE["slow_count"] -= 1
        return action, slow

    def forward(self, body, action, slow):
        if action == "drop":
            # No answer at all: the client sees the connection close.
            self.close_connection = True
            return
        if action == "fail":
            code = STATE["status"]
            return self.reply(code, b"<Error><Code>%s</Code><Message>injected</Message></Error>"
                              % (b"SlowDown" if code == 503 else b"InternalError"))
        if action == "expired":
            return self.reply(403, b"<Error><Code>ExpiredToken</Code><Message>The provided token has expired."
                              b"</Message></Error>")
        if slow:
            time.sleep(slow)
            with LOCK:
                SLEEPING[0] -= 1
        conn = http.client.HTTPConnection("127.0.0.1", UPSTREAM[0], timeout=120)
        hdrs = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "expect")}
        conn.request(self.command, self.path, body=body, headers=hdrs)
        r = conn.getresponse()
        data = r.read()
        self.send_response(r.status)
        for k, v in r.getheaders():
            if k.lower() not in ("connection", "transfer-encoding", "content-length", "server", "date"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data) if self.command != "HEAD"
                                               else int(r.getheader("Content-Length") or 0)))
        self.end_headers()
        if action == "cut":
            # The full length announced, half the body sent, then the
            # connection closed: a download dropped mid-transfer.
            self.wfile.write(data[:len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
        elif self.command != "HEAD":
            self.wfile.write(data)
        conn.close()
        with LOCK:
            COUNT["overtook"] += not slow and SLEEPING[0] > 0

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = handle_any


class QuietServer(ThreadingHTTPServer):
    # A client that gave up on a slow answer closes its end first: expected
    # here, so no traceback in the test's output.
    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--upstream", type=int, required=True)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--clean-port-file", help="also serve a port that only forwards and checks signatures")
    a = ap.parse_args()
    UPSTREAM[0] = a.upstream
    servers = []
    for clean, pf in ((True, a.clean_port_file), (False, a.port_file)):
        if not pf:
            continue
        srv = QuietServer(("127.0.0.1", 0), Handler)
        srv.daemon_threads = True
        srv.clean = clean
        servers.append(srv)
        with open(pf + ".tmp", "w") as f:
            f.write(str(srv.server_address[1]))
        os.rename(pf + ".tmp", pf)
    for srv in servers[:-1]:
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    servers[-1].serve_forever()


if __name__ == "__main__":
    sys.exit(main())
