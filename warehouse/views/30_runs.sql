-- One row per training run with its headline test metrics beside both baselines.
CREATE OR REPLACE VIEW run_summary AS
SELECT
  r.run_id, r.split_id, r.status, r.started_at, r.finished_at,
  r.encoder, r.loss_weighting, r.stages, r.tasks, r.device, r.epochs_run,
  r.train_units, r.test_units, r.frames_per_s,
  max(m.value) FILTER (WHERE m.model = 'model' AND m.task = 'emotion' AND m.metric = 'accuracy') AS emotion_accuracy,
  max(m.value) FILTER (WHERE m.model = 'model' AND m.task = 'emotion' AND m.metric = 'macro_f1') AS emotion_macro_f1,
  max(m.value) FILTER (WHERE m.model = 'model' AND m.task = 'emotion' AND m.metric = 'uar') AS emotion_uar,
  max(m.value) FILTER (WHERE m.model = 'majority' AND m.task = 'emotion' AND m.metric = 'accuracy') AS majority_accuracy,
  max(m.value) FILTER (WHERE m.model = 'logreg' AND m.task = 'emotion' AND m.metric = 'accuracy') AS logreg_accuracy,
  max(m.value) FILTER (WHERE m.model = 'logreg' AND m.task = 'emotion' AND m.metric = 'macro_f1') AS logreg_macro_f1,
  max(m.value) FILTER (WHERE m.model = 'model' AND m.task = 'stress' AND m.metric = 'f1') AS stress_f1,
  max(m.value) FILTER (WHERE m.model = 'model' AND m.task = 'valence' AND m.metric = 'ccc') AS valence_ccc,
  max(m.value) FILTER (WHERE m.model = 'model' AND m.task = 'arousal' AND m.metric = 'ccc') AS arousal_ccc,
  r.checkpoint, r.error
FROM training_runs r
LEFT JOIN metrics m ON m.run_id = r.run_id
GROUP BY ALL
ORDER BY r.started_at DESC;
