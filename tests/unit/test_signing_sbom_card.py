"""Signatures, the model-directory check the server runs, the SBOM and the model card."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rice_mlops.compute import model_card
from rice_mlops.compute.gate import decide
from rice_mlops.release import sbom
from rice_mlops.release.signing import (
    SigningKeyError,
    generate_keypair,
    load_private_key,
    sign_envelope,
    sign_model_dir,
)
from rice_mlops.serving.model_signature import (
    SIGNATURE_FILE,
    ModelSignatureError,
    verify_envelope,
    verify_model_dir,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def keys(tmp_path):
    private, public = generate_keypair(tmp_path / "keys")
    other_private, other_public = generate_keypair(tmp_path / "other")
    return (load_private_key(private.read_bytes()), public,
            load_private_key(other_private.read_bytes()), other_public)


@pytest.fixture
def model_dir(tmp_path, keys):
    directory = tmp_path / "model"
    directory.mkdir()
    (directory / "model.tflite").write_bytes(b"TFL3" + os.urandom(64))
    (directory / "labels.json").write_text('{"classes": ["a", "b"]}')
    (directory / "metadata.json").write_text('{"run_id": "x"}')
    sign_model_dir(directory, keys[0], {"run_id": "x"})
    return directory


def test_generated_private_key_is_private_and_never_overwritten(tmp_path):
    private, public = generate_keypair(tmp_path / "k")
    assert private.stat().st_mode & 0o777 == 0o600
    assert b"PUBLIC KEY" in public.read_bytes()
    with pytest.raises(FileExistsError):
        generate_keypair(tmp_path / "k")


def test_a_non_ed25519_or_garbage_key_is_refused_without_quoting_it():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    with pytest.raises(SigningKeyError, match="not Ed25519"):
        load_private_key(pem)
    with pytest.raises(SigningKeyError) as caught:
        load_private_key(b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0LXZhbHVl\n")
    assert "c2VjcmV0" not in str(caught.value)


def test_the_private_key_is_read_from_the_key_file_alone(tmp_path, monkeypatch):
    """Keys only as files on the release worker: a `rice_signing` connection (which any task
    may read) is never a source, even when it holds a valid key and the file is missing."""
    from cryptography.hazmat.primitives import serialization

    from rice_mlops.release.signing import signing_key

    private, _ = generate_keypair(tmp_path / "keys")
    pem = private.read_text()
    monkeypatch.setenv("AIRFLOW_CONN_RICE_SIGNING", json.dumps(
        {"conn_type": "generic", "password": pem}))
    with pytest.raises(SigningKeyError, match="RICE_SIGNING_KEY_FILE") as refused:
        signing_key("")
    assert "connection" not in str(refused.value) and "BEGIN" not in str(refused.value)
    with pytest.raises(SigningKeyError, match="does not exist"):
        signing_key(str(tmp_path / "missing.key"))
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    assert signing_key(str(private)).public_key().public_bytes(*raw) == \
        load_private_key(pem.encode()).public_key().public_bytes(*raw)


def test_envelope_verifies_with_its_key_only(keys):
    from rice_mlops.release.signing import load_public_key

    private, public, _, other_public = keys
    envelope = sign_envelope(b'{"hello": 1}', private)
    assert verify_envelope(envelope, load_public_key(public.read_bytes())) == b'{"hello": 1}'
    with pytest.raises(ModelSignatureError, match="no signature"):
        verify_envelope(envelope, load_public_key(other_public.read_bytes()))
    forged = {**envelope, "payload": base64.b64encode(b'{"hello": 2}').decode()}
    with pytest.raises(ModelSignatureError, match="no signature"):
        verify_envelope(forged, load_public_key(public.read_bytes()))
    with pytest.raises(ModelSignatureError, match="payload type"):
        verify_envelope({**envelope, "payloadType": "text/plain"},
                        load_public_key(public.read_bytes()))


def test_model_dir_verifies_and_every_tampering_is_named(model_dir, keys, tmp_path):
    _, public, _, other_public = keys
    statement = verify_model_dir(model_dir, public)
    assert {s["name"] for s in statement["subject"]} == {"model.tflite", "labels.json",
                                                        "metadata.json"}
    with pytest.raises(ModelSignatureError, match="no signature"):
        verify_model_dir(model_dir, other_public)
    with pytest.raises(ModelSignatureError, match="no public key"):
        verify_model_dir(model_dir, tmp_path / "absent.pub")
    (model_dir / "labels.json").write_text('{"classes": ["b", "a"]}')
    with pytest.raises(ModelSignatureError, match="changed labels.json"):
        verify_model_dir(model_dir, public)


def test_added_removed_and_resigned_by_another_key(model_dir, keys):
    private, public, other_private, _ = keys
    (model_dir / "extra.tflite").write_bytes(b"x")
    with pytest.raises(ModelSignatureError, match="unsigned extra.tflite"):
        verify_model_dir(model_dir, public)
    (model_dir / "extra.tflite").unlink()
    (model_dir / "metadata.json").unlink()
    with pytest.raises(ModelSignatureError, match="missing metadata.json"):
        verify_model_dir(model_dir, public)
    (model_dir / "metadata.json").write_text('{"run_id": "x"}')
    sign_model_dir(model_dir, other_private, {})  # an attacker re-signs with their own key
    with pytest.raises(ModelSignatureError, match="no signature"):
        verify_model_dir(model_dir, public)
    (model_dir / SIGNATURE_FILE).unlink()
    with pytest.raises(ModelSignatureError, match="not signed"):
        verify_model_dir(model_dir, public)


def test_server_with_a_tampered_model_does_not_start(model_dir, keys):
    (model_dir / "model.tflite").write_bytes(b"TFL3 evil")
    env = {**os.environ, "RICE_MODEL_DIR": str(model_dir), "RICE_MODEL_PUBLIC_KEY": str(keys[1]),
           "RICE_PORT": "1", "PYTHONPATH": str(REPO / "include")}
    result = subprocess.run([sys.executable, "-m", "rice_mlops.serving"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 78
    assert "refusing to start" in result.stderr and "changed model.tflite" in result.stderr


DPKG = """Package: libc6
Status: install ok installed
Architecture: amd64
Source: glibc
Version: 2.36-9+deb12u10
Description: GNU C Library
 continuation line: not a field

Package: removed-one
Status: deinstall ok config-files
Version: 1.0

Package: python3.11-minimal
Status: install ok installed
Architecture: amd64
Version: 3.11.2-6+deb12u6
"""


def test_sbom_lists_wheels_with_hashes_and_installed_debian_packages(tmp_path):
    wheels = []
    for name in ("numpy-2.4.6-cp311-cp311-manylinux_2_27_x86_64.whl",
                 "ai_edge_litert-2.3.0-cp311-cp311-manylinux_2_27_x86_64.whl",
                 "pip-26.3-py3-none-any.whl"):
        (tmp_path / name).write_bytes(name.encode())
        wheels.append(tmp_path / name)
    python = sbom.python_components(wheels)
    document = sbom.cyclonedx(image_name="rice-classifier", image_version="3", python=python,
                              debian=sbom.debian_components(DPKG), base_image="base:1",
                              base_image_id="sha256:" + "a" * 64)
    components = sbom.components_of(document)
    assert components["pkg:pypi/numpy"] == "2.4.6"
    assert components["pkg:pypi/ai-edge-litert"] == "2.3.0"
    assert "pkg:pypi/pip" not in components  # the installer never reaches the image
    assert components["pkg:deb/debian/libc6"] == "2.36-9+deb12u10"
    assert "pkg:deb/debian/removed-one" not in components
    numpy = next(c for c in document["components"] if c["name"] == "numpy")
    import hashlib
    assert numpy["hashes"][0]["content"] == hashlib.sha256(wheels[0].name.encode()).hexdigest()
    assert document["bomFormat"] == "CycloneDX" and document["specVersion"] == "1.5"
    again = sbom.cyclonedx(image_name="rice-classifier", image_version="3", python=python,
                           debian=sbom.debian_components(DPKG), base_image="base:1",
                           base_image_id="sha256:" + "a" * 64)
    assert again == document  # deterministic


def test_the_sbom_leaves_out_what_the_image_build_purges():
    """The Dockerfile purges RUNTIME_PURGED from the runtime's root (the release zone passes it
    as a build argument): the SBOM lists what the image holds, not what its base held."""
    from rice_mlops.release.image import RUNTIME_PURGED

    status = DPKG + "\n" + "\n".join(f"Package: {name}\nStatus: install ok installed\n"
                                     f"Version: 1\n" for name in RUNTIME_PURGED)
    names = {c["name"] for c in sbom.debian_components(status)}
    kept = {c["name"] for c in sbom.debian_components(status, purged=RUNTIME_PURGED)}
    assert set(RUNTIME_PURGED) <= names and names - kept == set(RUNTIME_PURGED)
    assert "libc6" in kept and "perl-base" not in kept


CLASSES = ["Arborio", "Basmati", "Ipsala", "Jasmine", "Karacadag"]


def test_model_card_holds_the_runs_numbers_and_parses_back():
    matrix = [[19, 1, 0, 0, 0], [0, 20, 0, 0, 0], [0, 0, 20, 0, 0], [0, 0, 0, 17, 3],
              [0, 0, 0, 0, 20]]
    per_class = {}
    for i, cls in enumerate(CLASSES):
        recall = matrix[i][i] / 20
        precision = matrix[i][i] / sum(row[i] for row in matrix)
        per_class[cls] = {"recall": recall, "precision": precision, "support": 20,
                          "f1": 2 * recall * precision / (recall + precision)}
    metrics = {"classes": CLASSES, "test_accuracy": 0.96, "test_macro_f1": 0.959,
               "val_accuracy": 0.95, "per_class": per_class, "confusion_matrix": matrix}
    labels = [i for i in range(5) for _ in range(20)]
    gate = decide(0.96, min_test_accuracy=0.9, max_regression=0.01, classes=CLASSES,
                  labels=labels, predictions=labels).as_dict()
    text = model_card.render(model_name="rice-classifier", version="4", run_id="b" * 32,
                             source_commit="c" * 40, fingerprint="f" * 64,
                             counts={"train": dict.fromkeys(CLASSES, 100),
                                     "val": dict.fromkeys(CLASSES, 20),
                                     "test": dict.fromkeys(CLASSES, 20)},
                             metrics=metrics, gate=gate, confidence=0.95)
    parsed = model_card.parse(text)
    assert parsed["run_id"] == "b" * 32
    assert parsed["test_accuracy"] == 0.96
    assert parsed["recall"] == {cls: round(v["recall"], 4) for cls, v in per_class.items()}
    assert parsed["confusion_matrix"] == matrix
    assert "| **total** | 500 | 100 | 100 |" in text
    assert "[0.9016, 0.9843] (Wilson)" in text  # 96/100 at 95 %
    assert "Gate PASSED" in text and "## Limits" in text and "## Intended use" in text
    json.dumps(text)


def test_a_symlink_swapped_in_for_a_signed_file_is_refused(model_dir, keys, tmp_path):
    outside = tmp_path / "outside.tflite"
    outside.write_bytes((model_dir / "model.tflite").read_bytes())  # same bytes, elsewhere
    (model_dir / "model.tflite").unlink()
    (model_dir / "model.tflite").symlink_to(outside)
    with pytest.raises(ModelSignatureError, match="symbolic link"):
        verify_model_dir(model_dir, keys[1])


def test_an_envelope_that_is_not_json_or_huge_is_refused(model_dir, keys):
    (model_dir / SIGNATURE_FILE).write_text("{not json")
    with pytest.raises(ModelSignatureError, match="not JSON"):
        verify_model_dir(model_dir, keys[1])
    (model_dir / SIGNATURE_FILE).write_bytes(b" " * (2 << 20))
    with pytest.raises(ModelSignatureError, match="larger than"):
        verify_model_dir(model_dir, keys[1])
