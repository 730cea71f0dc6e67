-- Analyst views over media, frames and predictions (README: "Warehouse tables").

-- One row per media item: what extraction found (frames, face rate, confidence, mean OpenFace AU
-- intensities over face frames) and what the newest model that predicted on it said (its most
-- frequent per-frame dominant emotion, with that emotion's share of the predicted frames).
-- Items that were only predicted on (never built into the warehouse) get their frame counts from
-- the predictions; AU means need extracted frames and stay null there.
CREATE OR REPLACE VIEW video_summary AS
WITH frame_stats AS (
  SELECT
    video_id,
    count(DISTINCT frame) AS frames,
    count(DISTINCT frame) FILTER (WHERE success = 1) AS face_frames,
    avg(confidence) FILTER (WHERE success = 1) AS mean_confidence,
    avg("AU01_r") FILTER (WHERE success = 1) AS "mean_AU01_r",
    avg("AU02_r") FILTER (WHERE success = 1) AS "mean_AU02_r",
    avg("AU04_r") FILTER (WHERE success = 1) AS "mean_AU04_r",
    avg("AU05_r") FILTER (WHERE success = 1) AS "mean_AU05_r",
    avg("AU06_r") FILTER (WHERE success = 1) AS "mean_AU06_r",
    avg("AU07_r") FILTER (WHERE success = 1) AS "mean_AU07_r",
    avg("AU09_r") FILTER (WHERE success = 1) AS "mean_AU09_r",
    avg("AU10_r") FILTER (WHERE success = 1) AS "mean_AU10_r",
    avg("AU12_r") FILTER (WHERE success = 1) AS "mean_AU12_r",
    avg("AU14_r") FILTER (WHERE success = 1) AS "mean_AU14_r",
    avg("AU15_r") FILTER (WHERE success = 1) AS "mean_AU15_r",
    avg("AU17_r") FILTER (WHERE success = 1) AS "mean_AU17_r",
    avg("AU20_r") FILTER (WHERE success = 1) AS "mean_AU20_r",
    avg("AU23_r") FILTER (WHERE success = 1) AS "mean_AU23_r",
    avg("AU25_r") FILTER (WHERE success = 1) AS "mean_AU25_r",
    avg("AU26_r") FILTER (WHERE success = 1) AS "mean_AU26_r",
    avg("AU45_r") FILTER (WHERE success = 1) AS "mean_AU45_r"
  FROM frames
  GROUP BY video_id
),
latest_run AS (
  SELECT video_id, arg_max(run_id, created_at) AS run_id
  FROM predictions
  GROUP BY video_id
),
predicted AS (
  SELECT
    p.video_id,
    p.run_id,
    any_value(p.path) AS path,
    count(DISTINCT p.frame) AS frames,
    count(DISTINCT p.frame) FILTER (WHERE p.dominant_emotion IS NOT NULL) AS predicted_frames,
    avg(p.stress_prob) AS mean_stress_prob,
    avg(p.valence) AS mean_valence,
    avg(p.arousal) AS mean_arousal
  FROM predictions p
  JOIN latest_run r ON r.video_id = p.video_id AND r.run_id = p.run_id
  WHERE p.level = 'frame'
  GROUP BY p.video_id, p.run_id
),
dominant AS (
  SELECT video_id, dominant_emotion, n
  FROM (
    SELECT
      p.video_id,
      p.dominant_emotion,
      count(*) AS n,
      row_number() OVER (PARTITION BY p.video_id ORDER BY count(*) DESC, p.dominant_emotion) AS rank
    FROM predictions p
    JOIN latest_run r ON r.video_id = p.video_id AND r.run_id = p.run_id
    WHERE p.level = 'frame' AND p.dominant_emotion IS NOT NULL
    GROUP BY p.video_id, p.dominant_emotion
  )
  WHERE rank = 1
),
items AS (
  SELECT
    coalesce(v.video_id, pr.video_id) AS video_id,
    coalesce(v.path, pr.path) AS path,
    v.kind,
    v.extractor,
    coalesce(f.frames, pr.frames) AS frames,
    coalesce(f.face_frames, pr.predicted_frames) AS face_frames,
    f.mean_confidence,
  f."mean_AU01_r",
  f."mean_AU02_r",
  f."mean_AU04_r",
  f."mean_AU05_r",
  f."mean_AU06_r",
  f."mean_AU07_r",
  f."mean_AU09_r",
  f."mean_AU10_r",
  f."mean_AU12_r",
  f."mean_AU14_r",
  f."mean_AU15_r",
  f."mean_AU17_r",
  f."mean_AU20_r",
  f."mean_AU23_r",
  f."mean_AU25_r",
  f."mean_AU26_r",
  f."mean_AU45_r",
    pr.run_id AS predicted_by,
    pr.predicted_frames,
    pr.mean_stress_prob,
    pr.mean_valence,
    pr.mean_arousal
  FROM videos v
  LEFT JOIN frame_stats f ON f.video_id = v.video_id
  FULL OUTER JOIN predicted pr ON pr.video_id = v.video_id
)
SELECT
  i.video_id,
  i.path,
  i.kind,
  i.extractor,
  l.emotion AS label,
  i.frames,
  i.face_frames,
  CASE WHEN i.frames > 0 THEN i.face_frames / i.frames END AS face_rate,
  i.* EXCLUDE (video_id, path, kind, extractor, frames, face_frames, predicted_by, predicted_frames,
               mean_stress_prob, mean_valence, mean_arousal),
  i.predicted_by,
  d.dominant_emotion AS predicted_emotion,
  CASE WHEN i.predicted_frames > 0 THEN d.n / i.predicted_frames END AS predicted_share,
  i.mean_stress_prob,
  i.mean_valence,
  i.mean_arousal
FROM items i
LEFT JOIN labels l ON l.video_id = i.video_id
LEFT JOIN dominant d ON d.video_id = i.video_id
ORDER BY i.path, i.video_id;
