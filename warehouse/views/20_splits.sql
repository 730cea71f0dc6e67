-- Split versions (tasks/publish_split.py). A version becomes current only when its split_runs
-- record, written after its splits file, says `published`; rejected and half-written versions
-- never are. Older versions stay in `splits`, so a model can name the split it trained on.
CREATE OR REPLACE VIEW current_split AS
SELECT s.*
FROM splits s
WHERE s.split_id = (
    SELECT split_id FROM split_runs
    WHERE status = 'published'
    ORDER BY created_at DESC, split_id DESC
    LIMIT 1
);

-- Partition x class counts of every version (rows, and distinct units).
CREATE OR REPLACE VIEW split_summary AS
SELECT
    split_id,
    partition,
    coalesce(emotion, '(unlabelled)') AS emotion,
    count(*) AS rows,
    count(DISTINCT unit_id) AS units
FROM splits
GROUP BY split_id, partition, coalesce(emotion, '(unlabelled)');
