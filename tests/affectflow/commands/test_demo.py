"""The demo's summary says, per sample item, what it gave or why it gave nothing."""

from __future__ import annotations

import shutil

from affectflow.commands.demo import NUM_FACES, summary_table
from flows.build_features import build_features
from warehouse import Warehouse


def test_summary_says_what_each_item_gave(af_home, prefect_api, feat_data, tmp_path):
    folder = af_home / "demo-media"
    folder.mkdir(parents=True)
    for name in ("multi_face.jpg", "single_face.jpg", "no_face.mp4"):
        shutil.copyfile(feat_data / name, folder / name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    build_features(source=str(folder), extractor="mediapipe", num_faces=NUM_FACES, max_frames=10)
    text = summary_table(Warehouse(af_home), folder)
    notes = dict(line.strip().split(": ", 1) for line in text.split("\n\n")[1].splitlines())
    assert set(notes) == {"multi_face.jpg", "single_face.jpg", "no_face.mp4", "broken.jpg"}
    assert notes["no_face.mp4"] == "no face in this clip"
    assert notes["single_face.jpg"] == "1 face(s) found"
    assert notes["broken.jpg"].startswith("quarantined: ")
    # the group photo: some of its faces found at the demo's num_faces (none at 1), and why not all
    assert notes["multi_face.jpg"].split(" of its 5 faces found (MediaPipe's detector")[0] in {"1", "2", "3", "4"}
    table = dict((line.split()[0], line.split()[1:]) for line in text.split("\n\n")[0].splitlines()[1:])
    assert table["no_face.mp4"][1:4] == ["10", "0", "0.0"]  # kind, frames, faces, face rate
