"""A real Mosquitto broker for tests: its own process on 127.0.0.1, a password file, no persistence, and optionally
a second, TLS listener with a certificate from a throw-away CA (made with the openssl command).

`MosquittoProcess(username, password).start()`; `.stop()` kills it; `.start()` again restarts it on the same port
(a broker that went away and came back)."""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.rtsp_server import free_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"


def mosquitto_available() -> bool:
    return Path(MOSQUITTO).exists() and Path(MOSQUITTO_PASSWD).exists()


def _make_certificates(folder: Path) -> None:
    """ca.pem (a CA) and server.pem/server.key (signed by it, for IP 127.0.0.1)."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=refinevad test CA")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=127.0.0.1")  # fmt: skip
    (folder / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.pem", "-days", "2", "-extfile", "san.cnf")  # fmt: skip


class MosquittoProcess:
    def __init__(self, username: str, password: str, tls: bool = False) -> None:
        self.port = free_port()
        self.tls_port = free_port() if tls else None
        self.username, self.password = username, password
        self._dir = Path(tempfile.mkdtemp(prefix="mosquitto-"))
        passwd = self._dir / "passwd"
        passwd.touch(mode=0o600)
        subprocess.run([MOSQUITTO_PASSWD, "-b", str(passwd), username, password], check=True, timeout=10)
        self.config = self._dir / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous false\n"
            f"password_file {passwd}\n"
            "persistence false\n"
            # Started as root, mosquitto would switch to its own user, who cannot read this private directory.
            f"user {getpass.getuser()}\n"
            f"log_dest file {self._dir / 'mosquitto.log'}\n"
        )
        if tls:
            _make_certificates(self._dir)
            with self.config.open("a") as config:
                config.write(
                    f"listener {self.tls_port} 127.0.0.1\n"
                    f"cafile {self._dir / 'ca.pem'}\ncertfile {self._dir / 'server.pem'}\n"
                    f"keyfile {self._dir / 'server.key'}\n"
                )
        self._proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.username}:{self.password}@127.0.0.1:{self.port}"

    @property
    def tls_url(self) -> str:
        return f"mqtts://{self.username}:{self.password}@127.0.0.1:{self.tls_port}"

    @property
    def ca_file(self) -> Path:
        return self._dir / "ca.pem"

    def start(self, timeout: float = 10.0) -> MosquittoProcess:
        self._proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self._proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("mosquitto did not start listening")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=10)
        self._proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)
