"""gsearch extract (audio -> Kaggle-schema CSV that trains) and gsearch predict (export -> genres)."""

import csv
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from conftest import REAL_CSV, SHARED_GTZAN
from gsearch.data.audio import extract_features, load_audio
from gsearch.data.load import load_dataset
from gsearch.data.schema import COLUMNS, FEATURE_NAMES
from gsearch.models.predict import ExportedModel
from test_audio import SR, tone

CLIPS = SHARED_GTZAN / "genres_original"
needs_clips = pytest.mark.skipif(not CLIPS.is_dir(), reason=f"GTZAN clips not found at {CLIPS}")
SHORT = 3.0  # seconds: the generated training tracks (one row each, clip_samples 66150)


def song(path, seconds, freq, seed=0):
    """A learnable 'genre': a tone with harmonics and a little noise, 16-bit WAV."""
    rng = np.random.default_rng(seed)
    y = tone(seconds, freq=freq) + 0.3 * tone(seconds, freq=2 * freq) + 0.02 * rng.standard_normal(int(seconds * SR))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (0.6 * y).astype(np.float32), SR, subtype="PCM_16")
    return path


def bad(path, kind):
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "corrupt":
        path.write_bytes(b"RIFF" + np.random.default_rng(1).bytes(4000))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "silent":
        sf.write(path, np.zeros(SR * 4, np.float32), SR, subtype="PCM_16")
    else:  # short: fewer samples than one STFT frame
        sf.write(path, tone(0.05), SR, subtype="PCM_16")
    return path


def lines(text):
    return [line for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Generated blues/classical folders -> extract --jobs 2 -> run -> export-best."""
    from click.testing import CliRunner

    from gsearch.cli import main

    root = tmp_path_factory.mktemp("gen")
    for genre, freq in (("blues", 220.0), ("classical", 1760.0)):
        for t in range(5):
            song(root / "genres_original" / genre / f"{genre}_{t}.wav", SHORT, freq * (1 + 0.03 * t), seed=t)
    runner = CliRunner()

    def cli(*args):
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)

    csv_path, url = root / "features.csv", f"sqlite:///{root / 's.db'}"
    extracted = cli("extract", root / "genres_original", "--out", csv_path, "--jobs", 2)
    assert extracted.exit_code == 0, extracted.output
    ran = cli("run", "--trials", 1, "--data", csv_path, "--storage", url, "--study", "a", "--seed", 0,
              "--pruner", "none")
    assert ran.exit_code == 0, ran.output
    exported = cli("export-best", "--storage", url, "--study", "a", "--out", root / "export")
    assert exported.exit_code == 0, exported.output
    return root, extracted


# ---- extract -----------------------------------------------------------------------------------

@needs_clips
def test_extract_reproduces_the_kaggle_rows(cli, tmp_path):
    out = tmp_path / "x.csv"
    result = cli("extract", CLIPS, "--out", out)
    assert result.exit_code == 0, result.output
    assert f"wrote 2 rows from 2 file(s) to {out}" in result.output
    with open(out, newline="") as f:
        got = list(csv.DictReader(f))
    assert tuple(got[0]) == COLUMNS
    ref = {r["filename"]: r for r in csv.DictReader(open(SHARED_GTZAN / "features_30_sec.csv", newline=""))}
    assert [r["filename"] for r in got] == ["blues.00000.wav", "classical.00000.wav"]
    for row in got:
        want = ref[row["filename"]]
        assert row["label"] == want["label"] and row["length"] == want["length"] == "661794"
        for k in FEATURE_NAMES:
            v, w = float(row[k]), float(want[k])
            if k in ("harmony_mean", "perceptr_mean"):
                assert abs(v - w) < 1e-3, k
            elif k == "tempo":
                assert abs(v - w) < 1, k
            else:
                assert abs(v - w) < 1e-4 * abs(w), (k, v, w)
    ds = load_dataset(out)  # the output is a training set
    assert ds.classes == ("blues", "classical") and ds.clip_samples == 661794


def test_extract_output_trains_and_exports(trained):
    root, extracted = trained
    frame = pd.read_csv(root / "features.csv")
    assert list(frame.columns) == list(COLUMNS) and len(frame) == 10
    assert frame["filename"].tolist() == [f"{g}_{t}.wav" for g in ("blues", "classical") for t in range(5)]
    assert (frame["label"] == frame["filename"].str.split("_").str[0]).all()
    assert (frame["length"] == int(SHORT * SR)).all()
    meta = json.loads((root / "export" / "model.json").read_text())
    assert meta["classes"] == ["blues", "classical"] and meta["clip_samples"] == int(SHORT * SR)


def test_three_second_segments_group_by_track(cli, tmp_path):
    song(tmp_path / "blues" / "blues.00007.wav", 7.0, 220.0)
    song(tmp_path / "jazz" / "jazz.00003.wav", 10.0, 660.0)
    out = tmp_path / "seg.csv"
    result = cli("extract", tmp_path / "blues", tmp_path / "jazz", "--out", out, "--segment-seconds", 3)
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out)
    assert frame["filename"].tolist() == ["blues.00007.0.wav", "blues.00007.1.wav",
                                          "jazz.00003.0.wav", "jazz.00003.1.wav", "jazz.00003.2.wav"]
    assert (frame["length"] == 66149).all()
    ds = load_dataset(out)
    assert ds.groups.tolist() == ["blues.00007"] * 2 + ["jazz.00003"] * 3 and ds.n_tracks == 2
    assert ds.clip_samples == 66149


def test_bad_files_are_reported_and_skipped(cli, tmp_path):
    folder = tmp_path / "mix"  # the parent folder is the label, whatever it is
    song(folder / "a_good.wav", 3.0, 440.0)
    song(folder / "z_good.wav", 3.0, 880.0)
    kinds = ("corrupt", "empty", "silent", "short")
    for kind in kinds:
        bad(folder / f"{kind}.wav", kind)
    out = tmp_path / "x.csv"
    result = cli("extract", folder, "--out", out, "--jobs", 2)
    assert result.exit_code == 1
    errors = lines(result.stderr)
    assert len(errors) == len(kinds) + 1  # one line per bad file, then the summary
    for kind, reason in zip(kinds, ("corrupt", "empty", "silent", "too short")):
        [line] = [e for e in errors if f"{kind}.wav" in e]
        assert line.startswith("error: ") and reason in line and "skipped" in line
    assert "4 of 6 file(s) skipped" in errors[-1] and "wrote 2 rows from 2 file(s)" in errors[-1]
    frame = pd.read_csv(out)
    assert frame["filename"].tolist() == ["a_good.wav", "z_good.wav"]
    assert (frame["label"] == "mix").all()
    # one class does not train: the clear one-line error, nothing created
    run = cli("run", "--trials", 1, "--data", out, "--storage", f"sqlite:///{tmp_path / 's.db'}")
    assert run.exit_code == 1 and "only 1 class (mix) found" in run.output
    assert len(run.output.strip().splitlines()) == 1
    assert not (tmp_path / "s.db").exists()


def test_extract_bad_invocations(cli, tmp_path):
    out = tmp_path / "x.csv"
    song(tmp_path / "a" / "x.wav", 3.0, 440.0)
    song(tmp_path / "b" / "x.flac", 3.0, 440.0)
    (tmp_path / "empty").mkdir()
    cases = [((tmp_path / "nope",), out, "nope: no such file or folder"),
             ((tmp_path / "empty",), out, "no audio files under"),
             ((tmp_path / "a", tmp_path / "b"), out, "share the name 'x'; rows are grouped"),
             ((tmp_path / "a",), tmp_path / "missing" / "x.csv", "missing for --out does not exist")]
    for paths, target, message in cases:
        result = cli("extract", *paths, "--out", target)
        assert result.exit_code == 1 and message in result.output, result.output
        assert len(lines(result.output)) == 1 and not target.exists()


def test_extract_and_predict_load_no_librosa_numba_or_torch(trained, tmp_path):
    # Features are computed with numpy/scipy (no numba kernels to compile or load), and predict's
    # default ONNX backend runs without torch: a new process starts in about a second.
    root, _ = trained
    clip = song(tmp_path / "clip.wav", 3.0, 220.0)
    code = ("import sys\nfrom gsearch.cli import main\n"
            "for args in sys.argv[1:]:\n"
            "    try:\n        main(args.split('|'), standalone_mode=False)\n"
            "    except SystemExit as e:\n        assert not e.code, args\n"
            "print(sorted(m for m in ('numba', 'librosa', 'torch') if m in sys.modules))")
    commands = [f"extract|{clip}|--out|{tmp_path / 'x.csv'}", f"predict|--model|{root / 'export'}|{clip}"]
    done = subprocess.run([sys.executable, "-c", code, *commands], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    out = lines(done.stdout)
    assert out[0].startswith("wrote 1 rows") and out[1].startswith(f"{clip}: blues")
    assert out[-1] == "[]"


# ---- predict -----------------------------------------------------------------------------------

@needs_clips
def test_predict_real_clips_and_csv_agree(cli, real_export):
    clips = [CLIPS / "blues" / "blues.00000.wav", CLIPS / "classical" / "classical.00000.wav"]
    text = cli("predict", "--model", real_export, *clips, "--top-k", 10)
    assert text.exit_code == 0, text.output
    rows = json.loads(cli("predict", "--model", real_export, REAL_CSV, "--json", "--backend", "torch").output)
    assert len(rows) == 1000 and all(r["source"] == str(REAL_CSV) for r in rows)
    onnx = json.loads(cli("predict", "--model", real_export, REAL_CSV, "--json", "--backend", "onnx").output)
    for a, b in zip(rows, onnx):
        assert a["genre"] == b["genre"] and a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-4)
    by_name = {r["file"]: r for r in rows}
    for clip, line in zip(clips, lines(text.output)):
        name, ranked = line.split(": ")
        audio = {g: float(p) for g, p in (pair.split() for pair in ranked.split(", "))}
        row = by_name[clip.name]  # the Kaggle row of the same clip: same features, same answer
        assert name == str(clip) and next(iter(audio)) == row["genre"] == clip.parent.name
        assert audio == pytest.approx(row["probabilities"], abs=2e-3)


def test_predict_csv_and_top_k(cli, trained, tmp_path):
    root, _ = trained
    model = ExportedModel(root / "export")
    frame = pd.read_csv(root / "features.csv").drop(columns="label")  # labels are optional
    frame.to_csv(tmp_path / "unlabelled.csv", index=False)
    result = cli("predict", "--model", root / "export", tmp_path / "unlabelled.csv", "--top-k", 2)
    assert result.exit_code == 0, result.output
    out = lines(result.output)
    assert [line.split(":")[0] for line in out] == frame["filename"].tolist()
    expected = model.predict_proba(frame[list(FEATURE_NAMES)].to_numpy(np.float32))
    for line, p in zip(out, expected):
        best = [(g, float(v)) for g, v in (pair.split() for pair in line.split(": ")[1].split(", "))]
        assert len(best) == 2 and best[0][0] == model.classes[p.argmax()]
        assert best[0][1] == pytest.approx(p.max(), abs=1e-3) and best[0][1] >= best[1][1]
    assert sum(line.split(": ")[1].startswith(g) for line, g in zip(out, frame["filename"].str.split("_").str[0])) >= 8
    wrong = tmp_path / "wrong.csv"
    frame.drop(columns=["tempo", "rms_mean"]).to_csv(wrong, index=False)
    result = cli("predict", "--model", root / "export", wrong)
    assert result.exit_code == 1 and len(lines(result.output)) == 1
    assert "lacks 2 feature column(s)" in result.output


def test_corrupt_file_among_good_ones(cli, trained, tmp_path):
    root, _ = trained
    good = [song(tmp_path / "one.wav", 3.0, 230.0), song(tmp_path / "two.wav", 3.0, 1700.0)]
    broken = bad(tmp_path / "broken.wav", "corrupt")
    result = cli("predict", "--model", root / "export", good[0], broken, good[1], "--json", "--top-k", 1)
    assert result.exit_code == 1
    [error] = lines(result.stderr)
    assert error.startswith("error: ") and "broken.wav" in error and "corrupt" in error
    out = json.loads(result.stdout)  # stdout stays valid JSON
    assert [r["file"] for r in out] == [str(g) for g in good]
    assert [r["genre"] for r in out] == ["blues", "classical"]
    assert all(len(r["probabilities"]) == 1 and r["windows"] == 1 for r in out)
    folder = cli("predict", "--model", root / "export", tmp_path)  # a folder: each audio file in it
    assert folder.exit_code == 1 and len(lines(folder.stderr)) == 1 and "broken.wav" in folder.stderr
    assert [line.split(":")[0] for line in lines(folder.stdout)] == [str(g) for g in good]


def test_long_audio_is_classified_in_averaged_windows(cli, trained, tmp_path):
    root, _ = trained
    export = root / "export"
    clip = int(SHORT * SR)  # recorded by export-best from the training rows' length
    long = song(tmp_path / "long.wav", 65.0, 220.0)
    [result] = json.loads(cli("predict", "--model", export, long, "--json").stdout)
    assert result["windows"] == int(65.0 * SR) // (clip + 1) == 21
    assert sum(result["probabilities"].values()) == pytest.approx(1, abs=1e-5)
    assert len(result["probabilities"]) == 2 and result["genre"] == "blues"
    # the average of the windows' probabilities, recomputed by hand on a shorter file
    mid = song(tmp_path / "mid.wav", 2.6 * SHORT, 1000.0)
    y = load_audio(mid)
    windows = [y[0:clip], y[clip + 1:2 * clip + 1]]
    X = np.array([list(extract_features(w).values()) for w in windows], np.float32)  # FEATURE_NAMES order
    expected = ExportedModel(export).predict_proba(X).mean(axis=0)
    [result] = json.loads(cli("predict", "--model", export, mid, "--json").stdout)
    assert result["windows"] == 2
    for genre, p in zip(ExportedModel(export).classes, expected):
        assert result["probabilities"][genre] == pytest.approx(float(p), abs=1e-5)


def test_predict_bad_invocations(cli, trained, tmp_path):
    root, _ = trained
    result = cli("predict", "--model", tmp_path, root / "features.csv")
    assert result.exit_code == 1 and "not a gsearch export" in result.output
    result = cli("predict", "--model", root / "export", tmp_path / "missing.wav")
    assert result.exit_code == 1 and lines(result.output) == [f"error: {tmp_path / 'missing.wav'}: no such file"]
    (tmp_path / "model.json").write_bytes((root / "export" / "model.json").read_bytes())  # no model.onnx
    result = cli("predict", "--model", tmp_path, root / "features.csv")
    assert result.exit_code == 1 and len(lines(result.output)) == 1
    assert f"cannot load {tmp_path / 'model.onnx'}" in result.output and "torch backend" in result.output


def test_predict_names_the_real_problem_of_a_file(cli, trained, tmp_path):
    root, _ = trained
    text = "# notes\nnot audio at all\n" * 50

    def error_of(name):
        (tmp_path / name).write_text(text)
        result = cli("predict", "--model", root / "export", tmp_path / name)
        [line] = lines(result.output)
        assert result.exit_code == 1 and line.startswith(f"error: {tmp_path / name}: "), line
        return line

    renamed = error_of("notes.wav")  # a text file renamed .wav
    assert "not a readable audio file (corrupt, or not .wav audio)" in renamed
    assert "Error" not in renamed and "ffmpeg" not in renamed
    other = error_of("notes.md")  # no decoder can help: say what predict reads
    assert "not a file predict reads (.md)" in other and ".csv" in other
    assert all(ext in other for ext in (".wav", ".flac", ".mp3", ".ogg")) and "ffmpeg" not in other
    compressed = error_of("song.m4a")  # a format only ffmpeg (or another audioread backend) decodes
    import audioread

    if any(b.__name__ != "RawAudioFile" for b in audioread.available_backends()):
        assert "not a readable audio file (corrupt, or not .m4a audio)" in compressed
    else:
        assert "cannot decode .m4a files without ffmpeg; install ffmpeg" in compressed
