"""A CycloneDX 1.5 SBOM of the serving image, written by hand from what we hold:

- the Python packages: the vendored wheels the image installs (name and version from the
  wheel's file name, PEP 427; sha256 of the wheel file itself, so anyone can match it against
  the index or the lock), minus the installer pip, which stays in the build stage;
- the Debian packages of the base image: its `/var/lib/dpkg/status`, read from the base image
  by a throw-away container with no network.

Deterministic for the same inputs (serial number derived from the content), so a re-run of the
same build produces the same document.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Iterable
from pathlib import Path

SPEC_VERSION = "1.5"
_WHEEL = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$")
_NOT_IN_IMAGE = {"pip"}  # the build stage's installer (rice_mlops.release.wheels.INSTALLER)


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def python_components(wheels: Iterable[Path]) -> list[dict]:
    """One library component per wheel the image installs, with the wheel's sha256."""
    components = []
    for wheel in sorted(wheels, key=lambda p: p.name.lower()):
        match = _WHEEL.match(wheel.name)
        if not match:
            raise ValueError(f"{wheel.name} is not a wheel file name (PEP 427)")
        name, version = _normalise(match["name"]), match["version"]
        if name in _NOT_IN_IMAGE:
            continue
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        components.append({
            "type": "library", "bom-ref": f"pkg:pypi/{name}@{version}", "name": name,
            "version": version, "purl": f"pkg:pypi/{name}@{version}",
            "hashes": [{"alg": "SHA-256", "content": digest}],
            "properties": [{"name": "rice-mlops:wheel", "value": wheel.name}]})
    return components


def parse_dpkg_status(text: str) -> list[dict[str, str]]:
    """Installed packages from a dpkg status file (RFC 822-like paragraphs)."""
    packages = []
    for paragraph in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in paragraph.splitlines():
            if line[:1] in (" ", "\t") and key:
                continue  # continuation lines (descriptions, conffiles): not needed
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
        if fields.get("Package") and fields.get("Status", "").endswith(" installed"):
            packages.append(fields)
    return packages


def debian_components(dpkg_status: str, distro: str = "debian",
                      purged: tuple[str, ...] = ()) -> list[dict]:
    """The installed packages as CycloneDX components, less those the image build purges."""
    components = []
    for fields in sorted(parse_dpkg_status(dpkg_status), key=lambda f: f["Package"]):
        if fields["Package"] in purged:
            continue
        name, version, arch = fields["Package"], fields.get("Version", ""), \
            fields.get("Architecture", "")
        purl = f"pkg:deb/{distro}/{name}@{version}" + (f"?arch={arch}" if arch else "")
        component = {"type": "library", "bom-ref": purl, "name": name, "version": version,
                     "purl": purl}
        if source := fields.get("Source"):
            component["properties"] = [{"name": "rice-mlops:dpkg-source", "value": source}]
        components.append(component)
    return components


def cyclonedx(*, image_name: str, image_version: str, python: list[dict], debian: list[dict],
              base_image: str, base_image_id: str | None) -> dict:
    """The SBOM document (metadata.component is the serving image)."""
    components = [*python, *debian]
    content = json.dumps(components, sort_keys=True).encode()
    serial = uuid.uuid5(uuid.NAMESPACE_URL, "rice-mlops-sbom:" + hashlib.sha256(
        content + image_name.encode() + image_version.encode()).hexdigest())
    properties = [{"name": "rice-mlops:base-image", "value": base_image}]
    if base_image_id:
        properties.append({"name": "rice-mlops:base-image-id", "value": base_image_id})
    return {
        "bomFormat": "CycloneDX", "specVersion": SPEC_VERSION, "serialNumber": f"urn:uuid:{serial}",
        "version": 1,
        "metadata": {
            "tools": {"components": [{"type": "application", "name": "rice-mlops.sbom"}]},
            "component": {"type": "container", "bom-ref": f"{image_name}@{image_version}",
                          "name": image_name, "version": image_version},
            "properties": properties},
        "components": components,
    }


def read_base_image(docker_socket: str, image: str) -> tuple[str, str]:
    """(dpkg status text, image id) of a local base image, read by a container with no
    network that only runs `cat` (the base image's own, from its filesystem)."""
    import docker

    client = docker.DockerClient(base_url=f"unix://{docker_socket}", timeout=120)
    try:
        image_id = client.images.get(image).id
        status = client.containers.run(image, entrypoint=["cat", "/var/lib/dpkg/status"],
                                       network_mode="none", remove=True, stdout=True,
                                       stderr=False)
    finally:
        client.close()
    return status.decode("utf-8", "replace"), image_id


def components_of(document: dict) -> dict[str, str]:
    """{purl without qualifiers: version} (what tests and `image verify` print)."""
    return {c["purl"].split("?")[0].rsplit("@", 1)[0]: c["version"]
            for c in document.get("components", [])}
