"""The contract: one declaration generating Arrow, DuckDB and Great Expectations artefacts."""

import math

import duckdb
import pyarrow as pa
import pytest

from data_contracts import FRAMES, LABELS, VIDEOS, UniqueKey, feature_columns, load_emotion_map
from data_contracts.gx_suite import expectations
from data_contracts.tables import openface_name
from tasks.errors import ItemError
from tasks.extractors.base import frames_batch
from tasks.validate import validate_batch


def test_frames_has_openface_full_output_columns(shared_dir):
    header = (shared_dir / "fixtures/openface/full/single_face.csv").read_text().splitlines()[0]
    openface = [c.strip() for c in header.split(",")]
    assert len(openface) == 714
    assert {openface_name(c) for c in openface} <= set(FRAMES.names)
    assert openface_name("X_3") == "X3d_3" and openface_name("eye_lmk_Z_55") == "eye_lmk_Z3d_55"
    assert openface_name("x_3") == "x_3"


def test_column_names_are_unique_for_sql():
    lowered = [n.lower() for n in FRAMES.names]
    assert len(lowered) == len(set(lowered))


def test_arrow_schema_and_duckdb_ddl_agree():
    schema = FRAMES.arrow_schema()
    con = duckdb.connect()
    con.execute(f"create table frames ({FRAMES.duckdb_columns_sql()})")
    con.register("batch", schema.empty_table())
    con.execute("insert into frames select * from batch")  # same columns, same order, castable
    described = con.execute("describe frames").fetchall()
    assert [row[0] for row in described] == schema.names
    assert {row[0]: row[1] for row in described}["success"] == "TINYINT"


def test_feature_columns_per_extractor():
    of = feature_columns("openface-csv")
    mp = feature_columns("mediapipe")
    assert "AU12_r" in of and "AU12_r" not in mp
    assert "bs_mouth_smile_left" in mp and "x_67" in mp and "x_67" in of
    with pytest.raises(ValueError, match="unknown extractor"):
        feature_columns("dlib")


def test_suite_has_a_rule_per_declaration():
    kinds = [type(e).__name__ for e in expectations(VIDEOS)]
    not_null = sum(1 for c in VIDEOS.columns if not c.nullable)
    assert sum("NotBeNull" in k for k in kinds) == not_null


def _batch(**features):
    keys = {"video_id": ["v"], "frame": [0], "face_id": [0], "timestamp": [0.0], "success": [1],
            "confidence": [0.9]}
    return frames_batch("s", keys, {k: [v] for k, v in features.items()})


def test_valid_batch_passes():
    validate_batch(FRAMES, _batch(AU12_r=2.5, x_0=10.0, pose_Rx=0.1))


@pytest.mark.parametrize(
    "features, rule",
    [({"AU12_r": 7.0}, "AU12_r: be_between"), ({"pose_Rx": 4.0}, "pose_Rx: be_between"),
     ({"AU12_c": 0.5}, "AU12_c: be_in_set"), ({"x_0": math.inf}, "x_0: infinite")],
)
def test_rule_violations_fail_with_the_rule_named(features, rule):
    with pytest.raises(ItemError, match=rule):
        validate_batch(FRAMES, _batch(**features))


def test_wrong_columns_fail():
    table = pa.Table.from_batches([_batch()]).drop_columns(["x_0"])
    with pytest.raises(ItemError, match="columns differ"):
        validate_batch(FRAMES, table)


def test_label_rules_from_the_contract():
    good = pa.table({"video_id": ["v"], "source_id": ["s"], "emotion": ["angry"], "stress": pa.array([1], pa.int8()),
                     "valence": pa.array([1.0], pa.float32()), "arousal": pa.array([2.0], pa.float32()),
                     "subject_id": [None], "label_source": ["folder"]}, schema=LABELS.arrow_schema())
    validate_batch(LABELS, good)
    bad = good.set_column(3, "stress", pa.array([2], pa.int8()))
    with pytest.raises(ItemError, match="stress: be_in_set"):
        validate_batch(LABELS, bad)


def test_emotion_map_aliases_and_research_defaults():
    emotions = load_emotion_map()
    assert emotions.canonical("Anger") == "angry" == emotions.canonical("ANGRY")
    assert emotions.canonical("happiness") == "happy"
    assert emotions.canonical("deboche") == "mockery"
    assert emotions.canonical("bored") is None
    assert (emotions.defaults("angry").stress, emotions.defaults("angry").valence, emotions.defaults("angry").arousal) == (1, 1.0, 2.0)
    assert (emotions.defaults("neutral").stress, emotions.defaults("neutral").valence) == (0, 1.5)
    assert emotions.defaults("fear").stress is None


def test_validation_checks_only_columns_this_batch_fills():
    from tasks.validate import checked_columns

    columns = checked_columns(FRAMES, _batch(AU12_r=2.5))
    assert "AU12_r" in columns and "AU01_r" not in columns  # AU01_r is null in every row
    assert {"video_id", "frame", "success"} <= set(columns)  # not-null rules always run
    assert len(columns) < len(expectations(FRAMES)) / 4


def test_rule_groups_stack_columns_sharing_a_rule():
    from data_contracts.gx_suite import rule_groups
    from tasks.validate import checked_columns

    batch = _batch(AU12_r=2.5, AU04_r=1.0, AU12_c=1.0, bs_jaw_open=0.2, bs_eye_blink_left=0.1)
    columns = checked_columns(FRAMES, batch)
    groups = rule_groups(FRAMES, columns)
    assert sorted(c for g in groups for c in g.columns) == sorted(columns)  # every checked column, once
    by_column = {c: g for g in groups for c in g.columns}
    assert by_column["AU12_r"] is by_column["AU04_r"]  # both 0..5
    assert by_column["bs_jaw_open"] is by_column["bs_eye_blink_left"] is by_column["confidence"]  # all 0..1
    assert by_column["AU12_c"] is not by_column["bs_jaw_open"]  # allowed values, not a range
    assert by_column["video_id"].text and not by_column["frame"].text  # strings never stack with numbers
    assert len(groups) <= len(columns) / 2


@pytest.mark.parametrize(
    "change, named",
    [({"bs_jaw_open": [0.2, 1.5, 0.1]}, "bs_jaw_open: be_between"),
     ({"AU04_r": [0.0, -0.1, None]}, "AU04_r: be_between"),
     ({"AU12_c": [0.0, 1.0, 2.0]}, "AU12_c: be_in_set"),
     ({"frame": [0, None, 2]}, "frame: not_be_null"),
     ({"video_id": ["v", None, "v"]}, "video_id: not_be_null")],
)
def test_stacked_validation_gives_the_per_column_verdict(change, named):
    """A bad value anywhere in a stacked group fails the batch, and the message still names the
    column and counts its rows (from the per-column re-run)."""
    features = {"AU12_r": [1.0, 2.0, 3.0], "AU04_r": [0.0, 0.5, None], "AU12_c": [0.0, 1.0, 1.0],
                "bs_jaw_open": [0.2, 0.3, 0.1], "bs_eye_blink_left": [0.0, 0.9, 1.0]}
    keys = {"video_id": ["v", "v", "v"], "frame": [0, 1, 2], "face_id": [0, 0, 0], "timestamp": [0.0, 0.1, 0.2],
            "success": [1, 1, 1], "confidence": [0.9, 0.9, 0.9]}
    validate_batch(FRAMES, frames_batch("s", keys, features))
    for name, values in change.items():
        (keys if name in keys else features)[name] = values
    with pytest.raises(ItemError, match=rf"{named}.*\(1 rows\)"):
        validate_batch(FRAMES, frames_batch("s", keys, features))


def test_estimated_aus_are_declared_once_and_everything_derives_from_it():
    """est_AU*_r / est_AU*_c: declared in the contract for every OpenFace intensity AU, filled by
    MediaPipe for the estimated ones; the Arrow schema, the DuckDB DDL, the GX suite and the
    model's feature list all pick them up from that one declaration."""
    from data_contracts.tables import EST_AUS, OPENFACE_AUS_R, est_au_columns

    declared = [c for c in FRAMES.columns if c.group in ("au_estimate", "au_estimate_presence")]
    assert [c.name for c in declared] == [n for a in OPENFACE_AUS_R for n in est_au_columns(a)]
    estimated = {n for a in EST_AUS for n in est_au_columns(a)}
    assert {c.name for c in declared if c.extractors == ("mediapipe",)} == estimated
    assert all(c.extractors == () for c in declared if c.name not in estimated)  # left null
    assert set(FRAMES.arrow_schema().names) >= {c.name for c in declared}
    assert '"est_AU12_r" FLOAT' in FRAMES.duckdb_columns_sql()
    rules = {(type(e).__name__, e.column) for e in expectations(FRAMES) if hasattr(e, "column")}
    assert ("ExpectColumnValuesToBeBetween", "est_AU12_r") in rules
    assert ("ExpectColumnValuesToBeInSet", "est_AU12_c") in rules
    mediapipe = feature_columns("mediapipe")
    assert estimated <= set(mediapipe) and "est_AU04_r" not in mediapipe
    assert not any(c.startswith("est_") for c in feature_columns("openface-csv"))
    assert feature_columns("openface") == feature_columns("openface-csv")  # the same OpenFace output


@pytest.mark.parametrize("features, rule", [({"est_AU12_r": 5.5}, "est_AU12_r: be_between"),
                                            ({"est_AU06_c": 0.4}, "est_AU06_c: be_in_set")])
def test_estimated_au_rules_are_checked(features, rule):
    validate_batch(FRAMES, _batch(est_AU12_r=2.0, est_AU06_c=1.0))
    with pytest.raises(ItemError, match=rule):
        validate_batch(FRAMES, _batch(**features))


def test_integer_columns_are_bounded_by_their_dtype():
    frame, face_id, success = (FRAMES.by_name[n] for n in ("frame", "face_id", "success"))
    assert frame.bounds == (0, 2**31 - 1) and face_id.bounds == (0, 2**15 - 1)
    assert face_id.violation([0, 3, 65537]) == (2, "out of range")
    assert frame.violation([0, 1.5, 2]) == (1, "is not an integer")
    assert frame.violation([0, float("nan")]) == (1, "missing")
    assert success.violation([0, 1, 2]) == (2, "is not one of 0, 1")
    assert frame.violation([0, 1, 2**31 - 1]) is None
    assert LABELS.by_name["valence"].violation([float("nan"), 3.5]) == (1, "out of range")  # nullable: NaN is fine


def test_unique_key_is_checked_across_batches():
    unique = UniqueKey(FRAMES)
    assert unique.columns == ("video_id", "frame", "face_id")
    assert unique.first_repeat({"video_id": ["v", "v"], "frame": [0, 0], "face_id": [0, 1]}, [1, 2]) is None
    assert unique.first_repeat({"video_id": ["w", "v"], "frame": [0, 0], "face_id": [0, 1]}, [3, 4]) == (4, 2)
