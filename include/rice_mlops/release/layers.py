"""What an image's layers leave at the few paths `image verify` checks, read with bounds.

Every layer is read, bottom to top, as a stream: the registry's chunks are hashed as they
arrive (the digest is checked once the blob is exhausted), gunzipped a bounded piece at a time
and walked with `tarfile` in stream mode, so no layer is ever held whole in memory. The whole
image has a budget of decompressed bytes, of compressed bytes and of tar members; past any of
them the read stops with a LayerError that names the bound.

Layers apply as a container runtime applies them: a file in a higher layer replaces the same
path below, `.wh.<name>` removes `<name>` from the layers below, `.wh..wh..opq` empties its
directory of everything below. What would let two readers disagree about the result is refused
at the checked paths and their parent directories: links (symbolic or hard), devices, sparse
files, a path twice in one layer, a whiteout and a file for the same path in one layer, and
bytes other than zeros after a tar's end (a header this reader stopped at, another may read).
"""

from __future__ import annotations

import json
import posixpath
import tarfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

from rice_mlops.release.oci import BlobStream, Registry, RegistryError

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
_GZIP, _ZSTD = b"\x1f\x8b", b"\x28\xb5\x2f\xfd"
_TAR_BUFFER = 1 << 20  # tarfile's read size in stream mode


class LayerError(RuntimeError):
    """A layer cannot be read within the bounds, or could be read two ways; says which."""


@dataclass(frozen=True)
class Bounds:
    """Budgets for one image. The serving image is about 400 MB in 10 000 files unpacked."""

    image_bytes: int = 4 << 30  # decompressed tar bytes over every layer
    compressed_bytes: int = 2 << 30  # blob bytes over every layer
    members: int = 200_000  # tar entries over every layer
    file_bytes: int = 256 << 20  # one checked file, held in memory
    held_bytes: int = 512 << 20  # every checked file together


DEFAULT_BOUNDS = Bounds()


@dataclass(frozen=True)
class Watch:
    """The checked paths (relative, no leading slash): directory prefixes and single files."""

    directories: tuple[str, ...]
    files: tuple[str, ...] = ()

    def covers(self, path: str) -> bool:
        return path in self.files or any(path.startswith(d + "/") for d in self.directories)

    def guards(self, path: str) -> bool:
        """A checked path itself or a directory above one: a link there moves what is read."""
        roots = (*self.directories, *self.files)
        return self.covers(path) or any(r == path or r.startswith(path + "/") for r in roots) \
            or path == "."


class _Budget:
    def __init__(self, bounds: Bounds):
        self.bounds = bounds
        self.image_bytes = self.compressed_bytes = self.members = self.held_bytes = 0

    def spend(self, what: str, amount: int) -> None:
        total = getattr(self, what) + amount
        setattr(self, what, total)
        if total > getattr(self.bounds, what):
            raise LayerError(f"the image exceeds the verifier's bound on {what.replace('_', ' ')}"
                             f" ({getattr(self.bounds, what)}): reading stopped (a decompression"
                             " bomb, or an image far larger than the serving image)")


class _Decompressed:
    """A file-like `read(size)` over a blob: gzip (one or more members) or a plain tar."""

    def __init__(self, blob: BlobStream, budget: _Budget):
        self._blob, self._budget = blob, budget
        self._pending = b""  # compressed bytes not yet given to zlib
        self._zlib = None
        self._gzip = None  # decided on the first bytes
        self.position = 0  # decompressed bytes handed out
        self._recent: list[bytes] = []  # the last chunks handed out (tarfile may hold them)

    def _raw(self) -> bytes:
        chunk = self._blob.read()
        self._budget.spend("compressed_bytes", len(chunk))
        return chunk

    def _next(self, size: int) -> bytes:
        if self._gzip is None:
            self._pending = self._raw()
            while len(self._pending) < 4 and (more := self._raw()):
                self._pending += more
            if self._pending.startswith(_ZSTD):
                raise LayerError("a zstd-compressed layer: this verifier reads gzip and plain "
                                 "tar layers only")
            self._gzip = self._pending.startswith(_GZIP)
        if not self._gzip:
            data, self._pending = (self._pending or self._raw()), b""
            return data
        while True:
            if self._zlib is None or self._zlib.eof:
                if self._zlib is not None:
                    self._pending = self._zlib.unused_data
                if not self._pending:
                    self._pending = self._raw()
                    if not self._pending:
                        if self._zlib is None:
                            raise LayerError("an empty gzip layer")
                        return b""  # every gzip member ended with the blob
                self._zlib = zlib.decompressobj(31)
            if not self._pending:
                self._pending = self._raw()
                if not self._pending:
                    raise LayerError("a gzip layer that ends mid-stream")
            try:
                data = self._zlib.decompress(self._pending, size)
            except zlib.error as exc:
                raise LayerError(f"a layer that is not valid gzip ({exc})") from None
            self._pending = self._zlib.unconsumed_tail
            if data:
                return data

    def read(self, size: int = -1) -> bytes:
        data = self._next(_TAR_BUFFER if size is None or size < 0 else max(size, 1))
        self._budget.spend("image_bytes", len(data))
        self.position += len(data)
        self._recent = [*self._recent[-3:], data]
        return data

    def rest_is_zeros(self, offset: int) -> bool:
        """Whether every byte from `offset` (where tarfile stopped) to the end of the layer is
        zero; False when `offset` is older than the chunks kept (fail closed)."""
        held = b"".join(self._recent)
        start = self.position - len(held)
        if offset < start or held[offset - start:].strip(b"\0"):
            return False
        while data := self.read(_TAR_BUFFER):
            if data.strip(b"\0"):
                return False
        return True


def _normal(name: str) -> str:
    path = posixpath.normpath(name or ".")
    path = path.lstrip("/") or "."
    if path == ".." or path.startswith("../"):
        raise LayerError(f"a layer entry {name!r} points outside the image's root")
    return path


def _kind(member: tarfile.TarInfo) -> str:
    return ("symbolic link" if member.issym() else "hard link" if member.islnk() else
            "sparse file" if member.issparse() else "device or fifo")


def _resolve(path: str, links: dict[str, str]) -> str:
    """`path` with every symbolic link among its parent directories followed, as a runtime
    does when it unpacks a later entry (clamped to the root, like a chroot)."""
    parts, index, hops = path.split("/"), 0, 0
    while index < len(parts) - 1:
        prefix = "/".join(parts[:index + 1])
        if prefix not in links:
            index += 1
            continue
        hops += 1
        if hops > 40:
            raise LayerError(f"/{path}: too many levels of symbolic links")
        target = links[prefix]
        base = "" if target.startswith("/") else posixpath.dirname(prefix)
        resolved = posixpath.normpath(posixpath.join("/", base, target)).lstrip("/")
        parts, index = [p for p in resolved.split("/") if p] + parts[index + 1:], 0
    return "/".join(parts) or "."


def _apply_layer(tar: tarfile.TarFile, watch: Watch, files: dict[str, bytes],
                 links: dict[str, str], budget: _Budget, label: str) -> None:
    removed: list[str] = []  # whited out in the layers below ("dir/" for an opaque dir)
    added: dict[str, bytes | None] = {}  # None: a directory
    for member in tar:
        budget.spend("members", 1)
        path = _normal(member.name)
        resolved = _resolve(path, links)
        if resolved != path and watch.guards(resolved):
            raise LayerError(f"{label}: /{path} is written through a symbolic link to "
                             f"/{resolved}, a path the verifier checks")
        directory, base = posixpath.split(path)
        if base.startswith(WHITEOUT):
            if base == OPAQUE:
                removed.append(f"{directory}/" if directory else "")
            elif base.startswith(WHITEOUT + WHITEOUT):
                if watch.guards(directory):
                    raise LayerError(f"{label}: runtime metadata {base} in /{directory}")
            else:
                removed.append(posixpath.join(directory, base[len(WHITEOUT):]))
            continue
        if member.issym():
            links[path] = member.linkname  # kept even if whited out later: stricter
        if not watch.guards(path):
            continue
        if path in added and not (member.isdir() and added[path] is None):
            raise LayerError(f"{label}: /{path} appears twice in one layer (which one a "
                             "runtime keeps is not for the verifier to guess)")
        if member.isdir():
            added[path] = None
        elif member.isfile() and not member.issparse():
            if not watch.covers(path):
                raise LayerError(f"{label}: a file at /{path}, where a checked directory "
                                 "belongs")
            if member.size > budget.bounds.file_bytes:
                raise LayerError(f"{label}: /{path} is {member.size} bytes, over the "
                                 f"verifier's bound on one checked file "
                                 f"({budget.bounds.file_bytes})")
            budget.spend("held_bytes", member.size)
            added[path] = tar.extractfile(member).read()
        else:
            raise LayerError(f"{label}: /{path} is a {_kind(member)}: refused at the paths the "
                             "verifier checks and the directories above them")
    for prefix in removed:
        if not (prefix == "" or prefix.endswith("/")) and any(_under(p, prefix) for p in added):
            raise LayerError(f"{label}: /{prefix} is both whited out and written in one layer")
        for path in [p for p in files if _under(p, prefix)]:
            del files[path]
    for path, data in added.items():
        if data is None:
            files.pop(path, None)  # a directory replaces a file
            continue
        for below in [p for p in files if p.startswith(path + "/")]:
            del files[below]  # a file replaces a directory
        files[path] = data


def _under(path: str, prefix: str) -> bool:
    """`prefix` ending in "/" (or empty): everything inside; otherwise the path and below."""
    if prefix == "" or prefix.endswith("/"):
        return path.startswith(prefix)
    return path == prefix or path.startswith(prefix + "/")


def image_config(registry: Registry, name: str, manifest: dict) -> dict:
    """The image's config (its Env among others), checked against its digest."""
    descriptor = manifest.get("config") or {}
    try:
        return json.loads(registry.blob(name, str(descriptor.get("digest"))))
    except (RegistryError, ValueError) as exc:
        raise LayerError(f"the image's config: {exc}") from None


def read_paths(registry: Registry, name: str, manifest: dict, watch: Watch,
               bounds: Bounds = DEFAULT_BOUNDS) -> dict[str, bytes]:
    """{path: bytes} of every file the image holds under `watch` once all layers apply."""
    budget = _Budget(bounds)
    files: dict[str, bytes] = {}
    links: dict[str, str] = {}
    layers: Iterable[dict] = manifest.get("layers") or []
    for number, layer in enumerate(layers, 1):
        digest = str(layer.get("digest"))
        label = f"layer {number} ({digest[:19]})"
        declared = layer.get("size")
        if type(declared) is not int or declared < 0:
            raise LayerError(f"{label} declares no size")
        if budget.compressed_bytes + declared > bounds.compressed_bytes:
            raise LayerError(f"{label} declares {declared} bytes: over the verifier's bound on "
                             f"compressed bytes ({bounds.compressed_bytes}), refused unread")
        try:
            with registry.open_blob(name, digest, declared) as blob:
                stream = _Decompressed(blob, budget)
                try:
                    with tarfile.open(fileobj=stream, mode="r|", bufsize=_TAR_BUFFER) as tar:
                        _apply_layer(tar, watch, files, links, budget, label)
                        end = tar.offset
                except (tarfile.TarError, EOFError, ValueError, OverflowError) as exc:
                    raise LayerError(f"{label} is not a readable tar ({exc})") from None
                if not stream.rest_is_zeros(end):
                    raise LayerError(f"{label} has data after the end of its tar archive "
                                     "(another reader may see entries this one did not)")
                if blob.size != declared:
                    raise LayerError(f"{label} declares {declared} bytes; the registry sent "
                                     f"{blob.size}")
        except RegistryError as exc:
            raise LayerError(f"{label}: {exc}") from None
    return files
