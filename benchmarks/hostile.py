"""Replays the families of hostile input found by probing against a real `styringsbot serve`, and
prints a table: probes tried, held (the answer a client should get: a 4xx, or a proper answer),
and how many got a 500 or left a traceback in the server's log.

Families: HTTP bodies, HTTP headers and framing (raw bytes), the API token, Teams activities
(anonymous mode, replies caught by a local stand-in for the Bot Connector), Teams tokens (JWT
mode; Microsoft's key endpoints are not reachable from here, as on a closed network), and ingest
faults (broken guide files and manifests, links out of the folder, `kill -9` at several moments
of a rebuild), each followed by a question the earlier index must still answer. Telegram updates
are replayed by tests/test_telegram.py against a stand-in for the Bot API.

Usage: python benchmarks/hostile.py         (exit status 1 if any probe did not hold)
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "hemmelig-nøkkel"
QUESTION = "Hvem leder etatsstyringsmøtet?"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Serve:
    """`styringsbot serve` as a process, its stderr kept for the traceback count."""

    def __init__(self, **env: str) -> None:
        self.port = free_port()
        # kept open for the server's whole life, removed in stop()
        self.log = tempfile.NamedTemporaryFile(prefix="serve-", suffix=".log", delete=False)  # noqa: SIM115
        command = [str(Path(sys.executable).parent / "styringsbot"), "serve"]
        settings = {
            "STYRINGSBOT_PORT": str(self.port),
            "STYRINGSBOT_QUESTION_LOG": "off",
            "STYRINGSBOT_API_RATE_LIMIT": "0",
            **env,
        }
        self.process = subprocess.Popen(
            command, env={**os.environ, **settings}, stdout=self.log, stderr=self.log
        )
        deadline = time.time() + 120
        while time.time() < deadline:
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2)
                return
            time.sleep(0.3)
        raise SystemExit("serve did not start")

    def tracebacks(self) -> int:
        return Path(self.log.name).read_text(errors="replace").count("Traceback")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        Path(self.log.name).unlink(missing_ok=True)


def raw(port: int, data: bytes, timeout: float = 20) -> int:
    """Send bytes as they are; the status of the answer (0 if none)."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(data)
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                received += chunk
                if b"\r\n\r\n" in received and not received.startswith(b"HTTP/1.1 100"):
                    break
    head = received.split(b"\r\n", 1)[0].split()
    return int(head[1]) if len(head) > 1 and head[1].isdigit() else 0


def request(port: int, path: str, body: bytes, headers: dict[str, str] | None = None) -> int:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def http_head(path: str, *headers: bytes, body: bytes = b"", length: int | None = None) -> bytes:
    lines = [f"POST {path} HTTP/1.1".encode(), b"Host: 127.0.0.1", *headers]
    lines.append(b"Content-Length: %d" % (len(body) if length is None else length))
    return b"\r\n".join([*lines, b"", b""]) + body


def body_probes() -> dict[str, tuple[bytes, dict[str, str], set[int]]]:
    deep = ("[" * 2000 + "]" * 2000).encode()
    ok = {200}
    bad = {400}
    return {
        "not JSON": (b"{question:", {}, bad),
        "JSON, not an object": (b'["Hva?"]', {}, bad),
        "question not a string": (b'{"question": 5}', {}, bad),
        "question missing": (b"{}", {}, bad),
        "nested 2000 deep": (b'{"question": "x", "y": ' + deep + b"}", {}, bad),
        "lone surrogate": (b'{"question": "\\ud800"}', {}, bad),
        "not UTF-8": ('{"question": "Hvem æ"}'.encode("latin-1"), {}, bad),
        "false gzip": (b'{"question": "Hva?"}', {"Content-Encoding": "gzip"}, bad),
        "real gzip": (
            gzip.compress(json.dumps({"question": QUESTION}).encode()),
            {"Content-Encoding": "gzip"},
            ok | bad,
        ),
        "question of 1 MB": (json.dumps({"question": "x" * 1_000_000}).encode(), {}, {413}),
        "question of 5000 characters": (json.dumps({"question": "x " * 2500}).encode(), {}, {413}),
        "empty question": (b'{"question": "   "}', {}, bad),
        "control characters": (json.dumps({"question": "\x1b[2J\x07Hva?"}).encode(), {}, ok),
        "RLO in question": (json.dumps({"question": "\u202eHva er et fagmøte?"}).encode(), {}, ok),
        "conversation id of 10 000": (
            json.dumps({"question": "Hva?", "conversation_id": "c" * 10_000}).encode(),
            {},
            bad,
        ),
        "conversation id a number": (b'{"question": "Hva?", "conversation_id": 7}', {}, bad),
        "path traversal id": (
            json.dumps({"question": QUESTION, "conversation_id": "../../etc/passwd"}).encode(),
            {},
            ok,
        ),
    }


def framing_probes() -> dict[str, tuple[bytes, set[int]]]:
    body = json.dumps({"question": QUESTION}).encode()
    path = "/api/ask"
    return {
        "Content-Length says less": (http_head(path, body=body, length=5), {400}),
        "Content-Length not a number": (
            http_head(path, b"Content-Length: 12abc", body=body)[: -len(body)] + body,
            {400},
        ),
        "two Content-Lengths": (http_head(path, b"Content-Length: 3", body=body), {400}),
        "header line of 100 KB": (http_head(path, b"X-Big: " + b"a" * 100_000, body=body), {400}),
        "10 000 headers": (
            http_head(path, *(b"X-H%d: v" % i for i in range(10_000)), body=body),
            {400},
        ),
        "request line of 100 KB": (
            b"POST /api/ask?" + b"q" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
            {400},
        ),
        "not HTTP": (b"\x16\x03\x01\x02\x00" + b"\x00" * 2000 + b"\r\n\r\n", {400}),
        "chunked 10 MB": (
            b"POST /api/ask HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            + b"Authorization: Bearer "
            + TOKEN.encode()
            + b"\r\n"
            b"Content-Type: application/json\r\n\r\n"
            + b"".join(b"100000\r\n" + b"a" * 0x100000 + b"\r\n" for _ in range(10))
            + b"0\r\n\r\n",
            {413},
        ),
        "unknown path": (http_head("/api/../../etc/passwd", body=body), {404}),
        "GET on /api/ask": (b"GET /api/ask HTTP/1.1\r\nHost: x\r\n\r\n", {405}),
    }


def token_probes() -> dict[str, tuple[dict[str, str] | bytes, set[int]]]:
    body = json.dumps({"question": QUESTION}).encode()
    right = f"Bearer {TOKEN}".encode()
    return {
        "the right token (UTF-8)": (
            http_head("/api/ask", b"Authorization: " + right, body=body),
            {200},
        ),
        "the right token (Latin-1)": (
            http_head(
                "/api/ask", b"Authorization: " + f"Bearer {TOKEN}".encode("latin-1"), body=body
            ),
            {200},
        ),
        "a wrong token": (http_head("/api/ask", b"Authorization: Bearer feil", body=body), {401}),
        "no token": (http_head("/api/ask", body=body), {401}),
        "bytes that are not text": (
            http_head("/api/ask", b"Authorization: Bearer \xff\xfe\x80", body=body),
            {401},
        ),
        "Basic instead of Bearer": (
            http_head("/api/ask", b"Authorization: Basic " + base64.b64encode(b"a:b"), body=body),
            {401},
        ),
    }


class Connector(ThreadingHTTPServer):
    """Stands in for Azure's Bot Connector: records the paths the bot posts its replies to."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                outer.paths.append(self.path)
                data = b'{"id": "reply-1"}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_POST = do_PUT = _answer

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"


def activity(service_url: str | None, **fields: object) -> bytes:
    message: dict[str, object] = {
        "type": "message",
        "id": "1700000000001",
        "channelId": "msteams",
        "timestamp": "2026-11-23T10:00:00.000Z",
        "text": QUESTION,
        "locale": "nb-NO",
        "from": {"id": "29:user", "name": "Kari"},
        "recipient": {"id": "28:bot", "name": "Bot"},
        "conversation": {"id": "a:personal", "conversationType": "personal"},
    }
    if service_url is not None:
        message["serviceUrl"] = service_url
    message.update(fields)
    return json.dumps(message).encode()


def teams_probes(connector: str) -> dict[str, tuple[bytes, set[int]]]:
    closed = f"http://127.0.0.1:{free_port()}/"
    return {
        "a proper message": (activity(connector), {200, 201, 202}),
        "no serviceUrl": (activity(None), {400}),
        "relative serviceUrl": (activity("/v3/"), {400}),
        "file: serviceUrl": (activity("file:///etc/passwd"), {400}),
        "unreachable serviceUrl": (activity(closed), {502}),
        "activity id of 100 000": (activity(connector, id="1" * 100_000), {400}),
        "conversation id with ../": (
            activity(connector, conversation={"id": "../../v3/other?x=1#frag"}),
            {200, 201, 202},
        ),
        "conversation id with a line break": (
            activity(connector, conversation={"id": "a\r\nX-Evil: 1"}),
            {400},
        ),
        "from.id of 5000": (activity(connector, **{"from": {"id": "u" * 5000}}), {400}),
        "not an activity": (b'{"hello": "world"}', {400}),
        "an unknown activity type": (activity(connector, type="x" * 300), {200, 201, 202, 400}),
    }


def jwt(header: dict[str, object]) -> str:
    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    claims = {"iss": "https://api.botframework.com", "aud": "app-id", "exp": 4102444800}
    return f"{part(header)}.{part(claims)}.{base64.urlsafe_b64encode(b'sig').decode()}"


def teams_token_probes() -> dict[str, tuple[dict[str, str], set[int]]]:
    return {
        "no token": ({}, {401}),
        "not a JWT": ({"Authorization": "Bearer abc"}, {401}),
        "no kid": ({"Authorization": f"Bearer {jwt({'alg': 'RS256'})}"}, {401}),
        "kid a number": ({"Authorization": f"Bearer {jwt({'alg': 'RS256', 'kid': 7})}"}, {401}),
        "alg none": ({"Authorization": f"Bearer {jwt({'alg': 'none', 'kid': 'k'})}"}, {401}),
        **{
            f"forged kid {n}": (
                {"Authorization": f"Bearer {jwt({'alg': 'RS256', 'kid': f'k{n}'})}"},
                {401},
            )
            for n in range(10)
        },
    }


Row = tuple[str, int, int, int]


def ingest_family() -> tuple[Row, list[str], int]:
    """Faults at ingest on a copy of knowledge/: the expected exit status, no traceback, and the
    index still answers afterwards. Returns (row, failures, tracebacks)."""
    import shutil
    import signal

    script = str(Path(sys.executable).parent / "styringsbot")
    with tempfile.TemporaryDirectory(prefix="hostile-ingest-") as tmp:
        root = Path(tmp)
        knowledge = root / "knowledge"
        shutil.copytree(ROOT / "knowledge", knowledge)
        env = {**os.environ, "STYRINGSBOT_HOME": str(root),
               "STYRINGSBOT_DATA_DIR": str(root / "data"),
               "STYRINGSBOT_KNOWLEDGE_DIR": str(knowledge)}  # fmt: skip

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([script, *args], env=env, capture_output=True, text=True,
                                  cwd=root, timeout=600)  # fmt: skip

        first = run("ingest", "--quiet")
        if first.returncode != 0:
            raise SystemExit(f"the first ingest failed: {first.stderr}")
        manifest = (knowledge / "sources.yaml").read_bytes()
        glossary = (knowledge / "glossary.yaml").read_bytes()
        roles = (knowledge / "roles.yaml").read_bytes()
        long_title = manifest.decode().replace(
            "title: Politisk styringssystem", "title: " + "Politisk styringssystem " * 90, 1
        )
        bomb = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n' + "".join(
            f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},"
            f"*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)}]\n"
            for i in range(9)
        )

        def put(name: str, data: bytes) -> Callable[[], None]:
            return lambda: (knowledge / name).write_bytes(data)

        def link() -> None:
            outside = root / "utenfor.txt"
            outside.write_text("Hemmelig tekst utenfor kunnskapsmappen.\n", encoding="utf-8")
            (knowledge / "lenke.txt").symlink_to(outside)

        faults: dict[str, tuple[Callable[[], None], set[int]]] = {
            "glossary.yaml not YAML": (put("glossary.yaml", b"terms: [unclosed\n  - : :\n"), {2}),
            "roles.yaml not YAML": (put("roles.yaml", b"cards: {\n"), {2}),
            "sources.yaml not UTF-8": (put("sources.yaml", "tittel: Møte".encode("utf-16")), {2}),
            "a title of 2000 characters": (put("sources.yaml", long_title.encode()), {2}),
            "a YAML alias bomb": (put("sources.yaml", bomb.encode()), {2}),
            "a link out of the folder": (link, {0, 1}),
            "a PDF that is not one": (put("odelagt.pdf", b"%PDF-1.7 not really" * 100), {0, 1}),
        }
        held, failures, tracebacks = 0, [], 0

        def answers() -> bool:
            done = run("ask", "Hvem leder etatsstyringsmøtet?")
            return done.returncode == 0 and "kommunaldirektør" in done.stdout

        for label, (make, expected) in faults.items():
            make()
            done = run("ingest", "--quiet")
            tracebacks += done.stderr.count("Traceback")
            ok = done.returncode in expected and "Traceback" not in done.stderr and answers()
            held += ok
            if not ok:
                failures.append(f"ingest: {label} → exit {done.returncode}: {done.stderr[-300:]}")
            for name, data in (("sources.yaml", manifest), ("glossary.yaml", glossary),
                               ("roles.yaml", roles)):  # fmt: skip
                (knowledge / name).write_bytes(data)
            for extra in ("lenke.txt", "odelagt.pdf"):
                (knowledge / extra).unlink(missing_ok=True)
            run("ingest", "--quiet")

        kills = (1.5, 5.0, 10.0, 20.0)
        for seconds in kills:  # kill -9 at several moments of a rebuild, then ingest again
            process = subprocess.Popen([script, "ingest", "--rebuild", "--quiet"], env=env,
                                       cwd=root, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)  # fmt: skip
            time.sleep(seconds)
            process.send_signal(signal.SIGKILL)
            process.wait()
            done = run("ingest", "--quiet")
            tracebacks += done.stderr.count("Traceback")
            ok = done.returncode == 0 and answers()
            held += ok
            if not ok:
                failures.append(f"ingest: kill -9 after {seconds} s → {done.stderr[-300:]}")
        tried = len(faults) + len(kills)
        return ("Ingest faults and kill -9", tried, held, 0), failures, tracebacks


def run_family(
    name: str, probes: dict[str, object], send: Callable[[object], int], serve: Serve
) -> tuple[Row, list[str]]:
    before = serve.tracebacks()
    held, fivehundreds, failures = 0, 0, []
    for label, (probe, expected) in probes.items():  # type: ignore[misc]
        try:
            status = send(probe)
        except OSError as exc:
            status = 0
            label = f"{label} ({exc.__class__.__name__})"
        fivehundreds += status >= 500 and status not in expected
        if status in expected:
            held += 1
        else:
            failures.append(f"{name}: {label} → {status} (expected {sorted(expected)})")
    return (name, len(probes), held, fivehundreds), failures + (
        [f"{name}: {serve.tracebacks() - before} tracebacks in the log"]
        if serve.tracebacks() > before
        else []
    )


def main() -> int:
    rows: list[Row] = []
    failures: list[str] = []
    tracebacks = 0

    serve = Serve(STYRINGSBOT_API_TOKEN=TOKEN, TEAMS_ALLOW_ANONYMOUS="true")
    connector = Connector()
    try:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        families = [
            (
                "HTTP bodies",
                body_probes(),
                lambda p: request(serve.port, "/api/ask", p[0], {**auth, **p[1]}),
            ),
            ("HTTP framing and headers", framing_probes(), lambda p: raw(serve.port, p)),
            ("API token", token_probes(), lambda p: raw(serve.port, p)),
            (
                "Teams activities (anonymous)",
                teams_probes(connector.url),
                lambda p: request(serve.port, "/api/messages", p),
            ),
        ]
        for name, probes, send in families:
            wrapped = {
                label: (value[:-1] if len(value) == 3 else value[0], value[-1])
                for label, value in probes.items()
            }
            row, failed = run_family(name, wrapped, send, serve)
            rows.append(row)
            failures += failed
        # No reply may be posted anywhere but the conversation's own activities path.
        stray = [p for p in connector.paths if not p.startswith("/v3/conversations/")]
        if stray or any("/v3/other" in p for p in connector.paths):
            failures.append(f"Teams: replies posted to {stray}")
        tracebacks += serve.tracebacks()
    finally:
        serve.stop()
        connector.shutdown()

    jwt_serve = Serve(
        MICROSOFT_APP_ID="app-id", MICROSOFT_APP_PASSWORD="x", MICROSOFT_APP_TENANT_ID="tenant"
    )
    try:
        body = activity("https://smba.trafficmanager.net/emea/")
        row, failed = run_family(
            "Teams tokens (JWT mode)",
            teams_token_probes(),
            lambda headers: request(jwt_serve.port, "/api/messages", body, headers),
            jwt_serve,
        )
        rows.append(row)
        failures += failed
        tracebacks += jwt_serve.tracebacks()
    finally:
        jwt_serve.stop()

    row, failed, ingest_tracebacks = ingest_family()
    rows.append(row)
    failures += failed
    tracebacks += ingest_tracebacks

    print(f"{'family':32} {'tried':>6} {'held':>6} {'500s':>6}")
    for name, tried, held, errors in rows:
        print(f"{name:32} {tried:>6} {held:>6} {errors:>6}")
    total = [sum(r[i] for r in rows) for i in (1, 2, 3)]
    print(f"{'all':32} {total[0]:>6} {total[1]:>6} {total[2]:>6}")
    print(f"tracebacks in the servers' logs: {tracebacks}")
    for failure in failures:
        print("  not held:", failure)
    return 1 if failures or tracebacks else 0


if __name__ == "__main__":
    sys.exit(main())
