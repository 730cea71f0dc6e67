"""Stable face ids across frames by box overlap (IoU), for extractors that detect several faces.

Greedy matching: the pair (track, box) with the highest IoU is matched first, then the next,
while IoU stays at or above `min_iou`. A box left unmatched starts a new track with the next
free id; a track not seen for more than `max_missed` frames is forgotten (its id is never
reused, so one id always means one face within an item). Ids start at 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

Box = tuple[float, float, float, float]  # x, y, width, height


def iou(a: Box, b: Box) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    inter_w = min(ax + aw, bx + bw) - max(ax, bx)
    inter_h = min(ay + ah, by + bh) - max(ay, by)
    if inter_w <= 0 or inter_h <= 0:
        return 0.0
    inter = inter_w * inter_h
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


@dataclass
class _Track:
    face_id: int
    box: Box
    missed: int = 0


class IouTracker:
    """`assign(boxes)` once per frame returns one face id per box, in the boxes' order."""

    def __init__(self, min_iou: float = 0.3, max_missed: int = 30):
        self.min_iou = min_iou
        self.max_missed = max_missed
        self._tracks: list[_Track] = []
        self._next_id = 0

    def assign(self, boxes: Sequence[Box]) -> list[int]:
        matches = self._match(boxes)
        ids: list[int] = []
        for i, box in enumerate(boxes):
            track = matches.get(i)
            if track is None:
                track = _Track(self._next_id, box)
                self._next_id += 1
                self._tracks.append(track)
            track.box, track.missed = box, -1
            ids.append(track.face_id)
        for track in self._tracks:
            track.missed += 1
        self._tracks = [t for t in self._tracks if t.missed <= self.max_missed]
        return ids

    def _match(self, boxes: Sequence[Box]) -> dict[int, _Track]:
        pairs = sorted(((iou(t.box, b), ti, bi) for ti, t in enumerate(self._tracks)
                        for bi, b in enumerate(boxes)), reverse=True)
        used_tracks: set[int] = set()
        matches: dict[int, _Track] = {}
        for overlap, ti, bi in pairs:
            if overlap < self.min_iou:
                break
            if ti in used_tracks or bi in matches:
                continue
            used_tracks.add(ti)
            matches[bi] = self._tracks[ti]
        return matches
