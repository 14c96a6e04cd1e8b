"""Is what the model sees in service still what it was tested on? A window of the serving
server's prediction log compared with the reference recorded for the model version.

Three kinds of evidence, each a maintained test from SciPy:
- the class mix: chi-square of the live class counts against the reference's proportions;
- confidence (the top probability): two-sample Kolmogorov-Smirnov, black-box shift detection
  on the classifier's own outputs;
- each input statistic the server logs (height, width, mean and spread per channel): KS.

Their p-values are adjusted together (Holm), so one window is one alarm decision at `alpha`
however many statistics it checks. A window with fewer predictions than the minimum is "not
enough data", never an alarm; lines that are not this model's predictions are counted by
reason and left out, never a crash.
"""

from __future__ import annotations

import json
import math
from array import array
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from rice_mlops.monitoring.log_reader import MAX_LINE

INPUT_FEATURES = ("height", "width", "mean_r", "mean_g", "mean_b", "std_r", "std_g", "std_b")
FEATURES = ("confidence", *INPUT_FEATURES)
MAX_REFERENCE_ROWS = 100_000


class DriftReferenceError(ValueError):
    """A reference that cannot be compared with; the message says what is wrong."""


@dataclass(frozen=True)
class Observations:
    """One row per prediction: the predicted class and each feature's value."""

    classes: tuple[str, ...]
    values: Mapping[str, np.ndarray]

    @property
    def count(self) -> int:
        return len(self.classes)


class _Rows:
    """Observations built one prediction at a time: its class (one string object per class
    name) and each feature in a typed array, never the prediction's parsed record, so a
    million rows hold tens of MiB."""

    def __init__(self) -> None:
        self._classes: list[str] = []
        self._names: dict[str, str] = {}
        self._columns = {name: array("d") for name in FEATURES}

    def add(self, name: str, probabilities: Sequence[float], stats: Mapping) -> None:
        columns = self._columns
        self._classes.append(self._names.setdefault(name, name))
        columns["confidence"].append(max(float(p) for p in probabilities))
        columns["height"].append(float(stats["height"]))
        columns["width"].append(float(stats["width"]))
        for i, channel in enumerate("rgb"):
            columns[f"mean_{channel}"].append(float(stats["mean"][i]))
            columns[f"std_{channel}"].append(float(stats["std"][i]))

    def observations(self) -> Observations:
        return Observations(tuple(self._classes), {
            name: np.frombuffer(column, dtype=np.float64) if column else np.zeros(0)
            for name, column in self._columns.items()})


def observe(classes: Sequence[str], probabilities: Sequence[Sequence[float]],
            inputs: Sequence[Mapping]) -> Observations:
    """Rows from what a prediction holds: its classes, probabilities and input statistics
    (the server's `input_statistics`, one dict per image)."""
    if not len(classes) == len(probabilities) == len(inputs):
        raise ValueError(f"{len(classes)} classes, {len(probabilities)} probability rows and "
                         f"{len(inputs)} input rows: one of each per prediction")
    rows = _Rows()
    for name, row, stats in zip(classes, probabilities, inputs, strict=True):
        rows.add(name, row, stats)
    return rows.observations()


@dataclass(frozen=True)
class Reference:
    """What the model version predicted on its test split, recorded when it was promoted."""

    model_version: str
    class_names: tuple[str, ...]
    observations: Observations

    def to_json(self) -> str:
        obs = self.observations
        return json.dumps({"model_version": self.model_version,
                           "class_names": list(self.class_names),
                           "classes": list(obs.classes),
                           "values": {name: [round(float(v), 5) for v in obs.values[name]]
                                      for name in FEATURES}}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Reference:
        """Strict: a reference is an artifact of MLflow, so it is checked, never trusted."""
        try:
            data = json.loads(text)
            version, names = str(data["model_version"]), tuple(data["class_names"])
            classes, values = tuple(data["classes"]), data["values"]
            columns = {name: np.asarray(values[name], dtype=np.float64) for name in FEATURES}
        except (ValueError, KeyError, TypeError) as exc:
            raise DriftReferenceError(f"not a drift reference: {type(exc).__name__}: {exc}; record "
                                 "it again by promoting the model version") from None
        if not 0 < len(classes) <= MAX_REFERENCE_ROWS:
            raise DriftReferenceError(f"a reference holds 1 to {MAX_REFERENCE_ROWS} predictions, "
                                 f"this one {len(classes)}")
        if any(len(column) != len(classes) or not np.isfinite(column).all()
               for column in columns.values()):
            raise DriftReferenceError("a reference's columns must be finite and one per prediction")
        if not set(classes) <= set(names) or not all(isinstance(c, str) for c in names):
            raise DriftReferenceError("the reference predicts classes outside its class names")
        return cls(version, names, Observations(classes, columns))


@dataclass(frozen=True)
class LiveWindow:
    """The predictions of one model version between two times, and what was left out."""

    observations: Observations
    skipped: Mapping[str, int] = field(default_factory=dict)  # reason -> lines


def read_window(lines: Iterable[str | bytes], *, model_version: str, since: float,
                until: float) -> LiveWindow:
    """Predictions logged in [since, until) by `model_version`, answered to clients (a shadow
    copy is the candidate's). Anything else is counted under the reason it was left out.

    Streamed: each prediction keeps only its class and nine floats (`_Rows`), never the
    parsed line, so a window of a million predictions holds tens of MiB, not the parsed
    records' GiB (benchmarks/cost_curves.py)."""
    skipped: Counter[str] = Counter()
    kept = _Rows()
    for line in lines:
        if len(line) > MAX_LINE:
            skipped["too long"] += 1
            continue
        try:
            record = json.loads(line)
            when = float(record["time"])
            version = str(record["model_version"])
            shadow = record.get("shadow") is True
            rows = list(zip(record["classes"], record["probabilities"], record["input"],
                            strict=True))
        except (ValueError, KeyError, TypeError):
            skipped["not a prediction line (torn, corrupt or another format)"] += 1
            continue
        if not math.isfinite(when) or when < since:
            continue  # an earlier window's
        if when >= until:
            skipped["after the window (later, or a clock ahead)"] += 1
            continue
        if version != model_version:
            skipped[f"another model version ({version[:20]})"] += 1
            continue
        if shadow:
            skipped["shadow copies (the candidate's answers)"] += 1
            continue
        if not all(_well_formed(row) for row in rows):
            skipped["not a prediction line (torn, corrupt or another format)"] += 1
            continue
        for name, row, stats in rows:
            kept.add(name, row, stats)
    return LiveWindow(kept.observations(), dict(skipped))


def _well_formed(row) -> bool:
    name, probabilities, stats = row
    try:
        numbers = [float(p) for p in probabilities] + [float(stats["height"]),
                                                       float(stats["width"])]
        numbers += [float(v) for v in stats["mean"][:3]] + [float(v) for v in stats["std"][:3]]
        return (isinstance(name, str) and len(stats["mean"]) == len(stats["std"]) == 3
                and len(probabilities) > 0 and all(math.isfinite(n) for n in numbers))
    except (KeyError, TypeError, ValueError):
        return False


@dataclass(frozen=True)
class Check:
    name: str  # "class mix", "confidence", "input mean_r"
    method: str  # "chi-square" or "KS"
    statistic: float
    p_value: float
    adjusted_p: float  # Holm, over every check of the window


@dataclass(frozen=True)
class DriftReport:
    verdict: str  # "drift", "no drift" or "not enough data"
    predictions: int
    checks: tuple[Check, ...]
    skipped: Mapping[str, int]
    alpha: float
    minimum: int

    @property
    def drifted(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.adjusted_p < self.alpha)

    def summary(self) -> str:
        """One line for a run note: `drift in confidence (p=3e-07, 2,400 predictions)`."""
        if self.verdict == "not enough data":
            left_out = sum(self.skipped.values())
            extra = f"; {left_out:,} lines left out" if left_out else ""
            return (f"not enough data: {self.predictions:,} < {self.minimum:,} "
                    f"predictions{extra}")
        if self.verdict == "drift":
            shown = ", ".join(f"{c.name} (p={c.adjusted_p:.1g})" for c in self.drifted)
            return f"drift in {shown}, {self.predictions:,} predictions"
        nearest = min(self.checks, key=lambda c: c.adjusted_p)
        return (f"no drift in {self.predictions:,} predictions (smallest adjusted p "
                f"{nearest.adjusted_p:.2g}, {nearest.name})")

    def as_dict(self) -> dict:
        return {"verdict": self.verdict, "summary": self.summary(),
                "predictions": self.predictions, "alpha": self.alpha, "minimum": self.minimum,
                "skipped": dict(self.skipped),
                "checks": [{"name": c.name, "method": c.method, "statistic": c.statistic,
                            "p_value": c.p_value, "adjusted_p": c.adjusted_p}
                           for c in self.checks]}


def compare(reference: Reference, live: LiveWindow, *, min_predictions: int,
            alpha: float) -> DriftReport:
    """The window's verdict against the reference."""
    from scipy import stats

    if min_predictions < 1 or not 0 < alpha < 1:
        raise ValueError("min_predictions must be ≥ 1 and alpha between 0 and 1")
    observed = live.observations
    if observed.count < min_predictions:
        return DriftReport("not enough data", observed.count, (), live.skipped, alpha,
                           min_predictions)
    raw: list[tuple[str, str, float, float]] = []
    names = reference.class_names
    unknown = Counter(c for c in observed.classes if c not in names)
    if unknown:  # another model's classes under this version: the mix cannot be compared
        raw.append(("class mix", "chi-square", math.inf, 0.0))
    else:
        # Laplace smoothing: a class the reference never predicted is rare, not impossible.
        expected = np.array([reference.observations.classes.count(n) + 0.5 for n in names])
        counts = Counter(observed.classes)
        f_obs = np.array([counts[n] for n in names], dtype=np.float64)
        f_exp = expected / expected.sum() * f_obs.sum()
        result = stats.chisquare(f_obs, f_exp)
        raw.append(("class mix", "chi-square", float(result.statistic), float(result.pvalue)))
    for name in FEATURES:
        result = stats.ks_2samp(reference.observations.values[name], observed.values[name])
        label = name if name == "confidence" else f"input {name}"
        raw.append((label, "KS", float(result.statistic), float(result.pvalue)))
    adjusted = holm([p for *_, p in raw])
    checks = tuple(Check(n, m, s, p, a) for (n, m, s, p), a in zip(raw, adjusted, strict=True))
    verdict = "drift" if any(c.adjusted_p < alpha for c in checks) else "no drift"
    return DriftReport(verdict, observed.count, checks, live.skipped, alpha, min_predictions)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (family-wise error at most alpha), in input order."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted
