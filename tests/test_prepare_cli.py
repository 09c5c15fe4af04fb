"""Phase 1 CLI: the Quick Start command, and every kind of bad input (exit 2, one line, nothing written)."""
from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from conftest import BUNDLED_CSV, ROOT, make_classification_csv, run_script

sys.path.insert(0, str(ROOT / "solutions"))
import prepare_dataset  # noqa: E402


def test_quick_start_command_as_subprocess(tmp_path: Path):
    result = run_script("prepare_dataset.py", "--data-path", BUNDLED_CSV, "--output-dir", tmp_path / "processed_data",
                        "--test-split", "0.2")
    assert result.returncode == 0, result.stderr
    assert "target: 'species'" in result.stdout
    assert "task: classification (auto; override with --task)" in result.stdout
    assert "rows: train 241, val 34, test 69" in result.stdout
    assert json.loads((tmp_path / "processed_data" / "schema.json").read_text())["rows"]["test"] == 69


def test_main_in_process(tmp_path: Path, capsys):
    assert prepare_dataset.main(["--data-path", str(BUNDLED_CSV), "--output-dir", str(tmp_path / "o"),
                                 "--target", "island", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "target: 'island' (by name)" in out and "classes: Biscoe, Dream, Torgersen" in out


def _rows(n: int, make) -> str:
    return "".join(make(i) + "\n" for i in range(n))


GOOD_HEADER = "a,b,colour,label\n"
CAFE = "caf\xe9"
BAD_INPUTS = {
    "empty": (b"", "the file is empty"),
    "header_only": (GOOD_HEADER.encode(), "has a header but no data rows"),
    "binary": (bytes(range(256)) * 4, "looks like a binary file"),
    "missing_target": ((GOOD_HEADER + _rows(30, lambda i: f"{i},{i % 3},r,x")).encode(),
                       "target column 'lable' not found; did you mean 'label'? columns are: a, b, colour, label"),
    "one_class": ((GOOD_HEADER + _rows(30, lambda i: f"{i},{i % 3},r,only")).encode(), "has only one class ('only')"),
    "single_row_class": ((GOOD_HEADER + _rows(30, lambda i: f"{i},{i % 3},r,{'rare' if i == 4 else 'x' if i % 2 else 'y'}")
                          ).encode(), "class(es) ['rare'] of target 'label' have a single row"),
    "too_few_rows": ((GOOD_HEADER + "1,2,r,x\n2,3,g,y\n3,4,r,x\n4,5,g,y\n").encode(), "too few to fill"),
    "non_numeric": ((GOOD_HEADER + _rows(30, lambda i: f"{'oops' if i in (3, 9) else i},{i % 3},r,{'x' if i % 2 else 'y'}")
                     ).encode(), "column 'a' is numeric but has 2 non-numeric value(s) (rows 4, 10, e.g. 'oops')"),
    "infinite": ((GOOD_HEADER + _rows(30, lambda i: f"{'inf' if i == 7 else i},{i % 3},r,{'x' if i % 2 else 'y'}")
                  ).encode(), "column 'a' has 1 infinite value(s) (rows 8)"),
    "semicolon": (("a;b;colour;label\n" + _rows(30, lambda i: f"{i};{i % 3};r;x")).encode(),
                  "looks semicolon-separated; pass --delimiter ';'"),
    "not_utf8": ((GOOD_HEADER + _rows(30, lambda i: f"{i},{i % 3},{CAFE if i == 2 else 'r'},{'x' if i % 2 else 'y'}")
                  ).encode("latin-1"), "line 4 is not valid utf-8 (byte 0xe9)"),
    "ragged": ((GOOD_HEADER + _rows(30, lambda i: f"{i},{i % 3},r,{'x' if i % 2 else 'y'}" + (",extra" if i == 5 else ""))
                ).encode(), "line 7 has 5 fields but the header has 4"),
    "all_target_missing": ((GOOD_HEADER + _rows(30, lambda i: f"{i},{i % 3},r,")).encode(),
                           "target column 'label' is empty in every row"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_exit_2_one_line_nothing_written(case: str, tmp_path: Path, capsys):
    content, expected = BAD_INPUTS[case]
    csv = tmp_path / f"{case}.csv"
    csv.write_bytes(content)
    out = tmp_path / "out"
    args = ["--data-path", str(csv), "--output-dir", str(out)]
    if case == "missing_target":
        args += ["--target", "lable"]
    code = prepare_dataset.main(args)
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert expected in err
    assert str(csv) in err or case == "missing_target" and str(csv) in err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == [csv.name]  # no staging folder either


def test_bad_input_as_subprocess_has_no_traceback(tmp_path: Path):
    csv = tmp_path / "empty.csv"
    csv.write_bytes(b"")
    result = run_script("prepare_dataset.py", "--data-path", csv, "--output-dir", tmp_path / "o")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.startswith("error: ")


def test_missing_file_and_bad_fractions(tmp_path: Path, capsys):
    assert prepare_dataset.main(["--data-path", str(tmp_path / "nope.csv"), "--output-dir", str(tmp_path / "o")]) == 2
    assert "no such file" in capsys.readouterr().err
    csv = make_classification_csv(tmp_path / "d.csv", rows=50)
    assert prepare_dataset.main(["--data-path", str(csv), "--output-dir", str(tmp_path / "o"),
                                 "--test-split", "0.7", "--val-split", "0.4"]) == 2
    assert "must each be in [0, 1)" in capsys.readouterr().err


@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_written_files_follow_the_umask(umask: int, expected: int, tmp_path: Path):
    """Atomic writes must not keep mkstemp's 0600: a colleague (group) can read schema.json, metrics, reports."""
    from pipeline import fileio

    old = os.umask(umask)
    try:
        fileio.atomic_write_json(tmp_path / "a.json", {"x": 1})
        fileio.append_jsonl(tmp_path / "log.jsonl", [{"x": 1}])
        assert prepare_dataset.main(["--data-path", str(BUNDLED_CSV), "--output-dir", str(tmp_path / "o")]) == 0
    finally:
        os.umask(old)
    for path in (tmp_path / "a.json", tmp_path / "log.jsonl", tmp_path / "o" / "schema.json",
                 tmp_path / "o" / "train_X.npy"):
        assert stat.S_IMODE(path.stat().st_mode) == expected, path
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def test_column_report_and_warnings_are_printed(tmp_path: Path, capsys):
    csv = tmp_path / "d.csv"
    rows = [f"{i},{i % 7 * 0.5},{'fraud' if i % 25 == 0 else 'ok'}" for i in range(400)]
    csv.write_text("ticket_id,amount,label\n" + "\n".join(rows) + "\n")
    assert prepare_dataset.main(["--data-path", str(csv), "--output-dir", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out.splitlines()
    header = out.index("column     role         details")
    assert out[header + 1].split()[:2] == ["ticket_id", "dropped"]
    assert out[header + 2].split()[:3] == ["amount", "numeric", "no"]
    assert out[header + 3].split()[:2] == ["label", "target"]
    warnings = [line for line in out if line.startswith("warning: ")]
    assert len(warnings) == 1 and "class 'fraud' of 'label' is 4.0% of the rows" in warnings[0]


@pytest.mark.parametrize("flags, expected", [
    (["--drop", "x0,colr"], "--drop: no column named 'colr'; did you mean 'colour'?"),
    (["--categorical", "colur"], "--categorical: no column named 'colur'; did you mean 'colour'?"),
    (["--drop", "label"], "--drop names the target column 'label'"),
])
def test_unknown_column_options_exit_2_with_a_suggestion(flags: list[str], expected: str, tmp_path: Path, capsys):
    csv = make_classification_csv(tmp_path / "d.csv", rows=60)
    code = prepare_dataset.main(["--data-path", str(csv), "--output-dir", str(tmp_path / "o"), *flags])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith(f"error: {csv}: ") and expected in err
    assert not (tmp_path / "o").exists()


def test_column_options_on_the_command_line(tmp_path: Path):
    csv = make_classification_csv(tmp_path / "d.csv", rows=120)
    result = run_script("prepare_dataset.py", "--data-path", csv, "--output-dir", tmp_path / "o",
                        "--drop", "x4, x5", "--drop", "x3", "--categorical", "colour", "--max-levels", "2")
    assert result.returncode == 0, result.stderr
    schema = json.loads((tmp_path / "o" / "schema.json").read_text())
    assert schema["options"]["drop"] == ["x4", "x5", "x3"] and schema["features"]["numeric"] == ["x0", "x1", "x2"]
    colour = next(c for c in schema["columns"] if c["name"] == "colour")
    assert colour["levels_kept"] == 2 and "kept (--max-levels 2)" in colour["detail"]
    bad = run_script("prepare_dataset.py", "--data-path", csv, "--output-dir", tmp_path / "p", "--max-levels", "0")
    assert bad.returncode == 2 and "expected a whole number >= 1" in bad.stderr


def test_help_shows_every_choice_and_the_column_options():
    text = prepare_dataset.build_parser().format_help()
    assert "{auto,classification,regression}" in text
    for flag in ("--drop COL[,COL...]", "--categorical COL[,COL...]", "--max-levels N"):
        assert flag in text
