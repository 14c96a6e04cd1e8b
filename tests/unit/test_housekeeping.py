"""Which staging directories and local tags a run's housekeeping drops."""

from __future__ import annotations

import os

from rice_mlops.release.housekeeping import prune, stale_run_dirs, stale_tags

RUNS = [f"{i:032x}" for i in range(1, 6)]  # oldest first


def _staging(tmp_path):
    for age, run in enumerate(reversed(RUNS)):
        (tmp_path / run / "model_artifact").mkdir(parents=True)
        os.utime(tmp_path / run, (1_000_000 - age * 100, 1_000_000 - age * 100))
    (tmp_path / "wheels" / "wheels-abc").mkdir(parents=True)
    (tmp_path / "datasets").mkdir()
    return tmp_path


def test_the_newest_runs_and_shared_caches_stay(tmp_path):
    root = _staging(tmp_path)
    assert [p.name for p in stale_run_dirs(root, keep=2)] == [RUNS[2], RUNS[1], RUNS[0]]
    assert stale_run_dirs(root, keep=10) == []
    # The running run is never removed, however old its directory looks.
    assert RUNS[0] not in [p.name for p in stale_run_dirs(root, keep=0, current=RUNS[0])]


def test_prune_removes_directories_without_a_docker_engine(tmp_path):
    root = _staging(tmp_path)
    report = prune(root, keep=3, current=RUNS[4], image_name="rice-classifier",
                   docker_socket=None)
    assert sorted(report.removed_dirs) == sorted(RUNS[:2])
    assert report.kept == sorted(RUNS[2:])
    assert sorted(p.name for p in root.iterdir()) == sorted([*RUNS[2:], "wheels", "datasets"])


def test_stale_tags_keep_latest_and_images_other_runs_still_use():
    build = "rice-classifier-build:" + RUNS[0]
    tags = [build, "127.0.0.1:5000/rice-classifier:abc123", "127.0.0.1:5000/rice-classifier:latest"]
    assert stale_tags(tags, build) == tags[:2]
    shared = [*tags, "rice-classifier-build:" + RUNS[1]]
    assert stale_tags(shared, build) == [build]


def test_a_registry_name_with_a_port_is_not_mistaken_for_a_build_tag():
    build = "127.0.0.1:5000/rice-build:" + RUNS[0]
    tags = [build, "127.0.0.1:5000/rice:abc123"]
    assert stale_tags(tags, build) == tags


def test_an_engine_that_does_not_answer_leaves_tags_and_still_prunes(tmp_path):
    root = _staging(tmp_path)
    dead = tmp_path / "dead.sock"
    dead.touch()  # a socket path nothing listens on
    report = prune(root, keep=4, current=None, image_name="rice-classifier", docker_socket=dead)
    assert report.removed_dirs == [RUNS[0]] and report.removed_tags == []
