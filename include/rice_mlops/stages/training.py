"""Training: one MLflow run for the DAG run, and its artifacts staged for the later stages.

`train` runs on the training queue (RICE_TRAIN_QUEUE), `fetch_artifacts` on the default
worker: both in the compute zone. They hand on `Trained` (the MLflow run id, metrics and the
digests recorded at training) and `Staged` through XCom; the model bytes travel through
MLflow, never XCom.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

from airflow.sdk.exceptions import AirflowFailException

from rice_mlops.core.handoffs import Dataset, Freshness, Staged, Trained
from rice_mlops.core.settings import PipelineSettings
from rice_mlops.stages.common import checked_handoffs, checked_request, dataset_dir

log = logging.getLogger(__name__)


def _yield_cpu(nice: int) -> None:
    """Lower this task process to nice level `nice` (threads it starts later inherit it), so
    a training on shared cores does not starve the webhook or the scheduler."""
    current = os.nice(0)
    if current < nice:
        os.nice(nice - current)
        log.info("training at nice %d (RICE_TRAIN_NICE)", nice)


@checked_handoffs
def train(settings: PipelineSettings, params: Mapping, data: Dataset, fresh: Freshness,
          dag_run_id: str) -> Trained:
    """One MLflow run for this DAG run on the checked dataset (a retry reuses a verified run)."""
    _yield_cpu(settings.train_nice)  # first: TensorFlow's thread pools inherit the level
    from rice_mlops.compute.training_config import TrainConfig
    from rice_mlops.compute.training_run import train_once

    request = checked_request(settings, params)
    # The directory comes from the policy again, not from XCom: validate_data checked it.
    data_dir = dataset_dir(settings, request)
    if str(data_dir) != data.data_dir:
        raise AirflowFailException(f"validate_data checked {data.data_dir!r}, but this run "
                                   f"resolves to {str(data_dir)!r}: clear validate_data too")
    dataset = _the_validated_dataset(data_dir, data)
    config = TrainConfig(data_dir=data_dir, epochs=request.epochs,
                         image_size=request.image_size, batch_size=request.batch_size,
                         experiment=settings.experiment, source=request.source())
    _same_training_as_checked(config, fresh)
    result = train_once(config, dag_run_id, validated=(dataset, data.fingerprint))
    return Trained.from_result(result)


def _same_training_as_checked(config, fresh: Freshness) -> None:
    """Refuse to train anything but what check_changed judged the run by.

    A remote worker parses the DAG with its own settings (worker.env) and runs its own image,
    so its RICE_EPOCHS or training code may not be the control plane's: it would train, and
    record, another model than the one the run was admitted for. The installed packages are
    not compared: a GPU worker's TensorFlow build differs from the CPU one on purpose.
    """
    from rice_mlops.compute.code_digest import training_code_digest

    if not fresh.source_digest:  # written before check_changed recorded it
        return
    here = config.model_params()
    there = fresh.model_params if isinstance(fresh.model_params, dict) else {}
    differ = [f"{name} {here.get(name)!r:.80} here, {there.get(name)!r:.80} there"
              for name in sorted(set(here) | set(there)) if here.get(name) != there.get(name)]
    if differ:
        raise AirflowFailException(
            f"{socket.gethostname()} would train with other parameters than check_changed "
            f"judged the run by ({'; '.join(differ)}): give this worker the control plane's "
            "pipeline settings (worker.env lists them), then clear check_changed and train")
    if training_code_digest(here, packages=[]) != fresh.source_digest:
        raise AirflowFailException(
            f"the training code on {socket.gethostname()} is not the code check_changed judged "
            "the run by (another commit's image?): run the control plane's image on this "
            "worker, then clear check_changed and train")


def _the_validated_dataset(data_dir, data: Dataset):
    """The dataset on this worker, if its files are the ones validate_data checked.

    `train` may run on another machine (a remote worker with its own copy of the images):
    the run would otherwise record validate_data's fingerprint for whatever that copy holds.
    Hashing the files again costs 0.6 s for the 7,000 images; decoding them is not repeated.
    """
    from rice_mlops.compute.data import discover
    from rice_mlops.core.fingerprint import fingerprint

    dataset = discover(data_dir)
    here = fingerprint(dataset)
    if here != data.fingerprint:
        raise AirflowFailException(
            f"the dataset at {data_dir} on {socket.gethostname()} is not the one validate_data "
            f"checked ({here} here, {data.fingerprint} there): give this worker the same "
            "files (RICE_DATA_DIR), then clear validate_data and train")
    return dataset


@checked_handoffs
def fetch_artifacts(settings: PipelineSettings, trained: Trained) -> Staged:
    """The run's artifacts staged under RICE_STAGING_DIR with their manifest."""
    from rice_mlops.core.staged_artifacts import fetch, read_manifest

    staged = fetch(trained.run_id, trained.model_uri, settings.staging_root)
    files = read_manifest(staged)  # fetch() verified them
    log.info("staged %d files in %s", len(files), staged)
    return Staged(staging_dir=str(staged), files=len(files), tflite_sha256=files["model.tflite"])
