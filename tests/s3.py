"""A real S3-compatible HTTP server on 127.0.0.1 for the tests: moto's standalone server
(``moto[server]``), started as a process of its own on a free port. A server that does not
start fails the test that needs it."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass

import boto3

REGION = "us-east-1"
# moto accepts any credentials; boto3 wants some.
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
START_TIMEOUT = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class S3Server:
    url: str
    process: subprocess.Popen

    @classmethod
    def start(cls) -> S3Server:
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-c", "from moto.server import main; main()", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        server = cls(f"http://127.0.0.1:{port}", process)
        deadline = time.monotonic() + START_TIMEOUT
        while not server.answers():
            if process.poll() is not None:
                raise RuntimeError(f"The S3 server did not start: {process.stderr.read()!r}")
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"The S3 server did not answer on {server.url}.")
            time.sleep(0.1)
        return server

    def answers(self) -> bool:
        try:
            urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1).close()
        except (urllib.error.URLError, OSError):
            return False
        return True

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def client(self):
        return boto3.client("s3", endpoint_url=self.url, region_name=REGION, **CREDENTIALS)

    def new_bucket(self) -> str:
        name = f"backups-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str) -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", ()))

    def storage_config(self, bucket: str, prefix: str = "") -> dict:
        """``STORAGES["sync"]`` for ``bucket``, as a project would write it."""
        return {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": bucket,
                "location": prefix,
                "endpoint_url": self.url,
                "region_name": REGION,
                "access_key": CREDENTIALS["aws_access_key_id"],
                "secret_key": CREDENTIALS["aws_secret_access_key"],
                "file_overwrite": False,
            },
        }

    def site_env(self, bucket: str) -> dict[str, str]:
        """The environment that points ``crearis.settings`` at ``bucket`` (see its STORAGES)."""
        return {
            "SYNC_S3_BUCKET": bucket,
            "AWS_S3_ENDPOINT_URL": self.url,
            "AWS_S3_REGION_NAME": REGION,
            "AWS_ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"],
        }
