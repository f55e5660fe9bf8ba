"""Studies: create or resume one, how it proposes and stops trials (`Strategy`, from the
registries of samplers and pruners), warm start, state counts.

The CLI's --sampler and --pruner choices are the keys of SAMPLERS and PRUNERS; their
factories take the optuna module, so reading the registries (the CLI does, at start) imports
nothing heavy.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import re
import time
import warnings
from pathlib import Path
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from gsearch import GsearchError
from gsearch.search import records
from gsearch.search.space import MAX_EPOCHS, SearchSpace, describe_ranges

# lazy: the CLI reads the registries and defaults below when it starts (gsearch --help);
# Optuna (about a second to import) is imported by the functions that use it
if TYPE_CHECKING:
    import optuna   # lazy: the CLI reads this module at start (gsearch --help)

    from gsearch.data.load import Dataset
    from gsearch.search.objectives import Objectives   # lazy: objectives imports torch and Optuna, as above
    from gsearch.search.protocol import Protocol

DEFAULT_STUDY = "gtzan-mlp"


def set_log_level(verbose: bool = False) -> None:
    """Optuna's log level, the one place gsearch sets it: warnings (gsearch shows its own
    progress), every trial with `verbose` (-v)."""
    import optuna   # lazy: the CLI reads this module at start (gsearch --help)

    optuna.logging.set_verbosity(optuna.logging.INFO if verbose else optuna.logging.WARNING)


@contextlib.contextmanager
def quiet_log():
    """Optuna's log at errors only for the block, then as it was: the trials an interrupt
    ends (gsearch says in one line what happened to them)."""
    import optuna   # lazy: as above

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


# Trials trained at once as one batched model (gsearch run --population). On 1 CPU thread,
# over the default space, CPU ms per trial-epoch was 41.7 (1), 37.5 (4), 36.2 (8), 35.3 (16):
# most of the gain at 4, where TPE and the pruner see results soonest.
DEFAULT_POPULATION = 4

SAMPLERS: dict[str, Callable] = {   # name -> factory(optuna, seed)
    # constant_liar: trials asked while others run (populations, workers) avoid the
    # configurations still in flight
    "tpe": lambda optuna, seed: optuna.samplers.TPESampler(seed=seed, constant_liar=True),
    "random": lambda optuna, seed: optuna.samplers.RandomSampler(seed=seed),
    # NSGA-II, a genetic algorithm for Pareto fronts (generations of 50 trials)
    "nsga2": lambda optuna, seed: optuna.samplers.NSGAIISampler(seed=seed),
}

DEFAULT_PRUNER = "asha"   # measured against median in docs/benchmarks.md, "Fewer wasted epochs"

# name -> factory(optuna, max_epochs): the rungs scale with the longest trial of the space
# (space.SearchSpace.max_epochs; MAX_EPOCHS, GTZAN's, gives the numbers below)
PRUNERS: dict[str, Callable] = {
    # below the median of earlier trials at the same epoch, after 10 epochs
    "median": lambda optuna, most: optuna.pruners.MedianPruner(n_startup_trials=5,
                                                               n_warmup_steps=most // 10),
    # successive halving: only the best third at epochs 5, 15 and 45 go on (the default)
    "asha": lambda optuna, most: optuna.pruners.SuccessiveHalvingPruner(
        min_resource=max(1, most // 20), reduction_factor=3),
    # several successive-halving brackets, from 10 to 100 epochs
    "hyperband": lambda optuna, most: optuna.pruners.HyperbandPruner(
        min_resource=max(1, most // 10), max_resource=most, reduction_factor=3),
    # train every trial out
    "none": lambda optuna, most: optuna.pruners.NopPruner(),
}


SEED_STRIDE = 1_000_003  # the k-th worker process of a run samples with seed + k * SEED_STRIDE


@dataclass(frozen=True)
class Strategy:
    """How a study proposes and stops trials: `gsearch run`'s --sampler, --pruner, --seed and
    --fix (parameters held at one value, space.parse_fixed). Every handle of a study (the
    run's own, each worker process's) builds its sampler and pruner from it, once.

    A seeded sampler is seeded with seed + `done` (the trials the study had when the run
    began, so a resumed study continues the sequence instead of replaying its first
    configurations) + `worker` * SEED_STRIDE (worker processes sample apart).

    >>> type(Strategy(pruner="median").make_pruner()).__name__
    'MedianPruner'
    >>> Strategy("grid")
    Traceback (most recent call last):
    gsearch.GsearchError: unknown sampler 'grid'; use one of tpe, random, nsga2
    """

    sampler: str = "tpe"
    pruner: str = DEFAULT_PRUNER
    seed: int | None = None
    fixed: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.sampler not in SAMPLERS:
            raise GsearchError(f"unknown sampler {self.sampler!r}; use one of {', '.join(SAMPLERS)}")
        if self.pruner not in PRUNERS:
            raise GsearchError(f"unknown pruner {self.pruner!r}; use one of {', '.join(PRUNERS)}")

    def make_sampler(self, done: int = 0, worker: int = 0) -> optuna.samplers.BaseSampler:
        import optuna   # lazy: the CLI reads this module at start (gsearch --help)

        seed = None if self.seed is None else self.seed + done + worker * SEED_STRIDE
        sampler = SAMPLERS[self.sampler](optuna, seed)
        if not self.fixed:
            return sampler
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.PartialFixedSampler(self.fixed, sampler)

    def make_pruner(self, max_epochs: int = MAX_EPOCHS) -> optuna.pruners.BasePruner:
        """The pruner, its rungs scaled to a space whose longest trial is `max_epochs`."""
        import optuna   # lazy: the CLI reads this module at start (gsearch --help)

        return PRUNERS[self.pruner](optuna, max_epochs)


def study_names(storage: optuna.storages.BaseStorage) -> list[str]:
    return [s.study_name for s in storage.get_all_studies()]


def default_study(data: str | Path | None) -> str:
    """The study `gsearch run` searches without --study: GTZAN's (DEFAULT_STUDY) for a table in
    the Kaggle GTZAN schema, else one named after the table's file (penguins.csv -> penguins),
    so that a table of one's own does not run into the GTZAN study's data guard. Reads the
    header line only (data.files.header_names)."""
    from gsearch.data.files import header_names   # light: the standard library
    from gsearch.data.schema import FEATURE_NAMES   # light: a tuple of names

    if data is None or sum(n in FEATURE_NAMES for n in header_names(data)) >= len(FEATURE_NAMES) / 2:
        return DEFAULT_STUDY
    stem = Path(data).name.split(".")[0]
    return re.sub(r"[^\w.-]+", "_", stem) or DEFAULT_STUDY


def load_study(storage: optuna.storages.BaseStorage, name: str | None, **kwargs) -> optuna.Study:
    """Load an existing study or fail with the names that do exist. `name` None: the storage's
    only study when it has one, else DEFAULT_STUDY."""
    import optuna   # lazy: the CLI reads this module at start (gsearch --help)

    name = _existing(name, study_names(storage))
    return optuna.load_study(study_name=name, storage=storage, **kwargs)


def _existing(name: str | None, names: list[str]) -> str:
    """`name` (None: the only one of `names`, else DEFAULT_STUDY) when it is one of `names`."""
    if name is None:
        name = names[0] if len(names) == 1 else DEFAULT_STUDY
    if name not in names:
        raise GsearchError(f"no study named '{name}' in this storage (studies: "
                           f"{', '.join(names) or 'none'}); pass --study")
    return name


def check_study_exists(url: str, name: str | None) -> None:
    """load_study's refusal of a study that a SQLite file does not hold, read with the
    standard library (sqlite3, read-only) so that the CLI answers before it imports torch and
    Optuna. Other storages, and a file that is not an Optuna storage: nothing (load_study and
    open_storage say what is wrong)."""
    import sqlite3   # lazy: only where a command names an existing study
    from urllib.parse import quote

    from gsearch.search.storage.url import Kind, StorageURL   # lazy: as sqlite3

    location = StorageURL.parse(url)
    if location.kind is not Kind.SQLITE or location.path is None or not location.path.is_file():
        return
    try:
        db = sqlite3.connect(f"file:{quote(str(location.path.resolve()))}?mode=ro", uri=True,
                             timeout=5)
        try:
            names = [n for (n,) in db.execute("SELECT study_name FROM studies ORDER BY study_id")]
        finally:
            db.close()
    except sqlite3.Error:
        return
    _existing(name, names)


def open_study(storage: optuna.storages.BaseStorage, name: str, *, protocol: Protocol, ds: Dataset,
               strategy: Strategy = Strategy(), objectives: Objectives | None = None,
               space: SearchSpace | None = None, space_name: str | None = None) -> optuna.Study:
    """Create the study, or resume it after checking it was made on the same data,
    protocol and objectives (nothing is written when a check fails). Its sampler and
    pruner come from `strategy` (a seeded sampler continues the sequence of a resumed
    study: Strategy.make_sampler; the pruner's rungs follow the study's search space, sized
    to the rows a trial trains on when the study is made: space.SearchSpace, or `space`
    when the caller has sized it already). `space_name`: the MODULE:FUNCTION of a space of
    one's own (--space), recorded and guarded like the protocol."""
    import optuna   # lazy: the CLI reads this module at start (gsearch --help)

    from gsearch.search.objectives import Objectives   # lazy: objectives imports torch and Optuna, as above

    objectives = objectives or Objectives()
    done = 0
    sized = None
    if name in study_names(storage):
        existing = optuna.load_study(study_name=name, storage=storage)
        protocol.check(existing, ds)
        objectives.check(existing)
        _check_space(existing, space_name)
        done = len(existing.trials)
        sized = SearchSpace.of(existing) if done else None
        if sized is not None and space is not None and space.ranges and space.ranges != sized.ranges:
            raise GsearchError(f"study '{name}' was made with --range {describe_ranges(sized.ranges)}, "
                               f"this run has --range {describe_ranges(space.ranges)}; use the same "
                               "--range, none (the recorded ones), or a new --study name")
    space = sized or space or SearchSpace.for_table(ds, protocol.train_rows(ds))
    study = optuna.create_study(storage=storage, study_name=name, directions=objectives.directions,
                                sampler=strategy.make_sampler(done),
                                pruner=strategy.make_pruner(space.max_epochs), load_if_exists=True)
    if done == 0:
        for key, value in protocol.fingerprint(ds).items():
            study.set_user_attr(key, value)
        study.set_user_attr(records.SPACE_ROWS, space.rows)
        if space != SearchSpace(space.rows):   # GTZAN's space needs no more (older studies)
            study.set_user_attr(records.SPACE_OPTIONS, space.options)
        if space_name is not None:
            study.set_user_attr(records.SPACE, space_name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            objectives.record(study)   # with the dashboard's metric names
    return study


def _check_space(study: optuna.Study, space_name: str | None) -> None:
    """A run of a study made with a space of one's own uses that space (none given: the
    recorded one); another space is refused, as other data or protocol options are."""
    recorded = study.user_attrs.get(records.SPACE)
    if space_name is None or space_name == recorded or not study.trials:
        return
    made = f"--space {recorded}" if recorded else "the built-in search space"
    raise GsearchError(f"study '{study.study_name}' was made with {made}, this run has --space "
                       f"{space_name}; use the same space, or a new --study name")


# How many of an earlier study's best configurations `gsearch run --warm-start` enqueues.
WARM_START_TRIALS = 5


def warm_start_configs(source: optuna.Study, fixed: dict | None = None,
                       n: int = WARM_START_TRIALS, *, space: SearchSpace | None = None) -> list[dict]:
    """The search-space parameters of `source`'s best completed trials (by validation
    accuracy, within its limits; at most `n`), for a new search to start from. Parameters
    the space no longer has are dropped, `fixed` ones (--fix) replace theirs, and a
    configuration outside the ranges of `space` (the new search's; GTZAN's by default) is
    left out rather than clipped.

    >>> import optuna
    >>> earlier = optuna.create_study(direction="maximize")
    >>> earlier.enqueue_trial({"n_layers": 2, "width": 256, "epochs": 60})
    >>> earlier.optimize(lambda t: t.suggest_int("n_layers", 1, 3) + t.suggest_int("width", 32, 512)
    ...                  + t.suggest_int("epochs", 20, 100, step=10), n_trials=1)
    >>> warm_start_configs(earlier, fixed={"epochs": 30})
    [{'n_layers': 2, 'width': 256, 'epochs': 30}]
    """
    from gsearch.search._compat import distribution_contains   # lazy: _compat imports Optuna, as above
    from gsearch.search.selection import candidates, top_trials   # lazy: selection imports Optuna, as above

    ranked = top_trials(source, min(n, len(candidates(source))))
    if not ranked:
        raise GsearchError(f"study '{source.study_name}' has no completed trial to start from; "
                           "drop --warm-start or name a study with finished trials")
    space = (space or SearchSpace()).distributions()
    configs = []
    for trial in ranked:
        params = {k: v for k, v in trial.params.items() if k in space} | (fixed or {})
        if all(distribution_contains(space[k], v) for k, v in params.items()):
            configs.append(params)
    return configs


# A finished trial is complete or pruned: what --trials N counts. A failed trial (also one a
# Ctrl-C interrupted) is not: its slot goes back to the run, and evaluate tops its studies up.
FINISHED = ("complete", "pruned")


def finished(trial: optuna.trial.FrozenTrial) -> bool:
    return trial.state.name.lower() in FINISHED


def finished_count(study: optuna.Study) -> int:
    counts = state_counts(study)
    return sum(counts[state] for state in FINISHED)


def state_counts(study: optuna.Study) -> dict[str, int]:
    """Trials per state name (complete, pruned, fail, running, waiting), and `interrupted`:
    the failed trials that a Ctrl-C or SIGTERM ended (user attribute records.INTERRUPTED)."""
    from optuna.trial import TrialState   # lazy: as above

    counts = {state.name.lower(): 0 for state in TrialState} | {"interrupted": 0}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name.lower()] += 1
        counts["interrupted"] += trial.state == TrialState.FAIL and records.INTERRUPTED in trial.user_attrs
    return counts


@dataclass(frozen=True)
class StudySummary:
    """One study of a storage, as `gsearch studies` lists it."""

    name: str
    trials: int
    complete: int
    pruned: int
    failed: int          # whose training or code failed
    running: int
    interrupted: int     # failed because a Ctrl-C or SIGTERM ended them
    best: float | None   # the best validation accuracy (of the feasible trials, several objectives)
    pareto: int | None   # trials on the Pareto front of a study with several objectives


def study_summaries(storage: optuna.storages.BaseStorage) -> list[StudySummary]:
    """Every study of `storage` with its trial counts, best value and Pareto front."""
    import optuna   # lazy: see the imports

    from gsearch.search.objectives import Objectives, feasible, score_of   # lazy: torch, see the imports
    from gsearch.search.selection import pareto_front   # lazy: as above

    states = optuna.trial.TrialState
    summaries = []
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=True):
        study_id = storage.get_study_id_from_name(summary.study_name)
        failed = storage.get_all_trials(study_id, deepcopy=False, states=(states.FAIL,))
        interrupted = sum(records.INTERRUPTED in t.user_attrs for t in failed)
        best = None if summary.best_trial is None else summary.best_trial.value
        front = None
        if len(summary.directions) > 1:
            objectives = Objectives.of(optuna.load_study(study_name=summary.study_name, storage=storage))
            complete = storage.get_all_trials(study_id, deepcopy=False, states=(states.COMPLETE,))
            ok = [t for t in complete if feasible(t)]
            front = len(pareto_front(ok, objectives))
            best = score_of(max(ok, key=objectives.gain)) if ok else None
        counts = [storage.get_n_trials(study_id, state) for state in
                  (states.COMPLETE, states.PRUNED, states.FAIL, states.RUNNING)]
        summaries.append(StudySummary(summary.study_name, summary.n_trials, counts[0], counts[1],
                                      counts[2] - interrupted, counts[3], interrupted, best, front))
    return summaries


# A RUNNING trial whose heartbeat is this recent, or that started this recently, belongs to a
# run that is still searching its study; so does one that writes while `studies --delete`
# watches it for WATCH_SECONDS (a run writes its trials' curves every second).
LIVE_SECONDS = 60
WATCH_SECONDS = 2.0


class StudyDeleted(GsearchError):
    """The study a run was searching is gone from its storage (another process deleted it)."""


def live_trials(storage: optuna.storages.BaseStorage, study_id: int,
                watch: float = WATCH_SECONDS) -> list[int]:
    """The numbers of a study's trials that a run is still working on: RUNNING ones beaten
    (storages with heartbeats) or started within LIVE_SECONDS; else, while some are RUNNING,
    those written to (or created) while the study is watched for `watch` seconds. Trials left
    RUNNING by a run that died are not live once their last heartbeat and start are that old."""
    import optuna   # lazy: see the imports
    from optuna.storages import RDBStorage

    from gsearch.search._compat import cached_backend, heartbeat_ages, trial_id   # lazy: Optuna

    running = storage.get_all_trials(study_id, deepcopy=False,
                                     states=(optuna.trial.TrialState.RUNNING,))
    if not running:
        return []
    backend = cached_backend(storage)
    ages = heartbeat_ages(backend, study_id) if isinstance(backend, RDBStorage) else {}

    def recent(trial) -> bool:
        age = ages.get(trial_id(trial))
        start = trial.datetime_start
        if start is not None:
            now = datetime.datetime.now(start.tzinfo)
            age = min(age if age is not None else math.inf, (now - start).total_seconds())
        return age is not None and age < LIVE_SECONDS

    live = {t.number for t in running if recent(t)}
    if live or not watch:
        return sorted(live)

    def marks() -> dict[int, tuple]:   # what any write to a trial changes
        return {t.number: (t.state, len(t.intermediate_values), len(t.user_attrs),
                           len(repr(t.system_attrs)))
                for t in storage.get_all_trials(study_id, deepcopy=False)}

    before = marks()
    time.sleep(watch)
    after = marks()
    return sorted(n for n, mark in after.items() if before.get(n) != mark)


def delete_study(storage: optuna.storages.BaseStorage, name: str, shown_url: str, *,
                 force: bool = False) -> int:
    """Delete one study of `storage` (`shown_url` names it in the errors) with all its trials,
    after checking that it is there and, unless `force`, that no run is searching it
    (live_trials); returns how many trials were deleted. Checked after deleting: a study still
    there is an error (Optuna's delete_study of a study that a run writes to meanwhile may
    delete nothing and say nothing; a database storage's is done in one locked transaction)."""
    import optuna   # lazy: see the imports
    from optuna.storages import RDBStorage

    from gsearch.search._compat import cached_backend, delete_study_rows   # lazy: Optuna
    from gsearch.search.storage import with_retry   # lazy: loads Optuna and SQLAlchemy

    def missing() -> GsearchError:
        names = study_names(storage)
        return GsearchError(f"no study '{name}' in {shown_url}; "
                            + (f"its studies: {', '.join(names)}" if names else "it has no studies"))

    if name not in study_names(storage):
        raise missing()
    study_id = storage.get_study_id_from_name(name)
    if not force:
        live = live_trials(storage, study_id)
        if live:
            shown = ", ".join(f"#{n}" for n in live[:5]) + (" ..." if len(live) > 5 else "")
            raise GsearchError(
                f"study '{name}' in {shown_url} is being searched: a run is working on its "
                f"trial{'s' if len(live) > 1 else ''} {shown}; nothing was deleted: stop that "
                "run first (Ctrl-C ends its trials), or pass --force to delete the study now "
                "(the run then stops)")
    backend = cached_backend(storage)
    if isinstance(backend, RDBStorage):
        deleted = with_retry(storage, delete_study_rows, backend, study_id)
        if deleted is None:   # deleted by another process meanwhile
            raise missing()
    else:
        deleted = len(storage.get_all_trials(study_id, deepcopy=False))
        optuna.delete_study(study_name=name, storage=storage)
    try:
        still = storage.get_study_id_from_name(name) == study_id
    except KeyError:
        still = False
    if still:
        raise GsearchError(f"study '{name}' is still in {shown_url}: the storage did not delete "
                           "it while a run was writing to it; stop the run and try again")
    return deleted


def study_deleted(study: optuna.Study) -> bool:
    """Whether `study` is gone from its storage (deleted by another process; a study made
    anew under its name is another one); False when the storage cannot tell (unreachable)."""
    from gsearch.search._compat import study_id, study_storage   # lazy: Optuna

    try:
        return study_storage(study).get_study_id_from_name(study.study_name) != study_id(study)
    except KeyError:
        return True
    except Exception:
        return False
