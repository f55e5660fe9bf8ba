"""The search space: trial -> TrialConfig, `--fix NAME=VALUE` and `--range NAME=LOW:HIGH`. Every sampled value is a
trial param, so the dashboard shows it. The README documents these ranges.

The regularizers were kept because each helped on held-out folds of train+validation
(2 x 5-fold track-grouped CV, split seeds 42 and 0, no test rows; 2 x 512 MLP, 150
epochs): the full set scored 76.4%, without input noise 74.9%, without label smoothing
75.6%, with a constant rate 75.4% (cosine 75.6%), and with none of them 74.2%. Weight
decay hardly mattered (1e-5: 76.5%, 1e-1: 75.9%) but is cheap to search. Early stopping
on validation loss is not searched: it scored 74.9% against 75.4% without, and the
exported model is retrained on train+validation, where there is nothing to stop on.

Width stops at 256 and epochs at 100 (they went to 1024 and 200): with successive halving
(the default pruner) wider models cost up to 7x more per epoch for no measured gain in test
accuracy, and a 200-trial run takes 33-124 s on 2-core machines instead of four to
seventeen minutes (docs/benchmarks.md, "Fewer wasted epochs").
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

from gsearch import GsearchError
from gsearch.models.config import LR_SCHEDULES, TrialConfig
from gsearch.search import records

# lazy: the CLI reads PARAMETERS when it starts (gsearch --help); Optuna is imported by the
# functions that build distributions
if TYPE_CHECKING:
    import optuna   # lazy: the CLI reads this module at start (gsearch --help)


# The searched parameters, in SearchSpace's order (--fix's help lists them; a test checks).
PARAMETERS = ("n_layers", "width", "batch_norm", "lr", "lr_schedule", "batch_size", "epochs",
              "dropout", "weight_decay", "label_smoothing", "input_noise")
# What the space of a table of one's own adds (SearchSpace.for_table): where they apply
TABLE_PARAMETERS = ("input_transform", "class_weight", "loss")

# Up to this many training rows the space is the one tuned on GTZAN (640 training rows):
# batches of 32-128 rows, 20-100 epochs. Larger tables get larger batches and fewer epochs.
REFERENCE_ROWS = 1000
# Classes are imbalanced (and class_weight is searched) when the largest has more than this
# many times the rows of the smallest.
IMBALANCE = 1.5
MAX_EPOCHS = 100   # the longest trial of any space (a table of REFERENCE_ROWS rows or fewer)


# The built-in ranges of the parameters searched on a log scale (above 0 whatever the table).
LOG_SCALE = {"width": (32, 256), "lr": (1e-4, 3e-2), "weight_decay": (1e-5, 1e-1)}


@dataclass(frozen=True)
class SearchSpace:
    """The search space, sized to a training set of `rows` rows; calling it on a trial
    samples a TrialConfig. What follows the data is the batch size and the epochs (and,
    through `max_epochs`, the pruner's rungs: study.Strategy.make_pruner): up to
    REFERENCE_ROWS rows, batches of 32, 64 or 128 rows and 20 to 100 epochs (GTZAN's space);
    above, the smallest batch is the power of two at or below rows/20 (at most 256) and the
    epochs shrink with the square root of the rows, so a search's time grows about linearly
    with the table (docs/benchmarks.md, "Tables of every size"). A study records the rows its space was
    sized to (`of`), so every run, worker and resume of it samples the same space.

    >>> SearchSpace(640).batch_sizes, SearchSpace(640).epochs
    ((32, 64, 128), (20, 100, 10))
    >>> SearchSpace(64_000).batch_sizes, SearchSpace(64_000).epochs
    ((256, 512, 1024), (2, 10, 1))
    """

    rows: int = 640   # training rows of one trial (GTZAN's by default)
    task: str = "classification"   # a regression searches its loss, not label smoothing
    class_weight: bool = False     # search class_weight (none, balanced): imbalanced classes
    linear: bool = False           # n_layers from 0: a linear model is in the space
    quantile: bool = False         # the quantile input transform beside standardization
    # built-in ranges replaced (--range, parse_ranges): (name, (low, high)) of a number, or
    # (name, (choice, ...)) of a categorical parameter, sorted by name
    ranges: tuple[tuple[str, tuple], ...] = ()

    def _range(self, name: str, *default):
        """A parameter's (low, high) or choices: its --range, else `default`."""
        return dict(self.ranges).get(name, default)

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        smallest = 2 ** math.floor(math.log2(max(self.rows, 1) / 20))
        smallest = min(max(smallest, 32), 256)
        return self._range("batch_size", smallest, 2 * smallest, 4 * smallest)

    @property
    def epochs(self) -> tuple[int, int, int]:
        """(fewest, most, step): 2 to 10 steps of `step` epochs (a --range of epochs: its
        ends, in the largest steps that divide the ends and `step`)."""
        step = round(10 * math.sqrt(REFERENCE_ROWS / max(self.rows, 1)))
        step = min(max(step, 1), MAX_EPOCHS // 10)
        low, high = self._range("epochs", 2 * step, 10 * step)
        return low, high, math.gcd(step, low, high)

    @property
    def max_epochs(self) -> int:
        return self.epochs[1]

    def __call__(self, trial: optuna.Trial) -> TrialConfig:
        low, high, step = self.epochs
        classification = self.task == "classification"
        r = self._range
        return TrialConfig(
            # architecture
            n_layers=trial.suggest_int("n_layers", *r("n_layers", 0 if self.linear else 1, 3)),
            width=trial.suggest_int("width", *r("width", *LOG_SCALE["width"]), log=True),
            batch_norm=trial.suggest_categorical("batch_norm", list(r("batch_norm", True, False))),
            # optimisation (AdamW; lr is the peak rate of onecycle / the start of cosine)
            lr=trial.suggest_float("lr", *r("lr", *LOG_SCALE["lr"]), log=True),
            lr_schedule=trial.suggest_categorical("lr_schedule", list(r("lr_schedule", *LR_SCHEDULES))),
            batch_size=trial.suggest_categorical("batch_size", list(self.batch_sizes)),
            epochs=trial.suggest_int("epochs", low, high, step=step),
            # regularization
            dropout=trial.suggest_float("dropout", *r("dropout", 0.0, 0.6)),
            weight_decay=trial.suggest_float("weight_decay", *r("weight_decay", *LOG_SCALE["weight_decay"]),
                                             log=True),
            label_smoothing=(trial.suggest_float("label_smoothing", *r("label_smoothing", 0.0, 0.2))
                             if classification else 0.0),
            input_noise=trial.suggest_float("input_noise", *r("input_noise", 0.0, 0.3)),
            # what the task adds
            class_weight=(trial.suggest_categorical("class_weight", list(r("class_weight", "none", "balanced")))
                          if classification and self.class_weight else "none"),
            loss=("mse" if classification else
                  trial.suggest_categorical("loss", list(r("loss", "mse", "huber")))),
            input_transform=(trial.suggest_categorical("input_transform",
                                                       list(r("input_transform", "standardize", "quantile")))
                             if self.quantile else "standardize"),
        )

    def distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        """The space's parameters and their distributions, read off a throwaway trial."""
        import optuna   # lazy: the CLI reads this module at start (gsearch --help)

        probe = optuna.create_study().ask()
        self(probe)
        return probe.distributions

    def describe(self) -> str:
        low, high, _ = self.epochs
        extra = "".join([", linear models too" if self.linear else "",
                         ", quantile inputs" if self.quantile else "",
                         ", class weights" if self.class_weight else "",
                         ", loss mse/huber" if self.task == "regression" else ""])
        ranges = [f"{name} {describe_range(name, values)}" for name, values in self.ranges
                  if name not in ("batch_size", "epochs")]
        return (f"sized to {self.rows:,} training rows: batch size "
                f"{'/'.join(map(str, self.batch_sizes))}, {low}-{high} epochs{extra}"
                + (f"; ranges {', '.join(ranges)}" if ranges else ""))

    @property
    def options(self) -> dict:
        """What a study records of the space beside its rows (records.SPACE_OPTIONS): its
        --range values too, as data, so that every run, worker and export of the study
        samples them."""
        ranges = {"ranges": {name: list(values) for name, values in self.ranges}} if self.ranges else {}
        return {"task": self.task, "class_weight": self.class_weight, "linear": self.linear,
                "quantile": self.quantile, **ranges}

    @classmethod
    def of(cls, study: optuna.Study) -> "SearchSpace":
        """The space a study was sized to (GTZAN's for a study made before spaces were sized)."""
        options = dict(study.user_attrs.get(records.SPACE_OPTIONS) or {})
        ranges = tuple(sorted((name, tuple(values)) for name, values in options.pop("ranges", {}).items()))
        return cls(int(study.user_attrs.get(records.SPACE_ROWS, cls.rows)), **options, ranges=ranges)

    @classmethod
    def for_table(cls, ds, rows: int) -> "SearchSpace":
        """The space for a table whose trials train on `rows` rows: its task; class weights
        searched where the classes are imbalanced (the largest over IMBALANCE times the
        smallest); linear models and the quantile input transform too for a table of one's own
        (GTZAN's space keeps its measured 1-3 hidden layers and standardization)."""
        from gsearch.data.schema import FEATURE_NAMES   # light: a tuple of names

        counts = [] if ds.task == "regression" else [int((ds.y == c).sum()) for c in range(len(ds.classes))]
        imbalanced = bool(counts) and max(counts) > IMBALANCE * max(min(counts), 1)
        own = ds.features != FEATURE_NAMES
        return cls(rows, ds.task, class_weight=bool(imbalanced), linear=own, quantile=own)


# GTZAN's space (640 training rows): the default of a caller that has no table in hand.
suggest_config = SearchSpace()


def resolve_space(space: str | Callable | None) -> Callable | None:
    """A search space of one's own: a function trial -> TrialConfig, or its import path
    MODULE:FUNCTION (the module on Python's path or in the current folder, as uvicorn finds an
    app); None: the built-in space, sized to the table (search.space.SearchSpace)."""
    if space is None or callable(space):
        return space
    module, _, name = space.partition(":")
    if not module or not name:
        raise GsearchError(f"--space {space!r}: give MODULE:FUNCTION, e.g. --space myspace:space "
                           "for a function space(trial) in myspace.py")
    if os.getcwd() not in sys.path:   # as `python -m` would have it
        sys.path.insert(0, os.getcwd())
    try:
        found = importlib.import_module(module)
        for part in name.split("."):
            found = getattr(found, part)
    except ImportError as e:
        raise GsearchError(f"--space {space}: cannot import {module} ({e}); run gsearch from the "
                           "folder that holds it, or put it on PYTHONPATH") from None
    except AttributeError:
        raise GsearchError(f"--space {space}: {module} has no {name}") from None
    if not callable(found):
        raise GsearchError(f"--space {space}: {name} is not a function of a trial")
    return found


def space_name(space: Callable | None) -> str | None:
    """The import path a study records for a space of one's own (None: the built-in one); a
    callable object's is its class's."""
    if space is None:
        return None
    named = space if hasattr(space, "__qualname__") else type(space)
    return f"{named.__module__}:{named.__qualname__}"


def space_of(study: optuna.Study, space: Callable | None = None) -> Callable:
    """The space a run of `study` samples: `space` when given, else the space of one's own the
    study was made with (--space), else the built-in space sized to its table."""
    return space or resolve_space(study.user_attrs.get(records.SPACE)) or SearchSpace.of(study)


def _parse_value(distribution: optuna.distributions.BaseDistribution, text: str):
    import optuna   # lazy: the CLI reads this module at start (gsearch --help)

    from gsearch.search._compat import distribution_contains   # lazy: _compat imports Optuna, as above

    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return next((c for c in distribution.choices if str(c).lower() == text.lower()), None)
    kind = int if isinstance(distribution, optuna.distributions.IntDistribution) else float
    try:
        value = kind(text)
    except ValueError:
        return None
    if not math.isfinite(value):   # nan passes Optuna's range check
        return None
    if distribution.log and value <= 0:   # Optuna raises on it: no value of a log scale
        return None
    return value if distribution_contains(distribution, value) else None


def _allowed(name: str, distribution: optuna.distributions.BaseDistribution) -> str:
    """What a parameter takes, in words: its choices, or its range (and step, log scale)."""
    choices = getattr(distribution, "choices", None)
    if choices is not None:
        return f"{name} takes one of {', '.join(str(c).lower() for c in choices)}"
    step = getattr(distribution, "step", None)
    words = f"{name} takes {distribution.low:g} to {distribution.high:g}"
    if step not in (None, 1):
        words += f" in steps of {step:g}"
    if distribution.log:
        words += ", on a log scale (so above 0)"
    return words


def check_log_scale(fix: Sequence[str], ranges: Sequence[str] = ()) -> None:
    """--fix of a log-scaled parameter (LOG_SCALE) at 0 or below, refused in one line naming
    its range (its --range, else the built-in one) before any heavy import: no table decides
    it. parse_fixed checks every value against the space sized to the table later."""
    given = dict(item.partition("=")[::2] for item in ranges)
    for item in fix:
        name, _, text = item.partition("=")
        if name not in LOG_SCALE:
            continue
        try:
            value = float(text)
        except ValueError:
            continue
        if value > 0:
            continue
        low, high = LOG_SCALE[name]
        try:
            low, high = (float(end) for end in given[name].split(":"))
        except (KeyError, ValueError):
            pass
        raise GsearchError(f"--fix {item!r}: {text!r} is not a value of {name}: {name} takes "
                           f"{low:g} to {high:g}, on a log scale (so above 0); pick one inside it")


def parse_fixed(items: Sequence[str], space: SearchSpace = suggest_config) -> dict:
    """`--fix NAME=VALUE` items as search-space parameters held at one value, each checked
    against `space` (names, types, ranges; the space sized to the run's table).

    >>> parse_fixed(["epochs=30", "batch_norm=true"])
    {'epochs': 30, 'batch_norm': True}
    """
    if not items:
        return {}
    distributions = space.distributions()
    fixed = {}
    for item in items:
        name, _, text = item.partition("=")
        distribution = distributions.get(name)
        if distribution is None:
            raise GsearchError(f"--fix {item!r}: use NAME=VALUE with NAME one of "
                               f"{', '.join(distributions)}")
        value = _parse_value(distribution, text)
        if value is None:
            raise GsearchError(f"--fix {item!r}: {text!r} is not a value of {name}: "
                               f"{_allowed(name, distribution)}, in this search space "
                               f"({space.describe()}); pick one inside it")
        fixed[name] = value
    return fixed


def describe_ranges(ranges: tuple) -> str:
    """SearchSpace.ranges as --range shows them: "epochs=3:5 lr_schedule=constant", or "none"."""
    shown = [f"{name}={','.join(map(str, values))}" if name in CATEGORICAL_PARAMETERS
             else f"{name}={':'.join(f'{v:g}' for v in values)}" for name, values in ranges]
    return " ".join(shown) or "none"


def describe_range(name: str, values: tuple) -> str:
    """A --range as shown: "16-64" for a number's, "constant/cosine" for choices."""
    if name in CATEGORICAL_PARAMETERS:
        return "/".join(str(v) for v in values)
    return "-".join(f"{v:g}" for v in values)


# The parameters whose --range is a list of choices (the others take LOW:HIGH); batch_size
# takes either: LOW:HIGH means the powers of two between them.
CATEGORICAL_PARAMETERS = ("batch_norm", "lr_schedule", "batch_size", "class_weight", "loss",
                          "input_transform")


def parse_ranges(items: Sequence[str], space: SearchSpace = suggest_config) -> tuple:
    """`--range NAME=LOW:HIGH` items (NAME=A,B,C for a categorical parameter's choices; batch_size
    takes LOW:HIGH as the powers of two between) as SearchSpace.ranges, each checked as --fix is:
    a parameter of `space`, values of its type that any model configuration takes, a low not
    above the high (log-scaled parameters above 0). A range may be narrower or wider than the
    built-in one; LOW:LOW holds a parameter at one value, inside the built-in range or not.

    >>> parse_ranges(["width=16:64", "lr_schedule=constant,cosine", "batch_size=16:64"])
    (('batch_size', (16, 32, 64)), ('lr_schedule', ('constant', 'cosine')), ('width', (16, 64)))
    >>> parse_ranges(["dropout=0.5:0.2"])
    Traceback (most recent call last):
    gsearch.GsearchError: --range 'dropout=0.5:0.2': the low end 0.5 is above the high end 0.2; give LOW:HIGH
    """
    import optuna   # lazy: the CLI reads this module at start (gsearch --help)

    distributions = dataclasses.replace(space, ranges=()).distributions()
    ranges = {}
    for item in items:
        name, _, text = item.partition("=")
        name = name.strip()
        distribution = distributions.get(name)
        if distribution is None or not text:
            raise GsearchError(f"--range {item!r}: use NAME=LOW:HIGH (NAME=A,B,C for choices) with "
                               f"NAME one of {', '.join(distributions)}")
        if isinstance(distribution, optuna.distributions.CategoricalDistribution):
            values = _choices(name, text, distribution.choices, item)
        else:
            kind = int if isinstance(distribution, optuna.distributions.IntDistribution) else float
            values = _bounds(name, text, kind, item, log=distribution.log)
        for value in values:   # every value a model configuration takes
            try:
                TrialConfig(**{name: value})
            except GsearchError:
                raise GsearchError(f"--range {item!r}: {value!r} is not a valid {name}") from None
        ranges[name] = tuple(values)
    return tuple(sorted(ranges.items()))


def _bounds(name: str, text: str, kind: type, item: str, *, log: bool = False) -> tuple:
    """LOW:HIGH of an int or float parameter, checked."""
    low, sep, high = text.partition(":")
    try:
        if not sep:
            raise ValueError
        low, high = kind(low), kind(high)
    except ValueError:
        raise GsearchError(f"--range {item!r}: give {name}=LOW:HIGH with {kind.__name__} ends") from None
    if not (math.isfinite(low) and math.isfinite(high)):
        raise GsearchError(f"--range {item!r}: the ends must be finite numbers")
    if low > high:
        raise GsearchError(f"--range {item!r}: the low end {low} is above the high end {high}; "
                           f"give LOW:HIGH")
    if log and low <= 0:
        raise GsearchError(f"--range {item!r}: {name} is searched on a log scale, so its low end "
                           "must be above 0")
    return low, high


def _choices(name: str, text: str, choices: Sequence, item: str) -> tuple:
    """A,B,C of a categorical parameter (batch_size: also LOW:HIGH), checked."""
    if name == "batch_size" and ":" in text:   # the powers of two between the ends
        low, high = _bounds(name, text, int, item)
        powers = tuple(2 ** k for k in range(1, 31) if low <= 2 ** k <= high)
        if not powers:
            raise GsearchError(f"--range {item!r}: no power of two lies between {low} and {high}")
        return powers
    kind = type(choices[0])
    values = []
    for word in (w.strip() for w in text.split(",")):
        if kind is bool and word.lower() in ("true", "false"):
            values.append(word.lower() == "true")
        elif kind is int and word.lstrip("-").isdigit():
            values.append(int(word))
        elif kind is str and word:
            values.append(word)
        else:
            raise GsearchError(f"--range {item!r}: {word!r} is not a choice of {name} (e.g. "
                               f"{','.join(str(c) for c in choices)})")
    return tuple(dict.fromkeys(values))
