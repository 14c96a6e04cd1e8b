"""The chaos suite's report (test-artifacts/chaos.json) and its duration, printed at the end."""

from __future__ import annotations

import pytest

from tests.helpers.chaos_report import ChaosReport

_REPORTS: list[ChaosReport] = []


@pytest.fixture(scope="session")
def chaos_report() -> ChaosReport:
    report = ChaosReport()
    _REPORTS.append(report)
    report.write()
    return report


def pytest_terminal_summary(terminalreporter):
    for report in _REPORTS:
        report.write()
        terminalreporter.write_line(
            f"chaos suite: {len(report.entries)} faults in {report.duration_s:.0f} s "
            f"(from its first test to the end of the session); report {report.path}")
