"""Plan a build-features run: what each file is now, against what the warehouse holds.

The item model (README "Items, duplicates, re-runs"):
- A *file* is a path under the source. An *item* is a distinct content: `source_id` is the hash
  of its bytes, and its rows (`frames`, `videos`, `labels`) exist once, loaded from one path, its
  *canonical* path (`videos.path`). Other files with the same bytes are *duplicates*: a
  `duplicates` row links each to the canonical path; nothing is loaded twice.
- Every file is in exactly one state after a run: loaded (canonical), duplicate, or quarantined.
  A file whose bytes changed is re-extracted, and the content it held goes from the warehouse
  unless another file still holds it (then that file becomes its canonical path). A file that
  became unreadable is quarantined and its old rows go: one path, one truth.
- Labels belong to the canonical path. A manifest row always wins; without one, a label that an
  earlier manifest gave stays (a run without `--labels` never wipes labels); `relabel` resets
  every label to what this run's sources say.

A file whose size and modification time equal those recorded when it was loaded (or
quarantined, with the same settings) is not read again: a re-run costs one `stat` per file.
Images and OpenFace CSVs are grouped into shards (one task run, one extractor, one validation
and one Parquet file per table for many small items); each video is a unit of its own.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tasks.errors import ItemError, TransientError
from tasks.labels import Label
from tasks.media import MediaItem, check_path_name, content_hash, display_path, require_regular
from warehouse.inventory import Held, Inventory

# Measured (whole `build-features` runs, 1,330 256x256 crops, --workers 1): a shard costs ~0.45 s
# beside its images' extraction (task run, locks, the wait for its GX validation, the fsync'd
# commit); 512-image shards were no faster (38.2 s against 37.9 s) and lose more to a kill.
SHARD_MAX_ITEMS = 256
SHARD_MIN_ITEMS = 16
SHARD_MAX_BYTES = 48 * 1024 * 1024  # OpenFace CSVs of long videos: bounded rows per shard
SHARDS_PER_WORKER = 3  # enough shards that the workers finish together
SHARDED_KINDS = ("image", "csv")
RESCAN_STAGES = ("label", "failed")  # quarantined for a reason that is not the file's bytes


@dataclass(frozen=True)
class FileStat:
    bytes: int
    mtime_ns: int


@dataclass(frozen=True)
class Alias:
    """Another file with the member's bytes: becomes a `duplicates` row once the member loads."""

    path: Path
    stat: FileStat
    label_conflict: str | None = None


@dataclass(frozen=True)
class Member:
    """One file to extract, and what its commit changes beside its own rows."""

    item: MediaItem
    source_id: str
    stat: FileStat
    label: Label
    extractor: str
    replaces: tuple[str, ...] = ()  # contents this path held before, that no other file holds
    aliases: tuple[Alias, ...] = ()
    promote: tuple[tuple[str, str], ...] = ()  # (content, duplicate path) that takes over as canonical


@dataclass(frozen=True)
class Unit:
    """A unit of work: one video, or a shard of small items, written to files named `key`."""

    key: str
    extractor: str
    members: tuple[Member, ...]

    @property
    def sharded(self) -> bool:
        return self.key.startswith("shard-")

    @property
    def name(self) -> str:
        first = self.members[0].item.path.name
        return first if len(self.members) == 1 else f"{first} +{len(self.members) - 1}"


@dataclass(frozen=True)
class Early:
    """A file settled without extraction: skipped, still quarantined, or bad before reading."""

    path: Path
    status: str  # skipped | quarantined | duplicate
    reason: str | None = None
    stage: str | None = None
    source_id: str | None = None
    stat: FileStat | None = None
    kind: str | None = None
    record: bool = True  # quarantine row to (re)write; False when the one there is still right


@dataclass(frozen=True)
class Link:
    path: Path
    source_id: str
    same_as: str
    stat: FileStat
    label_conflict: str | None = None


@dataclass
class Plan:
    units: list[Unit] = field(default_factory=list)
    early: list[Early] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)
    relinks: list[tuple[Held, Path, Label]] = field(default_factory=list)  # content moved to a new path
    relabels: list[tuple[Held, Label]] = field(default_factory=list)
    drops: list[str] = field(default_factory=list)  # contents no file holds any more
    promotions: list[tuple[str, str]] = field(default_factory=list)  # (content, duplicate path)
    unlink: list[Path] = field(default_factory=list)  # duplicate rows to remove (path is something else now)
    restats: list[tuple[Held, FileStat]] = field(default_factory=list)  # same bytes, new time: record it

    @property
    def members(self) -> int:
        return sum(len(u.members) for u in self.units)


class NeedsReading(Exception):
    """Planning with `stat_only`: this file (`item`, read by `extractor`) is new or changed,
    so the run has work."""

    def __init__(self, item: MediaItem, extractor: str) -> None:
        super().__init__(str(item.path))
        self.item, self.extractor = item, extractor


@dataclass(frozen=True)
class PlanInputs:
    """What planning needs besides the files and the inventory."""

    routes: dict[str, str]  # media kind -> extractor
    cache_keys: dict[str, str]  # extractor -> config hash | contract version
    label_of: Callable[[Path], Label]  # this run's label for a path (manifest, folder, file name)
    has_manifest_row: Callable[[Path], bool]
    stored_label: Callable[[Held], Label | None]  # the label the warehouse has for loaded content
    force: bool = False
    relabel: bool = False
    workers: int = 2
    stat_only: bool = False  # raise NeedsReading instead of hashing a file whose stat is not on record


@dataclass
class _Seen:
    item: MediaItem
    source_id: str
    stat: FileStat


def file_stat(path: Path) -> FileStat:
    """Size and modification time; `ItemError` for what is not a readable regular file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ItemError("discover", "cannot read file: No such file or directory") from None
    except PermissionError:
        raise ItemError("discover", "cannot read file: permission denied") from None
    except OSError as exc:
        raise ItemError("discover", f"cannot read file: {exc.strerror or exc}") from None
    require_regular(st.st_mode)
    return FileStat(st.st_size, st.st_mtime_ns)


def _hash(path: Path, attempts: int = 3) -> str:
    for attempt in range(attempts):
        try:
            return content_hash(path)
        except TransientError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def _identify(item: MediaItem, inv: Inventory, inputs: PlanInputs) -> _Seen | Early:
    """The file's content id, from the recorded stat when it is unchanged, else by hashing."""
    path = item.path
    try:
        check_path_name(path)
        st = file_stat(path)
    except ItemError as exc:
        return Early(path, "quarantined", exc.reason, exc.stage, kind=item.kind)
    text, key = str(path), inputs.cache_keys[inputs.routes[item.kind]]
    if not inputs.force:
        for held in inv.held_at(text):
            if held.cache_key == key and (held.bytes, held.mtime_ns) == (st.bytes, st.mtime_ns):
                return _Seen(item, held.source_id, st)
        linked = inv.linked.get(text)
        if linked and (linked.bytes, linked.mtime_ns) == (st.bytes, st.mtime_ns):
            return _Seen(item, linked.source_id, st)
        bad = inv.bad.get(text)
        if (bad and bad.stage not in RESCAN_STAGES and bad.cache_key == key
                and (bad.bytes, bad.mtime_ns) == (st.bytes, st.mtime_ns)):
            return Early(path, "quarantined", bad.reason, bad.stage, bad.source_id, st, item.kind, record=False)
    if inputs.stat_only:
        raise NeedsReading(item, inputs.routes[item.kind])
    try:
        return _Seen(item, _hash(path), st)
    except ItemError as exc:
        return Early(path, "quarantined", exc.reason, exc.stage, stat=st, kind=item.kind)
    except TransientError as exc:
        return Early(path, "quarantined", f"failed after retries: {exc}", "failed", stat=st, kind=item.kind)


def make_plan(items: list[MediaItem], inv: Inventory, inputs: PlanInputs) -> Plan:
    """Decide, for every file, what this run does with it (see the module doc)."""
    plan = Plan()
    by_source: dict[str, list[_Seen]] = defaultdict(list)
    run = _Run({}, set())
    bad: list[Early] = []
    for item in sorted(items, key=lambda i: str(i.path)):
        seen = _identify(item, inv, inputs)
        if isinstance(seen, Early):
            bad.append(seen)
        else:
            by_source[seen.source_id].append(seen)
            run.paths[str(item.path)] = seen.source_id
    run.contents.update(run.paths.values())
    plan.early.extend(bad)
    members: list[Member] = []
    for source_id, files in by_source.items():
        member = _settle_content(source_id, files, inv, inputs, run, plan)
        if member is not None:
            members.append(member)
    for early in bad:  # a file that turned bad: the content it held goes (or moves on)
        _release(str(early.path), None, inv, run, plan, immediate=True)
    plan.units = make_units(members, inputs.cache_keys, inputs.workers)
    return plan


@dataclass
class _Run:
    paths: dict[str, str]  # path -> the content it holds now, for every readable file of the run
    contents: set[str]  # those contents


def _on_disk(held: Held) -> bool:
    """Whether the canonical path still holds the content it was loaded from (by size and time)."""
    try:
        st = os.stat(held.path)
    except OSError:
        return False
    return (st.st_size, st.st_mtime_ns) == (held.bytes, held.mtime_ns)


def _settle_content(source_id: str, files: list[_Seen], inv: Inventory, inputs: PlanInputs,
                    run: _Run, plan: Plan) -> Member | None:
    """Skip, relink or extract one content. Its canonical path is the first in sort order of the
    files that hold it (this run's, and the loaded copy's when it is outside the run and still
    there), so the result depends on the files, not on the order they came in; the other files
    become links."""
    extractor = inputs.routes[files[0].item.kind]
    key = inputs.cache_keys[extractor]
    held = None if inputs.force else inv.loaded(source_id, key)
    if held is None:
        first = files[0]
        text = str(first.item.path)
        label = _label(first.item.path, _previous(text, inv), inputs)
        aliases = tuple(Alias(f.item.path, f.stat, _conflict(f.item.path, label, inputs)) for f in files[1:])
        if text in inv.linked:
            plan.unlink.append(first.item.path)
        replaces, promote = _release(text, source_id, inv, run, plan, immediate=False)
        return Member(first.item, source_id, first.stat, label, extractor, tuple(replaces), aliases, tuple(promote))
    by_path = {str(f.item.path): f for f in files}
    if held.path not in by_path and held.path not in run.paths and _on_disk(held):
        outside = _seen_outside(held)  # the loaded copy, outside this run's source, still holds it
        if outside is not None:
            by_path[held.path] = outside
    canonical = min(by_path)
    if canonical == held.path:
        if held.path in {str(f.item.path) for f in files}:
            first = by_path[canonical]
            plan.early.append(Early(first.item.path, "skipped", source_id=source_id, stat=first.stat,
                                    kind=first.item.kind))
            _maybe_relabel(held, first.item.path, inputs, plan)
            if (held.bytes, held.mtime_ns) != (first.stat.bytes, first.stat.mtime_ns):
                plan.restats.append((held, first.stat))  # touched or copied: not read again next time
    else:
        first = by_path[canonical]
        moved = held.path not in by_path  # gone or changed: the label moves with the bytes
        label = _label(first.item.path, held, inputs) if moved else inputs.label_of(first.item.path)
        plan.relinks.append((held, first.item.path, label))
        plan.early.append(Early(first.item.path, "skipped", f"moved from {held.path}" if moved else None,
                                source_id=source_id, stat=first.stat, kind=first.item.kind))
        _release(held.path, source_id, inv, run, plan, immediate=True)
        _release(canonical, source_id, inv, run, plan, immediate=True)  # what the new canonical held before
    _link([f for p, f in by_path.items() if p != canonical], canonical, source_id, inputs, inv, run, plan,
          report={str(f.item.path) for f in files})
    return None


def _seen_outside(held: Held) -> _Seen | None:
    try:
        st = file_stat(Path(held.path))
    except ItemError:
        return None
    return _Seen(MediaItem(Path(held.path), "outside"), held.source_id, st)


def _previous(path: str, inv: Inventory) -> Held | None:
    held = inv.held_at(path)
    return held[0] if held else None


def _label(path: Path, previous: Held | None, inputs: PlanInputs) -> Label:
    """This run's label for the file; a label an earlier manifest gave stays unless this run's
    manifest has the file or `relabel` is on."""
    if previous is not None and not inputs.relabel and not inputs.has_manifest_row(path):
        stored = inputs.stored_label(previous)
        if stored is not None and stored.source == "manifest":
            return stored
    return inputs.label_of(path)


def _maybe_relabel(held: Held, path: Path, inputs: PlanInputs, plan: Plan) -> None:
    if not (inputs.relabel or inputs.has_manifest_row(path)):
        return
    wanted = inputs.label_of(path)
    if inputs.stored_label(held) != wanted:
        plan.relabels.append((held, wanted))


def _conflict(path: Path, label: Label, inputs: PlanInputs) -> str | None:
    own = inputs.label_of(path)
    if own.emotion is None or own.emotion == label.emotion:
        return None
    return f"labelled {own.emotion} ({own.source}) but its bytes are loaded as {label.emotion or 'unlabelled'}"


def _link(files: list[_Seen], canonical: str, source_id: str, inputs: PlanInputs, inv: Inventory,
          run: _Run, plan: Plan, report: set[str]) -> None:
    """Link each file to the canonical copy of its bytes; `report` says which files this run
    reports on (a loaded copy outside the run's source is linked but not reported)."""
    label = inputs.label_of(Path(canonical))
    for f in files:
        path = str(f.item.path)
        linked = inv.linked.get(path)
        stat_same = linked is not None and (linked.bytes, linked.mtime_ns) == (f.stat.bytes, f.stat.mtime_ns)
        if not (linked and linked.source_id == source_id and linked.same_as == canonical and stat_same):
            plan.links.append(Link(f.item.path, source_id, canonical, f.stat, _conflict(f.item.path, label, inputs)))
        if path in report:
            plan.early.append(Early(f.item.path, "duplicate", f"same bytes as {display_path(Path(canonical))}",
                                    source_id=source_id, stat=f.stat, kind=f.item.kind))
        _release(path, source_id, inv, run, plan, immediate=True)


def _release(path: str, now_holds: str | None, inv: Inventory, run: _Run, plan: Plan,
             immediate: bool) -> tuple[list[str], list[tuple[str, str]]]:
    """Contents `path` held before and holds no more: dropped, or handed to a duplicate that
    still has them. `immediate` puts them in the plan; otherwise they are returned for the
    member that replaces them (applied after it commits)."""
    drops, promote = [], []
    if path in inv.linked and inv.linked[path].source_id != now_holds:
        plan.unlink.append(Path(path))
    for held in inv.held_at(path):
        if held.source_id == now_holds or held.source_id in run.contents:
            continue  # still held by a file of this run: settled with that content
        heir = next((d.path for d in inv.linked.values() if d.source_id == held.source_id and d.path != path
                     and d.path not in run.paths and os.path.exists(d.path)), None)
        if heir is not None:
            promote.append((held.source_id, heir))
        else:
            drops.append(held.source_id)
    if immediate:
        plan.drops.extend(drops)
        plan.promotions.extend(promote)
    return drops, promote


def make_units(members: list[Member], cache_keys: dict[str, str], workers: int) -> list[Unit]:
    """Each video alone; images and CSVs in shards of up to `SHARD_MAX_ITEMS` (fewer when there
    are few, so every worker gets several) and `SHARD_MAX_BYTES`."""
    units = [Unit(m.source_id, m.extractor, (m,)) for m in members if m.item.kind not in SHARDED_KINDS]
    small: dict[str, list[Member]] = defaultdict(list)
    for m in members:
        if m.item.kind in SHARDED_KINDS:
            small[m.extractor].append(m)
    for extractor, group in small.items():
        size = min(SHARD_MAX_ITEMS, max(SHARD_MIN_ITEMS, math.ceil(len(group) / (workers * SHARDS_PER_WORKER))))
        for chunk in _chunks(group, size):
            units.append(Unit(shard_key(chunk, cache_keys[extractor]), extractor, tuple(chunk)))
    return units


def _chunks(group: list[Member], size: int) -> list[list[Member]]:
    chunks: list[list[Member]] = [[]]
    total = 0
    for m in group:
        if chunks[-1] and (len(chunks[-1]) >= size or total + m.stat.bytes > SHARD_MAX_BYTES):
            chunks.append([])
            total = 0
        chunks[-1].append(m)
        total += m.stat.bytes
    return [c for c in chunks if c]


def shard_key(members: list[Member], cache_key: str) -> str:
    """A shard's file key: fixed by its contents and settings, so a re-run of an interrupted
    shard writes the same files."""
    digest = hashlib.sha256("|".join([cache_key, *sorted(m.source_id for m in members)]).encode())
    return f"shard-{digest.hexdigest()[:16]}"
