"""Debian's nginx (the binary the compose stack's webhook-proxy image is built from), run
against docker/webhook-proxy.conf with its upstream pointed at a local recording server."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.helpers.paths import REPO
from tests.helpers.ports import free_port

CONF = REPO / "docker" / "webhook-proxy.conf"
UPSTREAM = "airflow-apiserver:8080"


def ensure_nginx() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists()
                                      else None)
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise RuntimeError("Debian's nginx is required: apt-get install nginx-light")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # The package starts a system nginx on port 80 unless policy-rc.d says no.
    policy = Path("/usr/sbin/policy-rc.d")
    ours = not policy.exists()
    if ours:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "nginx-light"], env=env, check=True,
                       capture_output=True)
    finally:
        if ours:
            policy.unlink()
    return shutil.which("nginx") or "/usr/sbin/nginx"


def local_conf(root: Path, listen: int, upstream: int) -> Path:
    """docker/webhook-proxy.conf with only its addresses and file paths moved under `root`."""
    text = CONF.read_text()
    replacements = [("listen 8080;", f"listen 127.0.0.1:{listen};"),
                    (UPSTREAM, f"127.0.0.1:{upstream}"),
                    ("pid /tmp/nginx.pid;", f"pid {root}/nginx.pid;"),
                    ("error_log /dev/stderr warn;", f"error_log {root}/error.log warn;"),
                    ("access_log /dev/stdout timed;", f"access_log {root}/access.log timed;")]
    for old, new in replacements:
        if old not in text:
            raise AssertionError(f"{CONF} no longer holds {old!r}; update tests/helpers/nginx.py")
        text = text.replace(old, new)
    text = re.sub(r"(\w+_temp_path) /tmp/", rf"\1 {root}/", text)
    path = root / "nginx.conf"
    path.write_text(text)
    return path


@contextmanager
def webhook_proxy(root: Path, upstream: int):
    """The proxy's URL, nginx running in the foreground until the block ends."""
    port = free_port()
    with running_nginx(local_conf(root, port, upstream), root, port):
        yield f"http://127.0.0.1:{port}"


@contextmanager
def running_nginx(conf: Path, root: Path, port: int):
    """Debian's nginx on `conf` (checked with -t first) until the block ends; yields the
    process, so a test can reload it (SIGHUP) as the release zone does."""
    binary = ensure_nginx()
    checked = subprocess.run([binary, "-t", "-c", str(conf), "-p", str(root)],
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    process = subprocess.Popen([binary, "-c", str(conf), "-p", str(root), "-g", "daemon off;"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url, timeout=2)
                break
            except httpx.TransportError:
                assert process.poll() is None, (root / "error.log").read_text()
                assert time.monotonic() < deadline, "nginx did not start"
                time.sleep(0.1)
        yield process
    finally:
        process.terminate()
        process.wait(timeout=30)
