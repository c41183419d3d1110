#!/usr/bin/python3
"""A small caching HTTP proxy for apt in the test VMs (tests/common/vms.rs).

    apt_proxy.py --listen ADDR:PORT --cache DIR --log FILE

Forwards plain-HTTP GET and HEAD requests to Debian's mirror hosts only
(anything else gets 403) and keeps what never changes under a given URL
(.deb files and apt's by-hash index files) in DIR, shared by every proxy of
every test run: a file is downloaded once, while other requests for it,
from this proxy or another one, wait on a lock for that download. Other
files (InRelease, ...) are passed through. FILE gets one line per request:
"HIT|MISS|PASS|DENY|FAIL STATUS URL".
"""

import argparse
import fcntl
import hashlib
import http.client
import http.server
import os
import shutil
import socket
import sys
import tempfile
import threading
import urllib.parse

ALLOWED_HOSTS = {"deb.debian.org", "security.debian.org"}
CHUNK = 256 * 1024
PASSED_HEADERS = ("Content-Type", "Last-Modified", "ETag", "Date", "Content-Length")


def cacheable(path):
    return path.endswith((".deb", ".udeb")) or "/by-hash/" in path


class Proxy(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kctl-test-apt-proxy"

    def log_message(self, fmt, *args):  # no per-request noise on stderr
        pass

    def record(self, kind, status):
        line = f"{kind} {status} {self.path}\n"
        with self.server.log_lock, open(self.server.log_path, "a") as log:
            log.write(line)

    def do_GET(self):
        self.handle_request(send_body=True)

    def do_HEAD(self):
        self.handle_request(send_body=False)

    def deny(self, status, why):
        body = (why + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.record("DENY", status)

    def handle_request(self, send_body):
        url = urllib.parse.urlsplit(self.path)
        if url.scheme != "http" or url.hostname not in ALLOWED_HOSTS or url.port not in (None, 80):
            return self.deny(403, "only http://deb.debian.org and http://security.debian.org")
        path = url.path + ("?" + url.query if url.query else "")
        if ".." in url.path.split("/"):
            return self.deny(400, "bad path")
        if send_body and cacheable(url.path):
            return self.serve_cached(url.hostname, path)
        return self.pass_through(url.hostname, path, send_body)

    def upstream(self, host, path, method, extra=()):
        conn = http.client.HTTPConnection(host, 80, timeout=60)
        headers = {"Host": host, "User-Agent": self.headers.get("User-Agent", "apt")}
        for name in extra:
            if self.headers.get(name):
                headers[name] = self.headers[name]
        conn.request(method, path, headers=headers)
        return conn, conn.getresponse()

    def pass_through(self, host, path, send_body):
        try:
            conn, resp = self.upstream(
                host, path, "GET" if send_body else "HEAD",
                extra=("If-Modified-Since", "If-None-Match", "Range", "If-Range"),
            )
        except OSError as e:
            return self.deny(502, f"upstream: {e}")
        try:
            body = resp.read() if send_body else b""
        except OSError as e:
            conn.close()
            return self.deny(502, f"upstream: {e}")
        conn.close()
        self.send_response(resp.status, resp.reason)
        for name in PASSED_HEADERS:
            if name == "Content-Length" and send_body:
                continue
            if resp.getheader(name):
                self.send_header(name, resp.getheader(name))
        if resp.getheader("Content-Range"):
            self.send_header("Content-Range", resp.getheader("Content-Range"))
        if send_body:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)
        self.record("PASS", resp.status)

    def serve_cached(self, host, path):
        key = hashlib.sha256(f"{host}{path}".encode()).hexdigest()
        name = os.path.basename(urllib.parse.urlsplit(path).path)[-80:]
        cache = self.server.cache_dir
        final = os.path.join(cache, key[:2], f"{key}-{name}")
        os.makedirs(os.path.dirname(final), exist_ok=True)
        os.makedirs(os.path.join(cache, "locks"), exist_ok=True)
        with open(os.path.join(cache, "locks", key), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not os.path.exists(final):
                # The first asker gets the bytes as they arrive; the others
                # wait on the lock and get the cached file.
                self.fetch_into(host, path, final)
                return
        size = os.path.getsize(final)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        with open(final, "rb") as f:
            shutil.copyfileobj(f, self.wfile, CHUNK)
        self.record("HIT", 200)

    def fetch_into(self, host, path, final):
        """Downloads into the cache while sending to the client."""
        try:
            conn, resp = self.upstream(host, path, "GET")
        except OSError as e:
            return self.deny(502, f"upstream: {e}")
        try:
            expected = resp.getheader("Content-Length")
            if resp.status != 200 or expected is None:
                body = resp.read()
                self.send_response(resp.status, resp.reason)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                self.record("PASS", resp.status)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", expected)
            self.end_headers()
            client_ok = True
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(final), prefix=".part-")
            try:
                with os.fdopen(fd, "wb") as out:
                    got = 0
                    while True:
                        chunk = resp.read(CHUNK)
                        if not chunk:
                            break
                        out.write(chunk)
                        got += len(chunk)
                        if client_ok:
                            try:
                                self.wfile.write(chunk)
                            except OSError:
                                client_ok = False  # finish the download anyway
                if got != int(expected):
                    raise OSError(f"short download: {got} of {expected} bytes")
                os.rename(tmp, final)
            except BaseException:
                os.unlink(tmp)
                self.close_connection = True
                raise
            self.record("MISS", 200)
        except OSError as e:
            self.close_connection = True
            self.record("FAIL", f"502 {e}")
        finally:
            conn.close()


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", required=True)
    parser.add_argument("--cache", required=True)
    parser.add_argument("--log", required=True)
    args = parser.parse_args()
    host, port = args.listen.rsplit(":", 1)
    os.makedirs(args.cache, exist_ok=True)
    server = Server((host, int(port)), Proxy)
    server.cache_dir = args.cache
    server.log_path = args.log
    server.log_lock = threading.Lock()
    socket.setdefaulttimeout(120)
    print(f"apt proxy on {args.listen}, cache {args.cache}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
