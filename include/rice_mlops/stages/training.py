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

from rice_mlops.handoffs import Dataset, Staged, Trained
from rice_mlops.run_policy import checked_run_id
from rice_mlops.settings import PipelineSettings
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
def train(settings: PipelineSettings, params: Mapping, data: Dataset, dag_run_id: str
          ) -> Trained:
    """One MLflow run for this DAG run on the checked dataset (a retry reuses a verified run)."""
    _yield_cpu(settings.train_nice)  # first: TensorFlow's thread pools inherit the level
    from rice_mlops.config import TrainConfig
    from rice_mlops.training import train_once

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
    result = train_once(config, dag_run_id, validated=(dataset, data.fingerprint))
    return Trained.from_result(result)


def _the_validated_dataset(data_dir, data: Dataset):
    """The dataset on this worker, if its files are the ones validate_data checked.

    `train` may run on another machine (a remote worker with its own copy of the images):
    the run would otherwise record validate_data's fingerprint for whatever that copy holds.
    Hashing the files again costs 0.6 s for the 7,000 images; decoding them is not repeated.
    """
    from rice_mlops.data import discover
    from rice_mlops.data.fingerprint import fingerprint

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
    from rice_mlops.artifacts import fetch, read_manifest

    staged = fetch(checked_run_id(trained.run_id), trained.model_uri, settings.staging_root)
    files = read_manifest(staged)  # fetch() verified them
    log.info("staged %d files in %s", len(files), staged)
    return Staged(staging_dir=str(staged), files=len(files), tflite_sha256=files["model.tflite"])
