"""The pipeline's Ed25519 key: generate it, load it, sign DSSE envelopes and model directories.

The private key comes only from the file RICE_SIGNING_KEY_FILE, which only the release worker
mounts (README, "The zones"); an Airflow connection would put it in reach of every task,
since a task may read any connection. It is passed as an object, never logged, put on a
command line, in XCom or in the image. Verification lives in
`rice_mlops.serving.model_signature`, the one implementation the server runs too.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from rice_mlops.serving.model_signature import (
    MODEL_PREDICATE,
    PAYLOAD_TYPE,
    SIGNATURE_FILE,
    STATEMENT_TYPE,
    ModelSignatureError,
    file_digests,
    key_id,
    load_public_key,
    pae,
    verify_envelope,
)

__all__ = ["ModelSignatureError", "key_id", "load_public_key", "verify_envelope"]
PRIVATE_KEY_FILE = "signing.key"
PUBLIC_KEY_FILE = "signing.pub"


class SigningKeyError(RuntimeError):
    """No usable signing key is configured; the message says where one is looked for."""


def load_private_key(pem: bytes):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (TypeError, ValueError):
        # The exception text can quote the input: never let it near a log.
        raise SigningKeyError("the signing key is not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"the signing key is {type(key).__name__}, not Ed25519")
    return key


def public_pem(private_key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return private_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)


def signing_key(key_file: str):
    """The pipeline's private key, from the release worker's key file."""
    if key_file:
        path = Path(key_file)
        if not path.is_file():
            raise SigningKeyError(f"RICE_SIGNING_KEY_FILE={key_file} does not exist")
        return load_private_key(path.read_bytes())
    raise SigningKeyError(
        "no signing key: point RICE_SIGNING_KEY_FILE at an Ed25519 PEM private key on the "
        "release (Docker-queue) worker (`rice-mlops keys generate --dir DIR` makes a pair)")


def generate_keypair(directory: Path) -> tuple[Path, Path]:
    """A new Ed25519 pair in `directory`: signing.key (0600, refused if present), signing.pub."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    directory.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    private = directory / PRIVATE_KEY_FILE
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    # O_EXCL: never overwrite a key that may already have signed released images.
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    public = directory / PUBLIC_KEY_FILE
    public.write_bytes(public_pem(key))
    public.chmod(0o644)
    return private, public


def sign_envelope(payload: bytes, private_key, payload_type: str = PAYLOAD_TYPE) -> dict:
    """A DSSE envelope over `payload` with one Ed25519 signature."""
    signature = private_key.sign(pae(payload_type, payload))
    return {"payloadType": payload_type, "payload": base64.b64encode(payload).decode(),
            "signatures": [{"keyid": key_id(private_key.public_key()),
                            "sig": base64.b64encode(signature).decode()}]}


def statement(subjects: list[dict], predicate_type: str, predicate: dict) -> bytes:
    """An in-toto Statement v1, canonically serialised (sorted keys, no spaces)."""
    document = {"_type": STATEMENT_TYPE, "subject": subjects, "predicateType": predicate_type,
                "predicate": predicate}
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def sign_model_dir(model_dir: Path, private_key, predicate: dict) -> Path:
    """Sign every file of `model_dir` (written last: nothing may be added after it)."""
    subjects = [{"name": name, "digest": {"sha256": digest}}
                for name, digest in file_digests(model_dir).items()]
    envelope = sign_envelope(statement(subjects, MODEL_PREDICATE, predicate), private_key)
    target = model_dir / SIGNATURE_FILE
    target.write_text(json.dumps(envelope, indent=2, sort_keys=True) + "\n")
    return target
