"""What the pipeline attaches to a pushed image, and the check `image verify` and `promote` run.

Three attachments, each a tag-schema OCI artifact whose subject is the image digest:
- `.att`: a DSSE envelope around an in-toto Statement v1 with an SLSA provenance v1 predicate;
  subject the image digest; resolved dependencies (the materials) the source commit, the
  dataset fingerprint, the MLflow run (with its TFLite file's sha256), the lock files and the
  base image;
- `.sbom`: the image's CycloneDX SBOM (the same bytes as /opt/rice/evidence/sbom.cdx.json);
- `.sig`: a DSSE envelope around a statement whose subject is the image digest and whose
  predicate pins the sha256 of the SBOM and the provenance envelope and the model-files
  statement, so one signature covers every attachment.
Verification trusts nothing the registry says until the signatures verify with the given key
and every subject names the digest asked about. The given key is the only trust anchor: no key
is ever read from the image to verify anything, and the key the image's own server checks its
model with must be that very key (otherwise the server would accept whatever that other key
signed). The server's start-up check stays a self-check: a model changed or mounted after the
build does not start. Every layer is read, with bounds (`rice_mlops.release.layers`).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from pathlib import Path

from rice_mlops.release.layers import (
    DEFAULT_BOUNDS,
    Bounds,
    LayerError,
    Watch,
    image_config,
    read_paths,
)
from rice_mlops.release.oci import Registry, RegistryError, digest_of
from rice_mlops.release.signing import sign_envelope, statement
from rice_mlops.serving.model_signature import (
    DEFAULT_PUBLIC_KEY,
    SIGNATURE_FILE,
    ModelSignatureError,
    verify_envelope,
    verify_model_dir,
)
from rice_mlops.serving.model_signature import load_public_key as load_model_public_key

SLSA_PROVENANCE = "https://slsa.dev/provenance/v1"
IMAGE_SIGNATURE = "https://rice-mlops.dev/image-signature/v1"
BUILD_TYPE = "https://rice-mlops.dev/airflow-dag/rice_classifier_cicd/v1"
DSSE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"
SBOM_MEDIA_TYPE = "application/vnd.cyclonedx+json"


class VerificationError(RuntimeError):
    """The image's attachments do not prove it is ours; the message says which check failed."""


def _hex(digest: str) -> str:
    return digest.removeprefix("sha256:")


def provenance(*, repository: str, image_digest: str, source_commit: str | None,
               source_repository: str | None, dataset_fingerprint: str, mlflow_run_id: str,
               tracking_uri: str, tflite_sha256: str, lock_files: dict[str, str],
               base_image: str, base_image_id: str | None, dag_id: str, dag_run_id: str,
               model_version: str, release_measurement: dict | None = None) -> bytes:
    """The in-toto statement (SLSA provenance v1) of one pushed image. `release_measurement`:
    the test accuracy and per-class recall the release zone measured on the shipped bytes."""
    dependencies = []
    if source_commit:
        where = f"https://github.com/{source_repository}" if source_repository else "git"
        dependencies.append({"uri": f"git+{where}@{source_commit}", "name": "source",
                             "digest": {"gitCommit": source_commit}})
    dependencies += [
        {"name": "dataset", "uri": "rice-dataset:fingerprint",
         "digest": {"sha256": _hex(dataset_fingerprint)}},
        {"name": "mlflow-run", "uri": f"{tracking_uri.rstrip('/')}/#/runs/{mlflow_run_id}",
         "digest": {"sha256": tflite_sha256},
         "annotations": {"mlflow_run_id": mlflow_run_id, "artifact": "tflite/model.tflite"}},
        *({"name": name, "uri": f"file:{name}", "digest": {"sha256": digest}}
          for name, digest in sorted(lock_files.items())),
        {"name": "base-image", "uri": f"docker-image:{base_image}",
         **({"digest": {"sha256": _hex(base_image_id)}} if base_image_id else {})},
    ]
    predicate = {
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": {"source_commit": source_commit or None,
                                   "source_repository": source_repository or None},
            "internalParameters": {"dag_id": dag_id, "model_version": model_version,
                                   **({"release_measurement": release_measurement}
                                      if release_measurement else {})},
            "resolvedDependencies": dependencies},
        "runDetails": {"builder": {"id": f"https://rice-mlops.dev/airflow/{dag_id}"},
                       "metadata": {"invocationId": dag_run_id}},
    }
    return statement([{"name": repository, "digest": {"sha256": _hex(image_digest)}}],
                     SLSA_PROVENANCE, predicate)


def lock_digests(repo_root: Path) -> dict[str, str]:
    files = {}
    for relative in ("requirements/lock.txt", "requirements/serving.txt"):
        path = repo_root / relative
        if path.is_file():
            files[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def attach_evidence(registry: Registry, name: str, image_digest: str, *, provenance_statement:
                    bytes, sbom: bytes, model_signature: bytes, private_key) -> dict:
    """Sign and push provenance, SBOM and the covering signature; returns their tags."""
    envelope = json.dumps(sign_envelope(provenance_statement, private_key),
                          sort_keys=True).encode()
    pins = {"sbom_sha256": hashlib.sha256(sbom).hexdigest(),
            "provenance_sha256": hashlib.sha256(envelope).hexdigest(),
            "model_signature_sha256": hashlib.sha256(model_signature).hexdigest()}
    signature = json.dumps(sign_envelope(statement(
        [{"name": name, "digest": {"sha256": _hex(image_digest)}}], IMAGE_SIGNATURE, pins),
        private_key), sort_keys=True).encode()
    return {"provenance": registry.attach(name, image_digest, "provenance", DSSE_MEDIA_TYPE,
                                          envelope),
            "sbom": registry.attach(name, image_digest, "sbom", SBOM_MEDIA_TYPE, sbom),
            "signature": registry.attach(name, image_digest, "signature", DSSE_MEDIA_TYPE,
                                         signature),
            "pins": pins, "provenance_envelope": envelope.decode()}


def _signed_statement(blob: bytes, public_key, image_digest: str, predicate_type: str) -> dict:
    try:
        payload = verify_envelope(json.loads(blob), public_key)
    except (ValueError, ModelSignatureError) as exc:
        raise VerificationError(f"{predicate_type}: {exc}") from None
    document = json.loads(payload)
    if document.get("predicateType") != predicate_type:
        raise VerificationError(f"expected a {predicate_type} statement, got "
                                f"{document.get('predicateType')!r}")
    subjects = [s.get("digest", {}).get("sha256") for s in document.get("subject", [])]
    if subjects != [_hex(image_digest)]:
        raise VerificationError(f"the signed {predicate_type} statement is about {subjects}, "
                                f"not {image_digest}")
    return document


MODEL_DIR_IN_IMAGE = "opt/model/"
EVIDENCE_DIR_IN_IMAGE = "opt/rice/evidence/"
_KEY_SUFFIXES = (".pub", ".pem", ".key", ".crt", ".cer", ".der", ".asc", ".gpg", ".jwk")
_VERSION = re.compile(r"[0-9]{1,18}")
_COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


def _server_paths(config: dict) -> tuple[str, str]:
    """(model dir, public key path) the image's server reads, from the config's Env as the
    server's __main__ does; refused when the model dir is not /opt/model."""
    env: dict[str, str] = {}
    for entry in (config.get("config") or {}).get("Env") or []:
        key, _, value = str(entry).partition("=")
        if key in env and key.startswith("RICE_"):
            raise VerificationError(f"the image sets {key} twice in its environment")
        env[key] = value
    model_dir = posixpath.normpath(env.get("RICE_MODEL_DIR") or "/" + MODEL_DIR_IN_IMAGE)
    if model_dir != "/" + MODEL_DIR_IN_IMAGE.rstrip("/"):
        raise VerificationError(f"the image serves its model from {model_dir}, not "
                                f"/{MODEL_DIR_IN_IMAGE}: that is not what was verified")
    key_path = posixpath.normpath(env.get("RICE_MODEL_PUBLIC_KEY") or DEFAULT_PUBLIC_KEY)
    if not key_path.startswith("/") or key_path == "/":
        raise VerificationError(f"the image reads its key from {key_path!r}, not an absolute "
                                "path")
    return model_dir, key_path


def image_model_files(registry: Registry, name: str, image_digest: str,
                      bounds: Bounds = DEFAULT_BOUNDS, public_key=None) -> dict[str, bytes]:
    """The files under /opt/model once every layer of the image is applied (see
    `rice_mlops.release.layers`). With `public_key`, also checks the trust material in the image:
    the key the server checks the model with (at RICE_MODEL_PUBLIC_KEY, by default
    /opt/rice/evidence/model-signing.pub) must be `public_key` itself, and no other key may
    sit in /opt/rice/evidence. The verifier never reads a key from the image."""
    manifest = json.loads(registry.manifest(name, image_digest)[0])
    try:
        config = image_config(registry, name, manifest)
        _, key_path = _server_paths(config)
        key_file = key_path.lstrip("/")
        found = read_paths(registry, name, manifest,
                           Watch(directories=(MODEL_DIR_IN_IMAGE.rstrip("/"),
                                              EVIDENCE_DIR_IN_IMAGE.rstrip("/")),
                                 files=(key_file,)), bounds)
    except LayerError as exc:
        raise VerificationError(str(exc)) from None
    files: dict[str, bytes] = {}
    for path, data in found.items():
        if path.startswith(MODEL_DIR_IN_IMAGE):
            relative = path.removeprefix(MODEL_DIR_IN_IMAGE)
            if "/" in relative:
                raise VerificationError(f"/{path} in the image is not a plain model file")
            files[relative] = data
    if public_key is not None:
        _check_trust_material(found, key_file, public_key)
    return files


def _check_trust_material(found: dict[str, bytes], key_file: str, public_key) -> None:
    from cryptography.hazmat.primitives import serialization

    anchor = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    if key_file not in found:
        raise VerificationError(f"the image has no /{key_file}: its server cannot check the "
                                "model it serves")
    try:
        carried = load_model_public_key(found[key_file]).public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    except ModelSignatureError as exc:
        raise VerificationError(f"/{key_file} in the image: {exc}") from None
    if carried != anchor:
        raise VerificationError(f"the image carries its own key at /{key_file} (key id "
                                f"{hashlib.sha256(carried).hexdigest()[:16]}), not the "
                                "verifier's: its server would accept a model signed by that "
                                "key. Trust comes from the verifier's key alone")
    for path, data in found.items():
        if path == key_file or not path.startswith(EVIDENCE_DIR_IN_IMAGE):
            continue
        if b"-----BEGIN" in data or path.lower().endswith(_KEY_SUFFIXES):
            raise VerificationError(f"the image carries key material at /{path}: the only "
                                    "key an image may carry is the verifier's, at "
                                    f"/{key_file}")


def release_order(version: str | None, min_version: int | None,
                  rollback_to: int | None) -> str:
    """Refuses an image whose signed model version is older than `min_version`, unless
    `rollback_to` names that very version; returns a note for the report.

    "Older" is the MLflow model version number in the signed provenance: versions of one
    registered model are assigned 1, 2, 3... as they are registered and never reused, so a
    lower number is an earlier model. An equal number is the same model (a rebuild or a
    retry) and passes. A tag, a push date or a registry listing is not signed and decides
    nothing."""
    if min_version is None and rollback_to is None:
        return "no minimum version given: not checked for being older"
    if version is None or not _VERSION.fullmatch(str(version)):
        raise VerificationError(f"the signed provenance carries no model version number "
                                f"({version!r}) to order it by")
    number = int(version)
    if rollback_to is not None:
        if number != rollback_to:
            raise VerificationError(f"a rollback to v{rollback_to} was asked for; this image "
                                    f"is v{number}")
        return f"rollback to v{number}, asked for by name"
    if number < min_version:
        raise VerificationError(f"this image is v{number}, older than v{min_version}, the "
                                "current release: a rollback must be asked for by name "
                                f"(--rollback-to {number})")
    return f"v{number} is not older than v{min_version}"


def _verify_model_in_image(files: dict[str, bytes], public_key, pinned: str | None) -> list[str]:
    import tempfile

    from cryptography.hazmat.primitives import serialization

    if SIGNATURE_FILE not in files:
        raise VerificationError(f"the image has no /{MODEL_DIR_IN_IMAGE}{SIGNATURE_FILE}")
    if hashlib.sha256(files[SIGNATURE_FILE]).hexdigest() != pinned:
        raise VerificationError("the model signature in the image is not the one the image "
                                "signature pins")
    with tempfile.TemporaryDirectory(prefix="rice-verify-") as scratch:
        root = Path(scratch)
        (root / "key.pub").write_bytes(public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        (root / "model").mkdir()
        for relative, data in files.items():
            (root / "model" / relative).write_bytes(data)
        try:
            verify_model_dir(root / "model", root / "key.pub")
        except ModelSignatureError as exc:
            raise VerificationError(f"model files in the image: {exc}") from None
    return sorted(files)


def signed_release(registry: Registry, name: str, image_digest: str, public_key) -> dict:
    """The signature over `name@image_digest` and the provenance it pins, checked with
    `public_key`; returns what the provenance says (no layer is read)."""
    try:
        registry.manifest(name, image_digest)
        signature_blob, _ = registry.attachment(name, image_digest, "signature")
        pins = _signed_statement(signature_blob, public_key, image_digest,
                                 IMAGE_SIGNATURE)["predicate"]
        provenance_blob, _ = registry.attachment(name, image_digest, "provenance")
    except RegistryError as exc:
        raise VerificationError(str(exc)) from None
    if hashlib.sha256(provenance_blob).hexdigest() != pins.get("provenance_sha256"):
        raise VerificationError("the provenance attached is not the one the signature pins")
    document = _signed_statement(provenance_blob, public_key, image_digest, SLSA_PROVENANCE)
    definition = document["predicate"]["buildDefinition"]
    materials = {d.get("name"): d for d in definition["resolvedDependencies"]}
    run = materials.get("mlflow-run", {}).get("annotations", {}).get("mlflow_run_id")
    return {"image": f"{name}@{image_digest}", "pins": pins,
            "source_commit": definition["externalParameters"].get("source_commit"),
            "mlflow_run_id": run, "model_version":
                definition["internalParameters"].get("model_version"),
            "materials": definition["resolvedDependencies"],
            "builder": document["predicate"]["runDetails"],
            "signature_manifest": digest_of(signature_blob)}


def verify_image(registry: Registry, name: str, image_digest: str, public_key, *,
                 expected_commit: str | None = None, min_version: int | None = None,
                 rollback_to: int | None = None, bounds: Bounds = DEFAULT_BOUNDS) -> dict:
    """Check the signature, provenance and SBOM attached to `name@image_digest`.

    `expected_commit` (when not None) must be the provenance's source commit ("" for none);
    an image whose signed model version is below `min_version` is refused unless
    `rollback_to` names it (`release_order`). Then reads every layer (bounded) and checks
    /opt/model against the model signature the image signature pins, and the key the
    image's server uses against `public_key`. Returns what they say; raises
    VerificationError otherwise.
    """
    from rice_mlops.release.sbom import components_of

    release = signed_release(registry, name, image_digest, public_key)
    pins = release["pins"]
    if expected_commit is not None:
        expected = expected_commit.strip().lower()
        if expected and not _COMMIT.fullmatch(expected):
            raise VerificationError(f"the expected commit {expected_commit!r} is not a full "
                                    "git sha")
        if (release["source_commit"] or "") != expected:
            raise VerificationError(f"the provenance says commit "
                                    f"{release['source_commit'] or '(none)'}, not the expected "
                                    f"{expected or '(none)'}")
    order = release_order(release["model_version"], min_version, rollback_to)
    try:
        sbom_blob, _ = registry.attachment(name, image_digest, "sbom")
    except RegistryError as exc:
        raise VerificationError(str(exc)) from None
    if hashlib.sha256(sbom_blob).hexdigest() != pins.get("sbom_sha256"):
        raise VerificationError("the SBOM attached is not the one the signature pins")
    try:
        model_files = image_model_files(registry, name, image_digest, bounds, public_key)
    except RegistryError as exc:
        raise VerificationError(str(exc)) from None
    verified_files = _verify_model_in_image(model_files, public_key,
                                            pins.get("model_signature_sha256"))
    return {**release, "verified": True, "release_order": order,
            "sbom": components_of(json.loads(sbom_blob)), "model_files": verified_files}
