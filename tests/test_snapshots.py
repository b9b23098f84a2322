"""Snapshots: provenance, exact re-use, refusal of edited or half-written files; your own files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from research_lib.config import load_config
from research_lib.data import load_prices, read_provenance, read_snapshot, write_snapshot
from research_lib.errors import DataValidationError
from research_lib.stages import RunFolder
from tests.conftest import REPO, make_prices
from tests.test_data_files import ours


def test_a_load_is_snapshotted_with_provenance_and_reused(tmp_path):
    first = load_prices("bundled", ["KO", "PEP"], "2010-01-01", "2010-12-31", snapshot_dir=tmp_path)
    record = first.attrs["provenance"]
    assert record["source"] == "bundled" and record["symbols"] == ["KO", "PEP"]
    assert record["first_date"] == "2010-01-04" and record["last_date"] == "2010-12-31"
    assert len(record["sha256"]) == 64 and record["versions"]["skfolio"]
    again = load_prices("bundled", ["KO", "PEP"], "2010-01-01", "2010-12-31", snapshot_dir=tmp_path)
    assert again.attrs["provenance"]["retrieved_at"] == record["retrieved_at"], "served from the snapshot"
    pd.testing.assert_frame_equal(first, again)
    refreshed = load_prices("bundled", ["KO", "PEP"], "2010-01-01", "2010-12-31", snapshot_dir=tmp_path, refresh=True)
    assert refreshed.attrs["provenance"]["sha256"] == record["sha256"], "same data, same bytes"


def test_an_edited_snapshot_is_refused(tmp_path):
    path = tmp_path / "s.parquet"
    prices = make_prices({"AAA": [10.0, 10.5, 10.2, 10.8]})
    write_snapshot(prices, path, {"source": "test"})
    edited = prices.copy()
    edited.loc[edited.index[1], ("close", "AAA")] = 10.6
    edited.to_parquet(path)
    with pytest.raises(DataValidationError, match=r"Snapshot .*s.parquet changed after it was written \(sha256 \w{12} != recorded \w{12}\)"):
        read_snapshot(path)


def test_a_snapshot_without_provenance_or_unreadable_is_refused(tmp_path):
    path = tmp_path / "s.parquet"
    write_snapshot(make_prices({"AAA": [1.0, 2.0]}), path, {"source": "test"})
    path.write_bytes(b"not parquet")
    with pytest.raises(DataValidationError, match=r"Snapshot .*s.parquet cannot be read \(truncated, or not a parquet file\); delete it") as caught:
        read_snapshot(path)
    ours(str(caught.value))
    path.with_suffix(".json").unlink()
    with pytest.raises(DataValidationError, match=r"has no provenance file s.json \(an interrupted write\?\)"):
        read_snapshot(path)


def test_a_half_written_snapshot_is_fetched_again(tmp_path):
    load_prices("bundled", ["KO"], "2010-01-01", "2010-03-31", snapshot_dir=tmp_path)
    [parquet] = tmp_path.glob("*.parquet")
    parquet.with_suffix(".json").unlink()
    again = load_prices("bundled", ["KO"], "2010-01-01", "2010-03-31", snapshot_dir=tmp_path)
    assert read_provenance(parquet)["sha256"] == again.attrs["provenance"]["sha256"]


def test_a_failed_write_leaves_no_file(tmp_path, monkeypatch):
    def broken(self, path, *args, **kwargs):
        open(path, "wb").write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", broken)
    with pytest.raises(OSError, match="disk full"):
        write_snapshot(make_prices({"AAA": [1.0, 2.0]}), tmp_path / "s.parquet", {"source": "test"})
    assert list(tmp_path.iterdir()) == []


def test_your_own_long_csv(tmp_path):
    csv = tmp_path / "mine.csv"
    csv.write_text("date,symbol,close,volume\n2021-01-04,AAA,10,100\n2021-01-04,BBB,20,200\n"
                   "2021-01-05,AAA,10.5,110\n2021-01-05,BBB,19.5,210\n")
    prices = load_prices("file", path=csv, snapshot_dir=tmp_path / "snap")
    assert prices["close"].to_dict() == {"AAA": {pd.Timestamp("2021-01-04"): 10.0, pd.Timestamp("2021-01-05"): 10.5},
                                         "BBB": {pd.Timestamp("2021-01-04"): 20.0, pd.Timestamp("2021-01-05"): 19.5}}
    assert prices["volume"]["BBB"].tolist() == [200.0, 210.0]
    assert prices.attrs["provenance"]["path"] == str(csv.resolve())


def test_your_own_wide_parquet_and_its_errors(tmp_path):
    wide = pd.DataFrame({"date": pd.bdate_range("2021-01-04", periods=3), "AAA": [1.0, 1.1, -1.2]})
    wide.to_parquet(tmp_path / "w.parquet")
    with pytest.raises(DataValidationError, match=r"file .*w.parquet, AAA: non-positive close -1.2 on 2021-01-06") as caught:
        load_prices("file", path=tmp_path / "w.parquet", snapshot_dir=tmp_path / "snap")
    ours(str(caught.value))
    with pytest.raises(DataValidationError, match=r"file .*w.parquet has no symbols \['ZZZ'\]") as caught:
        load_prices("file", ["ZZZ"], path=tmp_path / "w.parquet", snapshot_dir=tmp_path / "snap")
    ours(str(caught.value))


@pytest.mark.parametrize("text, match", [
    ("day,AAA\n2021-01-04,1\n", r"has no 'date' column \(columns: \['day', 'AAA'\]\); name the session-date column 'date'"),
    ("date,AAA\nsoon,1\n", r"bad.csv, line 2: date 'soon' is not a date in the form YYYY-MM-DD; write dates as YYYY-MM-DD "
                           r"\(e.g. 2021-01-04\)"),
    ("date,symbol,price\n2021-01-04,AAA,1\n", r"is in long layout .* has no 'close' column"),
    ("date,symbol,close\n2021-01-04,AAA,1\n2021-01-04,AAA,2\n", r"AAA has more than one row on 2021-01-04"),
])
def test_malformed_files_say_what_to_fix(tmp_path, text, match):
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(DataValidationError, match=match) as caught:
        load_prices("file", path=tmp_path / "bad.csv", snapshot_dir=tmp_path / "snap")
    ours(str(caught.value))


def test_missing_file(tmp_path):
    with pytest.raises(DataValidationError, match=r"Price file .*nope.csv does not exist; set data.path") as caught:
        load_prices("file", path=tmp_path / "nope.csv", snapshot_dir=tmp_path)
    ours(str(caught.value))
    with pytest.raises(DataValidationError, match=r"data.source 'file' needs data.path"):
        load_prices("file", snapshot_dir=tmp_path)


def test_run_prices_are_computed_once_then_read_from_the_run_folder(workspace, tmp_path):
    config = load_config(REPO / "params" / "smoke.yaml")
    run_dir = tmp_path / "run"
    first = RunFolder(config, run_dir).prices
    assert set(first["close"].columns) == {*config.data.symbols, "SP500", "^VIX"}, "benchmark and VIX are loaded too"
    record = read_provenance(run_dir / "prices.parquet")
    assert record["source_sha256"] == read_provenance(first.attrs["provenance"]["snapshot"])["sha256"]
    second = RunFolder(config, run_dir).prices
    assert second.attrs["provenance"]["sha256"] == record["sha256"], "read back from the run folder"
    pd.testing.assert_frame_equal(first, second)


def test_run_prices_made_with_other_parameters_are_not_reused(workspace, tmp_path):
    """Running 06 alone in a folder left by another configuration must not use its data."""
    run_dir = tmp_path / "run"
    RunFolder(load_config(REPO / "params" / "smoke.yaml"), run_dir).prices
    narrower = load_config(REPO / "params" / "smoke.yaml", ["data.start=2016-01-01"])
    again = RunFolder(narrower, run_dir).prices
    assert again.index[0] == pd.Timestamp("2016-01-04")
    assert read_provenance(run_dir / "prices.parquet")["first_date"] == "2016-01-04"


def test_run_prices_read_your_file_again_once_it_is_edited(workspace, tmp_path):
    """The run folder's prices (and what is made from them) are keyed by the file's contents too:
    an edit in place, longer or only changed, is read by the next run in the same folder."""
    sessions = pd.bdate_range("2021-02-16", "2021-04-30").drop(pd.Timestamp("2021-04-02"))  # Good Friday
    path, run_dir = tmp_path / "mine.csv", tmp_path / "run"

    def write(rows: int, scale: float = 1.0) -> None:
        frame = pd.DataFrame({"AAA": np.linspace(10, 11, rows) * scale, "SP500": np.linspace(100, 101, rows)},
                             index=sessions[:rows])
        frame.rename_axis("date").to_csv(path)

    config = load_config(REPO / "params" / "smoke.yaml", ["data.source=file", f"data.path={path}", "data.start=null",
                                                          "data.end=null", "data.symbols=null", "features.names=[ret_5d]"])
    write(20)
    assert len(RunFolder(config, run_dir).prices) == 20
    assert RunFolder(config, run_dir).features.index.get_level_values("date").max() == sessions[19]
    write(30)
    assert list(RunFolder(config, run_dir).prices.index) == list(sessions[:30])
    assert RunFolder(config, run_dir).features.index.get_level_values("date").max() == sessions[29]
    write(30, scale=1.01)
    assert RunFolder(config, run_dir).prices["close"]["AAA"].iloc[-1] == pytest.approx(11 * 1.01)
