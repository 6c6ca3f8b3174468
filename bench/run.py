#!/usr/bin/env python3
"""immortal's benchmarks: every figure next to a reference measured in the same run.

Run through scripts/bench, which builds the release artifacts first. Prints a Markdown
table and writes it, with the date and the machine, to bench/RESULTS.md.

This machine is shared and noisy: figures are medians of several runs, and what matters
is the ratio to the reference measured minutes apart on the same machine.
"""

import base64
import contextlib
import hashlib
import http.client
import http.server
import io
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import zipfile
from datetime import datetime, timezone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAMBDA = os.path.join(ROOT, "target", "lambda")
RUNNER = os.path.join(LAMBDA, "runner", "bootstrap")
ECHO = os.path.join(LAMBDA, "bench-echo", "bootstrap")
WORK = os.path.join(ROOT, "bench", "work")
REPS = int(os.environ.get("BENCH_REPS", "7"))

rows = []


def row(name, ours, reference="", ratio=None, target="", note=""):
    verdict = ""
    if ratio is not None and target.startswith("≤"):
        verdict = " ✓" if ratio <= float(target[1:].strip().split()[0]) else " ✗"
    rows.append((name, ours, reference, "" if ratio is None else f"{ratio:.2f}{verdict}", target, note))
    print(f"  {name}: {ours} | {reference} | {'' if ratio is None else f'{ratio:.2f}'}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def median_ms(samples):
    return statistics.median(samples) * 1000


class Peak:
    """Polls a process's peak resident set (VmHWM) until it exits."""

    def __init__(self, pid):
        self.pid, self.kb, self.done = pid, 0, False
        self.thread = threading.Thread(target=self.poll, daemon=True)
        self.thread.start()

    def poll(self):
        path = f"/proc/{self.pid}/status"
        while not self.done:
            try:
                with open(path) as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            self.kb = max(self.kb, int(line.split()[1]))
            except (OSError, ValueError):
                return
            time.sleep(0.001)

    def stop(self):
        self.done = True
        self.thread.join()
        return self.kb / 1024


def run_timed(cmd, env=None, stdin=None, peak=False):
    """Wall time (s), exit code, stdout, stderr and (optionally) peak RSS in MB."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=stdin or subprocess.DEVNULL)
    watcher = Peak(proc.pid) if peak else None
    out, err = proc.communicate()
    wall = time.perf_counter() - started
    mb = watcher.stop() if watcher else None
    return wall, proc.returncode, out, err, mb


def aws_env(endpoint, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMMORTAL_") and not k.startswith("AWS_")}
    env.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
               AWS_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true", RUST_LOG="info")
    env.update(extra)
    return env


# ---------------------------------------------------------------- runner overhead

def bench_runner_overhead():
    print("runner overhead", file=sys.stderr)
    cache = tempfile.mkdtemp(prefix="bench-cache-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMMORTAL_")}
    env.update(IMMORTAL_CACHE_DIR=cache, RUST_LOG="info")
    walls, overheads, to_event, rss = [], [], [], []
    for i in range(REPS + 1):
        spawned = datetime.now(timezone.utc)
        wall, code, out, err, mb = run_timed([RUNNER, "--artifact", ECHO, "--event", "{}"], env=env, peak=True)
        assert code == 0, err.decode()
        logs = [json.loads(l) for l in err.decode().splitlines() if l.startswith("{")]
        stamp = lambda msg: datetime.fromisoformat(next(l for l in logs if l.get("message") == msg)["timestamp"].replace("Z", "+00:00"))
        delivered = stamp("event delivered")
        received = next(l for l in logs if l.get("message") == "response received")
        if i == 0:
            continue  # the first run fills the page cache
        walls.append(wall)
        # What the runner adds around the bootstrap's own life (spawn → response).
        overheads.append(wall - received["duration_ms"] / 1000)
        to_event.append((delivered - spawned).total_seconds())
        rss.append(mb)

    # The reference: the same function under cargo lambda watch, invoked warm.
    port = free_port()
    watch = subprocess.Popen(
        ["cargo", "lambda", "watch", "--release", "-p", "immortal-bench-echo", "--bin", "bench-echo", "--invoke-port", str(port)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_port(port, 600)
        invoke = ["cargo", "lambda", "invoke", "bench-echo", "--data-ascii", "{}", "--invoke-port", str(port)]
        for _ in range(60):  # the first invoke waits for the build and the function's start
            with contextlib.suppress(subprocess.TimeoutExpired):
                if subprocess.run(invoke, capture_output=True, cwd=ROOT, timeout=300).returncode == 0:
                    break
            time.sleep(2)
        reference = []
        for _ in range(REPS):
            wall, code, _, err, _ = run_timed(invoke)
            assert code == 0, err.decode()
            reference.append(wall)
    finally:
        os.killpg(watch.pid, signal.SIGTERM)
        watch.wait()
    ours, theirs = median_ms(walls), median_ms(reference)
    row("round trip, trivial bootstrap (ms)", f"{ours:.1f} (cold: new bootstrap each run)",
        f"{theirs:.1f} (`cargo lambda invoke`, warm under `cargo lambda watch`)", ours / theirs, "≤ 1.0")
    row("start to event delivered (ms)", f"{median_ms(to_event):.1f}", "", None, "")
    row("runner's own overhead per invocation (ms)", f"{median_ms(overheads):.1f}", "", None, "< 10 ms")
    row("runner peak RSS (MB)", f"{statistics.median(rss):.1f}", "", None, "< 10 MB")
    shutil.rmtree(cache, ignore_errors=True)


# ---------------------------------------------------------------- extensions

NOOP_EXTENSION = os.path.join(LAMBDA, "bench-noop-extension", "bootstrap")


def bench_extensions():
    """The trivial bootstrap with one no-op extension in its layers root (registered for
    INVOKE and SHUTDOWN) beside the same run without it, interleaved."""
    print("extensions", file=sys.stderr)
    work = tempfile.mkdtemp(prefix="bench-ext-")
    opt = os.path.join(work, "opt")
    os.makedirs(os.path.join(opt, "extensions"))
    shutil.copy(NOOP_EXTENSION, os.path.join(opt, "extensions", "noop"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMMORTAL_")}
    env.update(IMMORTAL_CACHE_DIR=os.path.join(work, "cache"), RUST_LOG="warn")
    plain = [RUNNER, "--artifact", ECHO, "--event", "{}"]
    with_ext = plain + ["--opt-dir", opt]
    ours, reference = [], []
    for i in range(REPS * 2 + 1):
        wall, code, _, err, _ = run_timed(with_ext, env=env)
        assert code == 0 and b"State: Ready" in err, err.decode()
        rwall, rcode, _, rerr, _ = run_timed(plain, env=env)
        assert rcode == 0, rerr.decode()
        if i:  # the first run fills the page cache
            ours.append(wall)
            reference.append(rwall)
    o, r = median_ms(ours), median_ms(reference)
    row("round trip with one no-op extension (ms)", f"{o:.1f} (register, INVOKE, SHUTDOWN)",
        f"{r:.1f} (the same run without it)", o / r, "")
    row("one extension's cost per run (ms)", f"{o - r:.1f}", "", None, "",
        "its start, init and shutdown; Lambda gives an external extension up to 2 s to shut down")
    shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------- managed runtimes

RUNTIMES = os.path.join(ROOT, "tests", "fixtures", "runtimes")
# A share of a few ms against an interpreter's start of 40-60 ms: more runs than the
# others (each is short) so the machine's noise does not decide it.
RUNTIME_REPS = 3 * REPS
NODE_RIC = os.path.join(ROOT, ".tools", "node_modules", "aws-lambda-ric", "dist", "index.mjs")


def bench_runtimes():
    """A trivial Python and Node.js handler, cold, under the runner with the runtime's
    own bootstrap, beside the floor: the interpreter starting and importing its runtime
    interface client, nothing else. The difference is the runner's share."""
    print("managed runtimes", file=sys.stderr)
    cases = [
        ("Python", "python3.12", "python", "handler.py", "def handler(event, context):\n    return event\n",
         "handler.handler", [sys.executable, "-c", "import awslambdaric.bootstrap, awslambdaric.lambda_runtime_client"]),
        ("Node.js", "nodejs20.x", "nodejs", "index.mjs", "export const handler = async (event) => event;\n",
         "index.handler", ["node", "--input-type=module", "-e", f"await import({json.dumps(NODE_RIC)})"]),
    ]
    for label, runtime, family, name, source, handler, floor_cmd in cases:
        work = tempfile.mkdtemp(prefix=f"bench-{family}-")
        zip_path = os.path.join(work, "fn.zip")
        with zipfile.ZipFile(zip_path, "w") as z:
            z.writestr(name, source)
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMMORTAL_")}
        env.update(IMMORTAL_CACHE_DIR=os.path.join(work, "cache"), RUST_LOG="warn")
        cmd = [RUNNER, "--artifact", zip_path, "--runtime-dir", os.path.join(RUNTIMES, family),
               "--runtime", runtime, "--handler", handler, "--event", '{"n":1}']
        ours, floor = [], []
        for i in range(RUNTIME_REPS + 1):
            wall, code, out, err, _ = run_timed(cmd, env=env)
            assert code == 0 and json.loads(out) == {"n": 1}, err.decode()
            fwall, fcode, _, ferr, _ = run_timed(floor_cmd)
            assert fcode == 0, ferr.decode()
            if i:  # the first run fills the page cache and the code cache
                ours.append(wall)
                floor.append(fwall)
        o, f = median_ms(ours), median_ms(floor)
        row(f"cold round trip, trivial {label} handler (ms)", f"{o:.1f} (runner + {label}'s runtime interface client)",
            f"{f:.1f} (interpreter start + importing its client)", o / f, "")
        row(f"runner's share of a {label} round trip (ms)", f"{o - f:.1f}", "", None, "< 10 ms",
            f"round trip minus the floor: the runner, the Runtime API, the handler itself; medians of {RUNTIME_REPS} runs")
        if family == "nodejs":
            node_client_start(work, zip_path, cmd, env, o - f)
        shutil.rmtree(work, ignore_errors=True)


def node_client_start(work, zip_path, cmd, env, share):
    """Splits the Node.js share: how long Node's runtime client itself takes, past the
    floor's import, to call the handler (its console patch, handler load and first
    request), read on Node's own clock (ms since its process started) so that none of
    the runner's time is in it."""
    probe = os.path.join(work, "probe.zip")
    with zipfile.ZipFile(probe, "w") as z:
        z.writestr("index.mjs", "export const handler = async (event) => {\n"
                   "  process.stderr.write(`CALLED_AT ${performance.now()}\\n`);\n  return event;\n};\n")
    floor = ["node", "--input-type=module", "-e",
             f"await import({json.dumps(NODE_RIC)}); process.stderr.write(`IMPORTED_AT ${{performance.now()}}\\n`);"]
    probe_cmd = [probe if a == zip_path else a for a in cmd]
    called, imported = [], []
    for i in range(RUNTIME_REPS + 1):
        _, code, _, err, _ = run_timed(probe_cmd, env=env)
        assert code == 0, err.decode()
        _, fcode, _, ferr, _ = run_timed(floor)
        assert fcode == 0, ferr.decode()
        if i:
            called.append(float(re.search(rb"CALLED_AT ([0-9.]+)", err).group(1)))
            imported.append(float(re.search(rb"IMPORTED_AT ([0-9.]+)", ferr).group(1)))
    client = statistics.median(called) - statistics.median(imported)
    row("of which Node.js's client, import to handler (ms)", f"{client:.1f}", "", None, "",
        "inside Node, on its own clock: bin/index.mjs's run(), console patch, handler load, first /next")
    row("runner's share of a Node.js round trip without its client's start (ms)", f"{share - client:.1f}", "", None,
        "< 10 ms", "the runner and its Runtime API alone")


# ---------------------------------------------------------------- code fetch

class FakeLambda(http.server.ThreadingHTTPServer):
    """GetFunction answering with a code location on this same server, and the zip."""

    daemon_threads = True

    def __init__(self, zips):
        self.zips = zips  # name → (bytes, sha256 b64)
        super().__init__(("127.0.0.1", 0), FakeLambdaHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


class FakeLambdaHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path.startswith("/2015-03-31/functions/"):
            name = self.path.split("/")[3].split("?")[0]
            data, sha = self.server.zips[name]
            body = json.dumps({
                "Configuration": {"FunctionName": name, "FunctionArn": f"arn:aws:lambda:us-east-1:123456789012:function:{name}",
                                  "Runtime": "provided.al2023", "Handler": "bootstrap", "Version": "$LATEST", "MemorySize": 128,
                                  "CodeSize": len(data), "CodeSha256": sha, "PackageType": "Zip", "Architectures": ["x86_64"]},
                "Code": {"RepositoryType": "S3", "Location": f"{self.server.url}/code/{name}.zip"}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path.startswith("/code/"):
            data, _ = self.server.zips[self.path[len("/code/"):-len(".zip")]]
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            view = memoryview(data)
            for at in range(0, len(data), 1 << 20):
                self.wfile.write(view[at:at + (1 << 20)])
        else:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()


def code_zip(target_mb):
    """A realistic code zip of about `target_mb` MB: a bootstrap plus shared libraries."""
    path = os.path.join(WORK, f"code-{target_mb}mb.zip")
    if os.path.exists(path):
        return path
    libs = sorted((os.path.join(d, f) for d in ("/usr/lib/x86_64-linux-gnu",) for f in os.listdir(d)
                   if ".so" in f and os.path.isfile(os.path.join(d, f)) and not os.path.islink(os.path.join(d, f))),
                  key=lambda p: (os.path.getsize(p) > 4_000_000, p))
    partial = path + ".partial"
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as z:
        info = zipfile.ZipInfo("bootstrap")
        info.external_attr = 0o755 << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        with open(ECHO, "rb") as f:
            z.writestr(info, f.read())
        for lib in libs:
            if z.fp.tell() > target_mb * 1_000_000:
                break
            z.write(lib, "lib/" + os.path.basename(lib))
    os.rename(partial, path)
    return path


# The installed distributions a Python function using boto3 and moto would ship.
PYTHON_DEPS = ("boto3", "botocore", "s3transfer", "jmespath", "python-dateutil", "urllib3", "six", "moto", "werkzeug",
               "jinja2", "markupsafe", "pyyaml", "requests", "idna", "certifi", "charset-normalizer", "xmltodict",
               "responses", "cryptography", "cffi", "pycparser")
NODE_MODULES = os.path.join(ROOT, ".tools", "node_modules")


def tree_zip(path, entries):
    """Writes `entries` ((name in the zip, file on disk), folders first) as `zip -r -y`
    would: a folder entry per folder, modes kept, symlinks stored as links."""
    partial = path + ".partial"
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as z:
        for name, source in entries:
            st = os.lstat(source)
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = st.st_mode << 16
            if os.path.islink(source):
                z.writestr(info, os.readlink(source))
            elif name.endswith("/"):
                info.external_attr |= 0x10
                z.writestr(info, b"")
            else:
                info.compress_type = zipfile.ZIP_DEFLATED
                with open(source, "rb") as f:
                    z.writestr(info, f.read())
    os.rename(partial, path)
    return path


def python_deps_zip():
    """A Python function's zip: its dependencies as installed (every file their RECORD
    lists, __pycache__ included), at the zip's root as `pip install -t` lays them out."""
    path = os.path.join(WORK, "python-deps.zip")
    if os.path.exists(path):
        return path
    import importlib.metadata
    files = {}
    for dist in PYTHON_DEPS:
        for f in importlib.metadata.distribution(dist).files:
            source = str(f.locate())
            if not str(f).startswith("..") and os.path.isfile(source):
                files[str(f)] = source
    site = str(importlib.metadata.distribution("boto3").locate_file(""))
    folders = set()
    for name in files:
        name = os.path.dirname(name)
        while name:
            folders.add(name)
            name = os.path.dirname(name)
    entries = [(d + "/", os.path.join(site, d)) for d in sorted(folders)] + sorted(files.items())
    return tree_zip(path, entries)


def node_modules_zip():
    """A Node.js function's zip: `node_modules` as `scripts/setup bench` installs it (osls
    and the AWS SDK), links kept as links, without the runtime interface client (the
    runtime's image brings it; with its native build tree it would also push the zip past
    Lambda's 250 MB unzipped limit)."""
    path = os.path.join(WORK, "node-modules.zip")
    if os.path.exists(path):
        return path
    entries = []
    for folder, dirs, names in os.walk(NODE_MODULES):
        dirs.sort()
        if folder == NODE_MODULES:
            dirs.remove("aws-lambda-ric")
        rel = os.path.relpath(folder, os.path.dirname(NODE_MODULES))
        entries.append((rel + "/", folder))
        for name in sorted(names) + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            entries.append((os.path.join(rel, name), os.path.join(folder, name)))
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(folder, d))]
    return tree_zip(path, entries)


def bench_fetch():
    print("code fetch", file=sys.stderr)
    zips = {"code5": code_zip(5), "code50": code_zip(50), "python": python_deps_zip(), "node": node_modules_zip()}
    zips = {name: open(path, "rb").read() for name, path in zips.items()}
    server = FakeLambda({name: (data, base64.b64encode(hashlib.sha256(data).digest()).decode()) for name, data in zips.items()})
    entries = {name: len(zipfile.ZipFile(io.BytesIO(data)).infolist()) for name, data in zips.items()}
    assert entries["node"] >= 15_000, f"node_modules zip has {entries['node']} entries: run scripts/setup bench"
    # Every unpacked tree stays until the end: on an ext4 without a journal (this machine's),
    # creating a file right after many were deleted walks the recently freed inodes, and
    # whichever side came after a deletion would pay for the other's.
    runs = tempfile.mkdtemp(prefix="bench-fetch-", dir=WORK)
    for name, shape, target in (("code5", "", "≤ 1.0"), ("code50", "", "≤ 1.0"),
                                ("python", "Python dependencies", "≤ 0.7"), ("node", "node_modules", "≤ 0.7")):
        data = zips[name]
        size = len(data)
        unpacked = sum(i.file_size for i in zipfile.ZipFile(io.BytesIO(data)).infolist())
        ours, peaks, reference, warms = [], [], [], []
        for rep in range(REPS):
            cache, dest = os.path.join(runs, f"{name}-{rep}-cache"), os.path.join(runs, f"{name}-{rep}-unzip")

            def measure_ours():
                env = aws_env("http://127.0.0.1:9", AWS_ENDPOINT_URL_LAMBDA=server.url, IMMORTAL_CACHE_DIR=cache, AWS_MAX_ATTEMPTS="1")
                wall, code, out, err, mb_peak = run_timed([RUNNER, "fetch", "--function", name], env=env, peak=True)
                assert code == 0, err.decode()
                ours.append(wall)
                peaks.append(mb_peak)
                # Warm cache: the same CodeSha256 again.
                warm, code, _, err, _ = run_timed([RUNNER, "fetch", "--function", name], env=env)
                assert code == 0 and b'"cache_hit":true' in err
                warms.append(warm)

            def measure_reference():
                os.makedirs(dest)
                script = (f"curl -sf -o {dest}/code.zip {server.url}/code/{name}.zip && sha256sum {dest}/code.zip >/dev/null "
                          f"&& unzip -q -o {dest}/code.zip -d {dest}/out")
                wall, code, _, err, _ = run_timed(["bash", "-c", script])
                assert code == 0, err.decode()
                reference.append(wall)

            # Taking turns at going first, so neither always meets a cooler page cache.
            for measure in ((measure_ours, measure_reference) if rep % 2 == 0 else (measure_reference, measure_ours)):
                measure()
        o, r = median_ms(ours), median_ms(reference)
        if shape:
            what = f"{shape} zip: {entries[name]:,} entries, {size / 1e6:.0f} MB ({unpacked / 1e6:.0f} MB unpacked)"
            row(f"fetch + verify + unpack, {what} (ms)", f"{o:.0f}", f"{r:.0f} (curl + sha256sum + unzip)", o / r, target)
            row(f"runner peak RSS during the {shape} fetch (MB)", f"{statistics.median(peaks):.1f}", "", None, "< 64 MB")
            row(f"warm cache, {shape} zip (ms)", f"{median_ms(warms):.0f}", "", None, "downloads nothing")
        else:
            row(f"fetch + verify + unpack, {size / 1e6:.0f} MB zip ({unpacked / 1e6:.0f} MB unpacked) (ms)", f"{o:.0f}",
                f"{r:.0f} (curl + sha256sum + unzip)", o / r, target)
            row(f"runner peak RSS during the {size / 1e6:.0f} MB fetch (MB)", f"{statistics.median(peaks):.1f}", "", None, "< 64 MB")
            row(f"warm cache, {size / 1e6:.0f} MB zip (ms)", f"{median_ms(warms):.0f}", "", None, "downloads nothing")
    server.shutdown()
    shutil.rmtree(runs, ignore_errors=True)


# ---------------------------------------------------------------- forwarder

def bench_forwarder():
    print("forwarder", file=sys.stderr)
    out = subprocess.run(["cargo", "bench", "--quiet", "-p", "immortal-dlq-forwarder", "--bench", "records"],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    row("forwarder handler logic (records/s, one core)", f"{result['records_per_second']:,.0f}", "", None, "",
        "parse, policy, envelope, token; no network")
    row("forwarder CPU per record (µs)", f"{result['cpu_us_per_record']:.1f}", "", None, "")


def bench_durable(moto_url):
    """The forwarder's cost per record with the durable write beside without it."""
    print("forwarder durable write", file=sys.stderr)
    import boto3
    kw = dict(endpoint_url=moto_url, region_name="us-east-1", aws_access_key_id="b", aws_secret_access_key="b")
    ecs, ec2, s3 = boto3.client("ecs", **kw), boto3.client("ec2", **kw), boto3.client("s3", **kw)
    deploy_echo(moto_url, "bench-durable")
    subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
    group = ec2.describe_security_groups()["SecurityGroups"][0]["GroupId"]
    ecs.create_cluster(clusterName="bench-durable")
    ecs.register_task_definition(family="bench-durable-runner", networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="1024",
                                 memory="2048", containerDefinitions=[{"name": "runner", "image": "immortal-runner", "memory": 2048}])
    s3.create_bucket(Bucket="bench-durable-payloads")
    env = aws_env(moto_url, IMMORTAL_CLUSTER="bench-durable", IMMORTAL_TASK_DEFINITION="bench-durable-runner", IMMORTAL_CONTAINER_NAME="runner",
                  IMMORTAL_SUBNETS=subnet, IMMORTAL_SECURITY_GROUPS=group, IMMORTAL_PAYLOAD_BUCKET="bench-durable-payloads",
                  IMMORTAL_FUNCTION_MAP="arn:aws:sqs:us-east-1:123456789012:thumbnail-dlq=bench-durable", BENCH_RECORDS="150",
                  # the sender of the fixture's record (handler-sdk/fixtures/sqs-dlq-timeout-new.json)
                  IMMORTAL_TRUSTED_SENDERS="AROAEXAMPLE")
    out = subprocess.run(["cargo", "bench", "--quiet", "-p", "immortal-dlq-forwarder", "--bench", "durable"],
                         cwd=ROOT, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    row("forwarder per record, with the durable write (ms)", f"{result['durable_ms']:.1f} (envelope + ledger entry in S3, RunTask, entry updated)",
        f"{result['inline_ms']:.1f} (RunTask with the event inline, no record)", result["durable_ms"] / result["inline_ms"], "",
        f"local emulator, {result['records']} records each, interleaved; medians")


# ---------------------------------------------------------------- sweep

SWEEP_LATENCY_S = 0.030


class BackgroundProxy(http.server.ThreadingHTTPServer):
    """A proxy in front of the emulator (`upstream`), served from a thread of its own."""

    daemon_threads = True

    def __init__(self, upstream, handler):
        self.upstream, self.lock = upstream, threading.Lock()
        super().__init__(("127.0.0.1", 0), handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


class LatencyProxy(BackgroundProxy):
    """Every AWS call, after a fixed delay, to the emulator, counted; DescribeTasks is
    answered here (every task RUNNING): the emulator's scans every task it has for each
    ARN asked about, which at 10,000 tasks would measure the emulator, not the sweep."""

    request_queue_size = 256

    def __init__(self, upstream):
        self.calls = 0
        super().__init__(upstream, LatencyHandler)


class LatencyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body, headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def relay(self):
        if self.path == "/__calls":
            return self.reply(200, str(self.server.calls).encode())
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        with self.server.lock:
            self.server.calls += 1
        time.sleep(SWEEP_LATENCY_S)
        if (self.headers.get("X-Amz-Target") or "").endswith(".DescribeTasks"):
            asked = json.loads(body or b"{}").get("tasks", [])
            tasks = [{"taskArn": arn, "lastStatus": "RUNNING", "desiredStatus": "RUNNING"} for arn in asked]
            return self.reply(200, json.dumps({"tasks": tasks, "failures": []}).encode(),
                              [("Content-Type", "application/x-amz-json-1.1")])
        # One kept-alive connection to the emulator per client connection: the proxy's
        # own cost stays small beside the latency it adds.
        if not hasattr(self, "upstream_connection"):
            self.upstream_connection = http.client.HTTPConnection(urllib.parse.urlsplit(self.server.upstream).netloc)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        self.upstream_connection.request(self.command, self.path, body=body, headers=headers)
        response = self.upstream_connection.getresponse()
        data = response.read()
        self.reply(response.status, data, [(k, v) for k, v in response.getheaders()
                                           if k.lower() not in ("connection", "content-length", "transfer-encoding")])

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = relay


def bench_sweep(moto_url):
    """The sweep over 10,000 live invocations at 30 ms per AWS call, beside one-by-one."""
    print("sweep", file=sys.stderr)
    import boto3
    kw = dict(endpoint_url=moto_url, region_name="us-east-1", aws_access_key_id="b", aws_secret_access_key="b")
    boto3.client("s3", **kw).create_bucket(Bucket="bench-sweep-payloads")
    proxy = LatencyProxy(moto_url)
    env = aws_env(proxy.url, IMMORTAL_CLUSTER="bench-sweep", IMMORTAL_TASK_DEFINITION="bench-sweep-runner",
                  IMMORTAL_CONTAINER_NAME="runner", IMMORTAL_SUBNETS="subnet-1", IMMORTAL_SECURITY_GROUPS="sg-1",
                  IMMORTAL_PAYLOAD_BUCKET="bench-sweep-payloads", BENCH_DIRECT_URL=moto_url,
                  BENCH_LIVE="10000", BENCH_REFERENCE="300")
    out = subprocess.run(["cargo", "bench", "--quiet", "-p", "immortal-dlq-forwarder", "--bench", "sweep"],
                         cwd=ROOT, capture_output=True, text=True, env=env)
    proxy.shutdown()
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    per_minute = r["looked_at"] / r["sweep_s"] * 60
    reference_per_minute = r["reference_entries"] / r["reference_s"] * 60
    row("sweep: live invocations reconciled per 60-s sweep, 30 ms per AWS call",
        f"{per_minute:,.0f} ({r['looked_at']:,} of {r['live']:,} in {r['sweep_s']:.1f} s; "
        f"{r['sweep_calls'] / max(r['looked_at'], 1):.2f} AWS calls per invocation)",
        f"{reference_per_minute:,.0f} (one by one: entry, then DescribeTasks; {r['reference_calls'] / r['reference_entries']:.2f} calls each, "
        f"{r['reference_entries']} measured)",
        reference_per_minute / per_minute, "≥ 10,000 per sweep, ≤ 1.1 calls each",
        "local emulator behind a proxy adding 30 ms to every call; DescribeTasks answered by the proxy (all RUNNING)")


# ---------------------------------------------------------------- thumbnail

class CountingProxy(BackgroundProxy):
    """Forwards to the emulator and counts the bytes of object GETs it passes back."""

    def __init__(self, upstream):
        self.object_bytes = 0
        super().__init__(upstream, CountingHandler)


class CountingHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def relay(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        request = urllib.request.Request(self.server.upstream + self.path, data=body, method=self.command)
        for k, v in self.headers.items():
            if k.lower() not in ("host", "content-length", "connection"):
                request.add_header(k, v)
        try:
            response = urllib.request.urlopen(request)
        except urllib.error.HTTPError as e:
            response = e
        counted = self.command == "GET" and self.path.split("?")[0].endswith(".mp4")
        self.send_response(response.status)
        for k, v in response.headers.items():
            if k.lower() not in ("connection",):
                self.send_header(k, v)
        self.end_headers()
        # Stream, and count only what the client (ffmpeg) actually takes: it closes the
        # connection once it has read what it needs, as it would with S3.
        while True:
            chunk = response.read(64 * 1024)
            if not chunk:
                break
            try:
                self.wfile.write(chunk)
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
                break
            if counted:
                with self.server.lock:
                    self.server.object_bytes += len(chunk)
        response.close()

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = relay


def make_video(path, seconds, gop, preset="veryfast"):
    if not os.path.exists(path):
        subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                        f"testsrc2=duration={seconds}:size=1920x1080:rate=30", "-c:v", "libx264", "-preset", preset,
                        "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0", "-pix_fmt", "yuv420p", path], check=True)
    return path


def s3_event(bucket, key, size):
    event = json.load(open(os.path.join(ROOT, "handler-sdk", "fixtures", "s3-put.json")))
    record = event["Records"][0]["s3"]
    record["bucket"]["name"] = bucket
    record["object"]["key"] = key
    record["object"]["size"] = size
    return json.dumps(event)


def bench_thumbnail(moto_url):
    print("thumbnail", file=sys.stderr)
    import boto3
    s3 = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1", aws_access_key_id="b", aws_secret_access_key="b")
    s3.create_bucket(Bucket="bench")
    zip_path = os.path.join(LAMBDA, "thumbnail", "bootstrap.zip")

    # Time to a thumbnail: the handler (under the runner, video in S3) against plain ffmpeg
    # on the same file, for a frame that needs decoding (long GOP).
    video = make_video(os.path.join(WORK, "bench-1080p-longgop.mp4"), 30, 900)
    size = os.path.getsize(video)
    s3.upload_file(video, "bench", "clip_00-20.mp4")
    cache = tempfile.mkdtemp(prefix="bench-thumb-", dir=WORK)
    ours, reference = [], []
    for _ in range(REPS):
        env = aws_env(moto_url, IMMORTAL_CACHE_DIR=cache)
        wall, code, out, err, _ = run_timed([RUNNER, "--artifact", zip_path, "--event", s3_event("bench", "clip_00-20.mp4", size)], env=env)
        assert code == 0, err.decode()
        ours.append(wall)
        wall, code, _, err, _ = run_timed(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-ss", "20", "-i", video, "-frames:v", "1",
                                           os.path.join(WORK, "reference.png")])
        assert code == 0, err.decode()
        reference.append(wall)
    o, r = median_ms(ours), median_ms(reference)
    row("time to a thumbnail, 1080p frame at 00:20 (ms)", f"{o:.0f} (handler under the runner, S3)", f"{r:.0f} (ffmpeg -ss 20 -i FILE -frames:v 1)", o / r, "≤ 1.1")

    # Bytes read from S3 for a frame near the start of a large video.
    big = make_video(os.path.join(WORK, "bench-1080p-large.mp4"), 120, 60, "ultrafast")
    big_size = os.path.getsize(big)
    s3.upload_file(big, "bench", "large_00-02.mp4")
    proxy = CountingProxy(moto_url)
    env = aws_env(proxy.url, IMMORTAL_CACHE_DIR=cache)
    wall, code, out, err, _ = run_timed([RUNNER, "--artifact", zip_path, "--event", s3_event("bench", "large_00-02.mp4", big_size)], env=env)
    assert code == 0, err.decode()
    row("bytes read from S3 for the frame at 00:02 of a large video", f"{proxy.object_bytes / 1e6:.1f} MB of {big_size / 1e6:.0f} MB",
        "", proxy.object_bytes / big_size, "a small fraction")
    proxy.shutdown()
    shutil.rmtree(cache, ignore_errors=True)


# ---------------------------------------------------------------- drain mode

def deploy_echo(moto_url, name):
    """The trivial bootstrap as a Lambda function in the emulator (code served from S3)."""
    import boto3
    kw = dict(endpoint_url=moto_url, region_name="us-east-1", aws_access_key_id="b", aws_secret_access_key="b")
    iam, s3, lam = boto3.client("iam", **kw), boto3.client("s3", **kw), boto3.client("lambda", **kw)
    with contextlib.suppress(Exception):
        iam.create_role(RoleName="bench", AssumeRolePolicyDocument="{}")
    role = iam.get_role(RoleName="bench")["Role"]["Arn"]
    with contextlib.suppress(Exception):
        s3.create_bucket(Bucket="awslambda-us-east-1-tasks")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        info = zipfile.ZipInfo("bootstrap")
        info.external_attr = 0o755 << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        z.writestr(info, open(ECHO, "rb").read())
    s3.put_object(Bucket="awslambda-us-east-1-tasks", Key=f"{name}.zip", Body=buf.getvalue(), ACL="public-read")
    return lam.create_function(FunctionName=name, Runtime="provided.al2023", Role=role, Handler="bootstrap",
                               Code={"S3Bucket": "awslambda-us-east-1-tasks", "S3Key": f"{name}.zip"})["FunctionArn"]


def fill_queue(sqs, name, function_arn, count):
    url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "60"})["QueueUrl"]
    for batch in range(count // 10):
        entries = []
        for n in range(10):
            rid = f"{name}-{batch}-{n}"
            record = {"version": "1.0", "timestamp": "2026-11-22T10:00:00.000Z",
                      "requestContext": {"requestId": rid, "functionArn": f"{function_arn}:$LATEST", "condition": "RetriesExhausted", "approximateInvokeCount": 1},
                      "requestPayload": {"n": n}, "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
                      "responsePayload": {"errorType": "Sandbox.Timedout", "errorMessage": f"RequestId: {rid} Error: Task timed out after 3.00 seconds"}}
            entries.append({"Id": str(n), "MessageBody": json.dumps(record)})
        sqs.send_message_batch(QueueUrl=url, Entries=entries)
    return url


# moto's SQS stamps every message with one sender (DEFAULT_SENDER_ID in moto/sqs/models.py):
# the forwarder and the drain workers trust it here, as they would an operator.
MOTO_SENDER = "AIDAIT2UOQQY3AUEKVGXU"

def bench_drain(moto_url):
    print("drain mode", file=sys.stderr)
    import boto3
    from concurrent.futures import ThreadPoolExecutor
    kw = dict(endpoint_url=moto_url, region_name="us-east-1", aws_access_key_id="b", aws_secret_access_key="b")
    sqs, ecs, ec2 = boto3.client("sqs", **kw), boto3.client("ecs", **kw), boto3.client("ec2", **kw)
    arn = deploy_echo(moto_url, "bench-echo")
    subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
    group = ec2.describe_security_groups()["SecurityGroups"][0]["GroupId"]
    # Its own cluster: the emulator lists a cluster's tasks by a match on the name, so
    # "bench" would also list the durable group's tasks in "bench-durable".
    ecs.create_cluster(clusterName="bench-drain")
    ecs.register_task_definition(family="bench-runner", networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="1024", memory="2048",
                                 containerDefinitions=[{"name": "runner", "image": "immortal-runner", "memory": 2048}])
    messages, workers = 200, 3

    # One task per message: the forwarder per SQS batch, then each task's runner with an
    # empty cache (as a fresh Fargate task has), three at a time.
    url = fill_queue(sqs, "per-task", arn, messages)
    forwarder = os.path.join(LAMBDA, "dlq-forwarder", "bootstrap.zip")
    boto3.client("s3", **kw).create_bucket(Bucket="bench-payloads")
    fenv = aws_env(moto_url, IMMORTAL_CACHE_DIR=os.path.join(WORK, "fwd-cache"), IMMORTAL_CLUSTER="bench-drain", IMMORTAL_TASK_DEFINITION="bench-runner",
                   IMMORTAL_CONTAINER_NAME="runner", IMMORTAL_SUBNETS=subnet, IMMORTAL_SECURITY_GROUPS=group,
                   IMMORTAL_PAYLOAD_BUCKET="bench-payloads", IMMORTAL_TRUSTED_SENDERS=MOTO_SENDER)
    started = time.perf_counter()
    startups = 0
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, MessageAttributeNames=["All"]).get("Messages", [])
        if not got:
            break
        event = {"Records": [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"], "attributes": {"SenderId": MOTO_SENDER},
                              "messageAttributes": {}, "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:per-task",
                              "awsRegion": "us-east-1"} for m in got]}
        _, code, out, err, _ = run_timed([RUNNER, "--artifact", forwarder, "--event", json.dumps(event)], env=fenv)
        assert code == 0 and json.loads(out)["batchItemFailures"] == [], err.decode()
        startups += 1
        sqs.delete_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)])
    task_arns = ecs.list_tasks(cluster="bench-drain", maxResults=100)["taskArns"]
    token = ecs.list_tasks(cluster="bench-drain", maxResults=100).get("nextToken")
    while token:
        page = ecs.list_tasks(cluster="bench-drain", maxResults=100, nextToken=token)
        task_arns += page["taskArns"]
        token = page.get("nextToken")
    overrides = []
    for chunk in range(0, len(task_arns), 100):
        for task in ecs.describe_tasks(cluster="bench-drain", tasks=task_arns[chunk:chunk + 100])["tasks"]:
            overrides.append({e["name"]: e["value"] for e in task["overrides"]["containerOverrides"][0]["environment"]})

    def one_task(env_vars):
        cache = tempfile.mkdtemp(prefix="task-", dir=WORK)
        _, code, _, err, _ = run_timed([RUNNER], env=aws_env(moto_url, IMMORTAL_CACHE_DIR=cache, IMMORTAL_PAYLOAD_BUCKET="bench-payloads", **env_vars))
        shutil.rmtree(cache, ignore_errors=True)
        assert code == 0, err.decode()

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one_task, overrides))
    per_task = time.perf_counter() - started
    per_task_tasks = len(overrides)
    per_task_startups = startups + per_task_tasks

    # Drain mode: three workers, each with its own cache, drain the same amount.
    url = fill_queue(sqs, "drain", arn, messages)
    started = time.perf_counter()
    procs = []
    for w in range(workers):
        cache = tempfile.mkdtemp(prefix="worker-", dir=WORK)
        procs.append(subprocess.Popen([RUNNER, "drain", "--queue", url, "--idle-timeout", "2"],
                                      env=aws_env(moto_url, IMMORTAL_CACHE_DIR=cache, IMMORTAL_TRUSTED_SENDERS=MOTO_SENDER),
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    downloads = 0
    for p in procs:
        _, err = p.communicate()
        assert p.returncode == 0, err.decode()[-2000:]
        downloads += err.count(b'"message":"downloaded"')
    drain = time.perf_counter() - started - 2  # the idle time before the workers exit
    left = int(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]["ApproximateNumberOfMessages"])
    assert left == 0
    row(f"drain {messages} short messages: wall time (s)", f"{drain:.1f} (drain mode, {workers} workers)",
        f"{per_task:.1f} (one task per message, {workers} at a time)", drain / per_task, "",
        "locally; in AWS each task adds a Fargate cold start (30-60 s) and an image pull")
    row(f"drain {messages} short messages: tasks / runner start-ups / code downloads",
        f"{workers} / {workers} / {downloads}", f"{per_task_tasks} / {per_task_startups} / {per_task_tasks}", workers / per_task_tasks, "")


# ---------------------------------------------------------------- sizes

def bench_sizes():
    print("sizes", file=sys.stderr)
    row("runner binary, stripped (MB)", f"{os.path.getsize(RUNNER) / 1e6:.1f}", "", None, "")
    for name in ("dlq-forwarder", "thumbnail"):
        path = os.path.join(LAMBDA, name, "bootstrap.zip")
        row(f"{name} zip (MB)", f"{os.path.getsize(path) / 1e6:.1f}", "", None, "Lambda: ≤ 50 MB zipped")


# ---------------------------------------------------------------- main

def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    mem = next((int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0) / 1024 / 1024
    return f"{os.cpu_count()} × {cpu}, {mem:.0f} GiB RAM, {platform.system()} {platform.release()}"


def main():
    os.makedirs(WORK, exist_ok=True)
    for path in (RUNNER, ECHO, NOOP_EXTENSION):
        if not os.path.exists(path):
            sys.exit(f"{path} is missing: run scripts/bench (it builds the release artifacts)")
    port = free_port()
    moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        only = set(sys.argv[1:])
        for name, fn in (("runner", bench_runner_overhead), ("extensions", bench_extensions), ("runtimes", bench_runtimes), ("fetch", bench_fetch),
                         ("forwarder", bench_forwarder), ("durable", lambda: bench_durable(f"http://127.0.0.1:{port}")),
                         ("thumbnail", lambda: bench_thumbnail(f"http://127.0.0.1:{port}")),
                         ("drain", lambda: bench_drain(f"http://127.0.0.1:{port}")),
                         ("sweep", lambda: bench_sweep(f"http://127.0.0.1:{port}")), ("sizes", bench_sizes)):
            if not only or name in only:
                fn()
    finally:
        moto.terminate()
    header = "| benchmark | immortal | reference (same run) | ratio | target | note |\n|---|---|---|---|---|---|\n"
    table = header + "".join(f"| {' | '.join(cells)} |\n" for cells in rows)
    print(table)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    results = os.path.join(ROOT, "bench", "RESULTS.md")
    when = f"{stamp}, on {machine()}."
    if only and os.path.exists(results):
        # A partial run replaces its own rows and keeps the others where they are.
        old = open(results).read().splitlines()
        kept = [tuple(c.strip() for c in line.strip().strip("|").split("|")) for line in old if line.startswith("| ") and not line.startswith("| benchmark |")]
        when = f"{stamped_groups(next((line for line in old if ' UTC' in line), ''), only, stamp)}; on {machine()}."
        table = header + "".join(f"| {' | '.join(cells)} |\n" for cells in merge_rows(kept, rows))
    with open(results, "w") as f:
        f.write(f"# Benchmark results\n\n{when}\n\n"
                f"Produced by `scripts/bench` (release builds from `cargo lambda build --release`); medians of {REPS} runs. "
                "Ratios compare against a reference measured in the same run on the same (shared, noisy) machine; "
                "below 1 means immortal is faster.\n\n" + table)


def stamped_groups(line, only, stamp):
    """The results' date line after a partial run: when each group was last measured
    ("T (g1, g2), T' (g3); the other rows T0"), this run's groups at `stamp`."""
    at = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d) UTC")
    groups = {}
    for when, names in re.findall(at.pattern + r" \(([^)]*)\)", line):
        groups.update({name.strip(): when for name in names.split(",")})
    other = re.search(r"the other rows " + at.pattern, line) or at.search(line)
    base = other.group(1) if other else stamp.removesuffix(" UTC")
    groups.update({name: stamp.removesuffix(" UTC") for name in only})
    by_time = {}
    for name, when in groups.items():
        by_time.setdefault(when, []).append(name)
    parts = [f"{when} UTC ({', '.join(sorted(names))})" for when, names in sorted(by_time.items(), reverse=True)]
    return f"{', '.join(parts)}; the other rows {base} UTC"


def merge_rows(kept, new):
    """The earlier table with this run's rows in place of those of the same name; a new
    row goes right after the row this run measured before it."""
    fresh = {cells[0]: cells for cells in new}
    out = [fresh.get(cells[0], cells) for cells in kept]
    names = [cells[0] for cells in out]
    anchor = None
    for cells in new:
        if cells[0] in names:
            anchor = names.index(cells[0])
            continue
        at = len(out) if anchor is None else anchor + 1
        out.insert(at, cells)
        names.insert(at, cells[0])
        anchor = at
    return out


if __name__ == "__main__":
    main()
