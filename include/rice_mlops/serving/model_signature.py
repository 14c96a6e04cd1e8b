"""Refuse to serve a model whose files are not exactly what the pipeline signed.

`verify_model_dir(model_dir, public_key_path)` checks `model.sig.json` in the model directory:
a DSSE envelope (https://github.com/secure-systems-lab/dsse, Ed25519) over an in-toto
statement whose subjects are every file of the directory with its sha256. A file added,
removed or changed after signing, another key, or a forged envelope raises
ModelSignatureError naming what failed. Self-contained (standard library and `cryptography`)
because the serving image carries only the `serving` package; rice_mlops.release.signing imports its
DSSE primitives from here so the pipeline and the server share one implementation.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

SIGNATURE_FILE = "model.sig.json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
MODEL_PREDICATE = "https://rice-mlops.dev/model-files/v1"
DEFAULT_PUBLIC_KEY = "/opt/rice/evidence/model-signing.pub"
_MAX_ENVELOPE_BYTES = 1 << 20


class ModelSignatureError(RuntimeError):
    """The model directory does not verify; the message says why."""


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what is actually signed."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def key_id(public_key) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def load_public_key(pem: bytes):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise ModelSignatureError(f"not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ModelSignatureError(f"the public key is {type(key).__name__}, not Ed25519")
    return key


def verify_envelope(envelope: object, public_key, payload_type: str = PAYLOAD_TYPE) -> bytes:
    """The payload of a DSSE envelope that one of its signatures verifies with `public_key`."""
    from cryptography.exceptions import InvalidSignature

    if not isinstance(envelope, dict) or not isinstance(envelope.get("signatures"), list):
        raise ModelSignatureError("not a DSSE envelope (no signatures list)")
    if envelope.get("payloadType") != payload_type:
        raise ModelSignatureError(f"payload type {envelope.get('payloadType')!r}, expected "
                                  f"{payload_type!r}")
    try:
        payload = base64.b64decode(envelope["payload"], validate=True)
    except (KeyError, TypeError, ValueError):
        raise ModelSignatureError("the envelope's payload is not base64") from None
    for signature in envelope["signatures"]:
        try:
            public_key.verify(base64.b64decode(signature["sig"], validate=True),
                              pae(payload_type, payload))
        except (InvalidSignature, KeyError, TypeError, ValueError):
            continue
        return payload
    raise ModelSignatureError(f"no signature in the envelope verifies with key "
                              f"{key_id(public_key)[:16]}")


def file_digests(directory: Path) -> dict[str, str]:
    """{relative posix path: sha256} of every file under `directory` but the signature."""
    digests = {}
    for path in sorted(directory.rglob("*")):
        if path.is_symlink():
            raise ModelSignatureError(f"{path} is a symbolic link: not signed content")
        if path.is_file() and path.relative_to(directory).as_posix() != SIGNATURE_FILE:
            digest = hashlib.sha256()
            with path.open("rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
            digests[path.relative_to(directory).as_posix()] = digest.hexdigest()
    return digests


def verify_model_dir(model_dir: str | Path, public_key_path: str | Path) -> dict:
    """Check the model directory against its signature; returns the signed statement."""
    model_dir, key_path = Path(model_dir), Path(public_key_path)
    if not key_path.is_file():
        raise ModelSignatureError(f"no public key at {key_path}: refusing to serve an "
                                  "unverifiable model")
    signature = model_dir / SIGNATURE_FILE
    if not signature.is_file():
        raise ModelSignatureError(f"{signature} is missing: the model is not signed")
    if signature.stat().st_size > _MAX_ENVELOPE_BYTES:
        raise ModelSignatureError(f"{signature} is larger than {_MAX_ENVELOPE_BYTES} bytes")
    try:
        envelope = json.loads(signature.read_bytes())
    except ValueError as exc:
        raise ModelSignatureError(f"{signature} is not JSON ({exc})") from None
    payload = verify_envelope(envelope, load_public_key(key_path.read_bytes()))
    statement = json.loads(payload)
    if statement.get("_type") != STATEMENT_TYPE or \
            statement.get("predicateType") != MODEL_PREDICATE:
        raise ModelSignatureError("the signed statement is not a model-files statement")
    signed = {s["name"]: s["digest"]["sha256"] for s in statement.get("subject", [])}
    actual = file_digests(model_dir)
    problems = [f"missing {n}" for n in sorted(set(signed) - set(actual))]
    problems += [f"unsigned {n}" for n in sorted(set(actual) - set(signed))]
    problems += [f"changed {n}" for n in sorted(set(signed) & set(actual))
                 if signed[n] != actual[n]]
    if problems:
        raise ModelSignatureError(f"{model_dir} differs from what was signed: "
                                  + "; ".join(problems))
    return statement
