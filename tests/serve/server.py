"""A real `petkit serve` process on loopback, for the crash and browser tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


class Server:
    def __init__(self, model: Path, gallery: Path, *extra: str, log: Path):
        self.log = log
        start = log.stat().st_size if log.exists() else 0  # a restart appends to the same log
        handle = log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "petkit", "serve", "--model", str(model), "--gallery", str(gallery), "--port", "0", "--device", "cpu", *extra],
            stdout=handle, stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "400"})
        handle.close()
        deadline = time.time() + 120
        self.url = None
        while time.time() < deadline and self.url is None:
            if self.process.poll() is not None:
                raise RuntimeError(f"petkit serve exited {self.process.returncode}: {log.read_text()[-2000:]}")
            match = re.findall(r"listening on (http://127\.0\.0\.1:\d+)/", log.read_bytes()[start:].decode(errors="replace"))
            if match:
                self.url = match[-1]
            time.sleep(0.1)
        if self.url is None:
            self.kill()
            raise RuntimeError(f"petkit serve did not start: {log.read_text()[-2000:]}")
        for _ in range(100):  # bound before uvicorn accepts: wait for the first answer
            try:
                urllib.request.urlopen(self.url + "/v1/health", timeout=5).read()
                return
            except OSError:
                time.sleep(0.1)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        return self.process.wait(60)
