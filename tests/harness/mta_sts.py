"""MTA-STS for outgoing mail, offline: Debian's mta-sts-daemon and a harness Postfix, both made to
see a test name server, plus stand-ins for what a destination publishes (its policy over HTTPS,
its MX with STARTTLS).

Why namespaces and a proxy: mta-sts-daemon (1.1.2) has no resolver option: its DNS library
(aiodns over c-ares) reads only /etc/resolv.conf, on port 53; Postfix's resolver does the same.
Each of them runs in its own mount namespace where a private resolv.conf names the test NSD
(on a loopback address of its own, port 53). The daemon fetches a policy from
https://mta-sts.DOMAIN on port 443, which the stack's nginx may hold; it honours HTTPS_PROXY
(aiohttp's proxies_from_env), so a CONNECT proxy here hands that connection to the policy
stand-in on a free port. TLS stays end to end (SNI mta-sts.DOMAIN, the certificate checked
against the test CA, given with SSL_CERT_FILE), so the daemon's own checks all still apply.
"""

from __future__ import annotations

import contextlib
import http.server
import select
import socket
import socketserver
import ssl
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness.postfix import Postfix
from tests.harness.process import LOOPBACK, ManagedProcess, free_port, run


def in_mount_namespace(binds: Mapping[Path, str], argv: Sequence[str]) -> list[str]:
    """argv run in a private mount namespace where each file is bind-mounted over a path."""
    mounts = "".join(f'mount --bind "{src}" "{dst}" && ' for src, dst in binds.items())
    script = mounts + 'exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *argv]


def resolv_conf(root: Path, nameserver: str) -> Path:
    path = root / "resolv.conf"
    path.write_text(f"nameserver {nameserver}\noptions attempts:1 timeout:2\n", encoding="ascii")
    return path


class _Threaded(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Serving:
    """A socketserver on 127.0.0.1:free port, served from a thread until stop()."""

    server: socketserver.TCPServer

    def start(self) -> None:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.server.server_address[:2]
        return (str(host), int(port))

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- the destination's policy over HTTPS ---------------------------------------------------


class PolicyServer(_Serving):
    """https://mta-sts.DOMAIN/.well-known/mta-sts.txt for each DOMAIN in `policies` (by Host)."""

    def __init__(self, policies: Mapping[str, str], cert: Path, key: Path) -> None:
        self.policies = dict(policies)
        self.requests: list[tuple[str, str]] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                host = (self.headers.get("Host") or "").split(":")[0].lower()
                owner.requests.append((host, self.path))
                body = owner.policies.get(host.removeprefix("mta-sts."))
                if self.path != "/.well-known/mta-sts.txt" or body is None:
                    self.send_error(404)
                    return
                data = body.encode("ascii")
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        self.server = http.server.ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.server.daemon_threads = True
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)


class ConnectProxy(_Serving):
    """An HTTP CONNECT proxy that sends every `mta-sts.*:443` tunnel to the policy server."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.targets: list[str] = []
        owner = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                client: socket.socket = self.request
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = client.recv(4096)
                    if not chunk:
                        return
                    head += chunk
                method, target = head.split(b" ", 2)[:2]
                owner.targets.append(target.decode("ascii", "replace"))
                if method != b"CONNECT" or not target.startswith(b"mta-sts."):
                    client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                    return
                with socket.create_connection(upstream, timeout=10) as server:
                    client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    _relay(client, server)

        self.server = _Threaded((LOOPBACK, 0), Handler)


def _relay(a: socket.socket, b: socket.socket) -> None:
    peers = {a: b, b: a}
    while True:
        ready, _, _ = select.select(list(peers), [], [], 10)
        if not ready:
            return
        for sock in ready:
            data = sock.recv(65536)
            if not data:
                return
            peers[sock].sendall(data)


# --- the destination's MX ------------------------------------------------------------------


@dataclass
class Session:
    tls: bool = False
    commands: list[str] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)


class StarttlsMx(_Serving):
    """An SMTP server offering STARTTLS with the given certificate; it records each session:
    the commands it got, in clear or not, and each message accepted."""

    def __init__(self, cert: Path, key: Path, host: str = LOOPBACK) -> None:
        self.sessions: list[Session] = []
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        owner = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                session = Session()
                owner.sessions.append(session)
                with contextlib.suppress(OSError, ssl.SSLError):
                    self._smtp(session)

            def _smtp(self, session: Session) -> None:
                conn: socket.socket = self.request
                reader = conn.makefile("rb")
                conn.sendall(b"220 mx.test ESMTP stand-in\r\n")
                while line := reader.readline():
                    command = line.decode("ascii", "replace").rstrip("\r\n")
                    session.commands.append(("tls: " if session.tls else "clear: ") + command)
                    verb = command.split(" ")[0].upper()
                    if verb == "EHLO":
                        starttls = b"" if session.tls else b"250-STARTTLS\r\n"
                        conn.sendall(b"250-mx.test\r\n" + starttls + b"250 8BITMIME\r\n")
                    elif verb == "STARTTLS" and not session.tls:
                        conn.sendall(b"220 2.0.0 go ahead\r\n")
                        conn = context.wrap_socket(conn, server_side=True)
                        reader = conn.makefile("rb")
                        session.tls = True
                    elif verb == "DATA":
                        conn.sendall(b"354 go ahead\r\n")
                        body = b""
                        while (chunk := reader.readline()) not in (b".\r\n", b""):
                            body += chunk
                        session.messages.append(body)
                        conn.sendall(b"250 2.0.0 accepted\r\n")
                    elif verb == "QUIT":
                        conn.sendall(b"221 2.0.0 bye\r\n")
                        return
                    else:
                        conn.sendall(b"250 2.0.0 ok\r\n")

        self.server = _Threaded((host, 0), Handler)


# --- the resolver and the Postfix that asks it ---------------------------------------------


def netstring(data: bytes) -> bytes:
    return str(len(data)).encode() + b":" + data + b","


def socketmap_query(address: tuple[str, int], name: str, key: str) -> bytes:
    """One request of Postfix's socketmap protocol (netstrings), as smtp_tls_policy_maps asks."""
    with socket.create_connection(address, timeout=30) as conn:
        conn.sendall(netstring(f"{name} {key}".encode()))
        reply = b""
        while not reply.endswith(b","):
            chunk = conn.recv(4096)
            if not chunk:
                raise OSError(f"socketmap reply cut short: {reply!r}")
            reply += chunk
    length, _, rest = reply.partition(b":")
    if len(rest) - 1 != int(length):
        raise OSError(f"not a netstring: {reply!r}")
    return rest[:-1]


class MtaStsDaemon:
    """Debian's /usr/bin/mta-sts-daemon on 127.0.0.1:free port, seeing the test DNS."""

    def __init__(self, root: Path, resolv: Path, proxy: tuple[str, int], ca_file: Path) -> None:
        self.root = root
        self.port = free_port()
        self.log_path = root / "mta-sts-daemon.log"
        self.config = root / "mta-sts-daemon.yml"
        self.config.write_text(
            f"host: {LOOPBACK}\nport: {self.port}\nreuse_port: true\nshutdown_timeout: 2\n"
            "cache: {type: internal, options: {cache_size: 100}}\n"
            "default_zone: {strict_testing: false, timeout: 4, require_sni: true}\n",
            encoding="ascii",
        )
        argv = ["/usr/bin/mta-sts-daemon", "-v", "debug", "-c", str(self.config)]
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "HTTPS_PROXY": f"http://{proxy[0]}:{proxy[1]}",
            "SSL_CERT_FILE": str(ca_file),
        }
        self._proc = ManagedProcess(
            "mta-sts-daemon",
            in_mount_namespace({resolv: "/etc/resolv.conf"}, argv),
            self.log_path,
            env=env,
        )

    @property
    def address(self) -> tuple[str, int]:
        return (LOOPBACK, self.port)

    @property
    def socketmap(self) -> str:
        return f"socketmap:inet:{LOOPBACK}:{self.port}:postfix"

    def start(self, timeout: float = 30) -> None:
        self._proc.start()
        self._proc.wait_ready(self.address, timeout=timeout)

    def stop(self) -> None:
        self._proc.stop([self.address])


class NamespacedPostfix(Postfix):
    """The harness Postfix, started in a mount namespace with a resolv.conf of its own: its
    smtp client finds MX hosts in the test DNS (master's children inherit the namespace)."""

    resolv: Path | None = None

    def postfix(self, *args: str) -> str:
        if args[:1] != ("start",) or self.resolv is None:
            return super().postfix(*args)
        argv = ["/usr/sbin/postfix", "-c", str(self.config_dir), *args]
        return run(in_mount_namespace({self.resolv: "/etc/resolv.conf"}, argv), log=self.maillog)
