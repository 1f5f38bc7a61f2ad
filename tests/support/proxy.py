"""Caddy in front of a receiver on loopback, as in production but with its own internal CA.

Caddy is Debian's package (`make test` installs it: scripts/test-services.sh). Everything it
keeps (its CA, certificates, autosaved config) goes under a temporary folder through
XDG_DATA_HOME/XDG_CONFIG_HOME; its
admin endpoint is off, it never installs its root into the system's trust store, and it
listens on free loopback ports only.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from localcog.loopback import free_port
from localcog.polling import PollTimeoutError, poll

INSTALL_HINT = "caddy is not installed: run `make test-services` (or `apt-get install -y caddy`)"


def caddy_binary() -> str:
    """The caddy executable; a missing one fails the test with how to install it, never a skip."""
    found = shutil.which("caddy")
    if found is None:
        raise RuntimeError(INSTALL_HINT)
    return found


@dataclass
class Caddy:
    url: str  # https://127.0.0.1:<port>
    root_cert: Path  # Caddy's local CA: what a client must trust to verify `url`
    log: Path
    process: subprocess.Popen[bytes]

    def tls(self) -> ssl.SSLContext:
        """A client context that trusts Caddy's CA only."""
        return ssl.create_default_context(cafile=self.root_cert)


def caddyfile(https_port: int, http_port: int, upstream: str) -> str:
    """What deploy/Caddyfile says (reverse_proxy to the receiver), on loopback with `tls
    internal` instead of a public name and Let's Encrypt."""
    return f"""{{
\tadmin off
\tskip_install_trust
\tauto_https disable_redirects
\thttp_port {http_port}
\thttps_port {https_port}
}}
https://127.0.0.1:{https_port} {{
\tbind 127.0.0.1
\ttls internal
\treverse_proxy {upstream}
}}
"""


def _wait_ready(caddy: Caddy, timeout: float = 30) -> None:
    """Ready once its CA exists and a TLS handshake verified against it gets an answer."""
    try:
        poll(lambda: _answering(caddy), timeout, 0.05, "caddy ready")
    except PollTimeoutError:
        raise RuntimeError(
            f"caddy not ready in {timeout} s: {caddy.log.read_text()[-2000:]}"
        ) from None


def _answering(caddy: Caddy) -> bool | None:
    """True once a verified TLS handshake gets an answer; None while not yet (for `poll`)."""
    if caddy.process.poll() is not None:
        raise RuntimeError(f"caddy exited: {caddy.log.read_text()[-2000:]}")
    if not caddy.root_cert.exists():
        return None
    try:
        httpx.get(f"{caddy.url}/healthz", verify=caddy.tls(), timeout=2)
    except httpx.TransportError:
        return None
    return True


@contextmanager
def caddy_proxy(upstream: str, workdir: Path) -> Iterator[Caddy]:
    """Caddy serving https://127.0.0.1:<free port> and proxying to `upstream` (host:port)."""
    binary = caddy_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = workdir / "Caddyfile"
    config.write_text(caddyfile(port, free_port(), upstream))
    log = workdir / "caddy.log"
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(workdir),
        "XDG_DATA_HOME": str(workdir / "data"),
        "XDG_CONFIG_HOME": str(workdir / "config"),
    }
    root = workdir / "data" / "caddy" / "pki" / "authorities" / "local" / "root.crt"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [binary, "run", "--config", str(config), "--adapter", "caddyfile"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    caddy = Caddy(f"https://127.0.0.1:{port}", root, log, process)
    try:
        _wait_ready(caddy)
        yield caddy
    finally:
        process.terminate()
        process.wait(timeout=30)
