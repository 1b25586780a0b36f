#!/usr/bin/env python3
# A fake cloud metadata service for the spot tests: speaks the AWS (IMDSv2),
# GCP, Azure (Scheduled Events) and Alibaba notice protocols on 127.0.0.1, and
# can misbehave on request (slow, garbage, chunked, expired tokens).
#
#   python3 tests/cli/fake_metadata.py --mode aws --port-file FILE [--notice]
#
# Listens on a free port and writes it to FILE. State changes at run time:
#   GET /_control?key=value&...   (mode, notice, rebalance, expire_tokens, slow,
#       garbage (junk badjson huge badlen bighead bigbody redirect badchunk
#       close), chunked, maint, vm, event_vm, event_type, notbefore, time,
#       hardened)   GET /_state -> JSON counters.   GET /_quit stops it.
import argparse
import json
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
STATE = {
    "mode": "aws",
    "notice": 0,
    "action": "terminate",
    "time": "",            # empty: now + window, formatted by the provider's rules
    "rebalance": 0,
    "expire_tokens": 0,    # 1: every token issued so far is refused with 401
    "slow": 0.0,           # seconds to wait before answering
    "garbage": "",         # junk | badjson | huge | badlen | bighead | bigbody | redirect | badchunk | close
    "chunked": 0,
    "maint": "NONE",
    "vm": "vm-test",
    "event_vm": "vm-test",
    "event_type": "Preempt",
    "notbefore": "",
    "hardened": 0,
    "iam_ttl": 3600,       # IAM block: seconds from now to the role credentials' Expiration
}
COUNT = {"redirected": 0, "iam_issued": 0, "token_puts": 0, "requests": 0, "unauthorized": 0, "acks": 0, "ack_body": ""}
TOKENS = set()
IAM_PREFIX = "/latest/meta-data/iam/security-credentials/"
IAM_ROLE = "spotrain-test-role"
NEXT_TOKEN = [0]


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def http_date(t):
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(t))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def send(self, status, body, ctype="text/plain", extra=None):
        if isinstance(body, str):
            body = body.encode()
        garbage = STATE["garbage"]
        if garbage and not self.path.startswith("/_"):
            self.send_garbage(garbage, body)
            return
        head = "HTTP/1.1 %d X\r\nContent-Type: %s\r\nConnection: close\r\n" % (status, ctype)
        for k, v in (extra or {}).items():
            head += "%s: %s\r\n" % (k, v)
        if STATE["chunked"] and not self.path.startswith("/_"):
            head += "Transfer-Encoding: chunked\r\n\r\n"
            out = head.encode()
            # Odd-sized pieces so a parser that assumes one chunk is caught out.
            for i in range(0, len(body), 7):
                piece = body[i:i + 7]
                out += b"%x;ext=1\r\n%s\r\n" % (len(piece), piece)
            out += b"0\r\nX-Trailer: yes\r\n\r\n"
        else:
            out = head.encode() + b"Content-Length: %d\r\n\r\n" % len(body) + body
        self.wfile.write(out)
        self.close_connection = True

    def send_garbage(self, kind, body):
        if kind == "junk":
            self.wfile.write(b"\x00\xffNOT HTTP AT ALL\r\n\r\n" * 3)
        elif kind == "badjson":
            bad = b'{"action": "terminate", "time": '
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(bad), bad))
        elif kind == "huge":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 999999999\r\n\r\nTRUE")
        elif kind == "badlen":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nTRUE")
        elif kind == "bighead":
            # The real answer behind 20 KiB of headers: over the 16 KiB cap.
            pad = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"p" * 100) for i in range(200))
            self.wfile.write(b"HTTP/1.1 200 OK\r\n" + pad + b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        elif kind == "bigbody":
            # The real answer, then 200 KiB of blanks until close (no
            # length): over the 64 KiB body cap, well-formed without it.
            self.wfile.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + body + b" " * (200 * 1024))
        elif kind == "redirect":
            # Elsewhere (another host name, same server) a notice waits;
            # a client that follows redirects would stop on it.
            port = self.server.server_address[1]
            self.wfile.write(b"HTTP/1.1 302 Found\r\nLocation: http://localhost:%d/_notice%s\r\n"
                             b"Content-Length: 0\r\n\r\n" % (port, self.path.encode()))
        elif kind == "badchunk":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nTRUE\r\n0\r\n\r\n")
        # "close": say nothing at all
        self.close_connection = True

    def params(self):
        return urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query, keep_blank_values=True)

    def do_control(self):
        path = urllib.parse.urlparse(self.path).path
        if path == "/_state":
            with LOCK:
                self.send(200, json.dumps({**STATE, **COUNT}), "application/json")
            return True
        if path.startswith("/_notice/"):
            # The redirect target: the notice the hostile server points at.
            with LOCK:
                COUNT["redirected"] += 1
            inner = path[len("/_notice"):]
            if inner.endswith("/api/token"):
                self.send(200, "tok-redirected==")
            elif inner.endswith("/preempted"):
                self.send(200, "TRUE")
            else:
                self.send(200, json.dumps({"action": "terminate", "time": iso(time.time() + 120)}),
                          "application/json")
            return True
        if path == "/_quit":
            self.send(200, "bye")
            threading.Thread(target=self.server.shutdown).start()
            return True
        if path == "/_control":
            with LOCK:
                for k, v in self.params().items():
                    if k not in STATE:
                        self.send(400, "unknown key " + k)
                        return True
                    cur = STATE[k]
                    STATE[k] = type(cur)(v[0]) if not isinstance(cur, str) else v[0]
                    if k == "expire_tokens" and STATE[k]:
                        TOKENS.clear()
            self.send(200, "ok")
            return True
        return False

    def prelude(self):
        if self.do_control():
            return False
        with LOCK:
            COUNT["requests"] += 1
            slow = STATE["slow"]
        if slow > 0:
            time.sleep(slow)
        return True

    def do_PUT(self):
        if not self.prelude():
            return
        path = urllib.parse.urlparse(self.path).path
        mode = STATE["mode"]
        ttl_header = {"aws": "X-aws-ec2-metadata-token-ttl-seconds",
                      "alibaba": "X-aliyun-ecs-metadata-token-ttl-seconds"}.get(mode)
        if path != "/latest/api/token" or not ttl_header:
            self.send(404, "not found")
            return
        if not self.headers.get(ttl_header):
            self.send(400, "missing ttl")
            return
        with LOCK:
            NEXT_TOKEN[0] += 1
            tok = "tok%d==" % NEXT_TOKEN[0]
            TOKENS.add(tok)
            COUNT["token_puts"] += 1
        self.send(200, tok)

    def do_POST(self):
        if not self.prelude():
            return
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n).decode(errors="replace")
        if STATE["mode"] == "azure" and self.path.startswith("/metadata/scheduledevents") \
                and self.headers.get("Metadata") == "true":
            with LOCK:
                COUNT["acks"] += 1
                COUNT["ack_body"] = body
            self.send(200, "")
            return
        self.send(404, "not found")

    def do_GET(self):
        if not self.prelude():
            return
        getattr(self, "get_" + STATE["mode"])(urllib.parse.urlparse(self.path).path)

    def token_ok(self, header):
        tok = self.headers.get(header)
        with LOCK:
            ok = tok in TOKENS
            if not ok:
                COUNT["unauthorized"] += 1
        return ok

    def get_aws(self, path):
        if not self.token_ok("X-aws-ec2-metadata-token"):
            self.send(401, "")
            return
        if path == "/latest/meta-data/spot/instance-action":
            if STATE["notice"]:
                t = STATE["time"] or iso(time.time() + 120)
                self.send(200, json.dumps({"action": STATE["action"], "time": t}), "application/json")
            else:
                self.send(404, "not found")
        elif path == "/latest/meta-data/events/recommendations/rebalance":
            if STATE["rebalance"]:
                self.send(200, json.dumps({"noticeTime": iso(time.time())}), "application/json")
            else:
                self.send(404, "not found")
        elif path == "/latest/meta-data/instance-id":
            self.send(200, "i-0123456789")
        elif path.startswith(IAM_PREFIX):
            self.get_aws_iam(path)
        else:
            self.send(404, "not found")

    # ---- IAM instance role (for the S3 client's credentials; separate from
    # the notice paths above). Each credentials read issues new keys
    # ASIAFAKE<n> / iamtok<n>, expiring iam_ttl seconds from now.
    def get_aws_iam(self, path):
        role = path[len(IAM_PREFIX):]
        if role == "":
            self.send(200, IAM_ROLE)
        elif role == IAM_ROLE:
            with LOCK:
                COUNT["iam_issued"] += 1
                n = COUNT["iam_issued"]
                ttl = STATE["iam_ttl"]
            self.send(200, json.dumps({
                "Code": "Success", "LastUpdated": iso(time.time()), "Type": "AWS-HMAC",
                "AccessKeyId": "ASIAFAKE%d" % n, "SecretAccessKey": "secret%d" % n,
                "Token": "iamtok%d" % n, "Expiration": iso(time.time() + ttl)}), "application/json")
        else:
            self.send(404, "not found")

    def get_gcp(self, path):
        if self.headers.get("Metadata-Flavor") != "Google":
            self.send(403, "missing Metadata-Flavor")
            return
        flavor = {"Metadata-Flavor": "Google"}
        if path == "/computeMetadata/v1/instance/preempted":
            self.send(200, "TRUE" if STATE["notice"] else "FALSE", extra=flavor)
        elif path == "/computeMetadata/v1/instance/maintenance-event":
            self.send(200, STATE["maint"], extra=flavor)
        else:
            self.send(404, "not found", extra=flavor)

    def get_azure(self, path):
        if self.headers.get("Metadata") != "true":
            self.send(400, "missing Metadata header")
            return
        if path == "/metadata/instance/compute/name":
            self.send(200, STATE["vm"])
        elif path == "/metadata/scheduledevents":
            events = []
            if STATE["notice"]:
                nb = STATE["notbefore"] or http_date(time.time() + 30)
                events.append({"EventId": "602d9444-d2cd-49c7-8624-8643e7171297",
                               "EventType": STATE["event_type"], "ResourceType": "VirtualMachine",
                               "Resources": ["other-vm", STATE["event_vm"]] if STATE["event_vm"] else [],
                               "EventStatus": "Scheduled", "NotBefore": nb, "Description": "",
                               "EventSource": "Platform", "DurationInSeconds": -1})
            self.send(200, json.dumps({"DocumentIncarnation": 1, "Events": events}),
                      "application/json")
        else:
            self.send(404, "not found")

    def get_alibaba(self, path):
        if STATE["hardened"] and not self.token_ok("X-aliyun-ecs-metadata-token"):
            self.send(403, "")
            return
        if path == "/latest/meta-data/instance/spot/termination-time":
            if STATE["notice"]:
                self.send(200, STATE["time"] or iso(time.time() + 300))
            else:
                self.send(404, "not found")
        elif path == "/latest/meta-data/instance-id":
            self.send(200, "i-bp1abcdef")
        else:
            self.send(404, "not found")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mode", default="aws", choices=["aws", "gcp", "azure", "alibaba"])
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--notice", action="store_true")
    args = ap.parse_args()
    STATE["mode"] = args.mode
    STATE["notice"] = int(args.notice)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % srv.server_address[1])
    import os
    os.rename(tmp, args.port_file)
    try:
        srv.serve_forever(poll_interval=0.05)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
