"""A real S3 server on loopback: moto[server]'s `moto_server` in a subprocess, and the
environment that points s3fs and boto3 at it (fake credentials; nothing leaves the machine)."""
from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

SECRET = "s3-secret-that-must-never-be-written-down"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    def __init__(self, log: Path):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = log
        with log.open("w") as out:  # moto logs one line per request: tests read them
            self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                         stdout=out, stderr=subprocess.STDOUT)
        self._wait()

    def _wait(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto_server exited: {self.log.read_text()[-2000:]}")
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1)
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"moto_server did not answer on {self.endpoint} in {timeout}s")

    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL_S3": self.endpoint, "AWS_ACCESS_KEY_ID": "test-key-id",
                "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": "us-east-1"}

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="test-key-id",
                            aws_secret_access_key=SECRET, region_name="us-east-1")

    def requests(self) -> list[str]:
        """The request lines moto has logged so far, e.g. 'PUT /bucket/key HTTP/1.1'."""
        return [line.split('"')[1] for line in self.log.read_text().splitlines() if line.count('"') >= 2]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
