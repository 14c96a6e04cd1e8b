"""The serving proxy's nginx configuration, rendered from a `Routing` of checked numbers.

Users call one address; behind it a *stable* and, during a rollout, a *candidate* serving
container. nginx picks the pool per request by hashing its own `$request_id` (split_clients),
so a weight is a share of requests, not of clients; the same id goes to the server as
`X-Request-Id` (a client's own header is replaced, so nobody can make two answers join in the
shadow comparison) and back to the client. In shadow, every request is also mirrored to the
candidate and the candidate's answer is discarded by nginx.

Nothing here comes from a request, XCom or a file another zone writes: ports and percentages
are integers checked in `Routing`, paths are the release zone's own. A weight change is a new
file and a reload (SIGHUP): nginx starts new workers with it and lets the old ones finish the
requests they hold, so nothing in flight is dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


class RoutingError(ValueError):
    """A routing that cannot be served; the message says which value and why."""


@dataclass(frozen=True)
class Routing:
    """Where requests go: `candidate_percent` of them to the candidate, the rest to stable;
    `mirror` copies every request to the candidate as well (shadow)."""

    stable_port: int
    candidate_port: int | None = None
    candidate_percent: int = 0
    mirror: bool = False

    def __post_init__(self) -> None:
        for name in ("stable_port", "candidate_port"):
            port = getattr(self, name)
            if port is not None and (type(port) is not int or not 1 <= port <= 65535):
                raise RoutingError(f"{name} must be a TCP port (1-65535), got {port!r}")
        if type(self.candidate_percent) is not int or not 0 <= self.candidate_percent <= 100:
            raise RoutingError("candidate_percent must be an integer from 0 to 100, got "
                               f"{self.candidate_percent!r}")
        if self.candidate_port is None and (self.candidate_percent or self.mirror):
            raise RoutingError("a candidate weight or a mirror needs a candidate_port")
        if self.candidate_port == self.stable_port:
            raise RoutingError(f"stable and candidate share port {self.stable_port}")

    @classmethod
    def stable_only(cls, port: int) -> Routing:
        return cls(stable_port=port)

    def describe(self) -> str:
        if self.candidate_port is None:
            return "stable 100 %"
        shadow = ", mirrored to candidate" if self.mirror else ""
        return (f"candidate {self.candidate_percent} %, stable "
                f"{100 - self.candidate_percent} %{shadow}")


@dataclass(frozen=True)
class ProxyLimits:
    """What one client can make the proxy hold; the body cap matches the serving server's."""

    max_body_bytes: int = 8 * 1024 * 1024
    connections_per_client: int = 256
    read_timeout_seconds: int = 30
    mirror_timeout_seconds: int = 5


def render(routing: Routing, *, listen_host: str, listen_port: int, run_dir: Path,
           log_dir: Path | None = None, limits: ProxyLimits | None = None,
           generation: int = 0, upstream_hosts: Mapping[int, str] | None = None) -> str:
    """The whole nginx.conf; `run_dir` holds its pid and temp files, `log_dir` its access and
    error logs (none: stdout and stderr, the container's bounded log). Every answer carries
    `X-Rice-Routing: <generation>`, so whoever reloads can see when the new workers answer.
    `upstream_hosts` gives the IPv4 address of the server on each port (default 127.0.0.1:
    the servers share the proxy's network, the host's)."""
    if type(generation) is not int or generation < 0:
        raise RoutingError(f"generation must be a non-negative integer, got {generation!r}")
    limits = limits or ProxyLimits()
    if not 1 <= listen_port <= 65535:
        raise RoutingError(f"listen_port must be a TCP port, got {listen_port!r}")
    if listen_port in (routing.stable_port, routing.candidate_port):
        raise RoutingError(f"the proxy and a server would share port {listen_port}")
    if listen_host not in ("127.0.0.1", "0.0.0.0", "::1"):
        raise RoutingError(f"listen_host must be a loopback or wildcard address, got "
                           f"{listen_host!r}")
    run = str(run_dir)
    for path in (run_dir, log_dir):
        if path is not None and any(ch in str(path) for ch in " ;{}'\"\\$#\n"):
            raise RoutingError(f"{str(path)!r} holds a character nginx would read as syntax")
    access_log, error_log = ((f"{log_dir}/access.log", f"{log_dir}/error.log")
                             if log_dir is not None else ("/dev/stdout", "stderr"))
    hosts = {port: _ipv4(host) for port, host in (upstream_hosts or {}).items()}

    def server(port: int) -> str:
        return f"{hosts.get(port, '127.0.0.1')}:{port}"

    upstreams = [_upstream("stable", server(routing.stable_port))]
    if routing.candidate_port is not None:
        # A candidate that refuses connections (crashed, stopped) hands its requests to
        # stable: nginx retries a request it could not send, so clients see no error.
        upstreams.append(_upstream("candidate", server(routing.candidate_port),
                                   backup=server(routing.stable_port)))
    if routing.mirror:  # the mirror never falls back: stable must not answer it twice
        upstreams.append(_upstream("shadow", server(routing.candidate_port)))
    # nginx finishes a mirrored request only when the candidate has answered its copy too,
    # and holds the client's next request on that connection until then: in shadow, each
    # prediction is its own connection, so a slow candidate never delays a client, and a
    # reload never closes a kept-alive connection with a request already waiting on it.
    mirror = ("      mirror /_shadow;\n      mirror_request_body on;\n"
              "      keepalive_timeout 0;\n" if routing.mirror else "")
    return f"""# Rendered by rice_mlops.release.rollout.proxy_config: {routing.describe()}.
# Do not edit; the release zone rewrites it and reloads nginx.
worker_processes 1;
worker_rlimit_nofile 8192;
pid {run}/nginx.pid;
error_log {error_log} warn;
events {{ worker_connections 1024; }}

http {{
  log_format rollout '$request_id $remote_addr [$time_local] "$request" $status '
                     'pool=$serving_pool rt=$request_time urt=$upstream_response_time';
  access_log {access_log} rollout;
  client_body_temp_path {run}/body;
  proxy_temp_path {run}/proxy;
  fastcgi_temp_path {run}/fastcgi;
  uwsgi_temp_path {run}/uwsgi;
  scgi_temp_path {run}/scgi;
  server_tokens off;
  client_header_timeout 5s;
  client_body_timeout 10s;
  keepalive_timeout 5s;
  send_timeout 10s;
  client_max_body_size {limits.max_body_bytes};
  # The whole body is read before it is forwarded (a mirror needs it, and a slow client then
  # holds the proxy, not one of the server's request slots): up to 256 KiB in memory, the rest
  # in a temp file under run_dir (a size-capped tmpfs in the container). With at most
  # worker_connections at once, memory stays under 1,024 x 256 KiB.
  client_body_buffer_size 256k;
  proxy_request_buffering on;
  limit_conn_zone $binary_remote_addr zone=per_client:1m;
  limit_conn_status 429;

{"".join(upstreams)}
  split_clients "${{request_id}}" $serving_pool {{
{_split(routing)}  }}

  server {{
    listen {listen_host}:{listen_port};
    limit_conn per_client {limits.connections_per_client};

    # Only predictions are mirrored in shadow: a probe or a scrape says nothing of the model.
    location = /predict {{
{mirror}{_forward(limits, generation)}    }}
    location = /invocations {{
{mirror}{_forward(limits, generation)}    }}
    location / {{
{_forward(limits, generation)}    }}
{_shadow_location(routing, limits)}  }}
}}
"""


def _forward(limits: ProxyLimits, generation: int) -> str:
    return f"""      proxy_pass http://$serving_pool;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Request-Id $request_id;
      proxy_set_header X-Rice-Shadow "";  # only the mirror marks a request as shadow
      proxy_connect_timeout 2s;
      proxy_read_timeout {limits.read_timeout_seconds}s;
      proxy_send_timeout {limits.read_timeout_seconds}s;
      add_header X-Request-Id $request_id always;
      add_header X-Rice-Routing {generation} always;
"""


def _upstream(name: str, server: str, backup: str | None = None) -> str:
    spare = f"    server {backup} backup;\n" if backup else ""
    return (f"  upstream {name} {{\n    server {server} max_fails=0;\n{spare}"
            f"    keepalive 16;\n  }}\n")


def _ipv4(host: str) -> str:
    """An IPv4 address, written back in its canonical form (so nothing else reaches nginx)."""
    import ipaddress

    try:
        return str(ipaddress.IPv4Address(host))
    except (ipaddress.AddressValueError, ValueError):
        raise RoutingError(f"an upstream host must be an IPv4 address, got {host!r}") from None


def _split(routing: Routing) -> str:
    percent = routing.candidate_percent if routing.candidate_port is not None else 0
    if percent == 100:
        return "    * candidate;\n"
    if percent == 0:
        return "    * stable;\n"
    return f"    {percent}% candidate;\n    * stable;\n"


def _shadow_location(routing: Routing, limits: ProxyLimits) -> str:
    if not routing.mirror:
        return ""
    # The candidate's answer to a mirrored request is read and thrown away by nginx; a slow or
    # dead candidate delays nothing the client waits for beyond these short timeouts.
    return f"""
    location = /_shadow {{
      internal;
      proxy_pass http://shadow$request_uri;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Request-Id $request_id;
      proxy_set_header X-Rice-Shadow 1;
      proxy_connect_timeout 1s;
      proxy_read_timeout {limits.mirror_timeout_seconds}s;
      proxy_send_timeout {limits.mirror_timeout_seconds}s;
    }}
"""
