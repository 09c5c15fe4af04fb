"""prepare_dataset.py at the edges a real CSV reaches: a latin-1 file scored later, a column name with a comma,
duplicate header names, a target class too rare to reach the held-out rows, a refused run: each either works
or says why in one line, and a refused run leaves nothing behind."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from faults import ROOT

sys.path.insert(0, str(ROOT / "solutions"))
import prepare_dataset  # noqa: E402

from pipeline import data  # noqa: E402


def run(tmp_path: Path, content: bytes, *flags: str, capsys) -> tuple[int, str, str, Path]:
    csv = tmp_path / "input.csv"
    csv.write_bytes(content)
    out = tmp_path / "out"
    code = prepare_dataset.main(["--data-path", str(csv), "--output-dir", str(out), *flags])
    captured = capsys.readouterr()
    return code, captured.out, captured.err, out


def test_a_latin1_training_file_scores_a_latin1_file_with_the_recorded_encoding(tmp_path: Path, capsys):
    text = "a,town,label\n" + "".join(f"{i % 11},{('Málaga', 'Köln', 'Zürich')[i % 3]},{'xy'[i % 2]}\n"
                                      for i in range(60))
    code, _, err, out = run(tmp_path, text.encode("latin-1"), "--encoding", "latin-1", capsys=capsys)
    assert code == 0, err
    schema = data.load_schema(out)
    assert schema["source"]["encoding"] == "latin-1"
    new = tmp_path / "new.csv"
    new.write_bytes("a,town\n3,Köln\n4,Málaga\n".encode("latin-1"))
    features, frame = data.load_raw_for_scoring(new, schema)
    assert features.shape == (2, len(schema["features"]["processed"]))
    assert frame["town"].tolist() == ["Köln", "Málaga"]
    names = schema["features"]["processed"]
    assert features[0, names.index("town=Köln")] == 1.0 and features[1, names.index("town=Málaga")] == 1.0


COMMA_CSV = ("id,\"price, EUR\",\"code, old\",b,label\n"
             + "".join(f"{i},{(i * 37) % 101 / 3:.3f},{i % 4},{i * 0.7:.2f},{'xy'[(i * 7) % 2]}\n"
                       for i in range(80))).encode()


def test_a_column_whose_name_holds_a_comma_can_be_dropped_or_made_categorical(tmp_path: Path, capsys):
    code, _, err, out = run(tmp_path, COMMA_CSV, "--drop-column", "price, EUR", "--categorical-column", "code, old",
                            "--drop", "id", capsys=capsys)
    assert code == 0, err
    schema = data.load_schema(out)
    dropped = {item["name"]: item["reason"] for item in schema["features"]["dropped"]}
    assert "price, EUR" in dropped and "id" in dropped
    assert schema["features"]["categorical"] == ["code, old"]
    assert sorted(schema["options"]["drop"]) == ["id", "price, EUR"]


def test_a_comma_name_split_by_drop_says_to_use_drop_column(tmp_path: Path, capsys):
    code, _, err, out = run(tmp_path, COMMA_CSV, "--drop", "price, EUR", capsys=capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert "--drop: no column named 'price', but 'price, EUR' holds a comma; name it whole with --drop-column" in err
    assert not out.exists()


def test_help_names_the_whole_name_flags():
    text = prepare_dataset.build_parser().format_help()
    assert "--drop-column NAME" in text and "--categorical-column NAME" in text


def test_duplicate_header_names_are_renamed_with_one_warning_naming_them(tmp_path: Path, capsys):
    text = "x,x,y,x,label\n" + "".join(f"{i % 13},{(i * 5) % 17},{i * 0.3:.2f},{i % 9},{'ab'[i % 2]}\n"
                                       for i in range(90))
    code, stdout, err, out = run(tmp_path, text.encode(), capsys=capsys)
    assert code == 0, err
    lines = [line for line in stdout.splitlines() if "renamed" in line]
    assert len(lines) == 1, stdout
    assert lines[0].startswith("warning: 2 header name(s) repeat an earlier column and were renamed: 'x.1', 'x.2'")
    kinds = [item["kind"] for item in data.load_schema(out)["warnings"]]
    assert kinds.count("duplicate_names") == 1


def test_no_leak_warning_when_the_held_out_rows_hold_one_class(tmp_path: Path, capsys):
    rng = np.random.default_rng(0)
    n = 3000  # 2 positives: stratification puts them in train, the held-out rows are all 'no'
    label = np.array(["no"] * n, dtype=object)
    label[[10, 2000]] = "yes"
    text = "a,b,label\n" + "".join(f"{rng.normal():.4f},{rng.integers(0, 5)},{label[i]}\n" for i in range(n))
    code, stdout, err, out = run(tmp_path, text.encode(), capsys=capsys)
    assert code == 0, err
    warnings = data.load_schema(out)["warnings"]
    assert not [w for w in warnings if w["kind"] == "leak"], [w["message"] for w in warnings]
    skipped = [w for w in warnings if w["kind"] == "leak_check_skipped"]
    assert len(skipped) == 1 and "all hold one class of 'label' ('no')" in skipped[0]["message"]
    assert stdout.count("cannot tell whether a feature alone predicts it") == 1
