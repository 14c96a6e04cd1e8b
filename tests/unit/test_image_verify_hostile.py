"""`image verify` against hostile images built in-test as OCI layers on an in-memory registry:
every layer is read (a big top layer too), bounded, whiteouts honoured, links refused, the
trust anchor is the verifier's key alone, and an older signed release needs a named rollback."""

from __future__ import annotations

import json
import os

import httpx
import pytest

from rice_mlops.release.attestation import (
    VerificationError,
    attach_evidence,
    provenance,
    release_order,
    verify_image,
)
from rice_mlops.release.layers import Bounds
from rice_mlops.release.oci import Registry
from rice_mlops.release.signing import (
    generate_keypair,
    load_private_key,
    load_public_key,
    public_pem,
    sign_model_dir,
)
from tests.helpers.oci_double import LAYER_TAR, RegistryDouble, layer, model_layer

NAME = "rice-classifier"
SHA = "a" * 40
BIG = (64 << 20) + 4096  # over the old verifier's 64 MiB "skip this layer" size


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    ours = generate_keypair(tmp_path_factory.mktemp("ours"))
    theirs = generate_keypair(tmp_path_factory.mktemp("theirs"))
    return {"private": load_private_key(ours[0].read_bytes()),
            "public": load_public_key(ours[1].read_bytes()), "pem": ours[1].read_bytes(),
            "their_private": load_private_key(theirs[0].read_bytes()),
            "their_pem": theirs[1].read_bytes()}


def _signed_model(tmp_path, private, tflite: bytes = b"TFL3 ours") -> dict[str, bytes]:
    directory = tmp_path / f"model-{os.urandom(4).hex()}"
    directory.mkdir()
    (directory / "model.tflite").write_bytes(tflite)
    (directory / "labels.json").write_text('{"classes": ["a", "b"]}')
    sign_model_dir(directory, private, {"run_id": "e" * 32})
    return {p.name: p.read_bytes() for p in directory.iterdir()}


BASE = layer(("dir", "usr"), ("dir", "usr/bin"), ("file", "usr/bin/python3", b"\x7fELF"),
             ("dir", "opt"))


def _release(registry, double, keys, model: dict[str, bytes], layers: list[bytes], *,
             version: str = "3", commit: str = SHA, env=None, tag=None, media_types=None,
             sizes=None):
    digest = double.put_image(NAME, layers, env=env, tag=tag, media_types=media_types,
                              sizes=sizes)
    statement = provenance(
        repository=f"{double.host}/{NAME}", image_digest=digest, source_commit=commit,
        source_repository="acme/rice", dataset_fingerprint="sha256:" + "d" * 64,
        mlflow_run_id="e" * 32, tracking_uri="http://mlflow", tflite_sha256="f" * 64,
        lock_files={}, base_image="base:1", base_image_id=None, dag_id="rice_classifier_cicd",
        dag_run_id="r1", model_version=version)
    attach_evidence(registry, NAME, digest, provenance_statement=statement,
                    sbom=json.dumps({"components": []}).encode(),
                    model_signature=model["model.sig.json"], private_key=keys["private"])
    return digest


@pytest.fixture
def world(tmp_path, keys):
    double = RegistryDouble()
    registry = double.client()
    model = _signed_model(tmp_path, keys["private"])
    yield double, registry, model
    registry.close()


def _good_layers(model, keys):
    return [BASE, model_layer(model, keys["pem"])]


def test_an_image_built_as_the_pipeline_builds_it_verifies(world, keys):
    double, registry, model = world
    digest = _release(registry, double, keys, model, _good_layers(model, keys))
    report = verify_image(registry, NAME, digest, keys["public"])
    assert report["model_files"] == ["labels.json", "model.sig.json", "model.tflite"]
    assert report["model_version"] == "3" and report["source_commit"] == SHA


# ---- every layer, top layer wins ----

def test_a_big_top_layer_overwriting_the_model_is_read_and_refused(world, keys):
    """The old verifier skipped layers over 64 MiB: this one replaced the model unseen."""
    double, registry, model = world
    top = layer(("file", "opt/bulk.bin", bytes(BIG)),
                ("file", "opt/model/model.tflite", b"TFL3 backdoor"), compress=False)
    assert len(top) > 64 << 20
    digest = _release(registry, double, keys, model, [*_good_layers(model, keys), top],
                      media_types=[LAYER_TAR] * 3)
    with pytest.raises(VerificationError, match="changed model.tflite"):
        verify_image(registry, NAME, digest, keys["public"])


def test_a_big_top_layer_with_their_own_signed_model_and_key_is_refused(world, keys, tmp_path):
    double, registry, model = world
    theirs = _signed_model(tmp_path, keys["their_private"], b"TFL3 backdoor")
    top = layer(("file", "opt/bulk.bin", bytes(BIG)),
                *(("file", f"opt/model/{n}", d) for n, d in theirs.items()),
                ("file", "opt/rice/evidence/model-signing.pub", keys["their_pem"]),
                compress=False)
    digest = _release(registry, double, keys, model, [*_good_layers(model, keys), top])
    with pytest.raises(VerificationError, match="not the one the image signature pins|own key"):
        verify_image(registry, NAME, digest, keys["public"])


@pytest.mark.parametrize("top, expected", [
    (layer(("whiteout", "opt/model/labels.json")), "missing labels.json"),
    (layer(("opaque", "opt/model"), ("file", "opt/model/model.tflite", b"TFL3 x")),
     "no /opt/model/model.sig.json"),
    (layer(("whiteout", "opt")), "has no /opt/"),
    (layer(("file", "opt/model/extra.py", b"import os")), "unsigned extra.py"),
    (layer(("dir", "opt/model/sub"), ("file", "opt/model/sub/x", b"x")), "not a plain model"),
], ids=["whiteout-file", "opaque-dir", "whiteout-opt", "added-file", "nested"])
def test_whiteouts_and_additions_in_a_top_layer_are_honoured(world, keys, top, expected):
    double, registry, model = world
    digest = _release(registry, double, keys, model, [*_good_layers(model, keys), top])
    with pytest.raises(VerificationError, match=expected):
        verify_image(registry, NAME, digest, keys["public"])


def test_a_file_whited_out_then_restored_above_verifies(world, keys):
    double, registry, model = world
    layers = [*_good_layers(model, keys), layer(("whiteout", "opt/model/model.tflite")),
              layer(("file", "opt/model/model.tflite", model["model.tflite"]))]
    digest = _release(registry, double, keys, model, layers)
    assert verify_image(registry, NAME, digest, keys["public"])["verified"]


@pytest.mark.parametrize("top, expected", [
    (layer(("whiteout", "opt/model"), ("symlink", "opt/model", "/srv/evil")), "symbolic link"),
    (layer(("symlink", "opt", "/srv")), "symbolic link"),
    (layer(("hardlink", "opt/model/model.tflite", "usr/bin/python3")), "hard link"),
    (layer(("symlink", "tmp/m", "/opt/model"), ("file", "tmp/m/model.tflite", b"TFL3 x")),
     "written through a symbolic link"),
    (layer(("file", "opt/model/labels.json", b"{}"), ("file", "opt/model/labels.json", b"[]")),
     "twice in one layer"),
    (layer(("whiteout", "opt/model/labels.json"),
           ("file", "opt/model/labels.json", b"{}")), "whited out and written"),
    (layer(("file", "../etc/x", b"x")), "outside the image's root"),
], ids=["symlink-model-dir", "symlink-opt", "hardlink", "through-link", "twice", "wh-and-file",
        "breakout"])
def test_entries_two_readers_could_apply_differently_are_refused(world, keys, top, expected):
    double, registry, model = world
    digest = _release(registry, double, keys, model, [*_good_layers(model, keys), top])
    with pytest.raises(VerificationError, match=expected):
        verify_image(registry, NAME, digest, keys["public"])


# ---- bounded reading ----

def test_a_gzip_bomb_layer_is_refused_at_the_bound(world, keys):
    double, registry, model = world
    bomb = layer(("file", "var/zeros", bytes(48 << 20)), level=9)
    assert len(bomb) < 1 << 20
    digest = _release(registry, double, keys, model, [*_good_layers(model, keys), bomb])
    with pytest.raises(VerificationError, match=r"bound on image bytes \(8388608\)"):
        verify_image(registry, NAME, digest, keys["public"], bounds=Bounds(image_bytes=8 << 20))
    # the default bound is finite and well under the machine's memory
    assert Bounds().image_bytes <= 8 << 30 and Bounds().members <= 1_000_000


def test_a_layer_of_countless_tiny_entries_is_refused_at_the_bound(world, keys):
    double, registry, model = world
    many = layer(*(("dir", f"d{i}") for i in range(600)))
    digest = _release(registry, double, keys, model, [*_good_layers(model, keys), many])
    with pytest.raises(VerificationError, match="bound on members"):
        verify_image(registry, NAME, digest, keys["public"], bounds=Bounds(members=500))


def test_a_checked_file_over_its_bound_is_refused(world, keys):
    double, registry, model = world
    top = layer(("file", "opt/model/model.tflite", bytes(2 << 20)))
    digest = _release(registry, double, keys, model, [*_good_layers(model, keys), top])
    with pytest.raises(VerificationError, match="bound on one checked file"):
        verify_image(registry, NAME, digest, keys["public"], bounds=Bounds(file_bytes=1 << 20))


def test_data_after_the_tar_end_and_a_wrong_declared_size_are_refused(world, keys):
    import gzip

    double, registry, model = world
    hidden = layer(("file", "opt/model/model.tflite", b"TFL3 hidden"), compress=False)
    smuggled = gzip.compress(layer(("dir", "srv"), compress=False) + hidden)
    digest = _release(registry, double, keys, model, [*_good_layers(model, keys), smuggled])
    with pytest.raises(VerificationError, match="data after the end of its tar"):
        verify_image(registry, NAME, digest, keys["public"])
    trailing = layer(("dir", "srv")) + b"garbage"
    digest = _release(registry, double, keys, model, [*_good_layers(model, keys), trailing])
    with pytest.raises(VerificationError, match="not valid gzip"):
        verify_image(registry, NAME, digest, keys["public"])
    layers = _good_layers(model, keys)
    for sizes, expected in ([len(BASE) + 10, len(layers[1])], "registry sent"), \
            ([len(BASE) - 10, len(layers[1])], "larger than"):
        digest = _release(registry, double, keys, model, layers, sizes=sizes)
        with pytest.raises(VerificationError, match=expected):
            verify_image(registry, NAME, digest, keys["public"])


def test_a_zstd_layer_and_a_truncated_gzip_layer_are_refused_clearly(world, keys):
    double, registry, model = world
    for top, expected in ((b"\x28\xb5\x2f\xfd" + bytes(64), "zstd"),
                          (layer(("file", "srv/x", os.urandom(4096)))[:-100], "mid-stream"),
                          (b"not a tar at all" * 64, "not a readable tar")):
        digest = _release(registry, double, keys, model, [*_good_layers(model, keys), top])
        with pytest.raises(VerificationError, match=expected):
            verify_image(registry, NAME, digest, keys["public"])


# ---- the trust anchor is the verifier's key ----

@pytest.mark.parametrize("extra, env, expected", [
    ([("file", "opt/rice/evidence/model-signing.pub", "THEIRS")], None, "its own key"),
    ([("file", "opt/rice/evidence/extra.pem", "THEIRS")], None, "key material at"),
    ([("file", "opt/rice/evidence/notes.txt", b"-----BEGIN PRIVATE KEY-----\nx\n")], None,
     "key material at"),
    ([("dir", "etc"), ("file", "etc/their.pub", "THEIRS")],
     ["RICE_MODEL_PUBLIC_KEY=/etc/their.pub"], "its own key at /etc/their.pub"),
    ([], ["RICE_MODEL_DIR=/srv/model"], "serves its model from /srv/model"),
    ([("whiteout", "opt/rice/evidence/model-signing.pub")], None, "has no /opt/rice/evidence"),
], ids=["their-key-in-place", "extra-key", "private-key", "env-moves-key", "env-moves-model",
        "no-key"])
def test_a_key_in_the_image_other_than_the_verifiers_is_refused(world, keys, extra, env,
                                                                 expected):
    double, registry, model = world
    extra = [(k, p, *(keys["their_pem"] if r == "THEIRS" else r for r in rest))
             for k, p, *rest in extra]
    digest = _release(registry, double, keys, model, [*_good_layers(model, keys), layer(*extra)],
                      env=env)
    with pytest.raises(VerificationError, match=expected):
        verify_image(registry, NAME, digest, keys["public"])


# ---- commit and release order ----

def test_an_older_signed_release_needs_a_rollback_by_name(world, keys, tmp_path):
    double, registry, model = world
    old = _release(registry, double, keys, model, _good_layers(model, keys), version="3")
    newer = _signed_model(tmp_path, keys["private"], b"TFL3 newer")
    new = _release(registry, double, keys, newer, _good_layers(newer, keys), version="5")
    assert verify_image(registry, NAME, new, keys["public"], min_version=5)["verified"]
    with pytest.raises(VerificationError, match="v3, older than v5"):
        verify_image(registry, NAME, old, keys["public"], min_version=5)
    report = verify_image(registry, NAME, old, keys["public"], min_version=5, rollback_to=3)
    assert report["release_order"] == "rollback to v3, asked for by name"
    with pytest.raises(VerificationError, match="rollback to v4 was asked for"):
        verify_image(registry, NAME, old, keys["public"], min_version=5, rollback_to=4)


def test_the_expected_commit_must_be_the_provenance_s(world, keys):
    double, registry, model = world
    digest = _release(registry, double, keys, model, _good_layers(model, keys))
    assert verify_image(registry, NAME, digest, keys["public"], expected_commit=SHA)
    with pytest.raises(VerificationError, match="not the expected " + "b" * 40):
        verify_image(registry, NAME, digest, keys["public"], expected_commit="b" * 40)
    with pytest.raises(VerificationError, match="not the expected .none."):
        verify_image(registry, NAME, digest, keys["public"], expected_commit="")
    with pytest.raises(VerificationError, match="not a full git sha"):
        verify_image(registry, NAME, digest, keys["public"], expected_commit="a" * 7)


@pytest.mark.parametrize("version", ["", "v3", "3.1", "٣", None, "1" * 19])
def test_a_version_that_cannot_be_ordered_is_refused_when_order_matters(version):
    assert "not checked" in release_order(version, None, None)
    with pytest.raises(VerificationError, match="no model version number"):
        release_order(version, 2, None)


def _cli(monkeypatch, double, capsys, *args):
    import rice_mlops.release.oci as oci
    from rice_mlops.operations.cli import main

    monkeypatch.setattr(oci, "Registry", lambda host, user, password: Registry(
        double.origin, user, password, transport=httpx.MockTransport(double.handle)))
    monkeypatch.setenv("REGISTRY_USERNAME", double.username)
    monkeypatch.setenv("REGISTRY_PASSWORD", double.password)
    code = main(["image", "verify", *args])
    return code, capsys.readouterr()


def test_cli_refuses_a_release_older_than_latest_unless_rolled_back_by_name(
        world, keys, tmp_path, monkeypatch, capsys):
    double, registry, model = world
    old = _release(registry, double, keys, model, _good_layers(model, keys), version="3")
    newer = _signed_model(tmp_path, keys["private"], b"TFL3 newer")
    _release(registry, double, keys, newer, _good_layers(newer, keys), version="5",
             tag="latest")
    key = tmp_path / "ours.pub"
    key.write_bytes(keys["pem"])
    reference = f"{double.host}/{NAME}@{old}"
    code, out = _cli(monkeypatch, double, capsys, reference, "--key", str(key))
    assert code == 1 and "older than v5" in out.err and "--rollback-to 3" in out.err
    code, out = _cli(monkeypatch, double, capsys, reference, "--key", str(key),
                     "--rollback-to", "3", "--expected-commit", SHA)
    assert code == 0, out.err
    assert json.loads(out.out)["release_order"].startswith("rollback to v3, asked for by name")
    code, out = _cli(monkeypatch, double, capsys, reference, "--key", str(key),
                     "--min-version", "2", "--expected-commit", "c" * 40)
    assert code == 1 and "not the expected" in out.err
    assert double.password not in out.err + out.out


def test_cli_refuses_when_latest_does_not_verify(world, keys, tmp_path, monkeypatch, capsys):
    double, registry, model = world
    digest = _release(registry, double, keys, model, _good_layers(model, keys), version="3")
    double.put_image(NAME, [BASE], tag="latest")  # unsigned
    key = tmp_path / "ours.pub"
    key.write_bytes(keys["pem"])
    code, out = _cli(monkeypatch, double, capsys, f"{double.host}/{NAME}@{digest}", "--key",
                     str(key))
    assert code == 1 and "latest" in out.err and "--min-version" in out.err
    code, out = _cli(monkeypatch, double, capsys, f"{double.host}/{NAME}@{digest}", "--key",
                     str(key), "--min-version", "3")
    assert code == 0, out.err


def test_their_public_pem_is_not_ours(keys):
    assert public_pem(keys["private"]) == keys["pem"] != keys["their_pem"]
