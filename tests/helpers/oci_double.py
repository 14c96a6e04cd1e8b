"""An in-memory OCI registry (the v2 API the pipeline's `rice_mlops.release.oci.Registry` speaks),
served through an httpx MockTransport, and a builder for images made of hand-written layers.

The double records every request (URL and Authorization header), so tests can assert where
credentials went. With `realm`, registry requests need a bearer token that the realm hands out
for the right Basic credentials, as Docker Hub and most hosted registries do.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import re
import tarfile
import uuid
from dataclasses import dataclass, field

import httpx

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
TOKEN = "token-from-the-realm"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class RegistryDouble:
    host: str = "registry.test"
    scheme: str = "https"
    username: str = "rice"
    password: str = "s3cret"
    realm: str | None = None  # a bearer challenge names this token realm
    blobs: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[tuple[str, str], tuple[bytes, str]] = field(default_factory=dict)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    uploads: dict[str, bytes] = field(default_factory=dict)

    @property
    def origin(self) -> str:
        return f"{self.scheme}://{self.host}"

    def client(self, **kwargs):
        from rice_mlops.release.oci import Registry

        return Registry(f"{self.origin}", self.username, self.password,
                        transport=httpx.MockTransport(self.handle), **kwargs)

    def authorizations_sent_to(self, origin: str) -> list[str]:
        return [auth for url, _, auth in self.requests if url.startswith(origin) and auth]

    def _basic_ok(self, request: httpx.Request) -> bool:
        expected = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return request.headers.get("authorization") == f"Basic {expected}"

    def handle(self, request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        self.requests.append((url, request.method, request.headers.get("authorization")))
        if self.realm and url.split("?")[0] == self.realm:
            if not self._basic_ok(request):
                return httpx.Response(401)
            return _streamed(200, json.dumps({"token": TOKEN}).encode(), {})
        if not url.startswith(self.origin + "/"):
            return httpx.Response(404, text="not this registry")
        if self.realm:
            if request.headers.get("authorization") != f"Bearer {TOKEN}":
                return httpx.Response(401, headers={"www-authenticate": (
                    f'Bearer realm="{self.realm}",service="registry",scope="repository:x:pull"')})
        elif not self._basic_ok(request):
            return httpx.Response(401, headers={"www-authenticate": 'Basic realm="registry"'})
        return self._route(request, request.url.path)

    def _route(self, request: httpx.Request, path: str) -> httpx.Response:
        if match := re.fullmatch(r"/v2/(.+)/blobs/uploads/(.*)", path):
            name, upload = match.groups()
            if request.method == "POST":
                upload = uuid.uuid4().hex
                self.uploads[upload] = b""
                return httpx.Response(202, headers={
                    "location": f"/v2/{name}/blobs/uploads/{upload}"})
            data = request.content
            digest = request.url.params["digest"]
            if digest_of(data) != digest:
                return httpx.Response(400, text="digest mismatch")
            self.blobs[digest] = data
            return httpx.Response(201)
        if match := re.fullmatch(r"/v2/(.+)/blobs/(sha256:[0-9a-f]{64})", path):
            data = self.blobs.get(match.group(2))
            if data is None:
                return httpx.Response(404)
            return _streamed(200, b"" if request.method == "HEAD" else data, {})
        if match := re.fullmatch(r"/v2/(.+)/manifests/([^/]+)", path):
            name, reference = match.groups()
            if request.method == "PUT":
                raw = request.content
                media = request.headers.get("content-type", OCI_MANIFEST)
                self.manifests[(name, reference)] = (raw, media)
                self.manifests[(name, digest_of(raw))] = (raw, media)
                return httpx.Response(201)
            found = self.manifests.get((name, reference))
            if found is None:
                return httpx.Response(404)
            return _streamed(200, found[0], {"content-type": found[1]})
        return httpx.Response(404)

    # ---- building images without docker ----
    def put_blob(self, data: bytes) -> str:
        self.blobs[digest_of(data)] = data
        return digest_of(data)

    def put_image(self, name: str, layers: list[bytes], env: list[str] | None = None,
                  tag: str | None = None, media_types: list[str] | None = None,
                  sizes: list[int] | None = None) -> str:
        config = json.dumps({"architecture": "amd64", "os": "linux",
                             "config": {"Env": env if env is not None else DEFAULT_ENV},
                             "rootfs": {"type": "layers", "diff_ids": []}}).encode()
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": OCI_CONFIG, "digest": self.put_blob(config),
                               "size": len(config)},
                    "layers": [{"mediaType": (media_types or [])[i] if media_types else
                                (LAYER_GZIP if data[:2] == b"\x1f\x8b" else LAYER_TAR),
                                "digest": self.put_blob(data),
                                "size": sizes[i] if sizes else len(data)}
                               for i, data in enumerate(layers)]}
        raw = json.dumps(manifest, sort_keys=True).encode()
        digest = digest_of(raw)
        self.manifests[(name, digest)] = (raw, OCI_MANIFEST)
        if tag:
            self.manifests[(name, tag)] = (raw, OCI_MANIFEST)
        return digest


def _streamed(status: int, data: bytes, headers: dict) -> httpx.Response:
    """A response read as a network one is (bytes content would arrive pre-read)."""
    chunks = [data[i:i + (1 << 20)] for i in range(0, len(data), 1 << 20)]
    return httpx.Response(status, headers={**headers, "content-length": str(len(data))},
                          content=iter(chunks))


DEFAULT_ENV = ["PATH=/usr/local/bin:/usr/bin:/bin", "RICE_MODEL_DIR=/opt/model",
               "RICE_MODEL_PUBLIC_KEY=/opt/rice/evidence/model-signing.pub"]


def layer(*entries, compress: bool = True, level: int = 1) -> bytes:
    """A layer tar: entries are ("file", path, bytes), ("dir", path), ("symlink", path,
    target), ("hardlink", path, target), ("whiteout", path) or ("opaque", dir)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for kind, path, *rest in entries:
            if kind == "whiteout":
                head, _, tail = path.rpartition("/")
                kind, path, rest = "file", f"{head}/.wh.{tail}" if head else f".wh.{tail}", [b""]
            elif kind == "opaque":
                kind, path, rest = "file", f"{path}/.wh..wh..opq", [b""]
            info = tarfile.TarInfo(path)
            info.mtime = 0
            if kind == "file":
                info.size = len(rest[0])
                tar.addfile(info, io.BytesIO(rest[0]))
                continue
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, rest[0]
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, rest[0]
            tar.addfile(info)
    data = out.getvalue()
    return gzip.compress(data, compresslevel=level, mtime=0) if compress else data


def model_layer(files: dict[str, bytes], public_pem: bytes | None = None) -> bytes:
    """/opt/model with `files` and, when given, the server's key in /opt/rice/evidence."""
    entries = [("dir", "opt"), ("dir", "opt/model")]
    entries += [("file", f"opt/model/{n}", data) for n, data in sorted(files.items())]
    if public_pem is not None:
        entries += [("dir", "opt/rice"), ("dir", "opt/rice/evidence"),
                    ("file", "opt/rice/evidence/model-signing.pub", public_pem),
                    ("file", "opt/rice/evidence/sbom.cdx.json", b"{}")]
    return layer(*entries)
