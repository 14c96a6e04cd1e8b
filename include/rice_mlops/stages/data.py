"""Data: every image of the run's dataset checked, and its fingerprint computed.

Runs on the default worker (compute zone); hands on a `Dataset` (directory, fingerprint,
classes and counts) through XCom.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from airflow.sdk.exceptions import AirflowFailException

from rice_mlops.core.handoffs import Dataset
from rice_mlops.core.settings import PipelineSettings
from rice_mlops.stages.common import checked_request, dataset_dir

log = logging.getLogger(__name__)


def validate_data(settings: PipelineSettings, params: Mapping) -> Dataset:
    """Every image of the run's dataset checked (all problems at once), and its fingerprint."""
    from rice_mlops.compute.data import DataValidationError, validate
    from rice_mlops.core.fingerprint import fingerprint

    data_dir = dataset_dir(settings, checked_request(settings, params))
    try:
        dataset = validate(data_dir)
    except DataValidationError as exc:  # every problem at once; retrying changes nothing
        raise AirflowFailException(str(exc)) from None
    counts = dataset.counts()
    log.info("dataset %s valid: %s", data_dir, counts)
    return Dataset(data_dir=str(data_dir), fingerprint=fingerprint(dataset),
                   classes=tuple(dataset.classes), counts=counts)
