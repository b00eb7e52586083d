"""clamd with a hand-made signature set: freshclam cannot download here, and clamd refuses an
empty database. Three signatures catch EICAR (file and inside a mail body) and the
clamav-testfiles samples (clam.exe, and the archives containing it, since clamd unpacks).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from .messages import EICAR
from .process import LOOPBACK, ManagedProcess, chown, free_port

CLAMAV_USER = "clamav"
TESTFILES = Path("/usr/share/clamav-testfiles")
CLAM_EXE = TESTFILES / "clam.exe"
CLAM_ZIP = TESTFILES / "clam.zip"

# clamd reports custom signatures with a ".UNOFFICIAL" suffix.
EICAR_FILE_SIG = "Mailglue.Eicar.File"
EICAR_BODY_SIG = "Mailglue.Eicar.Body"
CLAM_EXE_SIG = "Mailglue.ClamExe"


def signatures() -> dict[str, str]:
    """File name -> content of the signature database."""
    eicar = EICAR.encode("ascii")
    clam = CLAM_EXE.read_bytes()
    body_hex = b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE".hex()
    return {
        "mailglue.hdb": (
            f"{hashlib.md5(eicar).hexdigest()}:{len(eicar)}:{EICAR_FILE_SIG}\n"
            f"{hashlib.md5(clam).hexdigest()}:{len(clam)}:{CLAM_EXE_SIG}\n"
        ),
        # A body signature (any file type, any offset): catches EICAR inside a mail body.
        "mailglue.ndb": f"{EICAR_BODY_SIG}:0:*:{body_hex}\n",
    }


class Clamd:
    """clamd listening on a loopback TCP port and a unix socket in the temp dir."""

    def __init__(self, root: Path, stream_max_length: str = "100M") -> None:
        self.root = root
        self.host = LOOPBACK
        self.port = free_port()
        self.socket_path = root / "clamd.sock"
        self.db_dir = root / "db"
        self.conf_path = root / "clamd.conf"
        self.log_path = root / "clamd.log"
        self.stream_max_length = stream_max_length
        self._proc: ManagedProcess | None = None

    @property
    def process(self) -> ManagedProcess | None:
        """The running daemon's process (None when stopped), for fault injection."""
        return self._proc

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def configure(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        chown(self.root, CLAMAV_USER, mode=0o755)  # clamd creates its socket and pid file here
        self.db_dir.mkdir(exist_ok=True)
        for name, content in signatures().items():
            (self.db_dir / name).write_text(content)
        self.log_path.touch()
        chown(self.log_path, CLAMAV_USER)
        self.conf_path.write_text(
            f"""\
Foreground yes
User {CLAMAV_USER}
DatabaseDirectory {self.db_dir}
LocalSocket {self.socket_path}
LocalSocketMode 666
TCPSocket {self.port}
TCPAddr {self.host}
PidFile {self.root / "clamd.pid"}
LogFile {self.log_path}
LogTime yes
LogVerbose yes
StreamMaxLength {self.stream_max_length}
MaxFileSize {self.stream_max_length}
MaxScanSize {self.stream_max_length}
ScanMail yes
ScanArchive yes
"""
        )

    def start(self, timeout: float = 30) -> None:
        if not self.conf_path.exists():
            self.configure()
        argv = ["/usr/sbin/clamd", "--config-file", str(self.conf_path)]
        self._proc = ManagedProcess("clamd", argv, self.log_path)
        self._proc.start()
        self._proc.wait_ready(self.address, timeout=timeout)
        self._proc.wait_ready(self.socket_path, timeout=timeout)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop([self.address, self.socket_path])
