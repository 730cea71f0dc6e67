"""Importing real OpenFace 2.x output."""

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tasks.errors import ItemError
from tasks.extractors.base import ExtractOptions, ItemMeta
from tasks.extractors.openface_csv import OpenFaceCsvExtractor
from tasks.media import MediaItem


def _extract(path, **options):
    meta = ItemMeta()
    batches = list(OpenFaceCsvExtractor().extract(MediaItem(path, "csv"), "src", ExtractOptions(**options), meta))
    return pa.Table.from_batches(batches), meta


def test_wolfgang_gives_472_frames(shared_dir):
    table, meta = _extract(shared_dir / "fixtures/openface/mode_A/WolfgangLanger_Pexels.csv")
    assert table.num_rows == 472 and meta.kind == "openface-video"
    assert table["frame"].to_pylist()[:3] == [0, 1, 2]  # OpenFace's 1-based frames made 0-based
    assert pc.min(table["AU12_r"]).as_py() >= 0
    assert table["bs_jaw_open"].null_count == 472  # not filled by OpenFace: null, never zero


def test_no_face_rows_are_blanked(shared_dir):
    table, _ = _extract(shared_dir / "fixtures/openface/mode_A/no_face.csv")
    assert table.num_rows == 95
    assert pc.sum(table["success"]).as_py() == 0
    for column in ("x_0", "AU12_r", "pose_Rx", "gaze_angle_x"):
        assert table[column].null_count == 95


def test_low_confidence_rows_are_blanked(shared_dir):
    path = shared_dir / "fixtures/openface/mode_A/WolfgangLanger_Pexels.csv"
    strict, _ = _extract(path, min_confidence=0.98)
    lenient, _ = _extract(path, min_confidence=0.0)
    assert strict["x_0"].null_count > lenient["x_0"].null_count


def test_full_output_maps_3d_columns(shared_dir):
    table, _ = _extract(shared_dir / "fixtures/openface/full/single_face.csv")
    assert table["Z3d_30"].null_count == 0 and table["p_33"].null_count == 0


def test_image_csv_gives_one_item_per_row(shared_dir):
    table, meta = _extract(shared_dir / "data/openface-labelled/anger.csv")
    assert meta.kind == "openface-image"
    assert table.num_rows == 48 and len(set(table["video_id"].to_pylist())) == 48


def _write(tmp_path, header, rows):
    path = tmp_path / "bad.csv"
    path.write_text(",".join(header) + "\n" + "\n".join(",".join(r) for r in rows) + "\n")
    return path


@pytest.mark.parametrize(
    "header, reason",
    [(["frame", "face_id", "timestamp", "success", "AU01_r"], "missing required columns \\['confidence'\\]"),
     (["frame", "face_id", "timestamp", "confidence", "success", "AU1_intensity"], "renamed\\?.*AU1_intensity"),
     (["frame", "face_id", "timestamp", "confidence", "success"], "no feature columns")],
)
def test_wrong_columns_are_refused(tmp_path, header, reason):
    path = _write(tmp_path, header, [["1"] * len(header)])
    with pytest.raises(ItemError, match=reason):
        _extract(path)


def test_garbled_values_are_refused_with_line(tmp_path):
    header = ["frame", "face_id", "timestamp", "confidence", "success", "AU01_r"]
    path = _write(tmp_path, header, [["1", "0", "0.0", "0.9", "1", "1.5"], ["2", "0", "0.04", "0.9", "1", "abc"]])
    with pytest.raises(ItemError, match="non-numeric value 'abc' in column 'AU01_r' at line 3"):
        _extract(path)


KEYS = ["frame", "face_id", "timestamp", "confidence", "success", "AU01_r"]


@pytest.mark.parametrize(
    "rows, reason",
    [([["1", "0", "0.0", "0.9", "1", "1"], ["1", "0", "0.04", "0.9", "1", "1"]],
      r"^line 3: frame 1, face_id 0 repeats line 2 \(the key video_id, frame, face_id must be unique\)$"),
     ([["1", "0", "0.0", "0.9", "1", "1"], ["1.5", "0", "0.04", "0.9", "1", "1"]], r"^line 3: frame 1.5 is not an integer$"),
     ([["2.9", "0", "0.0", "0.9", "1", "1"]], r"^line 2: frame 2.9 is not an integer$"),
     ([["1", "0", "0.0", "0.9", "1", "1"], ["3000000000", "0", "0.04", "0.9", "1", "1"]], r"^line 3: frame 3000000000 out of range$"),
     ([["0", "0", "0.0", "0.9", "1", "1"]], r"^line 2: frame 0 out of range$"),  # OpenFace counts from 1
     ([["1", "65537", "0.0", "0.9", "1", "1"]], r"^line 2: face_id 65537 out of range$"),
     ([["1", "-1", "0.0", "0.9", "1", "1"]], r"^line 2: face_id -1 out of range$"),
     ([["1", "0", "0.0", "0.9", "2", "1"]], r"^line 2: success 2 is not one of 0, 1$")],
    ids=["duplicate", "fractional-duplicate", "fractional", "frame-int32", "frame-zero", "face-int16", "face-negative",
         "success"],
)
def test_bad_keys_are_refused_with_the_line_and_reason(tmp_path, rows, reason):
    with pytest.raises(ItemError, match=reason):
        _extract(_write(tmp_path, KEYS, rows))


def test_duplicate_keys_are_found_across_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr("tasks.extractors.openface_csv.CHUNK_ROWS", 2)
    rows = [[str(f), "0", f"{f / 25:.2f}", "0.9", "1", "1"] for f in (1, 2, 3, 4, 2)]
    with pytest.raises(ItemError, match="^line 6: frame 2, face_id 0 repeats line 3"):
        _extract(_write(tmp_path, KEYS, rows))


def test_two_faces_on_one_frame_are_not_duplicates(tmp_path):
    table, _ = _extract(_write(tmp_path, KEYS, [["1", "0", "0.0", "0.9", "1", "1"], ["1", "1", "0.0", "0.9", "1", "1"]]))
    assert table["face_id"].to_pylist() == [0, 1] and table["frame"].to_pylist() == [0, 0]


def test_utf8_byte_order_mark_is_read(shared_dir, tmp_path):
    source = shared_dir / "fixtures/openface/mode_A/single_face.csv"
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + source.read_bytes())
    with_bom, _ = _extract(path)
    plain, _ = _extract(source)
    assert with_bom.equals(plain)


def test_a_file_parsed_in_many_blocks_gives_the_same_rows_as_in_one(shared_dir, monkeypatch):
    path = shared_dir / "fixtures/openface/mode_A/WolfgangLanger_Pexels.csv"
    whole, _ = _extract(path)
    monkeypatch.setattr("tasks.extractors.openface_csv.BLOCK_BYTES", 64 << 10)  # ~11 rows a block

    def no_text_reading(*args, **kwargs):
        raise AssertionError("read as text: the parsed blocks were refused")

    monkeypatch.setattr("tasks.extractors.openface_csv._text_blocks", no_text_reading)
    blocks = list(OpenFaceCsvExtractor().extract(MediaItem(path, "csv"), "src", ExtractOptions(), ItemMeta()))
    assert len(blocks) > 20
    assert pa.Table.from_batches(blocks).equals(whole)


def test_a_key_repeated_in_a_later_block_is_refused_with_its_line(shared_dir, tmp_path, monkeypatch):
    lines = (shared_dir / "fixtures/openface/mode_A/WolfgangLanger_Pexels.csv").read_text().splitlines()
    path = tmp_path / "repeat.csv"
    path.write_text("\n".join([*lines[:101], lines[3]]) + "\n")  # frame 3 again, as line 102
    monkeypatch.setattr("tasks.extractors.openface_csv.BLOCK_BYTES", 64 << 10)
    with pytest.raises(ItemError, match="^line 102: frame 3, face_id 0 repeats line 4"):
        _extract(path)


@pytest.mark.parametrize("value", ["", " nan", "NaN", " "])
def test_a_missing_value_is_refused_with_its_line(tmp_path, value):
    path = _write(tmp_path, KEYS, [["1", "0", "0.0", "0.9", "1", "1.5"], ["2", "0", "0.04", "0.9", "1", value]])
    with pytest.raises(ItemError, match="missing value .* in column 'AU01_r' at line 3"):
        _extract(path)
