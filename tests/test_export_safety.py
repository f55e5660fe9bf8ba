"""An export folder is written whole or not at all, and never over something else (issue 35
items 7, 13, 14, 16, 18, 19): another study's export is refused unless --force, a folder of
other files and symlinks inside it are refused, a path under a file is refused before the
search, a full disk leaves nothing half-made, many classes draw in seconds, a `$` in a label is
text, and a damaged older export is one line."""

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
from click.testing import CliRunner

from gsearch.cli import main
from gsearch.models.calibration import prediction_sets, set_coverage
from gsearch.models.export import CONFUSION_MAX_CLASSES, plot_test
from gsearch.models.metrics import class_recalls, classification_scores

SMALL = ("--fix", "epochs=20", "--fix", "width=32", "--fix", "n_layers=1", "--seed", "1",
         "--pruner", "none")
FIXTURES = Path(__file__).parent / "fixtures" / "export-0.1.0"


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def one_error(result, code: int = 1) -> str:
    """The single `error: ` line of a refused command (no traceback)."""
    assert result.exit_code == code, result.output[-2000:]
    assert "Traceback" not in result.output, result.output[-2000:]
    [line] = [line for line in result.output.splitlines() if line.startswith("error: ")]
    return line


def snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def leftovers(parent: Path) -> list[str]:
    """Hidden partial or set-aside folders an export left beside its target."""
    return [p.name for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name]


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """Studies 'a' and 'b' (2 small trials each) in one SQLite file; 'a' exported to a/."""
    from conftest import synthetic_frame

    root = tmp_path_factory.mktemp("safety")
    csv = root / "f.csv"
    synthetic_frame(tracks_per_class=10).to_csv(csv, index=False)
    url = f"sqlite:///{root / 's.db'}"
    for name in ("a", "b"):
        result = invoke("run", "--trials", 2, "--data", csv, "--storage", url, "--study", name, *SMALL,
                        *(("--export", root / "a") if name == "a" else ()))
        assert result.exit_code == 0, result.output
    return root, url


def export(url, study, out, *extra):
    return invoke("export-best", "--storage", url, "--study", study, "--out", out, "--ensemble", 1,
                  *extra)


# -- item 7: another study's export --------------------------------------------------------

def test_another_studys_export_is_refused_unless_force(studies, tmp_path):
    root, url = studies
    out = tmp_path / "exp"
    assert export(url, "a", out).exit_code == 0
    before = snapshot(out)
    line = one_error(export(url, "b", out))
    assert f"holds the export of study 'a' of sqlite:///{root / 's.db'}" in line, line
    assert "not of study 'b'" in line and "--force" in line, line
    assert snapshot(out) == before
    result = export(url, "b", out, "--force")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "model.json").read_text())["study"] == "b"
    assert leftovers(tmp_path) == []


def test_the_same_study_exports_again_into_its_own_folder(studies):
    root, url = studies
    out = root / "a"   # run --export wrote it
    meta = json.loads((out / "model.json").read_text())
    assert meta["study"] == "a" and meta["storage"] == f"sqlite:///{root / 's.db'}"
    result = export(url, "a", out)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "confusion_matrix.png", "model.json", "model.onnx", "model.pt", "report.json"]
    assert leftovers(root) == []


def test_run_export_checks_its_folder_before_the_search(studies, tmp_path):
    """Another study's export, and a path under a file, are refused before any trial runs:
    the new study is not even created."""
    root, url = studies
    afile = tmp_path / "afile"
    afile.write_text("mine\n")
    for folder, expected in ((root / "a", "holds the export of study 'a'"),
                             (afile / "sub", f"{afile} is a file, not a folder")):
        started = time.monotonic()
        line = one_error(invoke("run", "--trials", 1, "--data", root / "f.csv", "--storage", url,
                                "--study", "fresh", *SMALL, "--export", folder))
        assert expected in line and "--export" in line, line
        assert time.monotonic() - started < 20
    assert "fresh" not in [s.study_name for s in optuna.get_all_study_summaries(url)]
    assert afile.read_text() == "mine\n"
    line = one_error(invoke("run", "--trials", 1, "--data", root / "f.csv", "--force"))
    assert "--force" in line and "--export" in line


def test_export_best_under_a_file_is_one_line(studies, tmp_path):
    _, url = studies
    (tmp_path / "afile").write_text("mine\n")
    line = one_error(export(url, "a", tmp_path / "afile" / "sub"))
    assert line == (f"error: cannot create the folder {tmp_path / 'afile' / 'sub'}: "
                    f"{tmp_path / 'afile'} is a file, not a folder; choose another --out")
    line = one_error(export(url, "a", tmp_path / "afile"))   # was click's three lines, exit 2
    assert line == f"error: --out {tmp_path / 'afile'} is a file, not a folder; choose a new or empty folder"
    assert (tmp_path / "afile").read_text() == "mine\n"


# -- item 16: symlinks and folders of other files --------------------------------------------

def test_a_folder_of_other_files_is_refused_and_kept(studies, tmp_path):
    _, url = studies
    out = tmp_path / "mine"
    out.mkdir()
    (out / "report.json").write_text('{"mine": true}\n')
    (out / "notes.txt").write_text("notes\n")
    line = one_error(export(url, "a", out))
    assert line == (f"error: --out {out} holds files that are not a gsearch export: notes.txt, "
                    "report.json; choose an empty or new folder")
    assert one_error(export(url, "a", out, "--force")) == line   # --force never deletes those
    assert (out / "report.json").read_text() == '{"mine": true}\n'


def test_a_symlink_in_the_folder_is_never_written_through(studies, tmp_path):
    root, url = studies
    out = tmp_path / "exp"
    assert export(url, "a", out).exit_code == 0
    victim = tmp_path / "outside.json"
    victim.write_text("keep\n")
    (out / "model.json").unlink()
    (out / "model.json").symlink_to(victim)
    line = one_error(export(url, "a", out, "--force"))
    assert "holds files that are not a gsearch export: model.json (a symlink)" in line, line
    assert victim.read_text() == "keep\n"


def test_out_as_a_symlink(studies, tmp_path):
    """A symlink to a folder is written as that folder (the link stays a link); one that points
    nowhere is refused."""
    _, url = studies
    target = tmp_path / "real"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    assert export(url, "a", link).exit_code == 0
    assert link.is_symlink() and (target / "model.json").is_file()
    assert export(url, "a", link).exit_code == 0   # again: the same study
    assert link.is_symlink() and sorted(p.name for p in target.iterdir())[0] == "confusion_matrix.png"
    assert leftovers(tmp_path) == []
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere" / "x")
    line = one_error(export(url, "a", dangling))
    assert "is a symlink to" in line and "which does not exist" in line, line
    assert not (tmp_path / "nowhere").exists()


# -- item 14: a full disk --------------------------------------------------------------------

@pytest.fixture
def full_disk(tmpfs):
    """A 600 KB tmpfs (root only: skipped elsewhere)."""
    return tmpfs("small", "600k")


def test_a_full_disk_leaves_nothing_half_made(studies, full_disk):
    """Before: a partial model.pt and a traceback. Now one line; the earlier export is intact,
    a new folder is not created, no partial folder is left."""
    _, url = studies
    out = full_disk / "exp"
    assert export(url, "a", out).exit_code == 0   # a small model: it fits
    before = snapshot(out)
    filler = full_disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:   # fill the disk
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    for folder, kept in ((out, "is as it was"), (full_disk / "new" / "exp", "was not created")):
        line = one_error(export(url, "a", folder))
        assert line.startswith(f"error: the disk holding {folder.parent} is full"), line
        assert kept in line and "free space there or choose another --out" in line, line
    assert snapshot(out) == before
    assert sorted(p.name for p in full_disk.iterdir()) == ["exp", "filler"]


def test_a_mount_point_as_out_is_one_line(studies, full_disk):
    """The export is renamed into place, and a mount point cannot be: said, nothing left."""
    _, url = studies
    line = one_error(export(url, "a", full_disk))
    assert "it is a mount point" in line and "choose a folder inside it as --out" in line, line
    assert list(full_disk.iterdir()) == [] and leftovers(full_disk.parent) == []


# -- item 19: a damaged older export ---------------------------------------------------------

def test_an_older_export_with_an_empty_model_pt_is_one_line(tmp_path):
    """An export of before the digests (nothing to compare) with an empty model.pt: before,
    an IndexError traceback in predict and in serve's start."""
    folder = tmp_path / "single"
    shutil.copytree(FIXTURES / "single", folder)
    meta = json.loads((folder / "model.json").read_text())
    for key in ("sha256", "meta_sha256", "n_features", "n_classes"):
        meta.pop(key, None)
    (folder / "model.json").write_text(json.dumps(meta))
    (folder / "model.pt").write_bytes(b"")
    expected = f"error: {folder / 'model.pt'} is empty: the export is damaged; export the model again"
    assert one_error(invoke("predict", "--backend", "torch", "--model", folder,
                            FIXTURES / "rows.csv")) == expected
    assert one_error(invoke("serve", "--backend", "torch", "--model", folder)) == expected


# -- items 13 and 18: the test plot ------------------------------------------------------------

def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_dollar_signs_in_labels_are_text(tmp_path):
    """Before: matplotlib parsed `cost_$1_to_$5` as maths (a 98-line traceback, no plot)."""
    classes = ("cost_$1_to_$5", "cost_$5_to_$10", "$", "a$b$c")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 60)
    report = classification_scores(y, np.where(rng.random(60) < 0.7, y, 0), classes)
    plot_test("classification", report, tmp_path / "m.png", "study $x$ trial 0")
    assert png_size(tmp_path / "m.png")[0] > 100
    many = tuple(f"cost_${i}_to_${i + 1}" for i in range(CONFUSION_MAX_CLASSES + 5))
    y = rng.integers(0, len(many), 400)
    plot_test("classification", classification_scores(y, y, many), tmp_path / "many.png", "$x$")
    assert png_size(tmp_path / "many.png")[0] > 100


def test_many_classes_draw_the_worst_recalls_in_a_figure_that_does_not_grow(tmp_path):
    """Before: the confusion matrix of 1,000 classes was killed at 5.4 GB. Past
    CONFUSION_MAX_CLASSES the plot is the recall of the 30 lowest; report.json's matrix lists its
    non-zero cells, with the same per-class counts as a full one."""
    rng = np.random.default_rng(1)
    sizes = {}
    for n in (CONFUSION_MAX_CLASSES + 1, 1000, 5000):
        classes = tuple(f"c{i}" for i in range(n))
        y = np.repeat(np.arange(n), 2)
        predicted = np.where(rng.random(len(y)) < 0.5, y, rng.integers(0, n, len(y)))
        report = classification_scores(y, predicted, classes)
        started = time.perf_counter()
        plot_test("classification", report, tmp_path / f"{n}.png", "t")
        assert time.perf_counter() - started < 30
        sizes[n] = png_size(tmp_path / f"{n}.png")
        support, correct = class_recalls(report["confusion_matrix"])
        assert (support == 2).all() and correct.sum() == (predicted == y).sum()
        assert ("rows" in report["confusion_matrix"]) == (n <= 200)
        assert len(json.dumps(report)) < 200 * n + 10_000
    assert sizes[1000] == sizes[5000] == sizes[CONFUSION_MAX_CLASSES + 1]


def test_set_coverage_is_what_the_prediction_sets_hold():
    """The calibration's coverage and set size, computed at once over [N, C], equal those of the
    per-row prediction_sets (a loop over rows and classes: slow at 5,000 classes)."""
    rng = np.random.default_rng(2)
    for classes in (3, 50):
        p = rng.dirichlet(np.ones(classes) * 0.3, size=300)
        y = rng.integers(0, classes, 300)
        for threshold in (0.05, 0.3, 0.9):
            sets = prediction_sets(p, threshold)
            covered = np.mean([label in s for label, s in zip(y, sets)])
            size = np.mean([len(s) for s in sets])
            assert set_coverage(p, y, threshold) == pytest.approx((covered, size))


def test_the_export_help_names_force():
    for command in ("export-best", "run"):
        text = " ".join(invoke(command, "--help").output.lower().split())
        assert "--force" in text and "replace an export of another study" in text, text


def test_the_estimators_save_follows_the_same_folder_rules(tmp_path):
    """The Python API's save writes as export-best does: whole, over its own study's folder,
    not over another study's (unless force=True), never over a folder of other files."""
    from sklearn.datasets import load_iris

    from gsearch import GsearchValueError, MLPSearchClassifier

    X, y = load_iris(return_X_y=True)
    tiny = {"epochs": 20, "n_layers": 1, "width": 16, "batch_norm": False, "lr": 0.01}
    first, second = (MLPSearchClassifier(n_trials=1, space=tiny, random_state=0, study_name=name)
                     .fit(X, y) for name in ("iris-a", "iris-b"))
    folder = first.save(tmp_path / "m")
    assert first.save(folder) == folder   # its own study: replaced
    with pytest.raises(GsearchValueError, match="holds the export of study 'iris-a'.*force=True"):
        second.save(folder)
    assert json.loads((folder / "model.json").read_text())["study"] == "iris-a"
    second.save(folder, force=True)
    assert json.loads((folder / "model.json").read_text())["study"] == "iris-b"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "data.csv").write_text("x\n")
    with pytest.raises(GsearchValueError, match="not a gsearch export: data.csv"):
        first.save(tmp_path / "mine", force=True)
    assert leftovers(tmp_path) == []


def test_the_class_metrics_without_one_hot_matrices_match_scikit_learn():
    """balanced accuracy, macro-F1 and log loss, computed by counts (no [K, n, C] one-hot: at
    5,000 classes those took seconds each) are scikit-learn's, member by member."""
    import warnings

    import torch
    from sklearn.metrics import balanced_accuracy_score, f1_score, log_loss

    from gsearch.models.validation import score

    rng = np.random.default_rng(3)
    for classes, rows, members in ((3, 50, 4), (12, 300, 3), (400, 2000, 1)):
        y = rng.integers(0, classes, (members, rows))
        logits = rng.normal(size=(members, rows, classes)).astype(np.float32)
        logits[..., 0] += 0.5
        out, truth = torch.as_tensor(logits), torch.as_tensor(y)
        balanced, f1, loss = (score(name, out, truth) for name in ("balanced_accuracy", "macro_f1", "log_loss"))
        for k in range(members):
            guess = logits[k].argmax(axis=1)
            seen = np.union1d(y[k], guess)
            p = np.exp(logits[k] - logits[k].max(axis=1, keepdims=True))
            with warnings.catch_warnings():   # "y_pred contains classes not in y_true": meant
                warnings.simplefilter("ignore")
                expected = balanced_accuracy_score(y[k], guess)
            assert balanced[k].item() == pytest.approx(expected, abs=1e-6)
            assert f1[k].item() == pytest.approx(f1_score(y[k], guess, average="macro", labels=seen), abs=1e-6)
            assert loss[k].item() == pytest.approx(log_loss(y[k], p / p.sum(axis=1, keepdims=True),
                                                            labels=np.arange(classes)), abs=1e-4)
