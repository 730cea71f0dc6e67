"""Stage: what a build-features run has to do, decided without Prefect.

The sources found, each kind routed to its extractor, the labels this run gives, and the plan
against the warehouse's inventory (`tasks.plan`). The flow plans through here first; the CLI
plans through here too, so that a re-run with nothing to do answers in about the time of its
imports, without starting a flow run. Reads only: every write is the flow's.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from affectflow.settings import Settings
from data_contracts import CONTRACT_VERSION, load_emotion_map
from tasks.errors import SetupError
from tasks.extract import BuildContext, ItemResult
from tasks.extractors import KINDS, get_extractor, resolve_auto
from tasks.extractors.base import ExtractOptions
from tasks.labels import Manifest, read_manifest, resolve_label
from tasks.load import stored_label
from tasks.media import MediaItem, discover, display_path, extensions, source_base
from tasks.plan import Plan, PlanInputs, make_plan
from warehouse import Warehouse
from warehouse.inventory import inventory

__all__ = ["Prepared", "early_results", "extractor_options", "prepare", "routes_for", "run_summary", "summary_line", "unchanged"]


@dataclass
class Prepared:
    """A planned run: the files it reads, how, with which labels, and what the plan says."""

    routes: dict[str, str]  # media kind -> extractor
    items: list[MediaItem]  # the files this run reads (manifest problems left out)
    ignored: list[str]  # files found that no chosen extractor reads
    ctx: BuildContext
    manifest: Manifest | None
    inputs: PlanInputs
    plan: Plan

    @property
    def extractor(self) -> str:
        return "+".join(sorted({self.routes[i.kind] for i in self.items}))


def routes_for(extractor: str, kinds: set[str], models_dir: Path) -> dict[str, str]:
    """Which extractor reads each kind of file. `auto` sends OpenFace CSVs to `openface-csv` and
    videos and images to py-feat (weights installed) or MediaPipe, in one run."""
    if extractor != "auto":
        return dict.fromkeys(KINDS[extractor], extractor)
    media = resolve_auto("auto", kinds - {"csv"} or {"video"}, models_dir)
    return {"video": media, "image": media, "csv": "openface-csv"}


def prepare(wh: Warehouse, settings: Settings, source: str, labels: str | None, extractor: str,
            options: ExtractOptions, num_faces: int, workers: int, force: bool, relabel_all: bool,
            run_id: str, stat_only: bool = False) -> Prepared:
    """Discover, route, check the extractors, read the manifest, and plan. Raises `SetupError`
    for a run that cannot start (nothing to read, an extractor not ready); with `stat_only`,
    `tasks.plan.NeedsReading` at the first file that would have to be read (new or changed)."""
    found = discover(source)
    routes = routes_for(extractor, {i.kind for i in found.items}, settings.models_dir)
    items = [i for i in found.items if i.kind in routes]
    ignored = [display_path(p) for p in found.others] + [display_path(i.path) for i in found.items if i.kind not in routes]
    if not items:
        raise SetupError(_nothing_to_read(found.where, extractor, found.items, found.others))
    ctx = BuildContext(settings.home, {n: extractor_options(n, num_faces) for n in set(routes.values())},
                       options, run_id, force, settings.warehouse_url, source_base(source))
    for name in sorted(set(routes.values())):
        get_extractor(name, **ctx.extractor_options[name]).check_ready()
    emotions = load_emotion_map(settings.emotion_map)
    try:
        manifest = read_manifest(Path(labels).expanduser().absolute(), emotions, source_base(source)) if labels else None
    except ValueError as exc:  # no such file, not a CSV, no `path` column: the run stops saying so
        raise SetupError(str(exc)) from None
    root = Path(source).expanduser().absolute()
    bad = {p for p, _ in manifest.problems} if manifest else set()
    items = [i for i in items if i.path not in bad]
    inputs = _plan_inputs(wh, routes, ctx, manifest, root if root.is_dir() else None, emotions, relabel_all, workers,
                          stat_only)
    plan = make_plan(items, inventory(wh, fresh=True), inputs)
    return Prepared(routes, items, ignored, ctx, manifest, inputs, plan)


def extractor_options(name: str, num_faces: int) -> dict:
    """The constructor options a run gives extractor `name`."""
    return {"num_faces": num_faces} if name in ("mediapipe", "pyfeat") else {}


def _plan_inputs(wh: Warehouse, routes: dict[str, str], ctx: BuildContext, manifest: Manifest | None,
                 root: Path | None, emotions, relabel_all: bool, workers: int, stat_only: bool) -> PlanInputs:
    keys = {name: f"{get_extractor(name, **ctx.extractor_options.get(name, {})).config_hash(ctx.options)}"
                  f"|{CONTRACT_VERSION}" for name in set(routes.values())}
    stored: dict[tuple[str, str], Any] = {}

    def stored_of(held):
        if (held.key, held.source_id) not in stored:
            stored[held.key, held.source_id] = stored_label(wh, held.key, held.source_id)
        return stored[held.key, held.source_id]

    return PlanInputs(
        routes=routes, cache_keys=keys,
        label_of=lambda path: resolve_label(path, root, emotions, manifest),
        has_manifest_row=lambda path: manifest is not None and path in manifest.rows,
        stored_label=stored_of, force=ctx.force, relabel=relabel_all, workers=workers, stat_only=stat_only)


def _nothing_to_read(where: str, extractor: str, items: list[MediaItem], others: list[Path]) -> str:
    kinds = Counter(i.kind for i in items)
    if kinds and extractor != "auto":
        found = ", ".join(f"{n} {k} file(s)" for k, n in kinds.items())
        return (f"nothing in {where} that the {extractor} extractor reads ({' '.join(extensions(KINDS[extractor]))}); "
                f"found {found}: choose another --extractor, or auto")
    return f"no media found in {where} (looked for {' '.join(extensions(('video', 'image', 'csv')))})" + (
        f"; {len(others)} other files there" if others else "")


def early_results(plan: Plan) -> list[dict]:
    """The result row of every file the plan settles without extraction."""
    return [ItemResult(display_path(e.path), e.status, e.source_id, stage=e.stage, reason=e.reason,
                       kind=e.kind).to_dict() for e in plan.early]


def unchanged(prepared: Prepared) -> bool:
    """Whether running would write nothing but its `runs` row: every file unchanged (loaded,
    a known duplicate, or still quarantined for the same reason) and the manifest clean."""
    plan = prepared.plan
    return not (prepared.manifest and prepared.manifest.problems) and not (
        plan.units or plan.links or plan.relinks or plan.relabels or plan.drops or plan.promotions
        or plan.unlink or plan.restats or any(e.status == "quarantined" and e.record for e in plan.early))


def run_summary(results: list[dict], seconds: float, ignored: list[str]) -> dict[str, Any]:
    """What a run did, file by file added up: the CLI's summary line and the flow's return value."""
    status = Counter(r["status"] for r in results)
    frames = sum(r["frames"] for r in results)
    faces = sum(r["face_frames"] for r in results)
    reasons = Counter(r["reason"] for r in results if r["status"] in ("quarantined", "failed"))
    return {
        "items": len(results), "loaded": status["loaded"], "skipped": status["skipped"],
        "duplicates": status["duplicate"], "quarantined": status["quarantined"], "failed": status["failed"],
        "frames": frames, "face_rate": round(faces / frames, 4) if frames else None,
        "frames_per_s": round(frames / seconds, 2) if frames and seconds > 0 else None,
        "seconds": round(seconds, 2), "quarantine_reasons": dict(reasons.most_common(10)),
        "partial": [{"path": r["path"], "note": r["reason"]} for r in results if r.get("partial")],
        "ignored": len(ignored), "ignored_examples": ignored[:5],
    }


def summary_line(summary: dict) -> str:
    """What a run did, in one line: counts, then frames and face rate, or why there were none
    (`nothing new: 5 files unchanged`, never `face rate None`)."""
    parts = [f"{summary['loaded']} loaded", f"{summary['skipped']} already loaded"]
    parts += [f"{summary[k]} {k}" for k in ("duplicates", "quarantined", "failed") if summary.get(k) or k == "quarantined"]
    line = f"{summary['items']} files — {', '.join(parts)}"
    if summary["frames"]:
        return line + (f"; {summary['frames']} frames, face rate {summary['face_rate']:.1%}, "
                       f"{summary['frames_per_s']:.3g} frames/s")
    unchanged = summary["skipped"] + summary["duplicates"]
    if unchanged == summary["items"]:
        line += f"; nothing new: {unchanged} files unchanged"
        return line + (", so no flow run (--force re-extracts)" if summary.get("flow_run") is False else "")
    return line + "; no frames extracted"
