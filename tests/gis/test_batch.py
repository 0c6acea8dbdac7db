"""Tests of gis.batch (pure: a TerritoryIndex built in memory) and the geocode_batch command."""

from __future__ import annotations

import gzip
import io
import math
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from django.core.management import CommandError, call_command

from gis import datums
from gis.batch import ADDED_COLUMNS, CODE_COLUMNS, BatchError, geocode_file, tune_allocator
from gis.citygen import generate_city
from gis.index import TerritoryIndex


@pytest.fixture(scope="module")
def index() -> TerritoryIndex:
    """The demo city's index (the same seed and size as the test database's)."""
    return TerritoryIndex.from_units(generate_city(seed=2026, grids=2000).units)


def inside_points(index: TerritoryIndex, n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """n points that resolve to a grid without snapping, rounded to 7 decimals like real input."""
    rng = np.random.default_rng(seed)
    lon0, lat0 = 113.75, 22.40
    lon_parts, lat_parts, have = [], [], 0
    while have < n:
        lon = np.round(rng.uniform(lon0, lon0 + 0.65, 2 * n), 7)
        lat = np.round(rng.uniform(lat0, lat0 + 0.45, 2 * n), 7)
        found = index.geocode_many(lon, lat, with_block=False)
        keep = ~np.isnan(found["boundary_distance_m"]) & ~found["snapped"]
        lon_parts.append(lon[keep])
        lat_parts.append(lat[keep])
        have += int(keep.sum())
    return np.concatenate(lon_parts)[:n], np.concatenate(lat_parts)[:n]


def read_csv_as_text(path: Path) -> pa.Table:
    """A CSV with every column as text (booleans stay text too: 'true'/'false'/'')."""
    with open(path, encoding="utf-8") as handle:
        names = handle.readline().strip().replace('"', "").split(",")
    return pacsv.read_csv(
        path,
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types={n: pa.string() for n in names}, strings_can_be_null=False
        ),
    )


def expected_codes(index: TerritoryIndex, lon: np.ndarray, lat: np.ndarray) -> dict[str, list[object]]:
    found = index.geocode_many(lon, lat)
    return {name: list(found[name]) for name in ADDED_COLUMNS}


# --- single engine ------------------------------------------------------------------------------


def test_csv_keeps_every_column_byte_for_byte_and_adds_the_codes(
    index: TerritoryIndex, tmp_path: Path
) -> None:
    lon, lat = inside_points(index, 50)
    src = tmp_path / "in.csv"
    rows = ["id,lon,lat,note,code,amount"]
    for i, (x, y) in enumerate(zip(lon, lat, strict=True)):
        note = '"井盖缺失, 有""危险"""' if i == 3 else ("" if i == 4 else f"报告{i}")
        note = '"第一行\n第二行"' if i == 5 else note
        rows.append(f"{i:05d},{float(x)!r},{float(y)!r},{note},007,1.50")
    src.write_text("\n".join(rows) + "\n", encoding="utf-8")

    report = geocode_file(index, src, tmp_path / "out.csv", progress=False)

    out = read_csv_as_text(tmp_path / "out.csv")
    assert out.column_names == ["id", "lon", "lat", "note", "code", "amount", *ADDED_COLUMNS]
    assert out["id"].to_pylist()[:3] == ["00000", "00001", "00002"]
    assert out["note"][3].as_py() == '井盖缺失, 有"危险"'
    assert out["note"][4].as_py() == ""
    assert out["note"][5].as_py() == "第一行\n第二行"
    assert set(out["code"].to_pylist()) == {"007"} and set(out["amount"].to_pylist()) == {"1.50"}
    assert out["lon"].to_pylist() == [repr(float(x)) for x in lon]
    want = expected_codes(index, lon, lat)
    for name in CODE_COLUMNS:
        assert out[name].to_pylist() == want[name]
    assert out["near_boundary"].to_pylist() == ["true" if v else "false" for v in want["near_boundary"]]
    assert report.rows == report.resolved == 50 and report.bad == report.outside == 0


def test_csv_output_types_read_back_as_strings_and_booleans(index: TerritoryIndex, tmp_path: Path) -> None:
    lon, lat = inside_points(index, 20)
    pa_table = pa.table({"lon": lon, "lat": lat})
    pacsv.write_csv(pa_table, tmp_path / "in.csv")
    geocode_file(index, tmp_path / "in.csv", tmp_path / "out.csv", progress=False)
    # Inference on the output: codes are digit strings, so ask for text and see booleans inferred.
    table = pacsv.read_csv(
        tmp_path / "out.csv",
        convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in CODE_COLUMNS}),
    )
    assert table.schema.field("near_boundary").type == pa.bool_()
    assert table.schema.field("snapped").type == pa.bool_()
    assert table.schema.field("grid_code").type == pa.string()


def test_bad_and_outside_rows_are_kept_with_empty_codes_and_reported(
    index: TerritoryIndex, tmp_path: Path
) -> None:
    lon, lat = inside_points(index, 4)
    src = tmp_path / "in.csv"
    src.write_text(
        "lon,lat,id\n"
        f"{lon[0]},{lat[0]},ok\n"
        f",{lat[1]},missing-lon\n"
        f"abc,{lat[1]},text\n"
        f"{lon[2]},95,out-of-range\n"
        f" {lon[3]} , {lat[3]} ,blanks\n"
        "0,0,outside\n"
        "nan,inf,non-finite\n",
        encoding="utf-8",
    )
    report = geocode_file(index, src, tmp_path / "out.parquet", progress=False)

    out = pq.read_table(tmp_path / "out.parquet")
    assert out["id"].to_pylist() == [
        "ok",
        "missing-lon",
        "text",
        "out-of-range",
        "blanks",
        "outside",
        "non-finite",
    ]
    grid = out["grid_code"].to_pylist()
    assert grid[0] is not None and grid[4] is not None
    assert grid[1] is grid[2] is grid[3] is grid[5] is grid[6] is None
    assert out["snapped"].to_pylist()[1] is False and out["near_boundary"].to_pylist()[5] is False
    assert (report.rows, report.resolved, report.bad, report.outside) == (7, 2, 4, 1)
    assert report.bad_examples == [
        "row 2: lon is missing",
        "row 3: lon is not a number: 'abc'",
        "row 4: lat 95 is out of range [-90, 90]",
        "row 7: lon is not a number: 'nan'; lat inf is out of range [-90, 90]",
    ]


def test_parquet_keeps_column_types(index: TerritoryIndex, tmp_path: Path) -> None:
    lon, lat = inside_points(index, 30)
    table = pa.table(
        {
            "id": pa.array(np.arange(30), pa.int64()),
            "lon": pa.array(lon, pa.float64()),
            "lat": pa.array(lat, pa.float32()),
            "when": pa.array(np.arange(30).astype("datetime64[s]")),
            "tags": pa.array([["a", "b"]] * 30),
        }
    )
    pq.write_table(table, tmp_path / "in.parquet")
    table = pq.read_table(tmp_path / "in.parquet")  # as Parquet stores it (timestamps in ms)
    geocode_file(index, tmp_path / "in.parquet", tmp_path / "out.parquet", progress=False)
    out = pq.read_table(tmp_path / "out.parquet")
    assert out.schema.names == ["id", "lon", "lat", "when", "tags", *ADDED_COLUMNS]
    for name in ("id", "lon", "lat", "when", "tags"):
        assert out.schema.field(name).type == table.schema.field(name).type
        assert out[name].equals(table[name])
    assert all(out.schema.field(n).type == pa.string() for n in CODE_COLUMNS)
    assert out.schema.field("near_boundary").type == pa.bool_()
    assert (
        out["grid_code"].to_pylist()
        == expected_codes(index, lon, lat.astype(np.float32).astype(float))["grid_code"]
    )


def test_crs_converts_before_geocoding(index: TerritoryIndex, tmp_path: Path) -> None:
    lon, lat = inside_points(index, 40, seed=5)
    glon, glat = datums.wgs84_to_gcj02_many(lon, lat)
    blon, blat = datums.wgs84_to_bd09_many(lon, lat)
    pq.write_table(pa.table({"x": glon, "y": glat}), tmp_path / "gcj.parquet")
    pq.write_table(pa.table({"lon": blon, "lat": blat}), tmp_path / "bd.parquet")
    geocode_file(
        index,
        tmp_path / "gcj.parquet",
        tmp_path / "gcj.csv",
        crs="GCJ-02",
        lon_column="x",
        lat_column="y",
        progress=False,
    )
    geocode_file(index, tmp_path / "bd.parquet", tmp_path / "bd.csv", crs="bd09", progress=False)
    want = expected_codes(index, *datums.gcj02_to_wgs84_many(glon, glat))["grid_code"]
    assert read_csv_as_text(tmp_path / "gcj.csv")["grid_code"].to_pylist() == want
    # A GCJ-02 offset is hundreds of metres: without conversion most points would land elsewhere.
    assert want != expected_codes(index, glon, glat)["grid_code"]
    want_bd = expected_codes(index, *datums.bd09_to_wgs84_many(blon, blat))["grid_code"]
    assert read_csv_as_text(tmp_path / "bd.csv")["grid_code"].to_pylist() == want_bd


def test_gzip_and_gbk(index: TerritoryIndex, tmp_path: Path) -> None:
    lon, lat = inside_points(index, 10)
    text = "名称,lon,lat\n" + "".join(
        f"网格员{i},{x},{y}\n" for i, (x, y) in enumerate(zip(lon, lat, strict=True))
    )
    with gzip.open(tmp_path / "in.csv.gz", "wt", encoding="utf-8") as handle:
        handle.write(text)
    (tmp_path / "gbk.csv").write_bytes(text.encode("gbk"))

    geocode_file(index, tmp_path / "in.csv.gz", tmp_path / "out.csv.gz", progress=False)
    with gzip.open(tmp_path / "out.csv.gz", "rb") as handle:
        out = pacsv.read_csv(io.BytesIO(handle.read()))
    assert out["名称"].to_pylist()[2] == "网格员2"
    with pytest.raises(BatchError, match=r"e\.g\. gbk"):
        geocode_file(index, tmp_path / "gbk.csv", tmp_path / "gbk-out.csv", progress=False)
    geocode_file(index, tmp_path / "gbk.csv", tmp_path / "gbk-out.csv", encoding="gbk", progress=False)
    assert read_csv_as_text(tmp_path / "gbk-out.csv")["名称"].to_pylist()[9] == "网格员9"


def test_header_only_csv_gives_header_only_output(index: TerritoryIndex, tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text("lon,lat,id\n", encoding="utf-8")
    report = geocode_file(index, tmp_path / "in.csv", tmp_path / "out.csv", progress=False)
    assert report.rows == 0
    assert read_csv_as_text(tmp_path / "out.csv").column_names == ["lon", "lat", "id", *ADDED_COLUMNS]


def test_a_million_rows_run_in_bounded_chunks(index: TerritoryIndex, tmp_path: Path) -> None:
    n = 1_000_000
    lon, lat = inside_points(index, 50_000, seed=9)
    reps = n // lon.size
    # A wide text column makes the file far larger than what the reader may hold in flight.
    note = pa.array(["现场描述：" + "井盖缺失" * 6] * n)
    table = pa.table({"id": np.arange(n), "lon": np.tile(lon, reps), "lat": np.tile(lat, reps), "note": note})
    pacsv.write_csv(table, tmp_path / "big.csv")
    size = (tmp_path / "big.csv").stat().st_size
    del table, note

    chunk_rows = 65_536
    report = geocode_file(
        index, tmp_path / "big.csv", tmp_path / "big.parquet", chunk_rows=chunk_rows, progress=False
    )

    assert report.rows == n and report.resolved == n
    assert report.max_chunk_rows <= chunk_rows
    assert report.chunks >= n // chunk_rows
    # Arrow memory in use stayed a small fraction of the input (the reader's blocks in flight, a few
    # chunks and a row group), so it does not grow with the file.
    assert size > 100 * 2**20
    assert report.peak_arrow_bytes < size / 4
    meta = pq.ParquetFile(tmp_path / "big.parquet").metadata
    assert meta.num_rows == n
    assert max(meta.row_group(i).num_rows for i in range(meta.num_row_groups)) <= chunk_rows

    # The dask engine holds at most a window of pieces (two per thread, of 4 MiB of CSV each) besides
    # the row group being gathered, so its memory is bounded too (not by the file's size), and it
    # writes the same rows.
    both = geocode_file(
        index,
        tmp_path / "big.csv",
        tmp_path / "big-dask.parquet",
        engine="dask",
        workers=2,
        chunk_rows=chunk_rows,
        progress=False,
    )
    assert both.rows == both.resolved == n and both.partitions == math.ceil(size / (4 * 2**20))
    assert both.peak_arrow_bytes < 64 * 2**20
    dask_meta = pq.ParquetFile(tmp_path / "big-dask.parquet").metadata
    assert dask_meta.num_rows == n
    assert max(dask_meta.row_group(i).num_rows for i in range(dask_meta.num_row_groups)) <= chunk_rows


# --- dask engine --------------------------------------------------------------------------------


def mixed_rows(index: TerritoryIndex, n: int, seed: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """CSV lines (header first) of n rows: mostly inside points, with text needing quotes, blanks,
    bad coordinates and points outside the territory scattered through the file."""
    lon, lat = inside_points(index, n, seed=seed)
    lines = ["id,lon,lat,note"]
    for i, (x, y) in enumerate(zip(lon, lat, strict=True)):
        note = '"路口, 东北角 ""A"""' if i % 7 == 0 else ("" if i % 11 == 0 else f"报告{i}")
        lines.append(f"{i:06d},{float(x)!r},{float(y)!r},{note}")
    for row, (x, y) in {
        97: (" 114.1 ", "abc"),
        1500: ("", ""),
        2999: ("0", "0"),  # valid but outside: unresolved
        4500: ("", "bad"),
        n: ("181", "22.5"),  # the last row
    }.items():
        lines[row] = f"{row - 1:06d},{x},{y},edge"
    return lines, lon, lat


def test_dask_engine_matches_single_engine_csv(index: TerritoryIndex, tmp_path: Path) -> None:
    lines, _, _ = mixed_rows(index, 6000, seed=3)
    (tmp_path / "in.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")

    single = geocode_file(index, tmp_path / "in.csv", tmp_path / "single.csv", progress=False)
    size = (tmp_path / "in.csv").stat().st_size
    for workers, partition_bytes, chunk_rows in ((2, 40_000, 1000), (3, 7_000, 300), (1, 10**9, 10**6)):
        out = tmp_path / f"dask-{workers}.csv"
        both = geocode_file(
            index,
            tmp_path / "in.csv",
            out,
            engine="dask",
            workers=workers,
            partition_bytes=partition_bytes,
            chunk_rows=chunk_rows,
            progress=False,
        )
        # Same rows, same order, same values: the very same bytes.
        assert out.read_bytes() == (tmp_path / "single.csv").read_bytes()
        assert both.engine == "dask" and both.workers == workers and both.rows == 6000
        assert both.partitions == max(2 * workers, math.ceil(size / partition_bytes))
        assert both.max_chunk_rows <= chunk_rows
        for name in ("resolved", "snapped", "near_boundary", "outside", "bad"):
            assert getattr(both, name) == getattr(single, name), name
        # Row numbers of bad rows count from the file's start, not the piece's.
        assert both.bad_examples == single.bad_examples
    assert (single.bad, single.outside) == (4, 1)
    assert single.bad_examples == [
        "row 97: lat is not a number: 'abc'",
        "row 1500: lon is missing; lat is missing",
        "row 4500: lon is missing; lat is not a number: 'bad'",
        "row 6000: lon 181 is out of range [-180, 180]",
    ]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_dask_engine_matches_single_engine_parquet(index: TerritoryIndex, tmp_path: Path) -> None:
    lon, lat = inside_points(index, 7000, seed=4)
    missing = np.isin(np.arange(7000), [10, 5000])  # null, not NaN: Table.equals says NaN != NaN
    lat[6999] = 0.0  # outside
    table = pa.table(
        {
            "id": np.arange(7000),
            "lon": pa.array(lon, mask=missing),
            "lat": pa.array(lat, pa.float32()),
            "when": pa.array(np.arange(7000).astype("datetime64[s]")),
            "kind": pa.array(np.array(["井盖", "路灯", None, "占道"], dtype=object)[np.arange(7000) % 4]),
        }
    )
    # Row groups of uneven sizes, each cut into several pieces by the small chunk_rows.
    with pq.ParquetWriter(tmp_path / "in.parquet", table.schema) as writer:
        for start, end in ((0, 2500), (2500, 2600), (2600, 7000)):
            writer.write_table(table.slice(start, end - start))

    single = geocode_file(index, tmp_path / "in.parquet", tmp_path / "single.parquet", chunk_rows=700)
    both = geocode_file(
        index, tmp_path / "in.parquet", tmp_path / "dask.parquet", engine="dask", workers=2, chunk_rows=700
    )
    assert both.partitions == 4 + 1 + 7
    assert pq.read_table(tmp_path / "dask.parquet").equals(pq.read_table(tmp_path / "single.parquet"))
    assert (
        both.bad_examples
        == single.bad_examples
        == [
            "row 11: lon is missing",
            "row 5001: lon is missing",
        ]
    )
    assert (
        (both.bad, both.outside, both.resolved)
        == (single.bad, single.outside, single.resolved)
        == (2, 1, 6997)
    )

    # Across formats too: Parquet in, CSV out (byte for byte) and CSV in, Parquet out.
    geocode_file(index, tmp_path / "in.parquet", tmp_path / "single.csv", progress=False)
    geocode_file(index, tmp_path / "in.parquet", tmp_path / "dask.csv", engine="dask", progress=False)
    assert (tmp_path / "dask.csv").read_bytes() == (tmp_path / "single.csv").read_bytes()
    pacsv.write_csv(table, tmp_path / "in.csv")
    geocode_file(index, tmp_path / "in.csv", tmp_path / "csv-single.parquet", progress=False)
    geocode_file(
        index,
        tmp_path / "in.csv",
        tmp_path / "csv-dask.parquet",
        engine="dask",
        partition_bytes=50_000,
        progress=True,  # the progress callback runs too
    )
    assert pq.read_table(tmp_path / "csv-dask.parquet").equals(pq.read_table(tmp_path / "csv-single.parquet"))


def test_dask_engine_empty_inputs(index: TerritoryIndex, tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text("lon,lat,id\n", encoding="utf-8")
    report = geocode_file(index, tmp_path / "in.csv", tmp_path / "out.csv", engine="dask", progress=False)
    assert report.rows == report.partitions == 0
    assert (tmp_path / "out.csv").read_text(encoding="utf-8") == '"lon","lat","id",' + ",".join(
        f'"{name}"' for name in ADDED_COLUMNS
    ) + "\n"
    pq.write_table(
        pa.table({"lon": pa.array([], pa.float64()), "lat": pa.array([], pa.float64())}), tmp_path / "e.pq"
    )
    report = geocode_file(index, tmp_path / "e.pq", tmp_path / "e-out.pq", engine="dask", progress=False)
    assert report.rows == 0 and pq.read_table(tmp_path / "e-out.pq").column_names == [
        "lon",
        "lat",
        *ADDED_COLUMNS,
    ]


def test_dask_engine_failure_in_a_later_piece(index: TerritoryIndex, tmp_path: Path) -> None:
    lines, _, _ = mixed_rows(index, 5000, seed=5)
    lines[4000] += ",one too many"
    (tmp_path / "in.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(BatchError, match="Expected 4 columns, got 5") as caught:
        geocode_file(
            index,
            tmp_path / "in.csv",
            tmp_path / "out.parquet",
            engine="dask",
            workers=2,
            partition_bytes=5_000,
            chunk_rows=100,
            progress=False,
        )
    assert "\n" not in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


def test_batch_imports_no_pandas(index: TerritoryIndex, tmp_path: Path) -> None:
    """pyarrow imports pandas (a second or more) on the first pa.array() or to_numpy(); we use neither."""
    import cloudpickle

    lines, lon, lat = mixed_rows(index, 5000, seed=6)  # blanks and junk: the slow parsing path too
    (tmp_path / "in.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    lon_text = pa.array([None, *map(str, lon[1:])]).dictionary_encode()
    pq.write_table(pa.table({"lon": lon_text, "lat": pa.array(lat, pa.float32())}), tmp_path / "in.parquet")
    with open(tmp_path / "index.pkl", "wb") as handle:
        cloudpickle.dump(index, handle)
    script = f"""
import pickle, sys
from gis.batch import geocode_file
with open({str(tmp_path / "index.pkl")!r}, "rb") as handle:
    index = pickle.load(handle)
for engine in ("single", "dask"):
    for src, dst in (("in.csv", "o.parquet"), ("in.parquet", "o.csv")):
        geocode_file(index, {str(tmp_path)!r} + "/" + src, {str(tmp_path)!r} + "/" + dst, engine=engine,
                     crs="gcj02", progress=False)
print("pandas" in sys.modules)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=Path(__file__).parents[2]
    )
    assert (done.returncode, done.stdout.strip()) == (0, "False"), done.stderr


def test_tune_allocator() -> None:
    assert tune_allocator() is (sys.platform == "linux" and platform.libc_ver()[0] == "glibc")


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "kwargs", "message"),
    [
        (None, {}, "input file not found"),
        ("lon,lat\n1,2\n", {"src_name": "in.txt"}, "unknown file extension; expected .csv"),
        ("lon,lat\n1,2\n", {"dst_name": "out.xlsx"}, "output .*out.xlsx: unknown file extension"),
        ("x,y,name\n1,2,a\n", {}, r"no column 'lon'; the columns are: x, y, name"),
        ("lon,lat\n1,2\n", {"crs": "epsg:3857"}, "unknown crs 'epsg:3857'"),
        ("lon,lat,grid_code\n1,2,a\n", {}, "already has column\\(s\\) grid_code"),
        ("lon,lat,lon\n1,2,3\n", {}, "duplicate column name 'lon'"),
        ("", {}, "empty file"),
        ("lon,lat\n1,2,3\n", {}, "Expected 2 columns, got 3"),
    ],
)
def test_bad_input_raises_one_line_batch_error(
    index: TerritoryIndex, tmp_path: Path, make: str | None, kwargs: dict[str, Any], message: str
) -> None:
    src = tmp_path / kwargs.pop("src_name", "in.csv")
    dst = tmp_path / kwargs.pop("dst_name", "out.csv")
    if make is not None:
        src.write_text(make, encoding="utf-8")
    with pytest.raises(BatchError, match=message) as caught:
        geocode_file(index, src, dst, progress=False, **kwargs)
    assert "\n" not in str(caught.value)
    assert not dst.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_dask_refuses_gzip_and_csv_refuses_nested_columns(index: TerritoryIndex, tmp_path: Path) -> None:
    with gzip.open(tmp_path / "in.csv.gz", "wt") as handle:
        handle.write("lon,lat\n114,22.5\n")
    with pytest.raises(BatchError, match="cannot be split"):
        geocode_file(index, tmp_path / "in.csv.gz", tmp_path / "o.csv", engine="dask", progress=False)
    pq.write_table(pa.table({"lon": [114.0], "lat": [22.5], "tags": [["a"]]}), tmp_path / "in.parquet")
    with pytest.raises(BatchError, match="write Parquet instead"):
        geocode_file(index, tmp_path / "in.parquet", tmp_path / "o.csv", progress=False)


# --- the management command (index from the test database) --------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("engine", ["single", "dask"])
def test_command_writes_output_and_prints_a_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], engine: str
) -> None:
    from gis.locator import get_index
    from tests.support.factories import point_in

    lon, lat = point_in("4403040010010001")
    glon, glat = datums.wgs84_to_gcj02(lon, lat)
    (tmp_path / "in.csv").write_text(f"lon,lat,id\n{glon},{glat},a\n,,b\n", encoding="utf-8")
    call_command(
        "geocode_batch",
        str(tmp_path / "in.csv"),
        str(tmp_path / "out.csv"),
        "--crs",
        "gcj02",
        "--engine",
        engine,
        "--no-progress",
    )
    printed = capsys.readouterr().out
    assert "rows: 2" in printed and "bad lon/lat: 1" in printed and "row 2: lon is missing" in printed
    assert "points/s" in printed and ("dask: " in printed) == (engine == "dask")
    out = read_csv_as_text(tmp_path / "out.csv")
    assert out["grid_code"].to_pylist() == ["4403040010010001", ""]
    assert get_index().geocode(lon, lat)["grid"]["code"] == "4403040010010001"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.csv", "out.csv"], "input file not found"),
        (["in.csv", "out.csv", "--lon-column", "x"], "no column 'x'; the columns are: lon, lat, id"),
        (["in.csv", "out.csv", "--crs", "mars"], "unknown crs 'mars'"),
        (["in.csv", "out.json"], "unknown file extension"),
    ],
)
def test_command_bad_input_is_a_command_error(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "in.csv").write_text("lon,lat,id\n114,22.5,a\n", encoding="utf-8")
    paths = [str(tmp_path / a) if i < 2 else a for i, a in enumerate(args)]
    with pytest.raises(CommandError, match=message) as caught:
        call_command("geocode_batch", *paths, "--no-progress")
    assert "\n" not in str(caught.value)
