"""A second real registry (Debian's `docker-registry`) on loopback, for copies of a release:
no credentials of its own, deletes enabled, gone when the block ends."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.helpers.ports import free_port
from tests.helpers.recovery_waits import wait_http


@contextmanager
def mirror_registry(root: Path) -> Iterator[str]:
    """`host:port` of a fresh registry storing under `root`."""
    port = free_port()
    root.mkdir(parents=True, exist_ok=True)
    config = root / "registry.yml"
    config.write_text(f"version: 0.1\nstorage:\n  filesystem: {{rootdirectory: {root / 'data'}}}\n"
                      f"  delete: {{enabled: true}}\nhttp:\n  addr: 127.0.0.1:{port}\n")
    with open(root / "registry.log", "wb") as log:
        server = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log,
                                  stderr=subprocess.STDOUT)
    try:
        try:
            wait_http(f"http://127.0.0.1:{port}/v2/", timeout=30)
        except TimeoutError:
            raise RuntimeError("the mirror registry did not start: "
                               f"{(root / 'registry.log').read_text()[-2000:]}") from None
        yield f"127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)
