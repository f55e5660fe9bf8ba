"""What a user sees: optuna-dashboard as a real server (HTTP API, artifacts, a headless
Chromium rendering the study page) and the static plots of `gsearch report`."""

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from click.testing import CliRunner
from conftest import synthetic_frame

from gsearch.cli import main
from gsearch.search.dashboard import default_artifact_dir
from gsearch.search import records

pytestmark = pytest.mark.slow   # a dashboard server and a browser

STUDY = "tiny-dash"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Set to a folder (e.g. docs) to keep the browser test's screenshots for the README.
SCREENSHOTS = os.environ.get("GSEARCH_SCREENSHOTS")


def invoke(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A 6-trial search on a small hard synthetic CSV, exported with artifacts (about 15 s)."""
    root = tmp_path_factory.mktemp("dash")
    csv = root / "features.csv"
    synthetic_frame(tracks_per_class=30, separation=0.35).to_csv(csv, index=False)
    url = f"sqlite:///{root / 'studies.db'}"
    invoke("run", "--trials", 6, "--data", csv, "--storage", url, "--study", STUDY, "--seed", 0)
    output = invoke("export-best", "--study", STUDY, "--storage", url, "--out", root / "export").output
    study = optuna.load_study(study_name=STUDY, storage=url)
    return SimpleNamespace(root=root, url=url, study=study, export=root / "export", output=output)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[bytes, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read(), response.headers["Content-Type"]


def _api(url: str) -> dict:
    return json.loads(_get(url)[0])


@pytest.fixture(scope="module")
def server(exported):
    """`gsearch dashboard` as a real process on a free port of 127.0.0.1."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gsearch", "dashboard", "--storage", exported.url,
         "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                _get(base + "/api/meta")
                break
            except OSError:
                if process.poll() is not None:
                    pytest.fail(f"gsearch dashboard exited: {process.stdout.read()}")
                if time.monotonic() > deadline:
                    pytest.fail("gsearch dashboard did not answer within 60 s")
                time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=10)


def _study_id(base: str) -> int:
    studies = _api(base + "/api/studies")["study_summaries"]
    return next(s["study_id"] for s in studies if s["study_name"] == STUDY)


def test_default_artifact_folder_sits_beside_a_sqlite_file():
    assert default_artifact_dir("sqlite:///runs/studies.db") == Path("runs/studies-artifacts")
    assert default_artifact_dir("sqlite:////abs/x.sqlite3") == Path("/abs/x-artifacts")
    assert default_artifact_dir("postgresql://u:pw@127.0.0.1/db") is None


def test_trials_carry_curves_losses_and_a_readable_config(exported):
    trials = [t for t in exported.study.trials if t.state.is_finished()]
    assert len(trials) == 6
    for trial in trials:
        assert trial.intermediate_values, "no learning curve"
        config = trial.user_attrs["config"]
        assert f"width={trial.params['width']}," in config
        assert "lr_schedule=" in config and "label_smoothing=" in config  # not searched, still shown
        if trial.state == optuna.trial.TrialState.COMPLETE:
            assert len(trial.user_attrs["train_loss"]) == trial.user_attrs["epochs_run"]


def test_dashboard_api_lists_the_study_its_trials_note_and_artifacts(exported, server):
    study_id = _study_id(server)
    detail = _api(f"{server}/api/studies/{study_id}")
    assert len(detail["trials"]) == 6
    assert detail["objective_names"] == ["validation accuracy"]
    best = exported.study.best_trial
    assert detail["best_trials"][0]["number"] == best.number
    assert detail["has_intermediate_values"]

    report = json.loads((exported.export / "report.json").read_text())
    note = detail["trials"][best.number]["note"]["body"]
    assert "Held-out test" in note and f"{report['test_accuracy']:.3f}" in note
    assert exported.study.user_attrs[records.EXPORT]["test_accuracy"] == report["test_accuracy"]

    artifacts = {a["filename"]: a for a in detail["artifacts"]}
    assert set(artifacts) == {f"trial-{best.number}-confusion_matrix.png",
                              f"trial-{best.number}-report.json"}
    png = artifacts[f"trial-{best.number}-confusion_matrix.png"]
    body, kind = _get(f"{server}/artifacts/{study_id}/{png['artifact_id']}")
    assert kind == "image/png" and body == (exported.export / "confusion_matrix.png").read_bytes()
    assert f"/artifacts/{study_id}/{png['artifact_id']}" in note  # the note shows the image
    report_meta = artifacts[f"trial-{best.number}-report.json"]
    body, _ = _get(f"{server}/artifacts/{study_id}/{report_meta['artifact_id']}")
    assert json.loads(body) == report
    assert (exported.root / "studies-artifacts" / png["artifact_id"]).is_file()  # the default


def test_export_again_replaces_the_artifacts_instead_of_adding(exported, tmp_path):
    invoke("export-best", "--study", STUDY, "--storage", exported.url, "--out", tmp_path / "again")
    names = [m.filename for m in optuna.artifacts.get_all_artifact_meta(exported.study)]
    assert sorted(names) == sorted(set(names)) and len(names) == 2


def test_bad_artifact_folder_is_one_line_and_leaves_the_study_alone(exported, tmp_path):
    storage = optuna.storages.RDBStorage(exported.url)
    study_id = storage.get_study_id_from_name(STUDY)
    before = storage.get_study_system_attrs(study_id), storage.get_study_user_attrs(study_id)
    result = CliRunner().invoke(main, ["export-best", "--study", STUDY, "--storage", exported.url,
                                       "--out", str(tmp_path / "e"),
                                       "--artifacts", str(tmp_path / "missing" / "a")])
    assert result.exit_code == 1
    assert result.output.startswith("error: folder") and result.output.count("\n") == 1
    assert "Traceback" not in result.output
    after = storage.get_study_system_attrs(study_id), storage.get_study_user_attrs(study_id)
    assert after == before and not (tmp_path / "e").exists()


def _chromium(url: str, tmp_path: Path, screenshot: Path, height: int) -> str:
    """The page's DOM after its scripts ran, and a screenshot of it."""
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         f"--user-data-dir={tmp_path / 'chromium'}", f"--window-size=1440,{height}",
         "--virtual-time-budget=15000", f"--screenshot={screenshot}", "--dump-dom", url],
        capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.skipif(not Path(CHROMIUM).is_file(),
                    reason="needs Debian's chromium (apt-get install chromium) for the browser test")
def test_browser_renders_study_page_and_best_trial_note(exported, server, tmp_path):
    study_id = _study_id(server)
    best = exported.study.best_trial
    shots = {  # name: (page, window height that shows the learning curves / the note)
        "dashboard.png": (f"{server}/dashboard/studies/{study_id}", 2650),
        "dashboard-note.png": (f"{server}/dashboard/studies/{study_id}/trials?numbers={best.number}",
                               1300)}
    doms = {name: _chromium(url, tmp_path, tmp_path / name, height)
            for name, (url, height) in shots.items()}

    assert f"{STUDY} (id={study_id})" in doms["dashboard.png"]
    assert repr(best.value) in doms["dashboard.png"]  # the best value, as JavaScript prints it
    assert "Intermediate values" in doms["dashboard.png"]
    assert "Held-out test (gsearch export-best)" in doms["dashboard-note.png"]
    assert f'src="/artifacts/{study_id}/' in doms["dashboard-note.png"]  # the confusion matrix
    for name in shots:
        png = (tmp_path / name).read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 20_000
        if SCREENSHOTS:
            Path(SCREENSHOTS).mkdir(exist_ok=True)
            (Path(SCREENSHOTS) / name).write_bytes(png)


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_report_writes_pngs_html_and_summary(exported, tmp_path):
    from gsearch.search.report import DPI, PLOTS

    out = tmp_path / "report"
    result = invoke("report", "--study", STUDY, "--storage", exported.url, "--out", out)
    assert "summary.md" in result.output
    best = exported.study.best_trial
    for name, (_, (width, height)) in PLOTS.items():
        assert _png_size(out / f"{name}.png") == (width * DPI, height * DPI)
        html = (out / f"{name}.html").read_text()
        assert "Plotly.newPlot" in html and 'src="plotly.min.js"' in html
    history = (out / "optimization_history.html").read_text()
    assert repr(best.value) in history  # the figure data, not an empty page
    assert (out / "plotly.min.js").stat().st_size > 1_000_000  # offline: no CDN
    summary = (out / "summary.md").read_text()
    assert f"trial #{best.number}, validation accuracy {best.value:.4f}" in summary
    assert "test accuracy" in summary and "![intermediate_values](intermediate_values.png)" in summary


def test_report_without_completed_trials_is_a_clear_error(tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    optuna.create_study(study_name="empty", storage=url)
    result = CliRunner().invoke(main, ["report", "--study", "empty", "--storage", url,
                                       "--out", str(tmp_path / "r")])
    assert result.exit_code == 1 and "no completed trial yet" in result.output
    assert not (tmp_path / "r").exists()


def test_report_writes_one_folder_per_study_by_default_and_out_still_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)   # the default folder is relative to the current one
    url = f"sqlite:///{tmp_path / 'two.db'}"
    for name, x in (("small", 0.25), ("big", 0.75)):
        study = optuna.create_study(study_name=name, storage=url, direction="maximize")
        study.optimize(lambda t, x=x: t.suggest_float("x", x, x), n_trials=1)
    assert "report/small/" in invoke("report", "--study", "small", "--storage", url).output
    first = (tmp_path / "report" / "small" / "summary.md").read_text()
    assert "# Study `small`" in first
    assert "report/big/" in invoke("report", "--study", "big", "--storage", url).output
    assert (tmp_path / "report" / "small" / "summary.md").read_text() == first   # not overwritten
    assert "# Study `big`" in (tmp_path / "report" / "big" / "summary.md").read_text()
    assert not (tmp_path / "report" / "summary.md").exists()
    invoke("report", "--study", "big", "--storage", url, "--out", tmp_path / "mine")
    assert "# Study `big`" in (tmp_path / "mine" / "summary.md").read_text()
    from gsearch.search.report import default_folder

    # a study name is one folder below report/, never a path out of it
    assert default_folder("a/../b") == Path("report", "a_.._b") and default_folder("..") == Path("report", "__")


def test_report_of_a_single_completed_trial_skips_importances(tmp_path):
    url = f"sqlite:///{tmp_path / 'one.db'}"
    study = optuna.create_study(study_name="one", storage=url, direction="maximize")
    study.enqueue_trial({"x": 0.5})
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    invoke("report", "--study", "one", "--storage", url, "--out", tmp_path / "r")
    assert not (tmp_path / "r" / "param_importances.png").exists()
    assert (tmp_path / "r" / "intermediate_values.png").is_file()
    assert "param_importances: not drawn (needs at least 2 completed trials)" in \
        (tmp_path / "r" / "summary.md").read_text()


def test_report_of_a_single_trial_shows_no_identical_ylims_warning(tmp_path):
    """One completed trial: matplotlib warns about identical y limits in a plot it then draws
    right; the report silences that warning, and only that one."""
    import warnings

    from gsearch.search.report import write_report

    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"x": 0.5})
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        write_report(study, tmp_path / "r", "in-memory")
        warnings.warn("Attempting to set identical low and high xlims", UserWarning)  # not this one
    messages = [str(w.message) for w in caught]
    assert not any("identical low and high ylims" in m for m in messages), messages
    assert any("identical low and high xlims" in m for m in messages)
    assert (tmp_path / "r" / "parallel_coordinate.png").is_file()


def test_report_without_completed_trials_names_the_study_and_storage_in_its_hint(tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    optuna.create_study(study_name="empty", storage=url)
    result = CliRunner().invoke(main, ["report", "--study", "empty", "--storage", url])
    assert result.exit_code == 1
    assert f"run 'gsearch run --study empty --storage {url}' until one completes" in result.output


def test_sigterm_stops_the_dashboard_with_exit_0(exported):
    """As `gsearch serve`: a service manager's SIGTERM ends the dashboard cleanly, exit 0."""
    import signal

    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gsearch", "dashboard", "--storage", exported.url,
         "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _get(f"http://127.0.0.1:{port}/api/meta")
                break
            except OSError:
                assert process.poll() is None, process.stdout.read()
                assert time.monotonic() < deadline, "gsearch dashboard did not answer within 60 s"
                time.sleep(0.2)
        # requests keep coming while the signal lands: one handled at that moment must not
        # swallow the stop (it did when the signal was raised in the server's own thread)
        done = threading.Event()

        def browse():
            while not done.is_set():
                with contextlib.suppress(OSError):
                    _get(f"http://127.0.0.1:{port}/api/meta")

        browsers = [threading.Thread(target=browse, daemon=True) for _ in range(2)]
        for browser in browsers:
            browser.start()
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(timeout=20) == 0
        finally:
            done.set()
        output = process.stdout.read()
        assert output.rstrip().endswith("dashboard stopped") and "Traceback" not in output
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_taken_port_fails_in_one_line(cli, exported):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli("dashboard", "--storage", exported.url, "--port", port)
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        f"error: cannot serve the dashboard on 127.0.0.1:{port} (Address already in use); "
        "choose another --port")
