"""The serving image: its build context (server, model, and the wheels `rice_mlops.release.wheels`
vendors), names and tags.

`prepare_context` lays out everything `docker build` needs so that the build itself needs no
network; the same function serves the DAG and `rice-mlops image build`. It runs in the release
zone: the Dockerfile, the server and the push step are this installed package's own
(`verify_owned` checks a context against it before a build), and the model enters only as
bytes checked against digests recorded at training (`rice_mlops.release.intake`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rice_mlops.core.vocabulary import MODEL_NAME

if TYPE_CHECKING:
    from rice_mlops.core.handoffs import BuildContext, Trained
    from rice_mlops.core.settings import PipelineSettings

# prepare_context calls vendor_wheels through this module (tests replace it here);
# download_wheels stays importable from here for older callers.
from rice_mlops.release.wheels import download_wheels, vendor_wheels  # noqa: F401

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # rice_mlops/
REPO_ROOT = PACKAGE_DIR.parents[1]
DEFAULT_DOCKERFILE = REPO_ROOT / "Dockerfile"
DEFAULT_BASE_IMAGE = "python:3.11-slim"  # the Dockerfile's ARG BASE_IMAGE
# Debian packages the Dockerfile purges from the runtime's root (its ARG RUNTIME_PURGED): a
# Python server runs neither perl nor apt. The SBOM leaves them out (stages.release).
RUNTIME_PURGED = ("apt", "debconf", "libapt-pkg6.0", "perl-base")
SERVING_INIT = '"""rice-mlops serving runtime."""\n'  # app/rice_mlops/__init__.py
CONTEXT_DIR = "image"  # beside model_artifact/ in a run's staging directory
_TAG_OK = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class ImageNames:
    repository: str  # registry/name, or a bare name for a local-only image
    tag: str  # immutable: the source commit, or the MLflow run id when there is none

    @property
    def immutable(self) -> str:
        return f"{self.repository}:{self.tag}"

    @property
    def latest(self) -> str:
        return f"{self.repository}:latest"


def image_names(registry: str | None, name: str, source_commit: str | None,
                run_id: str) -> ImageNames:
    tag = _TAG_OK.sub("-", source_commit or f"run-{run_id}")[:128]
    repository = f"{registry.rstrip('/')}/{name}" if registry else name
    return ImageNames(repository=repository, tag=tag)


def prepare_context(
    model_dir: Path,
    out_dir: Path,
    *,
    metadata: dict,
    digests: dict[str, str],
    smoke_from: list[tuple[Path, str]],
    min_test_accuracy: float,
    min_class_recall: float,
    wheel_cache: Path,
    wheelhouse: Path | None = None,
    dockerfile: Path = DEFAULT_DOCKERFILE,
    signing_key=None,
    model_card: str | None = None,
    base_image: tuple[str, str | None] = ("", None),
    base_packages: list[dict] | None = None,
) -> Path:
    """Write a complete build context to `out_dir` (replaced atomically); returns it.

    Only two files of `model_dir` are read, model.tflite and labels.json, and only once their
    copies match `digests` (recorded at training; see `rice_mlops.release.intake`): an MLmodel, a
    pickle or a `code/` directory beside them is never opened. The Dockerfile and the server
    (app/) come from this installed package, never from a model or staging directory.
    Before anything is built, LiteRT scores the copied TFLite file on `smoke_from` (the test
    split, bounded): below `min_test_accuracy` or a class's `min_class_recall` it raises
    `release.BelowBar`. The figures go into model/metadata.json and the model card; `smoke/`
    holds the images, their true classes and LiteRT's probabilities, for the smoke test that
    measures again inside the image (.dockerignore keeps it out of the image).
    MANIFEST.sha256 lists every file. Release evidence (see `_add_evidence`): MODEL_CARD.md in
    model/, the SBOM and the public key in evidence/, and model/model.sig.json over every model
    file, signed last.
    """
    from rice_mlops.core.staged_artifacts import MANIFEST, write_manifest
    from rice_mlops.monitoring.drift import Reference, observe
    from rice_mlops.release.intake import (
        DRIFT_REFERENCE,
        LATENCY_PER_CLASS,
        BelowBar,
        card_section,
        litert_outputs,
        measure,
        take_model_bytes,
    )

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        classes = take_model_bytes(model_dir, digests, partial / "model")
        images = [path for path, _ in smoke_from]
        probabilities, statistics = litert_outputs(partial / "model" / "model.tflite", images)
        predicted = [classes[max(range(len(p)), key=p.__getitem__)] for p in probabilities]
        measurement = measure([cls for _, cls in smoke_from], predicted, classes,
                              min_test_accuracy=min_test_accuracy,
                              min_class_recall=min_class_recall)
        if not measurement.passed:
            raise BelowBar("not built: the release zone measured the model's own TFLite bytes "
                           f"on {measurement.images} test images: "
                           + "; ".join(measurement.refusals))
        release = {"accuracy": measurement.accuracy, "correct": measurement.correct,
                   "images": measurement.images, "recall": measurement.recall,
                   "measured_by": "release zone, LiteRT on the shipped TFLite bytes"}
        metadata = {**metadata, "release_measurement": release}
        shutil.copy(dockerfile, partial / "Dockerfile")
        (partial / ".dockerignore").write_text(f"smoke\n{MANIFEST}\n")
        app = partial / "app" / "rice_mlops"
        shutil.copytree(PACKAGE_DIR / "serving", app / "serving",
                        ignore=shutil.ignore_patterns("__pycache__", "*.sh"))
        (app / "__init__.py").write_text(SERVING_INIT)
        if model_card is not None:
            where = f"LiteRT on model.tflite (sha256 {digests['tflite/model.tflite']})"
            (partial / "model" / "MODEL_CARD.md").write_text(
                model_card.rstrip("\n") + card_section(measurement, where))
            metadata = {**metadata, "model_card": "MODEL_CARD.md"}
        (partial / "model" / "metadata.json").write_text(
            json.dumps({**metadata, "classes": classes}, indent=2, sort_keys=True) + "\n")
        vendor_wheels(partial / "wheels", wheel_cache, wheelhouse=wheelhouse)
        _add_evidence(partial, metadata, signing_key, base_image, base_packages)
        smoke = partial / "smoke" / "images"
        smoke.mkdir(parents=True)
        items, seen = [], {}
        for index, ((source, label), probs, cls) in enumerate(
                zip(smoke_from, probabilities, predicted, strict=True)):
            item = {"file": f"images/{index:04d}{source.suffix.lower()}", "source": source.name,
                    "label": label, "class": cls, "probabilities": probs}
            shutil.copyfile(source, partial / "smoke" / item["file"])
            items.append(item)
            seen[label] = seen.get(label, 0) + 1
            item["latency"] = seen[label] <= LATENCY_PER_CLASS
        # What these bytes answer on the test split: the drift reference the monitoring
        # compares the served version's logs with, computed here, in the release zone, never
        # taken from MLflow (which the compute zone writes too).
        (partial / "smoke" / DRIFT_REFERENCE).write_text(Reference(
            str(metadata["model_version"]), tuple(classes),
            observe(predicted, probabilities, statistics)).to_json())
        (partial / "smoke" / "expected.json").write_text(json.dumps(
            {"classes": classes, "tflite_sha256": digests["tflite/model.tflite"],
             "release_measurement": release, "images": items,
             "latency_images": [i["file"] for i in items if i.pop("latency")]}, indent=2) + "\n")
        for directory in [partial, *[p for p in partial.rglob("*") if p.is_dir()]]:
            os.chmod(directory, 0o755)  # the image runs as another user and reads smoke/
        write_manifest(partial)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.rename(partial, out_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return out_dir


def _add_evidence(context: Path, metadata: dict, signing_key, base_image: tuple[str, str | None],
                  base_packages: list[dict] | None) -> None:
    """evidence/sbom.cdx.json (the wheels and the base image's Debian packages),
    evidence/model-signing.pub, and model/model.sig.json over every model file."""
    from rice_mlops.release.sbom import cyclonedx, python_components
    from rice_mlops.release.signing import public_pem, sign_model_dir

    evidence = context / "evidence"
    evidence.mkdir()
    document = cyclonedx(image_name=metadata.get("model_name") or MODEL_NAME,
                         image_version=str(metadata.get("model_version") or "unknown"),
                         python=python_components((context / "wheels").glob("*.whl")),
                         debian=base_packages or [], base_image=base_image[0] or "(Dockerfile)",
                         base_image_id=base_image[1])
    (evidence / "sbom.cdx.json").write_text(json.dumps(document, indent=2) + "\n")
    if signing_key is not None:
        (evidence / "model-signing.pub").write_bytes(public_pem(signing_key))
        sign_model_dir(context / "model", signing_key, {
            key: metadata.get(key) for key in ("model_name", "model_version", "run_id",
                                               "source_commit", "dataset_fingerprint")})


class NotOwned(RuntimeError):
    """A build context's Dockerfile or server code is not this installed package's own."""


def push_script() -> str:
    """The push step (serving/push.sh) of this installed package, as text for `sh -c`."""
    return (PACKAGE_DIR / "serving" / "push.sh").read_text()


def _owned_files(dockerfile: Path = DEFAULT_DOCKERFILE) -> dict[str, bytes]:
    """{context path: bytes} of everything in a build context that is code: the Dockerfile,
    .dockerignore and the server package, as this worker's own package holds them."""
    from rice_mlops.core.staged_artifacts import MANIFEST

    files = {"Dockerfile": dockerfile.read_bytes(),
             ".dockerignore": f"smoke\n{MANIFEST}\n".encode(),
             "app/rice_mlops/__init__.py": SERVING_INIT.encode()}
    serving = PACKAGE_DIR / "serving"
    for path in serving.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".sh":
            files[f"app/rice_mlops/serving/{path.relative_to(serving).as_posix()}"] = \
                path.read_bytes()
    return files


def verify_owned(context: Path, dockerfile: Path = DEFAULT_DOCKERFILE) -> None:
    """Raise NotOwned unless the context's Dockerfile, .dockerignore and app/ are exactly this
    installed package's (no file changed, added or missing): the build runs no code that came
    from anywhere else."""
    owned = _owned_files(dockerfile)
    present = {p.relative_to(context).as_posix() for p in (context / "app").rglob("*")
               if p.is_file() or p.is_symlink()}
    present |= {name for name in ("Dockerfile", ".dockerignore") if (context / name).exists()}
    problems = [f"unexpected {name}" for name in sorted(present - set(owned))]
    problems += [f"missing {name}" for name in sorted(set(owned) - present)]
    problems += [f"{name} differs from the installed package's"
                 for name in sorted(set(owned) & present)
                 if (context / name).is_symlink() or (context / name).read_bytes() != owned[name]]
    if problems:
        raise NotOwned("; ".join(problems))


def build_args(metadata: dict, base_image: str | None,
               build_image: str | None = None) -> dict[str, str]:
    """The Dockerfile's build arguments: the run's metadata, the packages its runtime root
    purges, and the base and build-stage images when set (else the Dockerfile's defaults)."""
    args = {"SOURCE_COMMIT": metadata.get("source_commit") or "unknown",
            "MLFLOW_RUN_ID": metadata.get("run_id") or "unknown",
            "MODEL_VERSION": str(metadata.get("model_version") or "unknown"),
            "MODEL_NAME": metadata.get("model_name") or MODEL_NAME,
            "RUNTIME_PURGED": " ".join(RUNTIME_PURGED)}
    if base_image:
        args["BASE_IMAGE"] = base_image
    if build_image:
        args["BUILD_IMAGE"] = build_image
    return args


def build_command(context: Path, names: ImageNames, args: dict[str, str],
                  extra_tags: tuple[str, ...] = ()) -> list[str]:
    """`docker build` arguments (after the `docker` binary) for the legacy builder."""
    command = ["build", "--network", "none", "--pull=false"]
    for key, value in sorted(args.items()):
        command += ["--build-arg", f"{key}={value}"]
    for tag in (names.immutable, names.latest, *extra_tags):
        command += ["-t", tag]
    return [*command, str(context)]


def run_tag(name: str, run_id: str) -> str:
    """A local tag unique to one training run: what the smoke test runs and the push re-tags,
    so re-running an old run's push publishes that run's image, not a later build's."""
    return f"{name}-build:{_TAG_OK.sub('-', run_id)[:128]}"


def image_metadata(*, model_name: str, model_version: str | None, run_id: str,
                   source_commit: str | None, dataset_fingerprint: str | None,
                   image_size: int | None) -> dict:
    """What the image says about itself at /metadata and in its labels (the DAG and the CLI)."""
    return {"model_name": model_name, "model_version": model_version, "run_id": run_id,
            "source_commit": source_commit or None, "dataset_fingerprint": dataset_fingerprint,
            "image_size": image_size}


@dataclass(frozen=True)
class ImagePlan:
    """Everything the Docker tasks of one training run touch, derived from validated values
    (the run id, the source commit, the configured registry and name), never read back."""

    run_id: str
    context: Path
    names: ImageNames
    local: str  # this run's build tag: what the smoke test runs and the push re-tags
    registry: str | None

    @property
    def smoke_dir(self) -> Path:
        return self.context / "smoke"

    def build_argv(self, base_image: str | None, build_image: str | None = None) -> list[str]:
        """`docker build` arguments; the build args come from the context's own metadata."""
        metadata = json.loads((self.context / "model" / "metadata.json").read_text())
        return build_command(self.context, self.names,
                             build_args(metadata, base_image or None, build_image or None),
                             extra_tags=(self.local,))

    def handoff(self) -> BuildContext:
        """What `prepare_image_context` hands the later tasks (for display and checks only)."""
        from rice_mlops.core.handoffs import BuildContext

        return BuildContext(run_id=self.run_id, context=str(self.context),
                            image=self.names.immutable, latest=self.names.latest,
                            repository=self.names.repository, local=self.local,
                            registry=self.registry)

    def push_environment(self, conn_id: str) -> dict[str, str]:
        return {"REGISTRY": self.registry or "", "REPOSITORY": self.names.repository,
                "LOCAL": self.local, "IMAGE": self.names.immutable,
                "LATEST": self.names.latest, "CONN_ID": conn_id}

    def as_dict(self) -> dict:
        return {"run_id": self.run_id, "context": str(self.context), "image": self.names.immutable,
                "latest": self.names.latest, "repository": self.names.repository,
                "local": self.local, "registry": self.registry}


def plan_for(staging_root: Path, image_name: str, run_id: str, source_commit: str | None,
             registry: str | None) -> ImagePlan:
    """The image plan of one run. `run_id` must already be checked (32 hex characters)."""
    return ImagePlan(run_id=run_id, context=Path(staging_root) / run_id / CONTEXT_DIR,
                     names=image_names(registry, image_name, source_commit, run_id),
                     local=run_tag(image_name, run_id), registry=registry)


def run_image_plan(trained: Trained, settings: PipelineSettings, source_commit: str | None,
                   registry: str | None) -> ImagePlan:
    """The image of a trained run: build context in the release zone's directory, names, tags
    (the run id was checked when the hand-off was built)."""
    return plan_for(settings.release_root, settings.image_name, trained.run_id, source_commit,
                    registry)


class PushOutputError(ValueError):
    """The push did not end with the digest line push.sh prints."""


def parse_pushed_digest(output: str | None, repository: str) -> dict:
    """{"digest_ref": repository@sha256:..., "digest": sha256:...} from push.sh's last line."""
    lines = (output or "").strip().splitlines()
    last = lines[-1].strip() if lines else ""
    match = re.fullmatch(re.escape(repository) + r"@(sha256:[0-9a-f]{64})", last)
    if not match:
        raise PushOutputError(f"the push did not report a digest of {repository} "
                              f"(last line {last[:200]!r})")
    return {"digest_ref": last, "digest": match.group(1)}
