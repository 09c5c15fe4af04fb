"""prepare_dataset.py against every bad CSV and flag we know of, a folder that holds someone else's files, and a
file system that refuses: each ends in one line naming the problem and what to do (exit 2), and nothing of the
user's is touched."""
from __future__ import annotations

import hashlib
import json
import math
import resource
import sys
from pathlib import Path

import numpy as np
import pytest

from faults import ROOT, fill, permissions_apply, remount, script, tmpfs

sys.path.insert(0, str(ROOT / "solutions"))
import prepare_dataset  # noqa: E402

BUNDLED = ROOT / "data" / "train.csv"
HEADER = "a,b,colour,label\n"


def rows(n: int = 90, *, a=None, label=None, colour=None, sep: str = ",") -> str:
    """n varied rows (no two alike, so every split fills); `a`, `label`, `colour`: functions of the row index."""
    out = []
    for i in range(n):
        cells = [a(i) if a else f"{math.sin(i) * 10:.4f}", str(i % 7),
                 colour(i) if colour else ("red", "green", "blue")[i % 3], label(i) if label else "xyz"[i * 7 % 3]]
        out.append(sep.join(cells) + "\n")
    return "".join(out)


def regression_rows(n: int = 90, target=None) -> str:
    return "a,b,y\n" + "".join(f"{math.sin(i):.4f},{i % 5},{target(i) if target else f'{math.cos(i) * 3:.3f}'}\n"
                               for i in range(n))


GOOD = HEADER + rows()
# case -> (file bytes, extra flags, expected text on stderr (exit 2) or, for a case that now succeeds, on stdout)
CASES: dict[str, tuple[bytes, list[str], str]] = {
    "empty file": (b"", [], "the file is empty"),
    "header only": (HEADER.encode(), [], "has a header but no data rows"),
    "binary": (bytes(range(256)) * 8, [], "looks like a binary file (NUL bytes)"),
    "semicolons": (HEADER.replace(",", ";").encode() + rows(sep=";").encode(), [],
                   "looks semicolon-separated; pass --delimiter ';'"),
    "latin-1 bytes": ((HEADER + rows(colour=lambda i: "caf\xe9" if i == 4 else "red")).encode("latin-1"), [],
                      "line 6 is not valid utf-8 (byte 0xe9)"),
    "ragged row": ((HEADER + rows(label=lambda i: "xyz"[i % 3] + (",extra" if i == 5 else ""))).encode(), [],
                   "line 7 has 5 fields but the header has 4"),
    "text in a numeric column": ((HEADER + rows(a=lambda i: "oops" if i in (3, 9) else str(i * 1.5))).encode(), [],
                                 "column 'a' is numeric but has 2 non-numeric value(s) (rows 4, 10, e.g. 'oops')"),
    "footer row TOTAL,,,": ((GOOD + "TOTAL,,,\n").encode(), [],
                            "stdout:dropped 1 row(s) with a missing target (rows 91) (the last row: a totals or footer line?)"),
    "footer row with a target": ((GOOD + "TOTAL,3,red,x\n").encode(), [],
                                 "column 'a' is numeric but has 1 non-numeric value(s) (row 91, the last row: a totals "
                                 "or footer line? delete it"),
    "infinity in a feature": ((HEADER + rows(a=lambda i: "inf" if i == 7 else f"{i / 3:.3f}")).encode(), [],
                              "column 'a' has 1 infinite value(s) (rows 8)"),
    "feature beyond float32": ((HEADER + rows(a=lambda i: "1e39" if i == 7 else f"{i / 3:.3f}")).encode(), [],
                               "column 'a' has 1 value(s) beyond float32's range (+-3.4e38; rows 8, e.g. 1e+39)"),
    "feature beyond float32, negative": ((HEADER + rows(a=lambda i: "-5e300" if i == 2 else f"{i / 3:.3f}")).encode(),
                                         [], "column 'a' has 1 value(s) beyond float32's range (+-3.4e38; rows 3, "
                                             "e.g. -5e+300)"),
    "regression target beyond float32": (regression_rows(target=lambda i: "2e40" if i == 5 else f"{i * 0.5:.2f}"
                                                         ).encode(), [],
                                         "target 'y' has 1 value(s) beyond float32's range (+-3.4e38; rows 6, e.g. 2e+40)"),
    "regression target infinite": (regression_rows(target=lambda i: "-inf" if i == 5 else f"{i * 0.5:.2f}").encode(),
                                   [], "target 'y' has 1 infinite value(s) (rows 6)"),
    "utf-16 without --encoding": (GOOD.encode("utf-16"), [], "the file is UTF-16 text, not utf-8; pass --encoding utf-16"),
    "utf-16-le without a BOM": (GOOD.encode("utf-16-le"), [], "the file is UTF-16 text, not utf-8; pass --encoding utf-16"),
    "utf-16 with --encoding utf-16": (GOOD.encode("utf-16"), ["--encoding", "utf-16"], "stdout:rows: train "),
    "unknown encoding": (GOOD.encode(), ["--encoding", "klingon"], "--encoding 'klingon' is not an encoding Python knows"),
    "--seed -1": (GOOD.encode(), ["--seed", "-1"], "--seed must be a whole number >= 0 (it seeds the splits), not -1"),
    "--delimiter empty": (GOOD.encode(), ["--delimiter="], "--delimiter must be one character such as ',', ';', '|' or "
                                                           "'\\t' (tab), not ''"),
    "--delimiter two characters": (GOOD.encode(), ["--delimiter", ",,"], "--delimiter must be one character"),
    "--delimiter a quote": (GOOD.encode(), ["--delimiter", '"'], "--delimiter must be one character"),
    "--delimiter a backslash on a comma file": (GOOD.encode(), ["--delimiter", "\\"],
                                                "the header has no '\\' but 3 comma(s): the file looks comma-separated; "
                                                "pass --delimiter ','"),
    "--delimiter a backslash on a backslash file": ((HEADER.replace(",", "\\") + rows(sep="\\")).encode(),
                                                    ["--delimiter", "\\"], "stdout:rows: train "),
    "--delimiter tab spelled \\t": ((HEADER.replace(",", "\t") + rows(sep="\t")).encode(), ["--delimiter", "\\t"],
                                    "stdout:rows: train "),
    "--test-split nan": (GOOD.encode(), ["--test-split", "nan"], "--test-split nan and --val-split 0.1 must each be in"),
    "fractions leave no training rows": (GOOD.encode(), ["--test-split", "0.7", "--val-split", "0.4"],
                                         "must each be in [0, 1) and leave rows for training"),
    "unknown target": (GOOD.encode(), ["--target", "lable"], "target column 'lable' not found; did you mean 'label'?"),
    "unknown --drop": (GOOD.encode(), ["--drop", "colr"], "--drop: no column named 'colr'; did you mean 'colour'?"),
    "empty target everywhere": ((HEADER + rows(label=lambda i: "")).encode(), [], "is empty in every row"),
    "one class": ((HEADER + rows(label=lambda i: "only")).encode(), [], "has only one class ('only')"),
    "ID-like target, 3,000 classes": (("id,v,label\n" + "".join(f"{i},{i % 9},user-{i:06d}\n" for i in range(3000))
                                       ).encode(), ["--target", "label"],
                                      "class(es) ['user-000000', 'user-000001', "),
    "ID-like target picked automatically": (("v,w,label\n" + "".join(f"{i % 9},{i % 4},user-{i:06d}\n"
                                                                      for i in range(3000))).encode(), [],
                                            "looks like an ID, a name or free text (3,000 distinct values"),
    "3,000 duplicated column names": ((",".join(["x"] * 3000 + ["label"]) + "\n" + "1," * 3000 + "a\n").encode(), [],
                                      "(dropped: x - constant (one distinct value), x.1 - "),  # pandas renames them
}
LONG_MESSAGE = 600  # characters: a message that names a few and counts the rest stays short


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gives_one_line_and_writes_nothing(case: str, tmp_path: Path, capsys):
    content, flags, expected = CASES[case]
    csv = tmp_path / "input.csv"
    csv.write_bytes(content)
    out = tmp_path / "out"
    code = prepare_dataset.main(["--data-path", str(csv), "--output-dir", str(out), *flags])
    captured = capsys.readouterr()
    if expected.startswith("stdout:"):
        assert code == 0, captured.err
        assert expected[len("stdout:"):] in captured.out
        assert (out / "schema.json").is_file()
        return
    assert code == 2, (captured.out[-500:], captured.err)
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err
    assert expected in captured.err
    assert len(captured.err) < LONG_MESSAGE, f"{len(captured.err)} characters: {captured.err[:300]}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input.csv"]  # no output, no staging folder


def test_many_classes_are_counted_not_listed_on_stdout(tmp_path: Path, capsys):
    csv = tmp_path / "many.csv"
    csv.write_text("v,w,label\n" + "".join(f"{i % 13},{i % 7},c{i % 400:03d}\n" for i in range(4000)))
    assert prepare_dataset.main(["--data-path", str(csv), "--output-dir", str(tmp_path / "o"), "--target", "label"]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("classes: "))
    assert line.endswith("and 380 more") and len(line) < 400
    assert max(map(len, out.splitlines())) < 2000


def test_bad_flags_on_the_real_command_line_have_no_traceback(tmp_path: Path):
    csv = tmp_path / "d.csv"
    csv.write_text(GOOD)
    for flags in (["--seed", "-1"], ["--delimiter", "\\"], ["--delimiter", ",,"], ["--delimiter="],
                  ["--encoding", "utf-16"]):
        result = script("prepare_dataset.py", "--data-path", csv, "--output-dir", tmp_path / "o", *flags)
        assert result.returncode == 2 and "Traceback" not in result.stderr, (flags, result.stderr)
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr


# ------------------------------------------------------------------------------ the output folder's contents
def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def prepared(tmp_path: Path) -> Path:
    out = tmp_path / "processed"
    assert prepare_dataset.main(["--data-path", str(BUNDLED), "--output-dir", str(out)]) == 0
    return out


@pytest.mark.parametrize("intruder", ["notes.txt", "source csv", "training run", "hidden file"])
def test_rerun_refuses_a_folder_holding_anything_else_and_deletes_nothing(intruder: str, prepared: Path,
                                                                          tmp_path: Path, capsys):
    source = BUNDLED
    if intruder == "notes.txt":
        (prepared / "notes.txt").write_text("my notes")
    elif intruder == "source csv":
        source = prepared / "train.csv"
        source.write_bytes(BUNDLED.read_bytes())
    elif intruder == "training run":
        (prepared / "run").mkdir()
        (prepared / "run" / "metrics.json").write_text("{}")
    else:
        (prepared / ".ipynb_checkpoints").mkdir()
    before = digest(prepared)
    capsys.readouterr()
    code = prepare_dataset.main(["--data-path", str(source), "--output-dir", str(prepared), "--seed", "7"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "holds an earlier output of prepare_dataset but also 1 file(s) it did not write" in err
    name = {"notes.txt": "'notes.txt'", "source csv": "'train.csv'", "training run": "'run/'",
            "hidden file": "'.ipynb_checkpoints/'"}[intruder]
    assert name in err and "nothing was changed" in err
    if intruder == "source csv":
        assert "(the source CSV train.csv among them)" in err
    assert digest(prepared) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["processed"]


def test_rerun_replaces_its_own_output_and_an_empty_folder_is_fine(prepared: Path, tmp_path: Path, capsys):
    assert prepare_dataset.main(["--data-path", str(BUNDLED), "--output-dir", str(prepared), "--seed", "9"]) == 0
    assert json.loads((prepared / "schema.json").read_text())["splits"]["seed"] == 9
    empty = tmp_path / "empty"
    empty.mkdir()
    assert prepare_dataset.main(["--data-path", str(BUNDLED), "--output-dir", str(empty)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "processed"]


def test_a_folder_without_a_schema_is_refused_with_its_contents_named(tmp_path: Path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    for i in range(12):
        (folder / f"photo{i:02d}.jpg").write_text("x")
    assert prepare_dataset.main(["--data-path", str(BUNDLED), "--output-dir", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "is not an earlier output of prepare_dataset (it holds 'photo00.jpg'" in err and "and 7 more" in err
    assert len(list(folder.iterdir())) == 12


def test_output_path_that_is_a_file_or_under_a_file(tmp_path: Path, capsys):
    a_file = tmp_path / "data.csv"
    a_file.write_text("keep me")
    assert prepare_dataset.main(["--data-path", str(BUNDLED), "--output-dir", str(a_file)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert prepare_dataset.main(["--data-path", str(BUNDLED), "--output-dir", str(a_file / "sub" / "out")]) == 2
    assert f"cannot be made, because {a_file} is a file" in capsys.readouterr().err
    assert a_file.read_text() == "keep me"


def test_input_path_that_is_a_folder(tmp_path: Path, capsys):
    assert prepare_dataset.main(["--data-path", str(tmp_path), "--output-dir", str(tmp_path / "o")]) == 2
    assert "is a folder, not a CSV file" in capsys.readouterr().err


def test_stale_staging_of_a_killed_prepare_is_cleaned_but_nothing_else(tmp_path: Path):
    stale = tmp_path / ".out.tmp-999999999-0123abcd"  # no such PID
    stale.mkdir()
    (stale / "train_X.npy").write_bytes(b"x" * 1000)
    foreign = tmp_path / ".out.tmp-999999999-89abcdef"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("mine")
    assert prepare_dataset.main(["--data-path", str(BUNDLED), "--output-dir", str(tmp_path / "out")]) == 0
    assert not stale.exists() and (foreign / "thesis.tex").read_text() == "mine"


# ---------------------------------------------------------------------------------- the file system refuses
def test_read_only_mount_is_refused_before_any_work(tmp_path: Path, capsys):
    with tmpfs(tmp_path / "ro", "ro") as mount:
        assert prepare_dataset.main(["--data-path", str(BUNDLED), "--output-dir", str(mount / "out")]) == 2
        err = capsys.readouterr().err
        assert f"cannot write in {mount} (a read-only file system); choose another --output-dir" in err
        assert prepare_dataset.main(["--data-path", str(BUNDLED), "--output-dir", str(mount)]) == 2
        assert "is a mount point with a read-only file system" in capsys.readouterr().err


def test_read_only_mount_holding_an_earlier_output(tmp_path: Path, capsys):
    with tmpfs(tmp_path / "m", "size=4m") as mount:
        out = mount / "out"
        assert prepare_dataset.main(["--data-path", str(BUNDLED), "--output-dir", str(out)]) == 0
        before = digest(out)
        remount(mount, "ro")
        capsys.readouterr()
        assert prepare_dataset.main(["--data-path", str(BUNDLED), "--output-dir", str(out), "--seed", "3"]) == 2
        assert "(a read-only file system)" in capsys.readouterr().err
        assert digest(out) == before


def big_csv(path: Path, n: int = 30_000) -> Path:
    rng = np.random.default_rng(0)
    values = rng.normal(size=(n, 8)).round(4)
    labels = np.array(["p", "q", "r"])[rng.integers(0, 3, n)]
    path.write_text("f0,f1,f2,f3,f4,f5,f6,f7,label\n" + "".join(
        ",".join(map(str, row)) + f",{label}\n" for row, label in zip(values.tolist(), labels)))
    return path


def test_full_disk_keeps_the_previous_output(tmp_path: Path, capsys):
    source = big_csv(tmp_path / "big.csv")  # ~1 MB of float32 features: more than the disk has left
    with tmpfs(tmp_path / "small", "size=1m") as mount:
        out = mount / "out"
        assert prepare_dataset.main(["--data-path", str(BUNDLED), "--output-dir", str(out)]) == 0
        before = digest(out)
        fill(mount, leave_bytes=200_000)
        capsys.readouterr()
        code = prepare_dataset.main(["--data-path", str(source), "--output-dir", str(out)])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1, err
        assert "could not be written (no space left on the device); nothing was changed (the earlier output " \
               "there is unchanged): free some space or choose another --output-dir" in err
        assert digest(out) == before
        assert sorted(p.name for p in mount.iterdir()) == ["filler", "out"]  # the staging folder is gone
        from pipeline import data

        assert data.load_processed(out).schema["source"]["sha256"] == hashlib.sha256(BUNDLED.read_bytes()).hexdigest()


def test_file_size_limit_in_a_subprocess(tmp_path: Path):
    source = big_csv(tmp_path / "big.csv")

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    result = script("prepare_dataset.py", "--data-path", source, "--output-dir", tmp_path / "out", preexec_fn=limit)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert "could not be written (a file grew beyond the size limit); nothing was changed" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.csv"]


def test_unreadable_input_and_unwritable_folder_as_a_user(tmp_path: Path):
    if not permissions_apply(tmp_path):
        pytest.skip("file permissions do not apply to this process")
    csv = tmp_path / "secret.csv"
    csv.write_bytes(BUNDLED.read_bytes())
    csv.chmod(0)
    try:
        result = script("prepare_dataset.py", "--data-path", csv, "--output-dir", tmp_path / "o", unprivileged=True)
    finally:
        csv.chmod(0o644)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"{csv}: cannot be read (Permission denied); check --data-path and the file's permissions" in result.stderr
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        result = script("prepare_dataset.py", "--data-path", BUNDLED, "--output-dir", locked / "o", unprivileged=True)
    finally:
        locked.chmod(0o755)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"cannot write in {locked} (permission denied)" in result.stderr


def test_a_read_only_output_folder_is_not_replaced(tmp_path: Path):
    if not permissions_apply(tmp_path):
        pytest.skip("file permissions do not apply to this process")
    out = tmp_path / "processed"
    assert prepare_dataset.main(["--data-path", str(BUNDLED), "--output-dir", str(out)]) == 0
    before = digest(out)
    out.chmod(0o555)
    try:
        result = script("prepare_dataset.py", "--data-path", BUNDLED, "--output-dir", out, "--seed", "5",
                        unprivileged=True)
    finally:
        out.chmod(0o755)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"{out}: is read-only (permission denied); make it writable or choose another --output-dir" in result.stderr
    assert digest(out) == before
