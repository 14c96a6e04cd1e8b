"""A release context prepared as the release zone's tests prepare one: no wheels vendored
(`no_wheels` stands in for the download), the smoke set from a dataset of the five
classes, a bar and a floor."""

from __future__ import annotations

CLASSES = ["Arborio", "Basmati", "Ipsala", "Jasmine", "Karacadag"]


def no_wheels(target, cache_root, **_):
    target.mkdir(parents=True, exist_ok=True)
    return []


def prepare(staged, out, digests, dataset, key_file, *, bar=0.0, floor=0.0):
    from rice_mlops.release.image import prepare_context
    from rice_mlops.release.intake import smoke_set
    from rice_mlops.release.signing import load_private_key

    return prepare_context(
        staged, out, metadata={"run_id": "0" * 32, "model_version": "1"}, digests=digests,
        smoke_from=smoke_set(dataset, CLASSES), min_test_accuracy=bar, min_class_recall=floor,
        wheel_cache=out.parent / "wheels", model_card="# card\n",
        signing_key=load_private_key(key_file.read_bytes()))
