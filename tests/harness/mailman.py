"""A private Mailman 3 core (Debian's `mailman3` package) on loopback, in a temp directory.

Mailman's `master` runs in the foreground under our control, as Debian's user `list` (as the
package runs it; `mailman` the command would refuse root without `--run-as-root`), with its
own `mailman.cfg` (given with -C, Debian's /etc/mailman3/mailman.cfg is not read) and every
path (SQLite database, queues, locks, logs, the generated Postfix maps) under `root/var`. The
REST API listens on a free port with a generated admin password, the LMTP runner on another;
posts go out to the SMTP server the caller names (an smtp-sink, or a Postfix). Postfix maps
are written as Debian's deployment does (`transport_file_type: hash`, /usr/sbin/postmap), so
`transport_map` is the same `postfix_lmtp` file (mode 0660, user and group list) that the
milter and the policy service read.

Startup is slow: master starts a dozen runners, each a Python process importing Mailman
(about 2 s of CPU each: 15-30 s on two cores); hence one session-scoped fixture. Ready means
REST answers 200, LMTP accepts and every runner has logged that it started (REST answers
before the out runner is up). Runners no test needs are off by default (`runners_off`): nntp
(it starts a whole `mailman gatenews` process now and then), archive (no archiver is
enabled) and digest.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from .process import (
    LOOPBACK,
    DaemonError,
    ManagedProcess,
    chown,
    free_port,
    log_tail,
    make_traversable,
)

MAILMAN_USER = "list"
MASTER = Path("/usr/lib/mailman3/bin/master")
POSTMAP = Path("/usr/sbin/postmap")
API = "3.1"
SITE_OWNER = "postmaster@example.org"
# Mailman 3.3's runners that start by default (mailman/config/mailman.cfg).
RUNNERS = (
    "archive",
    "bounces",
    "command",
    "in",
    "lmtp",
    "nntp",
    "out",
    "pipeline",
    "rest",
    "retry",
    "task",
    "virgin",
    "digest",
)
RUNNERS_OFF = ("nntp", "archive", "digest")


class Mailman:
    """Mailman's master and runners; REST on `rest_address`, LMTP on `lmtp_address`."""

    def __init__(
        self, root: Path, smtp: tuple[str, int], runners_off: tuple[str, ...] = RUNNERS_OFF
    ) -> None:
        self.root = root
        self.smtp = smtp
        self.runners_off = runners_off
        self.host = LOOPBACK
        self.rest_port = free_port()
        self.lmtp_port = free_port()
        self.admin_user = "restadmin"
        self.admin_pass = secrets.token_urlsafe(18)
        self.conf_path = root / "mailman.cfg"
        self.postfix_cfg_path = root / "postfix.cfg"
        self.gunicorn_cfg_path = root / "gunicorn.cfg"
        self.var_dir = root / "var"
        self.log_path = root / "master.log"  # master's and runners' stdout/stderr
        self._proc: ManagedProcess | None = None

    # --- where things are --------------------------------------------------------------------

    @property
    def rest_address(self) -> tuple[str, int]:
        return (self.host, self.rest_port)

    @property
    def rest_url(self) -> str:
        """The base URL, without the API version (what lists.yaml's `rest_url` holds)."""
        return f"http://{self.host}:{self.rest_port}"

    @property
    def lmtp_address(self) -> tuple[str, int]:
        return (self.host, self.lmtp_port)

    @property
    def transport_map(self) -> Path:
        """Mailman's generated `postfix_lmtp` (address → lmtp:[127.0.0.1]:port)."""
        return self.var_dir / "data" / "postfix_lmtp"

    @property
    def mailman_log(self) -> Path:
        """Runners, REST requests (gunicorn) and errors with tracebacks."""
        return self.var_dir / "logs" / "mailman.log"

    @property
    def smtp_log(self) -> Path:
        """The out runner's SMTP sessions (the LMTP runner logs here too)."""
        return self.var_dir / "logs" / "smtp.log"

    @property
    def process(self) -> ManagedProcess | None:
        """The running master (None when stopped), for fault injection."""
        return self._proc

    # --- lifecycle ---------------------------------------------------------------------------

    def configure(self) -> None:
        self.var_dir.mkdir(parents=True, exist_ok=True)
        make_traversable(self.root)
        self.postfix_cfg_path.write_text(
            f"[postfix]\npostmap_command: {POSTMAP}\ntransport_file_type: hash\n"
        )
        # gunicorn (the REST runner) waits graceful_timeout (Mailman's: 30 s) at shutdown even
        # when its worker has already gone; 2 s is plenty for a test's requests.
        self.gunicorn_cfg_path.write_text("[gunicorn]\ngraceful_timeout = 2\ntimeout = 360\n")
        runners_off = "".join(f"[runner.{name}]\nstart: no\n\n" for name in self.runners_off)
        self.conf_path.write_text(
            f"""\
# mailglue test harness: everything under {self.root}
[mailman]
layout: harness
site_owner: {SITE_OWNER}

[paths.harness]
var_dir: {self.var_dir}
bin_dir: {MASTER.parent}
pid_file: $var_dir/master.pid

[database]
class: mailman.database.sqlite.SQLiteDatabase
url: sqlite:///$DATA_DIR/mailman.db

[logging.root]
path: mailman.log

[webservice]
hostname: {self.host}
port: {self.rest_port}
use_https: no
api_version: {API}
admin_user: {self.admin_user}
admin_pass: {self.admin_pass}
workers: 1
configuration: {self.gunicorn_cfg_path}

[mta]
incoming: mailman.mta.postfix.LMTP
outgoing: mailman.mta.deliver.deliver
smtp_host: {self.smtp[0]}
smtp_port: {self.smtp[1]}
lmtp_host: {self.host}
lmtp_port: {self.lmtp_port}
configuration: {self.postfix_cfg_path}

{runners_off}"""
        )
        # The config holds the REST password: readable by Mailman's user only.
        for path in (self.root, self.var_dir, self.conf_path, self.postfix_cfg_path):
            chown(path, MAILMAN_USER)
        self.conf_path.chmod(0o600)

    def start(self, timeout: float = 120) -> None:
        if not self.conf_path.exists():
            self.configure()
        # --force: a master that was killed leaves its lock behind, as after a crash; the
        # deployment's supervisor starts it the same way.
        master = [str(MASTER), "--force", "-C", str(self.conf_path)]
        argv = master
        if os.geteuid() == 0:
            argv = ["setpriv", "--reuid", MAILMAN_USER, "--regid", MAILMAN_USER]
            argv += ["--init-groups", *master]
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": str(self.root)}
        self._proc = ManagedProcess(
            "mailman",
            argv,
            self.log_path,
            env=env,
            cwd=self.root,
            extra_logs=[self.mailman_log],
        )
        log_start = self.mailman_log.stat().st_size if self.mailman_log.exists() else 0
        self._proc.start()
        deadline = time.monotonic() + timeout
        self._proc.wait_ready(self.rest_address, timeout=timeout)
        self._wait_rest(deadline)
        self._proc.wait_ready(self.lmtp_address, timeout=max(1.0, deadline - time.monotonic()))
        self._wait_runners(log_start, deadline)

    def _wait_runners(self, log_start: int, deadline: float) -> None:
        """REST may answer before the out runner is up: ready means every runner said so."""
        wanted = {name for name in RUNNERS if name not in self.runners_off}
        while True:
            with self.mailman_log.open("rb") as log:
                log.seek(log_start)
                text = log.read().decode("utf-8", "replace")
            started = set(re.findall(r"\) (\w+) runner started\.", text))
            if wanted <= started:
                return
            if time.monotonic() > deadline:
                missing = ", ".join(sorted(wanted - started))
                raise DaemonError(f"mailman: runners not started in time: {missing}")
            time.sleep(0.2)

    def _wait_rest(self, deadline: float) -> None:
        """gunicorn listens before its worker has loaded Mailman: wait for a real answer."""
        while True:
            try:
                status, _ = self.request("GET", "system/versions")
                if status == 200:
                    return
            except OSError:
                pass
            if self._proc is not None and not self._proc.running():
                raise DaemonError(f"mailman exited while starting\n{self._tails()}")
            if time.monotonic() > deadline:
                raise DaemonError(f"mailman: REST API not answering 200 in time\n{self._tails()}")
            time.sleep(0.2)

    def queued(self) -> dict[str, int]:
        """Files waiting in each of Mailman's queues (`.pck`), or being worked on (`.bak`)."""
        counts: dict[str, int] = {}
        queue_root = self.var_dir / "queue"
        for queue in sorted(queue_root.iterdir()) if queue_root.exists() else []:
            n = sum(1 for f in queue.iterdir() if f.suffix in (".pck", ".bak"))
            if n:
                counts[queue.name] = n
        return counts

    def busy(self) -> dict[str, int]:
        """The work queues that still hold something. Not counted: `shunt` and `bad` (where
        Mailman keeps what failed) and the queues of runners that are off (`archive`,
        `digest`: filled, never emptied here)."""
        idle = ("shunt", "bad", *self.runners_off)
        return {q: n for q, n in self.queued().items() if q not in idle}

    def wait_idle(self, timeout: float = 120) -> None:
        """Until every post Mailman holds in a work queue has been sent on."""
        deadline = time.monotonic() + timeout
        while True:
            busy = self.busy()
            if not busy:
                return
            if time.monotonic() > deadline:
                raise DaemonError(f"mailman still busy after {timeout}s: {busy}\n{self._tails()}")
            time.sleep(0.2)

    def _tails(self) -> str:
        return "\n".join(f"--- {p} ---\n{log_tail(p)}" for p in (self.log_path, self.mailman_log))

    def stop(self) -> None:
        """SIGTERM, as `mailman stop` does: master stops its runners and waits for them."""
        if self._proc is not None:
            self._proc.stop([self.rest_address, self.lmtp_address], timeout=30)
            self._proc = None

    # --- REST, for tests (independent of mailglue's own client) ------------------------------

    def request(
        self, method: str, path: str, data: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        """One REST call (`path` under /3.1/); returns the status and the decoded JSON body
        (None when empty). HTTP errors are returned, not raised."""
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        req = urllib.request.Request(
            f"{self.rest_url}/{API}/{path.lstrip('/')}", data=body, method=method
        )
        token = base64.b64encode(f"{self.admin_user}:{self.admin_pass}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        return status, (json.loads(raw) if raw else None)

    def emails(self, list_id: str, role: str = "member") -> set[str]:
        """The addresses on one roster (member, owner, moderator, nonmember)."""
        status, body = self.request("GET", f"lists/{list_id}/roster/{role}")
        assert status == 200, (status, body)
        return {entry["email"] for entry in body.get("entries", [])}

    def subscribe(self, list_id: str, address: str, role: str = "member") -> None:
        """Add someone as Postorius would for an admin: at once, no confirmation asked."""
        data = {"list_id": list_id, "subscriber": address, "role": role}
        if role == "member":
            data |= {"pre_verified": "true", "pre_confirmed": "true", "pre_approved": "true"}
        status, body = self.request("POST", "members", data)
        assert status == 201, (status, body)

    def create_list(
        self, address: str, members: list[str], settings: dict[str, str] | None = None
    ) -> str:
        """A list (and its domain, if new) with these members and settings; its list id.

        No welcome messages: a test's Mailman may send them before the MTA it talks to is up,
        and would then retry them 15 minutes later (its retry queue never empties)."""
        local, domain = address.split("@")
        status, body = self.request("POST", "domains", {"mail_host": domain})
        assert status in (201, 400), (status, body)  # 400: the domain exists
        status, body = self.request("POST", "lists", {"fqdn_listname": address})
        assert status == 201, (status, body)
        list_id = f"{local}.{domain}"
        config = {"send_welcome_message": "false", **(settings or {})}
        status, body = self.request("PATCH", f"lists/{list_id}/config", config)
        assert status == 204, (status, body)
        for member in members:
            self.subscribe(list_id, member)
        return list_id

    def reset(self) -> None:
        """Remove every list and domain, so a test module starts from an empty Mailman."""
        _, lists = self.request("GET", "lists")
        for entry in (lists or {}).get("entries", []):
            status, body = self.request("DELETE", f"lists/{entry['list_id']}")
            assert status == 204, (status, body)
        _, domains = self.request("GET", "domains")
        for entry in (domains or {}).get("entries", []):
            status, body = self.request("DELETE", f"domains/{entry['mail_host']}")
            assert status == 204, (status, body)
