"""The release evidence checked as an outside consumer would, with other people's libraries:
the SBOM with cyclonedx-python-lib's strict CycloneDX 1.5 validator, the model signature and
the SLSA provenance (DSSE envelopes over in-toto statements) with securesystemslib and only the
public key. Our own verifier is not used here."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from rice_mlops.release.attestation import SLSA_PROVENANCE, provenance
from rice_mlops.release.pins import parse
from rice_mlops.release.sbom import cyclonedx, debian_components, python_components
from rice_mlops.release.signing import (
    generate_keypair,
    load_private_key,
    sign_envelope,
    sign_model_dir,
)

REPO = Path(__file__).resolve().parents[2]
DPKG_STATUS = """Package: libc6
Status: install ok installed
Architecture: amd64
Source: glibc
Version: 2.36-9+deb12u10
Description: GNU C Library: Shared libraries
 Contains the standard libraries.

Package: zlib1g
Status: install ok installed
Architecture: amd64
Version: 1:1.2.13.dfsg-1

Package: removed-one
Status: deinstall ok config-files
Version: 1.0
"""


def _sbom(tmp_path: Path) -> dict:
    """The SBOM as the release zone writes it, for wheels named as serving.txt pins them."""
    wheels = []
    for pin in parse(REPO / "requirements" / "serving.txt").values():
        wheel = tmp_path / f"{pin.name.replace('-', '_')}-{pin.version}-py3-none-any.whl"
        wheel.write_bytes(pin.name.encode())
        wheels.append(wheel)
    return cyclonedx(image_name="127.0.0.1:5000/rice-classifier", image_version="a" * 40,
                     python=python_components(wheels), debian=debian_components(DPKG_STATUS),
                     base_image="rice-base/python:3.11-bookworm",
                     base_image_id="sha256:" + "0" * 64)


def _strict(document: dict):
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    return JsonStrictValidator(SchemaVersion.V1_5).validate_str(json.dumps(document))


def test_the_sbom_passes_the_strict_cyclonedx_1_5_validator(tmp_path):
    document = _sbom(tmp_path)
    assert len(document["components"]) > 10
    assert _strict(document) is None


@pytest.mark.parametrize("spoil", [
    lambda d: d.update(surprise=1),
    lambda d: d["components"][0]["hashes"][0].update(alg="SHA-257"),
    lambda d: d["metadata"]["component"].update(type="box"),
])
def test_the_validator_bites(tmp_path, spoil):
    document = _sbom(tmp_path)
    spoil(document)
    assert _strict(document) is not None


@pytest.fixture
def keys(tmp_path):
    private, public = generate_keypair(tmp_path / "keys")
    return load_private_key(private.read_bytes()), public.read_bytes()


def _verify(envelope: dict, public_pem: bytes) -> dict:
    """Verify a DSSE envelope with securesystemslib alone; the in-toto statement it signs."""
    from cryptography.hazmat.primitives.serialization import load_pem_public_key
    from securesystemslib.dsse import Envelope
    from securesystemslib.signer import SSlibKey

    parsed = Envelope.from_dict(json.loads(json.dumps(envelope)))  # from_dict edits its input
    # DSSE's keyid is a hint: a consumer takes the one the envelope names for the key it holds.
    key = SSlibKey.from_crypto(load_pem_public_key(public_pem),
                               keyid=parsed.signatures and next(iter(parsed.signatures)))
    verified = parsed.verify([key], 1)
    assert list(verified) == [key.keyid]
    return json.loads(parsed.payload)


def test_the_model_signature_verifies_with_securesystemslib(tmp_path, keys):
    private, public_pem = keys
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.tflite").write_bytes(b"TFL3" + bytes(range(200)))
    (model / "labels.json").write_text('{"classes": ["Arborio", "Basmati"]}')
    envelope = json.loads(sign_model_dir(model, private, {"model_version": "7"}).read_text())
    statement = _verify(envelope, public_pem)
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert {s["name"] for s in statement["subject"]} == {"model.tflite", "labels.json"}


def test_a_changed_envelope_or_another_key_does_not_verify(tmp_path, keys):
    from securesystemslib.exceptions import VerificationError

    private, public_pem = keys
    envelope = sign_envelope(b'{"_type": "https://in-toto.io/Statement/v1"}', private)
    changed = {**envelope, "payload": base64.b64encode(b'{"_type": "x"}').decode()}
    with pytest.raises(VerificationError):
        _verify(changed, public_pem)
    _, other_pem = generate_keypair(tmp_path / "other")
    with pytest.raises(VerificationError):
        _verify(envelope, other_pem.read_bytes())


def test_the_provenance_verifies_with_securesystemslib(keys):
    private, public_pem = keys
    digest = "sha256:" + "b" * 64
    document = provenance(
        repository="127.0.0.1:5000/rice-classifier", image_digest=digest,
        source_commit="c" * 40, source_repository="acme/rice", dataset_fingerprint="sha256:f",
        mlflow_run_id="d" * 32, tracking_uri="http://mlflow:5000", tflite_sha256="e" * 64,
        lock_files={"requirements/serving.txt": "f" * 64}, base_image="rice-base/python:3.11",
        base_image_id=None, dag_id="rice_classifier_cicd", dag_run_id="r", model_version="7")
    statement = _verify(sign_envelope(document, private), public_pem)
    assert statement["predicateType"] == SLSA_PROVENANCE
    assert statement["subject"][0]["digest"] == {"sha256": "b" * 64}
