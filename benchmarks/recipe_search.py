"""Toward 99.8 %: candidate recipes chosen on the validation split, the test split scored once.

    .venv/bin/python benchmarks/recipe_search.py search rice_cnn@64 patch4@128 ...
    .venv/bin/python benchmarks/recipe_search.py final patch4@128 --seed 42 --seed 7

`search` trains each candidate on the training split and reports only validation figures
(accuracy, errors, loss), fit time and the epoch time; it never reads the test split, so the
choice cannot lean on it. `final` trains the chosen candidate with each seed and scores the
1,000 test images, once per seed. A candidate is `architecture@image_size`, optionally
`+epochs=N` or `+lr=X`; the architectures live in `rice_mlops.compute.model` (the pipeline's
own code) so what is measured here is what the pipeline would train. Records go to
results/recipe_search.jsonl with the machine, date and load average.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "include"))


def parse_candidate(text: str) -> dict:
    head, *extras = text.split("+")
    architecture, _, size = head.partition("@")
    values = {"architecture": architecture, "image_size": int(size or 64)}
    kinds = {"epochs": ("epochs", int), "lr": ("learning_rate", float)}
    for extra in extras:
        key, _, value = extra.partition("=")
        if key not in kinds:
            raise SystemExit(f"recipe_search: {key!r} is not one of {sorted(kinds)} in {text!r}")
        name, kind = kinds[key]
        values[name] = kind(value)
    return values


def train_one(data: Path, candidate: str, seed: int, *, score_test: bool) -> dict:
    import numpy as np

    from rice_mlops.compute.data import validate
    from rice_mlops.compute.data.pipeline import eval_batches
    from rice_mlops.compute.recipe import compiled_recipe, quiet_tensorflow
    from rice_mlops.compute.training_config import TrainConfig

    quiet_tensorflow()
    config = TrainConfig(data_dir=data.resolve(), seed=seed, **parse_candidate(candidate))
    dataset = validate(config.data_dir, min_per_class=config.min_per_class)
    recipe = compiled_recipe(config, dataset)
    history, fit_seconds = recipe.fit(config.epochs)

    def scored(split: str) -> dict:
        paths, labels = dataset.examples(split)
        probabilities = recipe.model.predict(eval_batches(recipe.splits[split], 256), verbose=0)
        predicted = probabilities.argmax(axis=1)
        wrong = np.flatnonzero(predicted != np.asarray(labels))
        picked = probabilities[np.arange(len(labels)), labels]
        return {f"{split}_accuracy": round(1 - len(wrong) / len(labels), 4),
                f"{split}_errors": len(wrong),
                f"{split}_loss": round(float(-np.log(np.clip(picked, 1e-7, 1)).mean()), 5),
                f"{split}_wrong": [str(Path(paths[i]).relative_to(dataset.root)) for i in wrong]}

    result = {"candidate": candidate, "seed": seed, "epochs": config.epochs,
              "image_size": config.image_size, "architecture": config.architecture,
              "parameters": int(recipe.model.count_params()),
              "fit_seconds": round(fit_seconds, 1),
              "last_epoch_seconds": None, **scored("val")}
    if score_test:
        result.update(scored("test"))
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("search", "final"))
    parser.add_argument("candidates", nargs="+")
    parser.add_argument("--seed", type=int, action="append")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "rice")
    args = parser.parse_args()
    from results_log import record

    for candidate in args.candidates:
        for seed in args.seed or [42]:
            started = time.perf_counter()
            load = os.getloadavg()[0]
            result = train_one(args.data, candidate, seed, score_test=args.mode == "final")
            result.pop("last_epoch_seconds")
            record("recipe_search", {"mode": args.mode, **result,
                                     "wall_seconds": round(time.perf_counter() - started, 1),
                                     "load_average_before": round(load, 2)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
