#!/usr/bin/env python3
"""Init time of a Lambda bootstrap, measured locally.

Serves a minimal stand-in for the Lambda Runtime API on 127.0.0.1, starts the
bootstrap with a Lambda-like environment, and reports the time from process
start to its first `GET /2018-06-01/runtime/invocation/next` (the end of
init). Usage: init_time.py <bootstrap> [runs] (env: AWS_ENDPOINT_URL etc. are
set here; the SDK warm-up call goes to ENDPOINT if given, else to a closed
local port).
"""
import http.server, os, socket, statistics, subprocess, sys, threading, time

binary = sys.argv[1]
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 10
endpoint = os.environ.get("ENDPOINT")
first_next = {}

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.endswith("/runtime/invocation/next"):
            first_next.setdefault("t", time.perf_counter())
            # Hold the long poll until the process is killed.
            time.sleep(5)
        self.send_response(500)
        self.end_headers()
    def log_message(self, *a):
        pass

srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
srv.daemon_threads = True
threading.Thread(target=srv.serve_forever, daemon=True).start()

def closed_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

env = {
    "PATH": "/usr/bin:/bin",
    "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{srv.server_address[1]}",
    "AWS_LAMBDA_FUNCTION_NAME": "bench", "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128", "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/bench",
    "AWS_LAMBDA_LOG_STREAM_NAME": "s", "AWS_LAMBDA_LOG_FORMAT": "JSON",
    "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_ENDPOINT_URL": endpoint or f"http://127.0.0.1:{closed_port()}",
    "TABLE_NAME": "webhook-events-bench", "BUCKET_NAME": "webhook-archive-bench",
    "SIGNATURE_SCHEME": "standard-webhooks", "SIGNING_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
}
times = []
for _ in range(runs):
    first_next.clear()
    t0 = time.perf_counter()
    p = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while "t" not in first_next and p.poll() is None and time.perf_counter() - t0 < 10:
        time.sleep(0.0002)
    p.kill(); p.wait()
    if "t" not in first_next:
        sys.exit(f"{binary}: no /next request (exit {p.returncode})")
    times.append((first_next["t"] - t0) * 1000)
print(f"{os.path.basename(binary)}: init median {statistics.median(times):.1f} ms, "
      f"min {min(times):.1f}, max {max(times):.1f} over {runs} runs")
