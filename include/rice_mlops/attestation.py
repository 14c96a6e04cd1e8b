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
and every subject names the digest asked about.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from rice_mlops.oci import Registry, RegistryError, digest_of
from rice_mlops.serving.model_signature import (
    SIGNATURE_FILE,
    ModelSignatureError,
    verify_envelope,
    verify_model_dir,
)
from rice_mlops.signing import sign_envelope, statement

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
MAX_LAYER_BYTES = 64 << 20  # the model's layer is small; site-packages layers are skipped


def image_model_files(registry: Registry, name: str, image_digest: str) -> dict[str, bytes]:
    """The files under /opt/model in the image, read from its small layers, top layer first
    (a file in a higher layer hides the same path below)."""
    import gzip
    import io
    import tarfile

    manifest = json.loads(registry.manifest(name, image_digest)[0])
    files: dict[str, bytes] = {}
    for layer in reversed(manifest.get("layers") or []):
        if int(layer.get("size", 0)) > MAX_LAYER_BYTES:
            continue
        data = registry.blob(name, layer["digest"], limit=MAX_LAYER_BYTES)
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for member in tar.getmembers():
                path = member.name.removeprefix("./")
                relative = path.removeprefix(MODEL_DIR_IN_IMAGE)
                if not path.startswith(MODEL_DIR_IN_IMAGE) or relative in files or \
                        member.isdir():
                    continue
                if "/" in relative or relative.startswith(".wh.") or not member.isfile():
                    raise VerificationError(f"/{path} in the image is not a plain model file")
                files[relative] = tar.extractfile(member).read()
    return files


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


def verify_image(registry: Registry, name: str, image_digest: str, public_key) -> dict:
    """Check the signature, provenance and SBOM attached to `name@image_digest`.

    Then reads /opt/model from the image's layers and checks it against the model signature
    (which the image signature pins). Returns what they say (materials, SBOM components, model
    files); raises VerificationError otherwise.
    """
    from rice_mlops.sbom import components_of

    try:
        registry.manifest(name, image_digest)
        signature_blob, _ = registry.attachment(name, image_digest, "signature")
        pins = _signed_statement(signature_blob, public_key, image_digest,
                                 IMAGE_SIGNATURE)["predicate"]
        provenance_blob, _ = registry.attachment(name, image_digest, "provenance")
        sbom_blob, _ = registry.attachment(name, image_digest, "sbom")
        model_files = image_model_files(registry, name, image_digest)
    except RegistryError as exc:
        raise VerificationError(str(exc)) from None
    if hashlib.sha256(provenance_blob).hexdigest() != pins.get("provenance_sha256"):
        raise VerificationError("the provenance attached is not the one the signature pins")
    if hashlib.sha256(sbom_blob).hexdigest() != pins.get("sbom_sha256"):
        raise VerificationError("the SBOM attached is not the one the signature pins")
    document = _signed_statement(provenance_blob, public_key, image_digest, SLSA_PROVENANCE)
    verified_files = _verify_model_in_image(model_files, public_key,
                                            pins.get("model_signature_sha256"))
    definition = document["predicate"]["buildDefinition"]
    materials = {d.get("name"): d for d in definition["resolvedDependencies"]}
    run = materials.get("mlflow-run", {}).get("annotations", {}).get("mlflow_run_id")
    return {"image": f"{name}@{image_digest}", "verified": True,
            "source_commit": definition["externalParameters"].get("source_commit"),
            "mlflow_run_id": run, "model_version":
                definition["internalParameters"].get("model_version"),
            "materials": definition["resolvedDependencies"],
            "builder": document["predicate"]["runDetails"],
            "sbom": components_of(json.loads(sbom_blob)), "pins": pins,
            "model_files": verified_files,
            "signature_manifest": digest_of(signature_blob)}
