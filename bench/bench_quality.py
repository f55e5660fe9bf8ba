"""What the exported model gains from ensembling, and how the search compares with a fixed
hand-regularized MLP, on the split seeds of existing `gsearch evaluate` studies.

For each split seed it loads the study `evaluate-split<seed>-cv<K>` (run `gsearch evaluate`
first), retrains on train+validation and scores on that seed's test split:

- the search's choices, ranked by the study's value only: the best trial, the top 5 (what
  `export-best` does by default), the best trial with 5 training seeds, the top 5 with 3 each;
- a hand-regularized recipe (2 x 512, batch norm, dropout 0.4, AdamW weight decay 1e-3,
  label smoothing 0.1, input noise 0.1, one-cycle lr 3e-3, 150 epochs, batch 64): the mean of
  5 single seeds and their 5-seed ensemble.

Use split seeds that no default was chosen on (e.g. 100,101,102) to judge a default; the
test splits are only scored, never used to choose.

Usage: python bench/bench_quality.py --split-seeds 100,101,102 [--storage sqlite:///evaluate.db]
       [--cv 1] [--data CSV] [--recipe-lr 3e-3]
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
import optuna
import torch

from gsearch.models.config import TrialConfig
from gsearch.models.population import TrainData, train
from gsearch.search import records
from gsearch.search.evaluate import DEFAULT_EVAL_STORAGE, study_name
from gsearch.search.export import study_data, trial_config
from gsearch.search.selection import top_trials

REAL_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "gtzan" / "features_30_sec.csv"
RECIPE = TrialConfig(n_layers=2, width=512, batch_norm=True, dropout=0.4, weight_decay=1e-3,
                     label_smoothing=0.1, input_noise=0.1, lr_schedule="onecycle", lr=3e-3,
                     epochs=150, batch_size=64)   # the issue gives no peak rate: --recipe-lr
SEED_STRIDE = 10007   # training seed r of a trial: its recorded seed + r * SEED_STRIDE


def score_seed(study: optuna.Study, data_path: str, recipe: TrialConfig = RECIPE) -> dict[str, float]:
    ds, split, _ = study_data(study, data_path)
    rows = split.train_val
    data = TrainData(X_train=ds.X[rows], y_train=ds.y[rows], n_classes=len(ds.classes))
    X_test, y_test = torch.as_tensor(ds.X[split.test]), ds.y[split.test]
    cache: dict[tuple, np.ndarray] = {}

    def probs(config: TrialConfig, seed: int) -> np.ndarray:
        if (config, seed) not in cache:
            model, _ = train(config, data, seed=seed)
            with torch.inference_mode():
                cache[config, seed] = model(X_test).softmax(dim=1).numpy()
        return cache[config, seed]

    def accuracy(members: list[tuple[TrialConfig, int]]) -> float:
        mean = np.mean([probs(c, s) for c, s in members], axis=0)
        return float((mean.argmax(axis=1) == y_test).mean())

    top = [(trial_config(t), t.user_attrs.get(records.TRIAL_SEED, 0)) for t in top_trials(study, 5)]
    recipe = [(recipe, r) for r in range(5)]
    return {
        "best": accuracy(top[:1]),
        "top-5": accuracy(top),
        "best x5 seeds": accuracy([(top[0][0], top[0][1] + r * SEED_STRIDE) for r in range(5)]),
        "top-5 x3 seeds": accuracy([(c, s + r * SEED_STRIDE) for c, s in top for r in range(3)]),
        "recipe (1 seed)": float(np.mean([accuracy([m]) for m in recipe])),
        "recipe x5 seeds": accuracy(recipe),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split-seeds", default="100,101,102")
    parser.add_argument("--storage", default=DEFAULT_EVAL_STORAGE)
    parser.add_argument("--cv", type=int, default=1)
    parser.add_argument("--data", type=Path, default=REAL_CSV)
    parser.add_argument("--recipe-lr", type=float, default=RECIPE.lr, help="the recipe's peak learning rate")
    args = parser.parse_args()
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    seeds = [int(s) for s in args.split_seeds.split(",")]
    results = {}
    for seed in seeds:
        study = optuna.load_study(study_name=study_name(seed, args.cv), storage=args.storage)
        results[seed] = score_seed(study, str(args.data), replace(RECIPE, lr=args.recipe_lr))
        print(f"split seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in results[seed].items()),
              flush=True)
    print(f"\ntest accuracy on split seeds {args.split_seeds} (studies: --cv {args.cv})")
    for name in results[seeds[0]]:
        values = [results[s][name] for s in seeds]
        print(f"  {name:<16} " + " ".join(f"{v:.3f}" for v in values) + f"   mean {np.mean(values):.3f}")


if __name__ == "__main__":
    main()
