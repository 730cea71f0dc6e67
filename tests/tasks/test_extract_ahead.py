"""The first video's extraction started while Prefect loads: claimed by the task for exactly that
file and settings, the same rows as extracting there; dropped otherwise."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pyarrow as pa
import pytest

from tasks import extract_ahead
from tasks.errors import ItemError
from tasks.extractors import get_extractor
from tasks.extractors.base import ExtractOptions, ItemMeta
from tasks.media import MediaItem, content_hash

OPTIONS = ExtractOptions(max_frames=30)
MEDIAPIPE = {"num_faces": 1}


@pytest.fixture(autouse=True)
def _nothing_left_over():
    yield
    extract_ahead.discard()


def _video(tmp_path: Path, feat_data: Path, name: str = "single_face.mp4") -> MediaItem:
    path = tmp_path / name
    shutil.copyfile(feat_data / name, path)
    return MediaItem(path, "video")


def _key(item: MediaItem, options: ExtractOptions = OPTIONS) -> extract_ahead.AheadKey:
    st = item.path.stat()
    return extract_ahead.AheadKey.of(item.path, (st.st_size, st.st_mtime_ns), "mediapipe", MEDIAPIPE, options)


def test_a_claimed_head_start_gives_the_rows_extraction_there_gives(af_home, feat_data, tmp_path):
    item = _video(tmp_path, feat_data)
    source_id = content_hash(item.path)
    assert extract_ahead.start(item, "mediapipe", MEDIAPIPE, OPTIONS) == _key(item)
    assert extract_ahead.pending() and extract_ahead.started(item.path)
    ahead = extract_ahead.claim(_key(item), source_id)
    assert ahead is not None and not extract_ahead.pending()  # claimed once
    meta = ItemMeta(kind="video")
    taken = pa.Table.from_batches(list(ahead.rows(meta)))
    here = ItemMeta(kind="video")
    extracted = pa.Table.from_batches(list(get_extractor("mediapipe", **MEDIAPIPE).extract(item, source_id, OPTIONS,
                                                                                          here)))
    assert taken.num_rows == 30 and taken.equals(extracted)
    assert set(taken.column("video_id").to_pylist()) == {source_id}
    assert (meta.width, meta.height, meta.extra) == (here.width, here.height, here.extra)  # frames_read too
    assert "stop" not in meta.extra


@pytest.mark.parametrize("change", ["content", "settings"])
def test_a_head_start_for_other_bytes_or_settings_is_not_claimed(af_home, feat_data, tmp_path, change):
    item = _video(tmp_path, feat_data)
    extract_ahead.start(item, "mediapipe", MEDIAPIPE, OPTIONS)
    if change == "content":  # the plan hashed other bytes than the head start did
        assert extract_ahead.claim(_key(item), "0" * 20) is None
    else:
        assert extract_ahead.claim(_key(item, ExtractOptions(max_frames=31)), content_hash(item.path)) is None
        assert extract_ahead.pending()
        extract_ahead.discard()
    assert not extract_ahead.pending()


def test_discard_stops_a_running_head_start_mid_video(af_home, feat_data, tmp_path):
    item = _video(tmp_path, feat_data, "WolfgangLanger_Pexels.mp4")  # 472 frames
    extract_ahead.start(item, "mediapipe", MEDIAPIPE, ExtractOptions())
    (ahead,) = extract_ahead._pending.values()
    while not ahead.meta.extra.get("frames_read"):  # decoding has begun
        time.sleep(0.01)
    extract_ahead.discard()
    assert ahead.thread is not None and not ahead.thread.is_alive()
    assert ahead.meta.extra["frames_read"] < 472  # stopped where it was, not at the end


def test_an_extraction_error_reaches_the_claiming_task(af_home, tmp_path):
    path = tmp_path / "broken.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"not really a video" * 100)
    item = MediaItem(path, "video")
    extract_ahead.start(item, "mediapipe", MEDIAPIPE, OPTIONS)
    ahead = extract_ahead.claim(_key(item), content_hash(path))
    assert ahead is not None
    with pytest.raises(ItemError) as caught:
        list(ahead.rows(ItemMeta(kind="video")))
    with pytest.raises(ItemError) as there:
        list(get_extractor("mediapipe", **MEDIAPIPE).extract(item, "x", OPTIONS, ItemMeta(kind="video")))
    assert (caught.value.stage, caught.value.reason) == (there.value.stage, there.value.reason)
