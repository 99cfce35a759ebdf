"""CSV line numbers for the quarantine: the vectorised scan against Python's csv module as the oracle."""

from __future__ import annotations

import csv
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms import landing


def oracle_record_lines(text: str) -> list[int]:
    """Start line of every data record, as Python's csv reader sees them (blank lines yield [])."""
    reader = csv.reader(io.StringIO(text, newline=""))
    starts, previous_end = [], 0
    for record in reader:
        if record:
            starts.append(previous_end + 1)
        previous_end = reader.line_num
    return starts[1:]


cell = st.one_of(
    st.text(alphabet="abc,1 ", max_size=4),
    st.text(alphabet='ab\n"', max_size=5).map(lambda t: '"' + t.replace('"', '""') + '"'),
)
record = st.lists(cell, min_size=1, max_size=3).map(",".join).filter(lambda r: r != "")
layout = st.lists(st.one_of(record, st.just("")), min_size=1, max_size=12)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(rows=layout, newline=st.sampled_from(["\n", "\r\n"]), final_newline=st.booleans(),
       chunk=st.sampled_from([1, 2, 3, 7, 1 << 23]))
def test_record_lines_match_the_csv_module(tmp_path_factory, monkeypatch_module, rows, newline, final_newline, chunk):
    text = newline.join(["h1,h2"] + rows) + (newline if final_newline else "")
    path = tmp_path_factory.mktemp("csv") / "f.csv"
    path.write_bytes(text.encode())
    monkeypatch_module.setattr(landing, "_CHUNK", chunk)  # small chunks cross every boundary case

    found = landing.csv_record_lines(path)
    expected = oracle_record_lines(text)
    assert landing.csv_records(path).count == len(expected)  # held against the rows the reader returns

    if found is None:  # the plain case: record k starts on line k + 1
        assert expected == list(range(2, len(expected) + 2))
    else:
        assert list(found) == expected


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_plain_files_need_no_map(tmp_path):
    path = tmp_path / "plain.csv"
    path.write_text("h\na\nb\n")
    assert landing.csv_record_lines(path) is None
    path.write_text("h\na\nb")
    assert landing.csv_record_lines(path) is None


def test_blank_lines_and_multi_line_cells_are_mapped(tmp_path):
    path = tmp_path / "odd.csv"
    path.write_text('h,x\na,1\n\n"b\nc",2\nd,3\n')
    assert list(landing.csv_record_lines(path)) == [2, 4, 6]
