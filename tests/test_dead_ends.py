"""Mistakes and dead ends answered at once and with the way out: a bad --data or storage URL
before torch, Optuna or pandas are imported; a storage URL from GSEARCH_STORAGE named as such;
a --timeout that stopped every trial says what works, with the --study and --storage used;
`gsearch studies --delete`. No mocks: real commands on real SQLite files."""

import subprocess
import sys

import optuna
import pytest
from click.testing import CliRunner

from gsearch.models.config import TrialConfig
from gsearch.cli import main

HEAVY = ("torch", "optuna", "sqlalchemy", "pandas")
PROBE = ("import atexit, sys\n"
         "atexit.register(lambda: print('loaded:', *sorted(m for m in %r if m in sys.modules), "
         "file=sys.stderr))\n"
         "from gsearch.cli import main\n"
         "main()\n") % (HEAVY,)


def tiny(trial):
    return TrialConfig(n_layers=1, width=trial.suggest_int("width", 8, 16), epochs=2)


def endless(trial):   # trials no deadline of a test lets complete
    return TrialConfig(n_layers=1, width=trial.suggest_int("width", 8, 16), epochs=100_000)


@pytest.mark.parametrize("args", [
    ["run", "--data", "no-such.csv"],
    ["run", "--storage", "sqlite:/studies.db"],
    ["run", "--storage", "postgres://me@localhost/db"],
    ["run", "--storage", "postgresql+psycopg3://me@localhost/db"],
    ["run", "--warm-start", "old", "--storage", "sqlite:///missing.db"],
    ["studies", "--storage", "sqlite:///missing.db"],
    ["export-best", "--storage", "sqlite:///missing.db"],
    ["export-best", "--data", "no-such.csv"],
    ["report", "--storage", "sqlite:///missing.db"],
    ["dashboard", "--storage", "sqlite:///missing.db"],
    ["evaluate", "--storage", "sqlite:/evaluate.db"],
    ["serve-storage", "--storage", "sqlite:/s.db"],
])
def test_a_usage_error_is_answered_before_the_heavy_libraries_load(tmp_path, args):
    done = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=tmp_path, capture_output=True,
                          text=True, env={"PATH": "/usr/bin:/bin"}, timeout=120)
    error, loaded = done.stderr.strip().splitlines()
    assert done.returncode == 1 and error.startswith("error: "), done.stderr
    assert loaded == "loaded:", f"{args}: {loaded} imported before the error was found"
    assert not list(tmp_path.iterdir()), "a store was created"


def test_a_tables_problems_are_answered_together_before_the_heavy_libraries_load(tmp_path):
    """Every column a command names that the table lacks, in one line, before torch loads."""
    table, work = tmp_path / "t.csv", tmp_path / "work"
    table.write_text("a,b,kind\n1,2,x\n3,4,y\n")
    work.mkdir()
    done = subprocess.run([sys.executable, "-c", PROBE, "run", "--data", table, "--drop", "c,d",
                           "--group", "g", "--label", "class"], cwd=work, capture_output=True,
                          text=True, env={"PATH": "/usr/bin:/bin"}, timeout=120)
    error, loaded = done.stderr.strip().splitlines()
    assert done.returncode == 1 and error == (
        f"error: {table} has 3 problems: no columns 'c', 'd' to leave out (--drop); no column 'g' "
        "to group rows by (--group); no 'class' column (name the label column with --label); its "
        "columns: 'a', 'b', 'kind'"), error
    assert loaded == "loaded:", f"{loaded} imported before the error was found"
    assert not list(work.iterdir()), "a store was created"


def test_a_cell_of_each_column_that_is_not_a_number_is_said_together(make_csv):
    from gsearch.data.load import DataError, load_dataset

    path = make_csv()
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[3].split(",")
    cells[header.index("tempo")], cells[header.index("rms_mean")] = "fast", ""
    lines[3] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as refused:
        load_dataset(path)
    assert str(refused.value) == (
        f"{path}: 2 columns have a cell that is not a number: column 'rms_mean' has an empty value "
        "'' at data row 3 (line 4); column 'tempo' has a non-numeric value 'fast' at data row 3 "
        "(line 4); fix or drop those rows")


def test_a_study_a_sqlite_file_does_not_hold_is_answered_before_the_heavy_libraries_load(tmp_path):
    import hashlib

    db = tmp_path / "s.db"
    optuna.create_study(study_name="kept", storage=f"sqlite:///{db}")
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    work = tmp_path / "work"
    work.mkdir()
    for command in ("export-best", "report"):
        done = subprocess.run([sys.executable, "-c", PROBE, command, "--study", "nosuch", "--storage",
                               f"sqlite:///{db}"], cwd=work, capture_output=True, text=True,
                              env={"PATH": "/usr/bin:/bin"}, timeout=120)
        error, loaded = done.stderr.strip().splitlines()
        assert done.returncode == 1 and error == (
            "error: no study named 'nosuch' in this storage (studies: kept); pass --study"), error
        assert loaded == "loaded:", f"{command}: {loaded} imported before the error was found"
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before and not list(work.iterdir())


def test_cuda_without_a_driver_is_answered_before_torch_loads(tmp_path):
    import ctypes.util
    import os

    if os.path.exists("/proc/driver/nvidia") or ctypes.util.find_library("cuda"):
        pytest.skip("this machine has an NVIDIA driver: torch decides whether CUDA works")
    for args in (["run"], ["export-best"], ["evaluate"]):
        done = subprocess.run([sys.executable, "-c", PROBE, *args, "--device", "cuda"], cwd=tmp_path,
                              capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, timeout=120)
        error, loaded = done.stderr.strip().splitlines()
        assert done.returncode == 1 and "CUDA is not available here" in error, done.stderr
        assert loaded == "loaded:", f"{args}: {loaded} imported before the error was found"
        assert not list(tmp_path.iterdir()), "a store was created"


def test_the_quick_check_keeps_the_messages_of_open_storage(tmp_path):
    from gsearch import GsearchError
    from gsearch.search.storage import check_url, open_storage

    urls = ["sqlite:/studies.db", "postgres://u@h/db", "nosuchdb://x", "grpc://nohost",
            "sqlite:///:memory:", f"sqlite:///{tmp_path}/missing/x.db", "oops.db"]
    for url in urls:
        with pytest.raises(GsearchError) as quick:
            check_url(url)
        with pytest.raises(GsearchError) as full:
            open_storage(url)
        assert str(quick.value) == str(full.value)
    check_url(f"sqlite:///{tmp_path}/new.db")   # a good URL passes and creates nothing
    check_url("postgresql://u@localhost/db")
    assert not list(tmp_path.iterdir())


def test_a_bad_url_in_gsearch_storage_says_it_came_from_there(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner(env={"GSEARCH_STORAGE": "sqlite:/studies.db"})
    result = runner.invoke(main, ["studies"])
    assert result.exit_code == 1
    [line] = result.output.strip().splitlines()
    assert line.startswith("error: bad storage URL 'sqlite:/studies.db' (from the environment "
                           "variable GSEARCH_STORAGE"), line
    # the same URL given as --storage is not blamed on the environment
    [line] = runner.invoke(main, ["studies", "--storage", "sqlite:/studies.db"]).output.splitlines()
    assert "GSEARCH_STORAGE" not in line and line.startswith("error: bad storage URL")
    missing = CliRunner(env={"GSEARCH_STORAGE": "sqlite:///gone.db"}).invoke(main, ["report"])
    assert missing.exit_code == 1 and "GSEARCH_STORAGE=sqlite:///gone.db" in missing.output
    assert not list(tmp_path.iterdir())


def test_a_deadline_that_stopped_every_trial_says_what_works_and_the_study_can_be_deleted(
        cli, make_csv, tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    where = f"--study empty --storage {url}"
    ran = cli("run", "--trials", 5, "--timeout", 0.001, "--data", make_csv(), *where.split(),
              space=tiny)
    assert ran.exit_code == 0, ran.output
    assert "deadline: --timeout 0.001 stopped the run after 0 of the 5 trials asked" in ran.output
    assert "export-best" not in ran.output
    assert f"run again with a longer --timeout (the study resumes), e.g. gsearch run {where} " \
           "--timeout 60" in ran.output
    assert f"gsearch studies --delete empty --storage {url}" in ran.output

    export = CliRunner().invoke(main, ["export-best", *where.split(), "--out", tmp_path / "x"])
    assert export.exit_code == 1 and not (tmp_path / "x").exists()
    [line] = export.output.strip().splitlines()
    assert f"run 'gsearch run {where}' until one completes" in line, line

    cli("run", "--trials", 1, "--data", make_csv(), "--study", "kept", "--storage", url, space=tiny)
    unknown = CliRunner().invoke(main, ["studies", "--storage", url, "--delete", "emtpy"])
    assert unknown.exit_code == 1
    assert unknown.output.strip().splitlines() == [
        f"error: no study 'emtpy' in {url}; its studies: empty, kept"]
    deleted = cli("studies", "--storage", url, "--delete", "empty")
    assert deleted.output.strip().splitlines() == [f"deleted study 'empty' (0 trials) from {url}"]
    names = [line.split()[0] for line in cli("studies", "--storage", url).output.splitlines()[1:]]
    assert names == ["kept"]


def test_a_deadline_that_stopped_a_run_with_completed_trials_says_so(cli, make_csv, tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    first = cli("run", "--trials", 1, "--data", make_csv(), "--storage", url, space=tiny)
    assert "deadline: " not in first.output and f"next: gsearch export-best --study gtzan-mlp " \
        f"--storage {url}" in first.output
    ran = cli("run", "--trials", 3, "--timeout", 0.001, "--data", make_csv(), "--storage", url,
              space=tiny)
    assert "stopped the run after 0 of the 3 trials asked" in ran.output
    assert f"next: gsearch export-best --study gtzan-mlp --storage {url}" in ran.output


def test_a_deadline_before_any_trial_completed_still_delivers_a_model(cli, make_csv, tmp_path):
    """A trial the deadline stopped was stopped, not beaten: with none completed, run --export
    makes its model of the stopped ones (best last validation score first), each retrained for
    the epochs it had run, and says so; export-best does the same."""
    import gsearch.search.runner  # noqa: F401  (imported before the clock starts: the trials start)
    from gsearch.models.predict import ExportedModel

    url, out = f"sqlite:///{tmp_path / 's.db'}", tmp_path / "model"
    ran = cli("run", "--trials", 2, "--timeout", 3, "--data", make_csv(), "--storage", url,
              "--study", "late", "--pruner", "none", "--export", out, space=endless)
    assert ran.exit_code == 0, ran.output
    assert "stopped the run after 0 of the 2 trials asked (--trials) finished; it stopped 2 in " \
           "flight" in ran.output
    assert "note: no trial completed before the deadline; the model is made of the trials it " \
           "stopped" in ran.output
    model = ExportedModel(out, "onnx")
    assert model.meta["pick"].startswith("deadline: top-")
    trials = {t.number: t for t in optuna.load_study(study_name="late", storage=url).trials}
    members = model.meta.get("members") or [model.meta]
    last = [trials[m["trial"]].intermediate_values for m in members]
    last = [values[max(values)] for values in last]
    assert last == sorted(last, reverse=True)   # best last validation score first
    for member in members:
        trial = trials[member["trial"]]
        assert trial.state == optuna.trial.TrialState.PRUNED
        assert member["hyperparameters"]["epochs"] == trial.user_attrs["epochs_run"] < 100_000
    again = cli("export-best", "--study", "late", "--storage", url, "--out", tmp_path / "again")
    assert again.exit_code == 0 and "note: no trial completed before the deadline" in again.output


def test_a_deadline_export_ranks_stopped_trials_beside_completed_ones_if_they_were_checked():
    """Trials the deadline stopped were stopped, not beaten: they rank beside the completed
    ones by their last score (at load 4 a weak completed trial, 0.71, was exported alone while
    stopped ones scored 0.73-0.77). Those stopped before the pruner's first check were never
    compared with the others: they join no model while another candidate is there (at load 4
    two such trials, validation 0.431 and 0.106, cost an ensemble 5 points)."""
    from optuna.distributions import IntDistribution
    from optuna.trial import TrialState, create_trial

    from gsearch.search import records
    from gsearch import GsearchError
    from gsearch.search.selection import chosen_trials, unbeaten

    def trial(epochs, last, reason):
        if reason is None:
            return create_trial(state=TrialState.COMPLETE, value=last, params={"width": 8},
                                distributions={"width": IntDistribution(8, 16)},
                                intermediate_values={epochs - 1: last})
        values = {e: last - 0.01 * (epochs - 1 - e) for e in range(epochs)}
        return create_trial(state=TrialState.PRUNED, params={"width": 8},
                            distributions={"width": IntDistribution(8, 16)},
                            intermediate_values=values,
                            user_attrs={records.PRUNED_REASON: reason, records.EPOCHS_RUN: epochs})

    deadline, pruner = f"{records.DEADLINE}: --timeout 7.5 s", f"{records.PRUNER} stopped it"
    study = optuna.create_study(direction="maximize")
    study.add_trials([trial(6, 0.55, pruner), trial(6, 0.40, pruner), trial(51, 0.738, deadline),
                      trial(51, 0.769, deadline), trial(1, 0.431, deadline), trial(5, 0.106, deadline),
                      trial(6, 0.35, deadline)])
    assert [t.number for t in unbeaten(study)] == [3, 2, 6]
    chosen, rule = chosen_trials(study, None, None)
    assert [t.number for t in chosen] == [3, 2, 6]
    assert rule == "deadline: top-3 of the trials --timeout stopped, by their last accuracy (no trial completed)"

    study.add_trial(trial(20, 0.712, None))   # a completed trial: ranked by its value among them
    chosen, rule = chosen_trials(study, None, None)
    assert [t.number for t in chosen] == [3, 2, 7, 6]
    assert rule == "deadline: top-4 by accuracy, 3 of them stopped by --timeout (by their last accuracy)"
    assert [t.number for t in chosen_trials(study, 1, None)[0]] == [3]
    with pytest.raises(GsearchError, match="--ensemble 9 needs 9 trials, .* has 4 completed or stopped"):
        chosen_trials(study, 9, None)

    unjudged = optuna.create_study(direction="maximize")   # no trial passed the first check:
    unjudged.add_trials([trial(6, 0.55, pruner), trial(1, 0.431, deadline), trial(5, 0.106, deadline)])
    assert [t.number for t in unbeaten(unjudged)] == [1, 2]   # a model all the same
    unjudged.add_trial(trial(20, 0.3, None))   # ... unless a completed trial is there
    assert [t.number for t in unbeaten(unjudged)] == [3]
    unpruned = optuna.create_study(direction="maximize")   # no check at all (--pruner none)
    unpruned.add_trials([trial(1, 0.431, deadline), trial(5, 0.106, deadline)])
    assert [t.number for t in unbeaten(unpruned)] == [0, 1]


def test_a_slow_start_up_does_not_eat_the_search(make_csv, tmp_path):
    """On a busy machine the imports and the data can take all of --timeout: the search then
    gets three quarters of it all the same, and the run says by how much it passed the deadline."""
    import time

    from gsearch.search.requests import RunRequest
    from gsearch.search.runner import SEARCH_SHARE, run_study

    lines = []
    request = RunRequest(data=make_csv(), trials=1000, timeout=4, storage=f"sqlite:///{tmp_path / 's.db'}",
                         space=tiny, device="cpu")
    began = time.monotonic()
    outcome = run_study(request, echo=lines.append, started=began - 30)   # 30 s of start-up
    searched = time.monotonic() - began
    [note] = [line for line in lines if line.startswith("note: start-up took")]
    assert f"of --timeout 4 (a busy machine?); the search gets {SEARCH_SHARE * 4:.1f} s all the " \
           "same" in note
    assert outcome.completed > 0 and searched >= SEARCH_SHARE * 4


def test_run_with_export_delivers_a_model_in_one_command(cli, make_csv, tmp_path):
    """run --export DIR: search, then export in the same process, as export-best would."""
    from gsearch.models.predict import ExportedModel, predict_files

    url, csv, out = f"sqlite:///{tmp_path / 's.db'}", make_csv(), tmp_path / "model"
    ran = cli("run", "--trials", 3, "--data", csv, "--storage", url, "--pruner", "none",
              "--export", out, space=tiny)
    assert ran.exit_code == 0, ran.output
    assert "top-3 trials" in ran.output and f"wrote {out}/: model.onnx" in ran.output
    assert "next: gsearch export-best" not in ran.output
    model = ExportedModel(out, "onnx")
    assert model.meta["retrained_on_rows"] > 0 and len(model.meta["members"]) == 3
    assert len(list(predict_files(model, [csv], on_error=pytest.fail))) == 120   # every row

    nothing = tmp_path / "nothing"   # a deadline before any trial completed: no model, exit 1
    late = cli("run", "--trials", 3, "--timeout", 0.001, "--data", csv, "--storage", url,
               "--study", "late", "--export", nothing, space=tiny)
    assert late.exit_code == 1 and not nothing.exists()
    assert late.output.strip().splitlines()[-1].startswith(
        f"error: no trial has trained an epoch yet, so nothing was exported to {nothing}")
