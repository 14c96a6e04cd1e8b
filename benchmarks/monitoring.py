"""The monitoring (issue 23): how long `rice_monitoring`'s judgement takes for a window of
100,000 prediction-log lines, and how many brighter predictions it takes to see the drift.

    .venv/bin/python benchmarks/monitoring.py [--images ../shared/rice] [--lines 100000]

Input statistics come from real rice images through the serving server's own function; the
top probability is a stand-in (Beta), as in tests/unit/test_drift.py. The log lines are
written as the server writes them (its PredictionLog), into a temporary directory. Timed:
reading the file with the release zone's reader, the window, and every test of the verdict
(what `check_drift` does between the state and MLflow). Detection delay: the smallest window
of 1.2x brighter predictions, among 25, 50, 100, 200, 400, judged as drift in 10 of 10
draws. Appends to benchmarks/results/monitoring.jsonl.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "include"))


def image_rows(paths, rng, brightness=1.0):
    from PIL import Image, ImageEnhance

    from rice_mlops.serving.prediction_log import input_statistics

    rows = []
    for name, path in paths:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
            if brightness != 1.0:
                rgb = ImageEnhance.Brightness(rgb).enhance(brightness)
        top = float(rng.beta(30, 1.2))
        rows.append((name, top, input_statistics(np.asarray(rgb)[None])[0]))
    return rows


_WINDOW_ONLY = """
import sys, time
from pathlib import Path
from rice_mlops.monitoring.drift import Reference, compare, read_window
from rice_mlops.monitoring.log_reader import log_lines
reference = Reference.from_json(Path(sys.argv[2]).read_text())
window = read_window(log_lines(Path(sys.argv[1]), max_read=1 << 30), model_version="1",
                     since=0, until=time.time() + 60)
compare(reference, window, min_predictions=500, alpha=0.01)
# VmHWM: this address space's peak (ru_maxrss would carry the forking parent's over exec)
print(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")))
"""


def _window_peak_rss(log: Path, reference: Path) -> float:
    """Peak RSS (MiB) of a process that only reads and judges the window."""
    import subprocess

    done = subprocess.run([sys.executable, "-c", _WINDOW_ONLY, str(log), str(reference)],
                          capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": os.environ.get(
                              "RICE_WINDOW_PYTHONPATH", str(REPO / "include"))})
    return round(int(done.stdout.split()[-1]) / 1024, 1)


def main() -> int:
    from results_log import record

    from rice_mlops.monitoring.drift import LiveWindow, Reference, compare, observe, read_window
    from rice_mlops.monitoring.log_reader import log_lines
    from rice_mlops.serving.prediction_log import PredictionLog

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=REPO.parent / "shared" / "rice")
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--plot", type=Path,
                        help="also draw the report of 500 predictions in 1.2x brighter light "
                             "with the monitoring's own plot (as docs/drift-report.png is)")
    args = parser.parse_args()
    classes = sorted(p.name for p in (args.images / "train").iterdir() if p.is_dir())
    rng = np.random.default_rng(1)
    reference_paths = [(c, p) for c in classes
                       for p in sorted((args.images / "test" / c).iterdir())[:100]]
    live_paths = [(c, p) for c in classes for p in sorted((args.images / "val" / c).iterdir())]

    def probabilities(name, top):
        rest = (1 - top) / (len(classes) - 1)
        return [top if c == name else rest for c in classes]

    ref_rows = image_rows(reference_paths, rng)
    reference = Reference("1", tuple(classes), observe(
        [r[0] for r in ref_rows], [probabilities(r[0], r[1]) for r in ref_rows],
        [r[2] for r in ref_rows]))
    live_rows = image_rows(live_paths, rng)
    with tempfile.TemporaryDirectory() as scratch:
        log = PredictionLog(Path(scratch), max_bytes=1 << 30, backups=1, queue_size=1 << 20,
                            on_drop=lambda: None)
        for i in range(args.lines):
            name, top, stats = live_rows[i % len(live_rows)]
            log.record(request_id=f"{i:032x}", shadow=False, endpoint="/predict",
                       model_version="1", run_id="r", classes=[name],
                       probabilities=[[round(p, 5) for p in probabilities(name, top)]],
                       input=[stats])
        log.close()
        path = Path(scratch) / "predictions.jsonl"
        size = path.stat().st_size
        started = time.perf_counter()
        window = read_window(log_lines(path, max_read=1 << 30), model_version="1", since=0,
                             until=time.time() + 60)
        read_seconds = time.perf_counter() - started
        report = compare(reference, window, min_predictions=500, alpha=0.01)
        total_seconds = time.perf_counter() - started
        # The window's own memory: read and judged again in a fresh process, whose peak RSS
        # is the window's (this one's also holds the writer's queue of every generated line).
        (Path(scratch) / "reference.json").write_text(reference.to_json())
        window_peak = _window_peak_rss(path, Path(scratch) / "reference.json")
    assert window.observations.count == args.lines, window.skipped

    bright_rows = image_rows(live_paths, rng, brightness=1.2)
    delay = None
    for size_n in (25, 50, 100, 200, 400):
        hits = 0
        for draw in range(10):
            picked = np.random.default_rng(draw).choice(len(bright_rows), size_n, replace=True)
            rows = [bright_rows[i] for i in picked]
            live = LiveWindow(observe([r[0] for r in rows],
                                      [probabilities(r[0], r[1]) for r in rows],
                                      [r[2] for r in rows]))
            hits += compare(reference, live, min_predictions=1, alpha=0.01).verdict == "drift"
        if hits == 10:
            delay = size_n
            break
    if args.plot:
        from rice_mlops.stages.monitoring import _plot

        rows = [bright_rows[i] for i in np.random.default_rng(0).permutation(len(bright_rows))]
        live = LiveWindow(observe([r[0] for r in rows[:500]],
                                  [probabilities(r[0], r[1]) for r in rows[:500]],
                                  [r[2] for r in rows[:500]]))
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        _plot(reference, live, compare(reference, live, min_predictions=500, alpha=0.01),
              args.plot)
    record("monitoring", {
        "lines": args.lines, "log_mib": round(size / 2**20, 1),
        "read_seconds": round(read_seconds, 2), "judge_seconds": round(total_seconds, 2),
        "window_peak_rss_mib": window_peak,
        "verdict_on_unshifted": report.verdict,
        "predictions_to_see_1_2x_brightness": delay,
        "reference_predictions": reference.observations.count,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
