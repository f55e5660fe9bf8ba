"""Malformed feature files, generated: load_dataset returns a valid Dataset or raises a
one-line DataError, never any other exception, and a bad file never reaches a storage."""

from __future__ import annotations

import csv
import gzip
import io
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gsearch.data.load import MISSING_LABELS, DataError, load_dataset
from gsearch.data.schema import FEATURE_NAMES, GENRES
from conftest import synthetic_frame

# Reproducible in CI: the same examples every run, no example database on disk.
FAST = settings(max_examples=100, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])


def _grid() -> list[list[str]]:
    text = synthetic_frame(classes=GENRES[:3], tracks_per_class=2).to_csv(index=False)
    return list(csv.reader(io.StringIO(text)))


BASE = _grid()  # header + 6 rows: filename, length, 57 features, label
N_ROWS = len(BASE) - 1
LABEL = BASE[0].index("label")
BAD_NUMBERS = ["", " ", "nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e308", "-1e308",
               "3.5e38", "-3.4028236e38", "1e999", "-1e999", "9" * 400, "1e-400", "0x1F", "1,5",
               "abc", "None", "null", "--1", "1e", "1_000", "\u0661\u0662", "1.5\n", "\"3\""]
clean_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                     max_size=12)
number = st.one_of(st.sampled_from(BAD_NUMBERS), clean_text, st.floats().map(repr),
                   st.integers().map(str))
cell = st.one_of(number, st.text(max_size=6))  # may hold NUL and lone surrogates
label = st.one_of(st.sampled_from([*GENRES, "Blues", " rock ", "", "polka", "nan"]), clean_text)
column_name = st.one_of(st.sampled_from(["", "Tempo", " tempo ", "label", "filename", "length",
                                          "mfcc21_mean", "Unnamed: 0", *FEATURE_NAMES[:3]]),
                        clean_text)


def weighted(*pairs):
    """sampled_from with integer weights: weighted((3, "a"), (1, "b"))."""
    return st.sampled_from([value for weight, value in pairs for _ in range(weight)])


@st.composite
def mutated_grid(draw) -> list[list[str]]:
    """The base table with 1 to 3 edits: columns dropped, added, renamed or repeated, bad
    cells (in the feature, length, filename and label columns), ragged or blank rows, rows
    cut off."""
    grid = [row[:] for row in BASE]
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(weighted((6, "cell"), (2, "label"), (1, "drop"), (1, "extra"), (1, "rename"),
                             (1, "duplicate"), (1, "ragged"), (1, "blank"), (1, "cut")))
        width = max(len(row) for row in grid) if grid else 0
        if not grid or not width:
            break
        j = draw(st.one_of(st.sampled_from([0, 1, LABEL]), st.integers(0, width - 1)))
        j = min(j, width - 1)
        i = draw(st.integers(1, len(grid) - 1)) if len(grid) > 1 else 0
        if kind == "drop":
            grid = [row[:j] + row[j + 1:] for row in grid]
        elif kind == "extra":
            grid = [row[:j] + [draw(column_name if r == 0 else cell)] + row[j:]
                    for r, row in enumerate(grid)]
        elif kind == "rename" and grid[0]:
            grid[0][min(j, len(grid[0]) - 1)] = draw(column_name)
        elif kind == "duplicate":
            grid = [row + row[j:j + 1] for row in grid]
        elif kind == "cell" and grid[i]:
            grid[i][min(j, len(grid[i]) - 1)] = draw(st.one_of(number, number, cell))
        elif kind == "label" and grid[i]:
            grid[i][min(LABEL, len(grid[i]) - 1)] = draw(label)
        elif kind == "ragged":
            grid[i] = grid[i][:j] if draw(st.booleans()) else grid[i] + [draw(cell)]
        elif kind == "blank":
            grid.insert(i, draw(st.sampled_from([[], [""], ["   "], [""] * 3])))
        elif kind == "cut":
            grid = grid[:draw(st.integers(0, len(grid)))]
    return grid


@st.composite
def encoded(draw) -> bytes:
    """A mutated table written with some delimiter, line ending, encoding and wrapper
    (mostly a plain UTF-8 CSV, so that most examples reach the cell checks)."""
    grid = draw(mutated_grid())
    out = io.StringIO()
    csv.writer(out, delimiter=draw(weighted((12, ","), (1, ";"), (1, "\t"))),
               lineterminator=draw(st.sampled_from(["\n", "\r\n", "\r"]))).writerows(grid)
    encoding = draw(weighted((12, "utf-8"), (1, "utf-8-sig"), (1, "utf-16"), (1, "utf-16-le"),
                             (1, "utf-32"), (1, "latin-1"), (1, "cp1252")))
    data = out.getvalue().encode(encoding, errors="replace")
    wrap = draw(weighted((12, "none"), (2, "gzip"), (1, "cut gzip"), (1, "cut"), (1, "flip")))
    if wrap.endswith("gzip"):
        data = gzip.compress(data, mtime=0)
    if wrap.startswith("cut"):
        data = data[:draw(st.integers(0, len(data)))]
    elif wrap == "flip" and data:
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1:]
    return data


garbage = st.one_of(st.binary(max_size=300),
                    st.binary(max_size=100).map(lambda b: b"\x1f\x8b" + b),
                    st.binary(max_size=100).map(lambda b: b"PK\x03\x04" + b),
                    st.text(max_size=200).map(lambda t: t.encode("utf-8", errors="replace")))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("malformed")


def write(folder, grid: list[list[str]]):
    path = folder / "f.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(grid)
    return path


def load_or_error(path):
    """The Dataset, checked valid, or the DataError's message, checked to be one line."""
    try:
        ds = load_dataset(path)
    except DataError as e:
        message = str(e)
        assert message and "\n" not in message and "\r" not in message, repr(message)
        assert len(message) < 300 + len(str(path)), message
        return message
    assert ds.X.dtype == np.float32 and ds.X.ndim == 2 and ds.X.shape[1] == len(ds.features) > 0
    assert len(ds.X) == len(ds.y) == len(ds.groups) == len(ds.filenames) > 0
    assert np.isfinite(ds.X).all()
    assert ds.y.dtype == np.int64 and ds.y.min() >= 0 and ds.y.max() < len(ds.classes)
    assert len(ds.classes) >= 2 and len(ds.sha256) == 64   # any class names, none missing
    assert all(c and c == c.strip() and c.lower() not in MISSING_LABELS for c in ds.classes)
    return ds


@settings(FAST, max_examples=400)
@given(data=st.one_of(encoded(), encoded(), encoded(), garbage))
def test_any_file_loads_or_fails_with_one_line(folder, data):
    path = folder / "f.csv"
    path.write_bytes(data)
    load_or_error(path)


def _as_float32(value: str) -> float | None:
    """What a cell should load as, or None when it must be rejected."""
    try:
        number = float(value)
    except ValueError:
        return None
    if not math.isfinite(number):
        return None
    with np.errstate(over="ignore"):
        single = np.float32(number)
    return float(single) if np.isfinite(single) else None


@FAST
@given(row=st.integers(0, N_ROWS - 1), name=st.sampled_from(FEATURE_NAMES), value=number)
def test_a_bad_number_is_named_by_column_and_row(folder, row, name, value):
    grid = [r[:] for r in BASE]
    grid[row + 1][BASE[0].index(name)] = value
    result = load_or_error(write(folder, grid))
    expected = _as_float32(value)
    if expected is None:
        assert isinstance(result, str), f"{value!r} loaded"
        assert f"'{name}'" in result and f"data row {row + 1}" in result, result
    else:
        assert not isinstance(result, str), result
        assert result.X[row, FEATURE_NAMES.index(name)] == np.float32(expected)


@FAST
@given(row=st.integers(0, N_ROWS - 1), value=label)
def test_a_bad_label_is_named_by_row(folder, row, value):
    grid = [r[:] for r in BASE]
    grid[row + 1][LABEL] = value
    result = load_or_error(write(folder, grid))
    if value.strip().lower() not in MISSING_LABELS:   # any name is a class
        assert result.classes[result.y[row]] == value.strip()
    else:   # a row without a label is left out, and counted
        assert not isinstance(result, str), result
        assert result.unlabelled == 1 and len(result.y) == N_ROWS - 1


@FAST
@given(row=st.integers(0, N_ROWS - 1), keep=st.integers(1, len(BASE[0]) - 1), extra=st.integers(0, 3))
def test_a_ragged_row_is_named_by_line(folder, row, keep, extra):
    assume(keep + extra != len(BASE[0]))
    grid = [r[:] for r in BASE]
    grid[row + 1] = grid[row + 1][:keep] + ["1"] * extra
    message = load_or_error(write(folder, grid))
    assert isinstance(message, str)
    assert f"line {row + 2} has {keep + extra} fields" in message, message


def _csv_bytes(grid, delimiter=","):
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, lineterminator="\n").writerows(grid)
    return out.getvalue().encode()


def _with_cell(row, column, value):
    grid = [r[:] for r in BASE]
    grid[row + 1][column] = value
    return grid


@pytest.mark.parametrize("bad", [
    b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe garbage",
    _csv_bytes([*BASE[:3], BASE[3][:-2], *BASE[4:]]),
    _csv_bytes(_with_cell(3, 5, "1e999")),
], ids=["binary", "ragged", "overflow"])
def test_a_bad_file_never_creates_the_storage(cli, tmp_path, bad):
    path = tmp_path / "bad.csv"
    path.write_bytes(bad)
    db = tmp_path / "x.db"
    result = cli("run", "--trials", 1, "--data", path, "--storage", f"sqlite:///{db}")
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(path) in lines[0], lines
    assert not db.exists()


@settings(FAST, max_examples=25)
@given(data=st.one_of(encoded(), garbage))
def test_a_generated_bad_file_is_refused_by_run_before_any_storage_exists(folder, data):
    """What load_dataset refuses, `gsearch run` refuses in one line, and no storage is made."""
    from click.testing import CliRunner

    from gsearch.cli import main

    path = folder / "g.csv"
    path.write_bytes(data)
    message = load_or_error(path)
    assume(isinstance(message, str))   # a file that loads would start a real search
    db = folder / "never.db"
    result = CliRunner().invoke(main, ["run", "--trials", "1", "--data", str(path),
                                       "--storage", f"sqlite:///{db}"], catch_exceptions=False)
    assert result.exit_code == 1 and result.output.strip().splitlines() == [f"error: {message}"]
    assert not db.exists()
