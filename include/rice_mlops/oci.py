"""OCI artifacts that refer to an image, over the registry's plain v2 HTTP API.

The local `docker-registry` has no referrers API, so attachments use the tag-schema fallback
of the OCI distribution spec: the artifact manifest (with `subject` naming the image's digest)
is pushed under the tag `sha256-<hex>.<suffix>` (`.sig`, `.att`, `.sbom`, as cosign does).
Anyone with push rights can write such a tag, so nothing fetched here is trusted until the
caller verifies it (`rice_mlops.attestation.verify_image`); this module only checks that
blobs and manifests match the digests that name them.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

import httpx

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
_ACCEPT = ", ".join([OCI_MANIFEST, DOCKER_MANIFEST, "application/vnd.oci.image.index.v1+json",
                     "application/vnd.docker.distribution.manifest.list.v2+json"])
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
MAX_BLOB_BYTES = 16 << 20  # attachments are small JSON; refuse to download anything large
SUFFIXES = {"signature": "sig", "provenance": "att", "sbom": "sbom"}


class RegistryError(RuntimeError):
    """The registry refused a request or answered something that does not match its digest."""


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def attachment_tag(image_digest: str, kind: str) -> str:
    if not _DIGEST.fullmatch(image_digest):
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


@dataclass
class Registry:
    """A v2 registry client with basic or bearer-token auth (credentials stay in memory)."""

    host: str
    username: str = ""
    password: str = ""
    timeout: float = 30.0

    def __post_init__(self) -> None:
        auth = (self.username, self.password) if self.username else None
        self._http = httpx.Client(base_url=base_url(self.host), timeout=self.timeout, auth=auth)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _request(self, method: str, url: str, **kwargs) -> httpx.Response:
        response = self._http.request(method, url, **kwargs)
        challenge = response.headers.get("www-authenticate", "")
        if response.status_code == 401 and challenge.lower().startswith("bearer "):
            params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
            realm = params.pop("realm", "")
            token = self._http.get(realm, params=params).json()
            kwargs.setdefault("headers", {})["Authorization"] = \
                f"Bearer {token.get('token') or token.get('access_token')}"
            response = httpx.request(method, str(self._http.base_url.join(url)),
                                     timeout=self.timeout, **kwargs)
        if response.status_code == 401:
            raise RegistryError(f"registry {self.host} refused the credentials "
                                f"({method} {url.split('?')[0]})")
        return response

    def manifest(self, name: str, reference: str) -> tuple[bytes, str, str]:
        """(raw manifest, media type, digest); checked against `reference` when it is one."""
        response = self._request("GET", f"/v2/{name}/manifests/{reference}",
                                 headers={"Accept": _ACCEPT})
        if response.status_code == 404:
            raise RegistryError(f"{name}:{reference} is not in the registry")
        if response.status_code != 200:
            raise RegistryError(f"GET manifest {name}:{reference}: {response.status_code}")
        raw = response.content
        if len(raw) > MAX_BLOB_BYTES:
            raise RegistryError(f"manifest {name}:{reference} is too large")
        digest = digest_of(raw)
        if _DIGEST.fullmatch(reference) and digest != reference:
            raise RegistryError(f"the registry answered {digest} for {reference}")
        return raw, response.headers.get("content-type", "").split(";")[0], digest

    def blob(self, name: str, digest: str, limit: int = MAX_BLOB_BYTES) -> bytes:
        with self._http.stream("GET", f"/v2/{name}/blobs/{digest}",
                               follow_redirects=True) as response:
            if response.status_code != 200:
                raise RegistryError(f"GET blob {name}@{digest}: {response.status_code}")
            chunks, size = [], 0
            for chunk in response.iter_bytes():
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:
                    raise RegistryError(f"blob {digest} is larger than {limit} bytes")
            data = b"".join(chunks)
        if digest_of(data) != digest:
            raise RegistryError(f"blob {digest} does not match its digest")
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
