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
