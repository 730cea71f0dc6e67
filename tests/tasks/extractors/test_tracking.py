"""The IoU face tracker: ids stable across frames whatever the detection order."""

from __future__ import annotations

import pytest

from tasks.extractors.tracking import IouTracker, iou


def test_iou_of_boxes():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)


def test_ids_follow_moving_faces_when_detection_order_swaps():
    tracker = IouTracker()
    left, right = (10.0, 10.0, 50.0, 50.0), (200.0, 10.0, 50.0, 50.0)
    assert tracker.assign([left, right]) == [0, 1]
    for step in range(1, 6):
        moved_left = (left[0] + 3 * step, *left[1:])
        moved_right = (right[0] - 3 * step, *right[1:])
        assert tracker.assign([moved_right, moved_left]) == [1, 0]


def test_new_face_gets_new_id_and_forgotten_ids_are_not_reused():
    tracker = IouTracker(max_missed=2)
    face = (0.0, 0.0, 40.0, 40.0)
    assert tracker.assign([face]) == [0]
    assert tracker.assign([]) == []
    assert tracker.assign([face]) == [0]  # back within max_missed frames: same face
    for _ in range(3):
        tracker.assign([])
    assert tracker.assign([face]) == [1]  # forgotten: a new track, never the old id
    assert tracker.assign([face, (300.0, 0.0, 40.0, 40.0)]) == [1, 2]
