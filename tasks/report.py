"""The warehouse report: one self-contained HTML page (styles inline, images as base64 `data:`
URLs, no scripts, no network) about what is in the warehouse.

Sections: overview; items and frames per label; face-detection rate per video; feature
distributions of key Action Units, pose angles and blendshapes; quarantined items with their
reasons; split versions with partition x class tables; training runs with test metrics beside the
baselines; and prediction plots of the latest predicted videos (redrawn from the `predictions`
table, so they survive deleted output folders). Every section says so when it has nothing yet.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import duckdb
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from tasks.plots import DPI, emotion_colours, plot_all, png_data_url, wide_frame
from warehouse import Warehouse
from warehouse.catalog import connect

KEY_FEATURES = ("AU01_r", "AU04_r", "AU06_r", "AU12_r", "AU15_r", "AU25_r", "pose_Rx", "pose_Ry", "pose_Rz",
                "bs_brow_down_left", "bs_brow_inner_up", "bs_eye_blink_left", "bs_mouth_smile_left",
                "bs_mouth_frown_left", "bs_jaw_open")
SAMPLE_ROWS = 20_000  # frames sampled for the histograms (the statistics use every frame)
MAX_PREDICTED_VIDEOS = 4
MAX_LABELS_PLOTTED = 8


@dataclass
class Section:
    anchor: str
    title: str
    body: str


def _table(frame: pd.DataFrame, max_rows: int = 200) -> str:
    """An HTML table; floats to 4 significant digits, nulls as a dash."""
    if frame.empty:
        return '<p class="empty">(no rows)</p>'
    shown = frame.head(max_rows)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in shown.columns)
    rows = []
    for record in shown.itertuples(index=False):
        cells = "".join(f"<td>{html.escape(_cell(v))}</td>" for v in record)
        rows.append(f"<tr>{cells}</tr>")
    more = f'<p class="note">… {len(frame) - max_rows} more rows</p>' if len(frame) > max_rows else ""
    return (f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody>'
            f"</table></div>{more}")


def _cell(value: object) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return "–"
    if isinstance(value, float | np.floating):
        return f"{value:.4g}"
    if isinstance(value, pd.Timestamp | dt.datetime):
        return f"{value:%Y-%m-%d %H:%M}"
    return str(value)


def _image(path_or_fig: Path | plt.Figure, alt: str, css: str = "") -> str:
    if isinstance(path_or_fig, plt.Figure):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "figure.png"
            path_or_fig.savefig(path, dpi=DPI, bbox_inches="tight")
            plt.close(path_or_fig)
            url = png_data_url(path)
    else:
        url = png_data_url(path_or_fig)
    return f'<img class="{css}" src="{url}" alt="{html.escape(alt)}">'


def _empty(text: str) -> str:
    return f'<p class="empty">{html.escape(text)}</p>'


def _df(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> pd.DataFrame:
    return con.execute(sql, params or []).df()


def _counts(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    return _df(con, """SELECT
        (SELECT count(*) FROM videos) AS items,
        (SELECT count(*) FROM frames) AS frame_rows,
        (SELECT count(*) FROM frames WHERE success = 1) AS face_frame_rows,
        (SELECT count(*) FROM labels WHERE emotion IS NOT NULL) AS labelled_items,
        (SELECT count(*) FROM quarantine) AS quarantined,
        (SELECT count(*) FROM split_runs) AS split_versions,
        (SELECT count(*) FROM training_runs) AS training_runs,
        (SELECT count(DISTINCT video_id) FROM predictions) AS predicted_videos""")


def overview(con: duckdb.DuckDBPyConnection, home: Path) -> Section:
    counts = _counts(con)
    body = _table(counts) + f'<p class="note">warehouse {html.escape(str(home))}</p>'
    return Section("overview", "Overview", body)


def labels_section(con: duckdb.DuckDBPyConnection) -> Section:
    table = _df(con, """SELECT coalesce(l.emotion, '(unlabelled)') AS label, count(*) AS items,
            sum(v.n_frames) AS frames, sum(v.n_face_frames) AS face_frames,
            round(sum(v.n_face_frames) / nullif(sum(v.n_frames), 0), 4) AS face_rate
        FROM videos v LEFT JOIN labels l ON l.video_id = v.video_id
        GROUP BY 1 ORDER BY items DESC, label""")
    if table.empty:
        return Section("labels", "Items and frames per label", _empty("No items in the warehouse yet."))
    colours = emotion_colours(list(table["label"]))
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.45 * len(table) + 1.6))
    for ax, column in zip(axes, ("items", "frames"), strict=True):
        ax.barh(table["label"], table[column], color=[colours[lbl] for lbl in table["label"]])
        ax.invert_yaxis()
        ax.set(xlabel=column, title=f"{column.capitalize()} per label")
        ax.bar_label(ax.containers[0], padding=3, fontsize=8)
    fig.tight_layout()
    return Section("labels", "Items and frames per label", _table(table) + _image(fig, "items and frames per label"))


def face_rate_section(con: duckdb.DuckDBPyConnection) -> Section:
    table = _df(con, """SELECT regexp_extract(path, '[^/]+$') AS item, kind, extractor, label, frames,
            face_frames, round(face_rate, 4) AS face_rate, predicted_emotion
        FROM video_summary WHERE kind IS NOT NULL ORDER BY face_rate, item""")
    if table.empty:
        return Section("face-rate", "Face-detection rate per video", _empty("No items in the warehouse yet."))
    fig, ax = plt.subplots(figsize=(8, 2.6))
    rates = table["face_rate"].astype(float).fillna(0)
    ax.hist(rates, bins=[i / 20 for i in range(21)], color="#4c72b0", edgecolor="white")
    ax.set(xlabel="share of frames with a face", ylabel="items", xlim=(0, 1),
           title=f"Face-detection rate over {len(table)} items (lowest first in the table)")
    no_face = int((rates == 0).sum())
    note = f'<p class="note">{no_face} item(s) with no face at all.</p>' if no_face else ""
    return Section("face-rate", "Face-detection rate per video",
                   _image(fig, "face-detection rate histogram") + note + _table(table))


def _filled_features(con: duckdb.DuckDBPyConnection) -> list[str]:
    counts = con.execute("SELECT " + ", ".join(f'count("{c}")' for c in KEY_FEATURES)
                         + " FROM frames WHERE success = 1").fetchone()
    return [c for c, n in zip(KEY_FEATURES, counts or [], strict=True) if n]


def _feature_stats(con: duckdb.DuckDBPyConnection, columns: list[str]) -> pd.DataFrame:
    parts = [f"""SELECT '{c}' AS feature, count("{c}") AS frames, avg("{c}") AS mean, stddev("{c}") AS std,
                 quantile_cont("{c}", 0.05) AS p05, median("{c}") AS median, quantile_cont("{c}", 0.95) AS p95
              FROM frames WHERE success = 1""" for c in columns]
    return _df(con, " UNION ALL ".join(parts))


def _feature_figure(sample: pd.DataFrame, columns: list[str]) -> plt.Figure:
    labels = list(sample["label"].value_counts().index[:MAX_LABELS_PLOTTED])
    colours = emotion_colours(labels)
    ncols = min(4, len(columns))
    nrows = -(-len(columns) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.3 * ncols, 2.6 * nrows), squeeze=False)
    for ax, column in zip(axes.flat, columns, strict=False):
        values = sample[column].dropna()
        bins = list(np.histogram_bin_edges(values, bins=30)) if len(values) else 10
        for label in labels:
            part = sample.loc[sample["label"] == label, column].dropna()
            if part.empty:  # no value of this label here: a density of nothing is 0/0 (numpy warns)
                continue
            ax.hist(part, bins=bins, histtype="step", lw=1.4, density=True, color=colours[label], label=label)
        ax.set_title(column, fontsize=10)
        ax.set_yticks([])
    for ax in axes.flat[len(columns):]:
        ax.axis("off")
    fig.legend(*axes.flat[0].get_legend_handles_labels(), loc="upper center", ncol=min(len(labels), 8),
               frameon=False, bbox_to_anchor=(0.5, 1.04))
    fig.suptitle("Feature distributions by label (face frames, density)", y=1.09)
    fig.tight_layout()
    return fig


def features_section(con: duckdb.DuckDBPyConnection) -> Section:
    title = "Feature distributions"
    columns = _filled_features(con)
    if not columns:
        return Section("features", title, _empty("No face frames with these features yet."))
    selected = ", ".join(f'f."{c}"' for c in columns)
    sample = _df(con, f"""SELECT * FROM (
            SELECT coalesce(l.emotion, '(unlabelled)') AS label, {selected}
            FROM frames f LEFT JOIN labels l ON l.video_id = f.video_id WHERE f.success = 1)
        USING SAMPLE reservoir({SAMPLE_ROWS} ROWS) REPEATABLE (0)""")
    note = ('<p class="note">AU*_r: OpenFace intensity 0-5; pose_R*: radians (pitch, yaw, roll); '
            "bs_*: MediaPipe blendshape scores 0-1. Histograms from a sample of at most "
            f"{SAMPLE_ROWS:,} face frames; the statistics use every face frame.</p>")
    return Section("features", title, note + _image(_feature_figure(sample, columns), "feature histograms")
                   + _table(_feature_stats(con, columns)))


def quarantine_section(con: duckdb.DuckDBPyConnection) -> Section:
    table = _df(con, """SELECT regexp_extract(path, '[^/]+$') AS item, stage, reason, quarantined_at, path
        FROM quarantine ORDER BY quarantined_at DESC, item""")
    if table.empty:
        return Section("quarantine", "Quarantined items", _empty("No quarantined items."))
    reasons = table.groupby(["stage", "reason"]).size().reset_index(name="items")
    reasons = reasons.sort_values("items", ascending=False)
    return Section("quarantine", "Quarantined items",
                   f"<h3>By reason</h3>{_table(reasons)}<h3>Items</h3>{_table(table)}")


def _partition_tables(con: duckdb.DuckDBPyConnection, split_ids: list[str]) -> str:
    parts = []
    for split_id in split_ids:
        summary = _df(con, "SELECT partition, emotion, units FROM split_summary WHERE split_id = ?", [split_id])
        if summary.empty:
            continue
        pivot = summary.pivot_table(index="emotion", columns="partition", values="units", aggfunc="sum",
                                    fill_value=0)
        order = [p for p in ("pretrain", "ssl", "classifier", "finetune", "test") if p in pivot.columns]
        pivot = pivot[order]
        pivot.loc["total"] = pivot.sum()
        pivot["total"] = pivot.sum(axis=1)
        parts.append(f"<h3>Split {html.escape(split_id)}: units per partition × class</h3>"
                     + _table(pivot.reset_index().rename(columns={"emotion": "class"})))
    return "".join(parts)


def splits_section(con: duckdb.DuckDBPyConnection, max_versions: int = 5) -> Section:
    runs = _df(con, """SELECT split_id, status, created_at, strategy, mode, group_by, units, rows, message
        FROM split_runs ORDER BY created_at DESC, split_id DESC""")
    if runs.empty:
        return Section("splits", "Split versions", _empty("No split versions yet (`affectflow resplit`)."))
    shown = list(runs["split_id"].head(max_versions))
    note = f'<p class="note">Partition tables of the {len(shown)} newest versions.</p>'
    return Section("splits", "Split versions", _table(runs) + note + _partition_tables(con, shown))


def training_section(con: duckdb.DuckDBPyConnection, max_runs: int = 5) -> Section:
    runs = _df(con, """SELECT run_id, split_id, status, finished_at, encoder, loss_weighting, stages, epochs_run,
            emotion_accuracy, majority_accuracy, logreg_accuracy, emotion_macro_f1, logreg_macro_f1,
            stress_f1, valence_ccc, arousal_ccc, error
        FROM run_summary""")
    if runs.empty:
        return Section("training", "Training runs", _empty("No training runs yet (`affectflow train`)."))
    parts = [_table(runs)]
    for run_id in runs.loc[runs["status"] == "completed", "run_id"].head(max_runs):
        metrics = _df(con, """SELECT task, metric,
                max(value) FILTER (WHERE model = 'model') AS model,
                max(value) FILTER (WHERE model = 'majority') AS majority,
                max(value) FILTER (WHERE model = 'logreg') AS logreg, max(n) AS n
            FROM metrics WHERE run_id = ? GROUP BY task, metric ORDER BY task, metric""", [run_id])
        parts.append(f"<h3>Run {html.escape(str(run_id))}: test metrics against the baselines</h3>"
                     + _table(metrics))
    return Section("training", "Training runs", "".join(parts))


def predictions_section(con: duckdb.DuckDBPyConnection, max_videos: int = MAX_PREDICTED_VIDEOS) -> Section:
    title = "Predictions on videos"
    latest = _df(con, """SELECT video_id, arg_max(run_id, created_at) AS run_id, max(created_at) AS predicted_at,
            any_value(path) AS path FROM predictions GROUP BY video_id ORDER BY predicted_at DESC, video_id LIMIT ?""",
                 [max_videos])
    if latest.empty:
        return Section("predictions", title, _empty("No predictions yet (`affectflow predict VIDEO`)."))
    parts = []
    with tempfile.TemporaryDirectory() as tmp:
        for index, row in enumerate(latest.itertuples(index=False)):
            parts.append(_video_plots(con, row, Path(tmp) / str(index)))
    return Section("predictions", title, "".join(parts))


def _video_plots(con: duckdb.DuckDBPyConnection, row, folder: Path) -> str:
    rows = _df(con, "SELECT * FROM predictions WHERE video_id = ? AND run_id = ? ORDER BY level, frame, face_id",
               [row.video_id, row.run_id])
    rows["success"] = rows["dominant_emotion"].notna().astype(int)
    first = next((p for p in rows["emotion_probs"].dropna()), None)
    emotions = list(json.loads(first)) if first else []
    frames = wide_frame(rows, emotions)
    name = Path(str(row.path)).name
    heading = f"<h3>{html.escape(name)} (model {html.escape(str(row.run_id))})</h3>"
    if not (frames["face"] == 1).any():
        return heading + _empty("No face found in any frame: no predictions.")
    folder.mkdir(parents=True)
    images = [_image(p, f"{p.stem} of {name}", "wide" if p.stem in ("timeline", "stress") else "")
              for p in plot_all(frames, emotions, folder, name)]
    return heading + '<div class="grid">' + "".join(images) + "</div>"


STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222;
       margin: 0 auto; max-width: 1180px; padding: 0 24px 48px; }
header { border-bottom: 3px solid #4c72b0; margin-bottom: 12px; }
h1 { margin: 24px 0 4px; } h2 { margin-top: 36px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
h3 { margin: 22px 0 6px; font-size: 1.02em; }
nav a { margin-right: 14px; color: #4c72b0; text-decoration: none; white-space: nowrap; }
table { border-collapse: collapse; margin: 8px 0 12px; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f3f5f9; } td:first-child, th:first-child { text-align: left; }
tbody tr:nth-child(even) { background: #fafafa; }
img { max-width: 100%; margin: 6px 0; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(480px, 1fr)); gap: 8px;
        align-items: start; }
.grid img.wide { grid-column: 1 / -1; } .scroll { overflow-x: auto; }
.empty { color: #777; font-style: italic; } .note { color: #555; font-size: 13px; }
"""

SECTIONS = (labels_section, face_rate_section, features_section, quarantine_section, splits_section,
            training_section, predictions_section)


def build_sections(con: duckdb.DuckDBPyConnection, home: Path) -> list[Section]:
    return [overview(con, home), *(make(con) for make in SECTIONS)]


def render_html(sections: list[Section], generated_at: dt.datetime) -> str:
    nav = " ".join(f'<a href="#{s.anchor}">{html.escape(s.title)}</a>' for s in sections)
    body = "".join(f'<section id="{s.anchor}"><h2>{html.escape(s.title)}</h2>{s.body}</section>'
                   for s in sections)
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            "<title>affectflow warehouse report</title>"
            # The page loads nothing: no scripts, no fonts, images inline.
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
            "img-src data:; style-src 'unsafe-inline'\">"
            f"<style>{STYLE}</style></head><body><header><h1>affectflow warehouse report</h1>"
            f"<p class=\"note\">generated {generated_at:%Y-%m-%d %H:%M:%S} UTC</p><nav>{nav}</nav></header>"
            f"{body}</body></html>")


def build_report(home: Path) -> str:
    """The report of the warehouse under `home`, as one HTML string."""
    con = connect(Warehouse(home))
    try:
        return render_html(build_sections(con, Path(home)), dt.datetime.now(dt.UTC))
    finally:
        con.close()


def write_report(home: Path, out: Path) -> Path:
    """Write the report atomically (temporary file + rename) to `out`."""
    out = Path(out).expanduser().absolute()
    text = build_report(home)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    return out


def _markdown_summary(home: Path, path: Path) -> str:
    con = connect(Warehouse(home))
    try:
        counts = _counts(con)
        labels = _df(con, """SELECT coalesce(l.emotion, '(unlabelled)') AS label, count(*) AS items,
                sum(v.n_frames) AS frames FROM videos v LEFT JOIN labels l ON l.video_id = v.video_id
            GROUP BY 1 ORDER BY items DESC, label""")
        runs = _df(con, """SELECT run_id, status, emotion_accuracy, majority_accuracy, logreg_accuracy
            FROM run_summary LIMIT 5""")
    finally:
        con.close()
    lines = ["# Warehouse report", "", f"Full report (self-contained HTML): `{path}`", "",
             _markdown_table(counts), "",
             "## Items and frames per label", "", _markdown_table(labels), "",
             "## Latest training runs", "", _markdown_table(runs)]
    return "\n".join(lines)


def _markdown_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "(none yet)"
    head = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    rows = ["| " + " | ".join(_cell(v) for v in r) + " |" for r in frame.itertuples(index=False)]
    return "\n".join([head, rule, *rows])


def publish_report_artifact(home: Path | None = None, out: Path | None = None,
                            key: str = "warehouse-report") -> Path:
    """Write the HTML report (default `$AFFECTFLOW_HOME/reports/report.html`) and publish a
    markdown summary pointing at it as a Prefect artifact; call it inside a flow run."""
    from prefect.artifacts import create_markdown_artifact

    from affectflow.settings import load_settings

    home = Path(home) if home is not None else load_settings().home
    path = write_report(home, out or home / "reports" / "report.html")
    create_markdown_artifact(_markdown_summary(home, path), key=key,
                             description="warehouse report: labels, training runs, link to the full HTML")
    return path
