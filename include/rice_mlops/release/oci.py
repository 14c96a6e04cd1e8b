"""OCI artifacts that refer to an image, over the registry's plain v2 HTTP API.

The local `docker-registry` has no referrers API, so attachments use the tag-schema fallback
of the OCI distribution spec: the artifact manifest (with `subject` naming the image's digest)
is pushed under the tag `sha256-<hex>.<suffix>` (`.sig`, `.att`, `.sbom`, as cosign does).
Anyone with push rights can write such a tag, so nothing fetched here is trusted until the
caller verifies it (`rice_mlops.release.attestation.verify_image`); this module only checks that
blobs and manifests match the digests that name them.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx

from rice_mlops.core.run_policy import DIGEST

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
_ACCEPT = ", ".join([OCI_MANIFEST, DOCKER_MANIFEST, "application/vnd.oci.image.index.v1+json",
                     "application/vnd.docker.distribution.manifest.list.v2+json"])
MAX_BLOB_BYTES = 16 << 20  # attachments are small JSON; refuse to download anything large
SUFFIXES = {"signature": "sig", "provenance": "att", "sbom": "sbom"}


class RegistryError(RuntimeError):
    """The registry refused a request or answered something that does not match its digest."""


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def attachment_tag(image_digest: str, kind: str) -> str:
    if not DIGEST.fullmatch(image_digest):
        raise ValueError(f"{image_digest!r} is not a sha256 digest")
    return f"sha256-{image_digest.removeprefix('sha256:')}.{SUFFIXES[kind]}"


def split_reference(reference: str) -> tuple[str, str, str]:
    """`host[:port]/name@sha256:...` → (host, name, digest); a tag is not accepted."""
    match = re.fullmatch(r"([^/]+)/([a-z0-9._/-]+)@(sha256:[0-9a-f]{64})", reference)
    if not match:
        raise ValueError(f"{reference!r} is not REGISTRY/NAME@sha256:<64 hex> (verify a "
                         "digest, never a tag: a tag can be moved)")
    return match.group(1), match.group(2), match.group(3)


def base_url(host: str) -> str:
    """http for loopback registries (and an explicit http://), https otherwise."""
    if host.startswith(("http://", "https://")):
        return host.rstrip("/")
    bare = host.split(":")[0]
    return f"http://{host}" if bare in ("127.0.0.1", "localhost", "::1") else f"https://{host}"


_DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_TOKEN_BYTES = 64 << 10


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port or _DEFAULT_PORTS.get(url.scheme)


@dataclass
class Registry:
    """A v2 registry client with basic or bearer-token auth (credentials stay in memory).

    Credentials go to the registry's own origin (scheme, host and port of `host`) and, for a
    bearer challenge, to a token realm served over https or from that same origin; a realm
    anywhere else (plain http on another host, another port) is refused before anything is
    sent. A redirect to another origin (blob storage) carries no Authorization header.
    """

    host: str
    username: str = ""
    password: str = field(default="", repr=False)
    timeout: float = 30.0
    transport: httpx.BaseTransport | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._http = httpx.Client(base_url=base_url(self.host), timeout=self.timeout,
                                  transport=self.transport)
        self._basic = httpx.BasicAuth(self.username, self.password) if self.username else None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _own(self, url: str) -> httpx.URL:
        """`url` resolved against the registry; refused when it leaves the registry's origin
        (an upload Location, say), since every request carries the credentials."""
        target = self._http.base_url.join(url)
        if _origin(target) != _origin(self._http.base_url):
            raise RegistryError(f"registry {self.host} sent us to {target.scheme}://"
                                f"{target.netloc.decode()}, not its own origin: refusing to "
                                "send its credentials there")
        return target

    def _realm(self, realm: str) -> httpx.URL:
        """The token realm, if credentials may go there: https, or the registry's origin."""
        target = self._http.base_url.join(realm) if realm else None
        if target is None or not target.host:
            raise RegistryError(f"registry {self.host} names no usable token realm ({realm!r})")
        if target.scheme == "https" or _origin(target) == _origin(self._http.base_url):
            return target
        raise RegistryError(f"registry {self.host} names the token realm {realm!r}: neither "
                            "https nor the registry's own host, so its credentials are not "
                            "sent there (a realm must be https, or the registry itself)")

    def _token(self, challenge: str) -> str:
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = self._realm(params.pop("realm", ""))
        headers = {"Accept-Encoding": "identity"}
        with self._http.stream("GET", realm, params=params, headers=headers,
                               auth=self._basic or httpx.USE_CLIENT_DEFAULT) as response:
            body = _bounded_body(response, MAX_TOKEN_BYTES, f"the token realm {realm}'s answer")
        if response.status_code != 200:
            raise RegistryError(f"the token realm {realm} answered {response.status_code}")
        try:
            token = json.loads(body)
            value = token.get("token") or token.get("access_token")
        except (ValueError, AttributeError):
            value = None
        if not isinstance(value, str) or not value:
            raise RegistryError(f"the token realm {realm} answered no token")
        return value

    def _request(self, method: str, url: str, *, stream: bool = False,
                 follow_redirects: bool = False, headers: dict | None = None,
                 **kwargs) -> httpx.Response:
        target = self._own(url)
        request = self._http.build_request(method, target, headers=headers, **kwargs)
        response = self._http.send(request, stream=stream, follow_redirects=follow_redirects,
                                   auth=self._basic or httpx.USE_CLIENT_DEFAULT)
        challenge = response.headers.get("www-authenticate", "")
        if response.status_code == 401 and challenge.lower().startswith("bearer "):
            response.close()
            bearer = {**(headers or {}), "Authorization": f"Bearer {self._token(challenge)}"}
            request = self._http.build_request(method, target, headers=bearer, **kwargs)
            response = self._http.send(request, stream=stream,
                                       follow_redirects=follow_redirects)
        if response.status_code == 401:
            response.close()
            raise RegistryError(f"registry {self.host} refused the credentials "
                                f"({method} {url.split('?')[0]})")
        return response

    def manifest(self, name: str, reference: str) -> tuple[bytes, str, str]:
        """(raw manifest, media type, digest); checked against `reference` when it is one."""
        response = self._request("GET", f"/v2/{name}/manifests/{reference}", stream=True,
                                 headers={"Accept": _ACCEPT, "Accept-Encoding": "identity"})
        try:
            if response.status_code == 404:
                raise RegistryError(f"{name}:{reference} is not in the registry")
            if response.status_code != 200:
                raise RegistryError(f"GET manifest {name}:{reference}: {response.status_code}")
            raw = _bounded_body(response, MAX_BLOB_BYTES, f"manifest {name}:{reference}")
        finally:
            response.close()
        digest = digest_of(raw)
        if DIGEST.fullmatch(reference) and digest != reference:
            raise RegistryError(f"the registry answered {digest} for {reference}")
        return raw, response.headers.get("content-type", "").split(";")[0], digest

    @contextmanager
    def open_blob(self, name: str, digest: str, limit: int) -> Iterator[BlobStream]:
        """The blob as a stream of chunks, hashed as they arrive: at most `limit` bytes are
        read, and `BlobStream.check()` (after the last chunk) compares the digest."""
        if not DIGEST.fullmatch(digest):
            raise RegistryError(f"{digest!r} is not a sha256 digest")
        # identity: a content-encoded answer would be decompressed before any bound applies
        response = self._request("GET", f"/v2/{name}/blobs/{digest}", stream=True,
                              follow_redirects=True, headers={"Accept-Encoding": "identity"})
        try:
            if response.status_code != 200:
                raise RegistryError(f"GET blob {name}@{digest}: {response.status_code}")
            _identity(response, f"blob {digest}")
            yield BlobStream(response.iter_raw(1 << 20), digest, limit)
        finally:
            response.close()

    def blob(self, name: str, digest: str, limit: int = MAX_BLOB_BYTES) -> bytes:
        with self.open_blob(name, digest, limit) as stream:
            data = stream.read_all()
        return data

    def push_blob(self, name: str, data: bytes) -> str:
        digest = digest_of(data)
        if self._request("HEAD", f"/v2/{name}/blobs/{digest}").status_code == 200:
            return digest
        started = self._request("POST", f"/v2/{name}/blobs/uploads/")
        if started.status_code != 202:
            raise RegistryError(f"blob upload to {name} refused: {started.status_code}")
        location = started.headers["location"]
        joiner = "&" if "?" in location else "?"
        done = self._request("PUT", f"{location}{joiner}digest={digest}", content=data,
                             headers={"Content-Type": "application/octet-stream"})
        if done.status_code != 201:
            raise RegistryError(f"blob upload to {name} failed: {done.status_code} "
                                f"{done.text[:200]}")
        return digest

    def push_manifest(self, name: str, tag: str, manifest: dict) -> str:
        raw = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
        response = self._request("PUT", f"/v2/{name}/manifests/{tag}", content=raw,
                                 headers={"Content-Type": manifest["mediaType"]})
        if response.status_code != 201:
            raise RegistryError(f"PUT manifest {name}:{tag}: {response.status_code} "
                                f"{response.text[:300]}")
        return digest_of(raw)

    def retag(self, name: str, digest: str, tag: str) -> None:
        """Point `tag` at the manifest `digest` (its bytes unchanged, so its digest too)."""
        raw, media_type, _ = self.manifest(name, digest)
        response = self._request("PUT", f"/v2/{name}/manifests/{tag}", content=raw,
                                 headers={"Content-Type": media_type})
        if response.status_code != 201:
            raise RegistryError(f"PUT manifest {name}:{tag}: {response.status_code}")

    def attach(self, name: str, image_digest: str, kind: str, artifact_type: str,
               data: bytes) -> dict:
        """Push `data` as an artifact whose subject is the image; returns its descriptor."""
        raw, media_type, _ = self.manifest(name, image_digest)
        config = self.push_blob(name, b"{}")
        layer = self.push_blob(name, data)
        manifest = {
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
            "config": {"mediaType": EMPTY_CONFIG, "digest": config, "size": 2},
            "layers": [{"mediaType": artifact_type, "digest": layer, "size": len(data)}],
            "subject": {"mediaType": media_type, "digest": image_digest, "size": len(raw)},
            "annotations": {"org.opencontainers.image.title": f"{kind}"}}
        tag = attachment_tag(image_digest, kind)
        return {"tag": tag, "manifest": self.push_manifest(name, tag, manifest),
                "blob": layer}

    def attachment(self, name: str, image_digest: str, kind: str) -> tuple[bytes, dict]:
        """(blob, manifest) of the attachment tag for `image_digest`; its subject must name
        that digest (a copy of another image's attachment is refused here)."""
        raw, _, _ = self.manifest(name, attachment_tag(image_digest, kind))
        manifest = json.loads(raw)
        subject = (manifest.get("subject") or {}).get("digest")
        if subject != image_digest:
            raise RegistryError(f"the {kind} attached to {image_digest} names subject "
                                f"{subject}")
        layers = manifest.get("layers") or []
        if len(layers) != 1:
            raise RegistryError(f"the {kind} attachment has {len(layers)} layers, not 1")
        return self.blob(name, layers[0]["digest"]), manifest


def _identity(response: httpx.Response, what: str) -> None:
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise RegistryError(f"{what} came {encoding}-encoded: refused (asked for identity; a "
                            "decoder here would be unbounded)")


def _bounded_body(response: httpx.Response, limit: int, what: str) -> bytes:
    """The raw body of a streamed response, at most `limit` bytes, never decoded."""
    _identity(response, what)
    body = bytearray()
    for chunk in response.iter_raw(1 << 20):
        body += chunk
        if len(body) > limit:
            raise RegistryError(f"{what} is larger than {limit} bytes")
    return bytes(body)


class BlobStream:
    """Chunks of one blob: counted against a limit, hashed, checked once exhausted."""

    def __init__(self, chunks: Iterator[bytes], digest: str, limit: int):
        self._chunks, self.digest, self.limit = chunks, digest, limit
        self._hash, self.size, self.done = hashlib.sha256(), 0, False

    def read(self) -> bytes:
        """The next chunk; b"" at the end, after the digest was checked."""
        if self.done:
            return b""
        for chunk in self._chunks:
            if not chunk:
                continue
            self.size += len(chunk)
            if self.size > self.limit:
                raise RegistryError(f"blob {self.digest} is larger than {self.limit} bytes")
            self._hash.update(chunk)
            return chunk
        self.done = True
        if "sha256:" + self._hash.hexdigest() != self.digest:
            raise RegistryError(f"blob {self.digest} does not match its digest")
        return b""

    def read_all(self) -> bytes:
        data = bytearray()
        while chunk := self.read():
            data += chunk
        return bytes(data)
