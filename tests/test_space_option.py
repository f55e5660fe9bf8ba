"""--space MODULE:FUNCTION: a search space of one's own, from the current folder, recorded in the
study, used by workers and resumes, guarded like the protocol."""

import subprocess
import sys
import textwrap

import optuna
import pytest

SPACE = textwrap.dedent("""
    from gsearch.models import TrialConfig

    def space(trial):
        return TrialConfig(n_layers=1, width=trial.suggest_int("width", 8, 16), epochs=3)

    def other(trial):
        return TrialConfig(n_layers=2, width=trial.suggest_int("width", 8, 16), epochs=3)
""")


def gsearch(folder, *args):
    return subprocess.run([sys.executable, "-m", "gsearch", *map(str, args)], cwd=folder,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_space_of_ones_own_is_searched_by_workers_recorded_and_guarded(make_csv, tmp_path):
    (tmp_path / "myspace.py").write_text(SPACE)
    csv, db = make_csv(tracks_per_class=8), f"sqlite:///{tmp_path / 's.db'}"
    ran = gsearch(tmp_path, "run", "--data", csv, "--storage", db, "--trials", 3, "--workers", 2,
                  "--space", "myspace:space", "--pruner", "none")
    assert ran.returncode == 0, ran.stderr
    again = gsearch(tmp_path, "run", "--data", csv, "--storage", db, "--trials", 1)   # recorded
    assert again.returncode == 0, again.stderr
    study = optuna.load_study(study_name="gtzan-mlp", storage=db)
    assert study.user_attrs["space"] == "myspace:space"
    assert len(study.trials) == 4
    assert all(t.system_attrs["gsearch:config"]["n_layers"] == 1 for t in study.trials)
    assert all(t.user_attrs["epochs_run"] == 3 for t in study.trials)

    other = gsearch(tmp_path, "run", "--data", csv, "--storage", db, "--space", "myspace:other")
    assert other.returncode == 1
    assert other.stderr.startswith("error: study 'gtzan-mlp' was made with --space myspace:space")
    assert len(other.stderr.strip().splitlines()) == 1
    assert len(optuna.load_study(study_name="gtzan-mlp", storage=db).trials) == 4


@pytest.mark.parametrize("space, words", [("nosuchmodule:space", "cannot import nosuchmodule"),
                                          ("myspace:nothing", "myspace has no nothing"),
                                          ("myspace", "give MODULE:FUNCTION")])
def test_a_bad_space_is_one_line_before_anything_is_stored(make_csv, tmp_path, space, words):
    (tmp_path / "myspace.py").write_text(SPACE)
    ran = gsearch(tmp_path, "run", "--data", make_csv(), "--storage", f"sqlite:///{tmp_path / 's.db'}",
                  "--space", space)
    assert ran.returncode == 1 and ran.stderr.startswith("error: ") and words in ran.stderr
    assert len(ran.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "s.db").exists()
