"""Attachments on a real registry (the repository's htpasswd `docker-registry`), without a
training: sign, attach, verify; then hostile cases (another key, another image under the same
tag, a signature copied onto another digest, a swapped SBOM)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

pytestmark = [pytest.mark.integration]

NAME = "attest-test"


def _docker(env, *args, **kwargs):
    return subprocess.run(["docker", *args], env=env, check=True, capture_output=True, text=True,
                          timeout=300, **kwargs)


@pytest.fixture(scope="module")
def registry_env(docker_engine, tmp_path_factory):
    config = tmp_path_factory.mktemp("docker-config-attest")
    env = {**os.environ, "DOCKER_CONFIG": str(config)}
    _docker(env, "login", "--username", docker_engine["RICE_REGISTRY_USER"], "--password-stdin",
            docker_engine["RICE_REGISTRY"], input=docker_engine["RICE_REGISTRY_PASSWORD"])
    return env


def _push(env, engine, source: str, tag: str) -> str:
    from rice_mlops.release.oci import Registry

    target = f"{engine['RICE_REGISTRY']}/{NAME}:{tag}"
    _docker(env, "tag", source, target)
    try:
        _docker(env, "push", target)
    finally:
        _docker(env, "rmi", target)
    with Registry(engine["RICE_REGISTRY"], engine["RICE_REGISTRY_USER"],
                  engine["RICE_REGISTRY_PASSWORD"]) as registry:
        return registry.manifest(NAME, tag)[2]


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    from rice_mlops.release.signing import generate_keypair, load_private_key, load_public_key

    ours = generate_keypair(tmp_path_factory.mktemp("ours"))
    theirs = generate_keypair(tmp_path_factory.mktemp("theirs"))
    return {"private": load_private_key(ours[0].read_bytes()),
            "public": load_public_key(ours[1].read_bytes()),
            "their_private": load_private_key(theirs[0].read_bytes()),
            "their_public": load_public_key(theirs[1].read_bytes())}


def _model_image(env, engine, keys, root, tag: str, tamper: bool = False,
                 their_key: bool = False) -> str:
    """A local image FROM the base with a model directory signed by our key at /opt/model
    (changed after signing when `tamper`) and, as the serving image has, our public key at
    /opt/rice/evidence/model-signing.pub (their key with `their_key`)."""
    from rice_mlops.release.signing import public_pem, sign_model_dir

    model = root / "model"
    model.mkdir(parents=True)
    (model / "model.tflite").write_bytes(b"TFL3" + os.urandom(256))
    (model / "labels.json").write_text('{"classes": ["a", "b"]}')
    sign_model_dir(model, keys["private"], {"run_id": "e" * 32})
    if tamper:
        (model / "labels.json").write_text('{"classes": ["b", "a"]}')
    (root / "evidence").mkdir()
    (root / "evidence" / "model-signing.pub").write_bytes(
        public_pem(keys["their_private" if their_key else "private"]))
    (root / "Dockerfile").write_text(f"FROM {engine['RICE_BASE_IMAGE']}\nCOPY model/ /opt/model/\n"
                                     "COPY evidence/ /opt/rice/evidence/\n")
    _docker({**env, "DOCKER_BUILDKIT": "0"}, "build", "--network", "none", "-t", tag, str(root))
    return tag


def _attach(registry, engine, digest, keys, model_signature: bytes):
    from rice_mlops.release.attestation import attach_evidence, provenance

    statement = provenance(
        repository=f"{engine['RICE_REGISTRY']}/{NAME}", image_digest=digest,
        source_commit="a" * 40, source_repository="acme/rice", dataset_fingerprint="sha256:"
        + "d" * 64, mlflow_run_id="e" * 32, tracking_uri="http://mlflow", tflite_sha256="f" * 64,
        lock_files={"requirements/lock.txt": "1" * 64}, base_image="base:1",
        base_image_id="sha256:" + "2" * 64, dag_id="rice_classifier_cicd", dag_run_id="r1",
        model_version="3")
    sbom = json.dumps({"bomFormat": "CycloneDX", "components": [
        {"purl": "pkg:pypi/numpy@2.4.6", "version": "2.4.6"}]}).encode()
    return attach_evidence(registry, NAME, digest, provenance_statement=statement, sbom=sbom,
                           model_signature=model_signature, private_key=keys["private"])


@pytest.fixture(scope="module")
def attached(docker_engine, registry_env, keys, tmp_path_factory):
    from rice_mlops.release.oci import Registry

    root = tmp_path_factory.mktemp("good-image")
    local = _model_image(registry_env, docker_engine, keys, root, "rice-attest-test-good:local")
    try:
        digest = _push(registry_env, docker_engine, local, "abc123")
    finally:
        _docker(registry_env, "rmi", local)
    registry = Registry(docker_engine["RICE_REGISTRY"], docker_engine["RICE_REGISTRY_USER"],
                        docker_engine["RICE_REGISTRY_PASSWORD"])
    result = _attach(registry, docker_engine, digest, keys,
                     (root / "model" / "model.sig.json").read_bytes())
    yield registry, digest, result
    registry.close()


def test_attachments_verify_with_our_key_and_say_where_the_image_came_from(attached, keys):
    from rice_mlops.release.attestation import verify_image
    from rice_mlops.release.oci import attachment_tag

    registry, digest, result = attached
    assert result["signature"]["tag"] == attachment_tag(digest, "signature")
    assert result["signature"]["tag"].endswith(".sig")
    report = verify_image(registry, NAME, digest, keys["public"])
    assert report["source_commit"] == "a" * 40 and report["mlflow_run_id"] == "e" * 32
    assert report["sbom"]["pkg:pypi/numpy"] == "2.4.6"
    assert report["model_files"] == ["labels.json", "model.sig.json", "model.tflite"]
    names = {m["name"] for m in report["materials"]}
    assert {"source", "dataset", "mlflow-run", "requirements/lock.txt", "base-image"} <= names


def test_another_key_fails(attached, keys):
    from rice_mlops.release.attestation import VerificationError, verify_image

    registry, digest, _ = attached
    with pytest.raises(VerificationError, match="no signature in the envelope verifies"):
        verify_image(registry, NAME, digest, keys["their_public"])


def test_an_image_pushed_under_the_tag_by_someone_else_fails(attached, keys, docker_engine,
                                                             registry_env, tmp_path):
    from rice_mlops.release.attestation import VerificationError, attach_evidence, verify_image
    from rice_mlops.release.oci import attachment_tag

    registry, digest, _ = attached
    (tmp_path / "Dockerfile").write_text(f"FROM {docker_engine['RICE_BASE_IMAGE']}\n"
                                         "LABEL evil=yes\n")
    local = "rice-attest-test-evil:local"
    _docker({**registry_env, "DOCKER_BUILDKIT": "0"}, "build", "--network", "none", "-t",
            local, str(tmp_path))
    try:
        evil = _push(registry_env, docker_engine, local, "abc123")  # the same tag, moved
    finally:
        _docker(registry_env, "rmi", local)
    assert evil != digest
    with pytest.raises(VerificationError, match="not in the registry"):
        verify_image(registry, NAME, evil, keys["public"])
    # Our signature copied onto their digest: its subject still names ours.
    raw, _, _ = registry.manifest(NAME, attachment_tag(digest, "signature"))
    registry.push_manifest(NAME, attachment_tag(evil, "signature"), json.loads(raw))
    with pytest.raises(VerificationError, match="names subject"):
        verify_image(registry, NAME, evil, keys["public"])
    # Attachments they sign themselves: valid DSSE, wrong key.
    attach_evidence(registry, NAME, evil, provenance_statement=b"{}", sbom=b"{}",
                    model_signature=b"{}", private_key=keys["their_private"])
    with pytest.raises(VerificationError, match="no signature"):
        verify_image(registry, NAME, evil, keys["public"])
    verify_image(registry, NAME, digest, keys["public"])  # ours is untouched


def test_a_swapped_sbom_fails(attached, keys):
    from rice_mlops.release.attestation import SBOM_MEDIA_TYPE, VerificationError, verify_image

    registry, digest, _ = attached
    original, _ = registry.attachment(NAME, digest, "sbom")
    registry.attach(NAME, digest, "sbom", SBOM_MEDIA_TYPE, b'{"components": []}')
    try:
        with pytest.raises(VerificationError, match="SBOM attached is not the one"):
            verify_image(registry, NAME, digest, keys["public"])
    finally:
        registry.attach(NAME, digest, "sbom", SBOM_MEDIA_TYPE, original)
    verify_image(registry, NAME, digest, keys["public"])


def test_cli_verify_prints_what_is_attached_and_fails_with_another_key(attached, keys,
                                                                        docker_engine, tmp_path):
    import sys
    from pathlib import Path

    from rice_mlops.release.signing import generate_keypair, public_pem

    registry, digest, _ = attached
    reference = f"{docker_engine['RICE_REGISTRY']}/{NAME}@{digest}"
    env = {**os.environ, "REGISTRY_USERNAME": docker_engine["RICE_REGISTRY_USER"],
           "REGISTRY_PASSWORD": docker_engine["RICE_REGISTRY_PASSWORD"]}
    cli = [sys.executable, "-m", "rice_mlops.operations.cli", "image", "verify", reference, "--key"]
    ours = tmp_path / "ours.pub"
    ours.write_bytes(public_pem(keys["private"]))
    good = subprocess.run([*cli, str(ours)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert good.returncode == 0, good.stderr
    report = json.loads(good.stdout)
    assert report["mlflow_run_id"] == "e" * 32 and report["sbom"]["pkg:pypi/numpy"] == "2.4.6"
    assert "VERIFIED" in good.stderr
    _, other = generate_keypair(tmp_path / "other")
    bad = subprocess.run([*cli, str(other)], env=env, capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 1 and "NOT VERIFIED" in bad.stderr
    assert docker_engine["RICE_REGISTRY_PASSWORD"] not in bad.stderr + good.stdout
    tag = subprocess.run([*cli[:-2], reference.split("@")[0] + ":abc123", "--key", str(ours)],
                         env=env, capture_output=True, text=True, timeout=120)
    assert tag.returncode == 2 and "never a tag" in tag.stderr
    assert Path(ours).exists()


def _attested_model_image(registry, env, engine, keys, root, tag: str, **variant) -> str:
    """A `_model_image` variant pushed under `tag`, its local copy removed, with valid
    attachments signed by our key: the digest."""
    local = _model_image(env, engine, keys, root, f"rice-attest-test-{tag}:local", **variant)
    try:
        digest = _push(env, engine, local, tag)
    finally:
        _docker(env, "rmi", local)
    _attach(registry, engine, digest, keys, (root / "model" / "model.sig.json").read_bytes())
    return digest


def test_a_model_changed_after_signing_fails_even_with_valid_attachments(docker_engine,
                                                                        registry_env, keys,
                                                                        attached, tmp_path):
    """The pipeline tricked into attesting an image whose model was changed after signing."""
    from rice_mlops.release.attestation import VerificationError, verify_image

    registry, _, _ = attached
    digest = _attested_model_image(registry, registry_env, docker_engine, keys, tmp_path,
                                   "tampered", tamper=True)
    with pytest.raises(VerificationError, match="changed labels.json"):
        verify_image(registry, NAME, digest, keys["public"])


def test_an_image_carrying_another_key_for_its_server_fails(docker_engine, registry_env, keys,
                                                             attached, tmp_path):
    """Signed model, valid attachments, but the server in the image would check the model
    with their key: trust comes from the verifier's key alone."""
    from rice_mlops.release.attestation import VerificationError, verify_image

    registry, _, _ = attached
    digest = _attested_model_image(registry, registry_env, docker_engine, keys, tmp_path,
                                   "their-key", their_key=True)
    with pytest.raises(VerificationError, match="carries its own key"):
        verify_image(registry, NAME, digest, keys["public"])


def test_an_older_release_needs_a_rollback_by_name(attached, keys):
    from rice_mlops.release.attestation import VerificationError, verify_image

    registry, digest, _ = attached  # signed as model v3
    with pytest.raises(VerificationError, match="v3, older than v4"):
        verify_image(registry, NAME, digest, keys["public"], min_version=4)
    assert verify_image(registry, NAME, digest, keys["public"], min_version=4, rollback_to=3,
                        expected_commit="a" * 40)["verified"]


def _skopeo_copy(engine, authfile, source: str, destination: str) -> None:
    """What an operator promoting a release runs: Debian's skopeo, digests preserved, the
    source registry's credentials in an auth file (never on the command line)."""
    subprocess.run(["skopeo", "copy", "--all", "--preserve-digests", "--src-authfile",
                    str(authfile), "--src-tls-verify=false", "--dest-tls-verify=false",
                    f"docker://{engine['RICE_REGISTRY']}/{NAME}{source}",
                    f"docker://{destination}"], check=True, capture_output=True, timeout=300)


def test_a_release_copied_with_skopeo_verifies_in_another_registry(attached, keys,
                                                                    docker_engine, tmp_path):
    """Promotion across registries with a standard tool: the image by digest and its three
    attachment tags, copied with skopeo, verify there with the same key; a copy that dropped
    the signature fails and names it."""
    import base64

    from rice_mlops.release.attestation import VerificationError, verify_image
    from rice_mlops.release.oci import SUFFIXES, Registry, attachment_tag
    from tests.helpers.mirror_registry import mirror_registry

    _, digest, _ = attached
    authfile = tmp_path / "auth.json"
    credentials = f"{docker_engine['RICE_REGISTRY_USER']}:{docker_engine['RICE_REGISTRY_PASSWORD']}"
    authfile.write_text(json.dumps({"auths": {docker_engine["RICE_REGISTRY"]: {
        "auth": base64.b64encode(credentials.encode()).decode()}}}))
    authfile.chmod(0o600)
    attachments = {kind: attachment_tag(digest, kind) for kind in SUFFIXES}
    with mirror_registry(tmp_path / "mirror") as mirror:
        for repository, kinds in (("rice-promoted", list(SUFFIXES)),
                                  ("rice-no-signature", ["provenance", "sbom"])):
            _skopeo_copy(docker_engine, authfile, f"@{digest}", f"{mirror}/{repository}:release")
            for kind in kinds:
                _skopeo_copy(docker_engine, authfile, f":{attachments[kind]}",
                             f"{mirror}/{repository}:{attachments[kind]}")
        with Registry(mirror, "", "") as copied:
            assert copied.manifest("rice-promoted", "release")[2] == digest  # the same image
            report = verify_image(copied, "rice-promoted", digest, keys["public"])
            assert report["verified"] and report["source_commit"] == "a" * 40
            with pytest.raises(VerificationError, match=r"\.sig is not in the registry"):
                verify_image(copied, "rice-no-signature", digest, keys["public"])
