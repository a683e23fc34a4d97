"""``migrate --to shards`` on the Hub store (``ShardMigration``): one compare-and-swap commit per step.

A step's commit (decided at the head it names as parent, through ``HubSync.run``: 412 → decide
again, unknown outcome → look for its marker, commit budget obeyed) carries:

- the step's tars and Parquet index shard, uploaded before the commit (``HubSync.upload``:
  ``preupload_lfs_files``), so a retried commit never sends their bytes again;
- a new JSONL index shard with the items' shard rows, and the index files that held their
  files-layout rows rewritten without them (line by line: other rows keep their bytes; the
  predecessor's ``data/train.jsonl`` included, whose untouched lines stay predecessor rows that
  ``decode_rows`` reads);
- deletes of the old per-item files of EARLIER steps, whose shards landed in an earlier commit:
  each item's folder ``<holder>/<id>/`` as one operation (``old_entries``), at most what keeps the
  commit under ``MAX_OPS`` files and folders (the rest wait for the next step);
- ``.coord/progress/ops.migrate.json``: the commit's unique marker, listing the old files still to
  delete, so a rerun after kill -9 finds them in the repo itself.

Before the first step the index is prepared (``rows``): compacted when spread over several shards,
then a big index file split line for line into index shards of a step's rows each, so a step
rewrites or deletes one or two small index files, never the whole index.

The first commit on a predecessor repo also keeps its original ``data/train.jsonl`` bytes at
``.coord/migrate/predecessor-train.jsonl`` (fields our rows do not carry survive there). ``finish``
deletes what is left (listed files, and any file left in a migrated item's folder) in bounded
commits, the last of which writes the ``shards`` marker and the card (a hand-written one keeps its
text: only its YAML ``configs`` are retargeted).
"""

from __future__ import annotations

import json
import logging
import posixpath
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import StoreError
from ..publish import layout
from ..publish.card import CardFacts, CardYamlError, card_facts, render_card, retarget_card
from ..publish.index import decode_rows, encode_rows, row_files, row_from_json
from ..publish.index_edit import drop_lines
from ..publish.layout_choice import SHARDS
from ..publish.predecessor_index import holds_predecessor_rows
from ..publish.shard_layout import PLY_DIR
from ..publish.shard_pack import PackedBatch
from ..publish.transfer_plan import in_files_layout
from ..records import IndexRow
from .base import MigrationStep
from .hub import HubStore
from .hub_ops import Plan
from .hub_shards import add_marker
from .hub_state import INDEX, MIGRATE_MARK, PROGRESS, SHARD, HubState, git_blob_oid, summarize_rows

log = logging.getLogger(__name__)

PREDECESSOR_COPY = f"{layout.COORD_DIR}/migrate/predecessor-train.jsonl"
MAX_OPS = 100  # files added or deleted per commit: the Hub's advice (reference: 50-100)
DEFAULT_STEP_ITEMS = 64  # a step's item folders are deleted (one operation each) within one later commit
_PATHS_CHUNK = 100
SPLIT_OVER = 256  # files-layout rows in the index file beyond which it is split before the steps


def old_entries(item_id: str, paths: list[str]) -> list[str]:
    """What deletes an item's old files: its folder ``<holder>/<id>/`` (one operation) when every one
    of ``paths`` lies in it, else each file. Never a folder at the top or under ``data/`` or ``.coord/``."""
    folders = {posixpath.dirname(p) for p in paths}
    if len(folders) == 1 and all(layout.holder_of(p, item_id) for p in paths):
        folder = folders.pop()
        if folder.split("/")[0] not in (layout.COORD_DIR, "data"):
            return [folder + "/"]
    return list(paths)


class HubMigration:
    """``ShardMigration`` of an opened ``HubStore`` (see the module docstring)."""

    step_items = DEFAULT_STEP_ITEMS

    def __init__(self, store: HubStore, client_id: str, card_title: str = "SHARP Gaussian splats",
                 clock: Callable[[], float] = time.time, max_ops: int = MAX_OPS) -> None:
        if max_ops < 8:
            raise StoreError("a migration commit needs room for at least 8 files")
        self._max_ops = max_ops
        self._store = store
        self._admin = store.admin()
        self._sync = self._admin.sync
        self._client = client_id or "migrate"
        self._card_title = card_title
        self._clock = clock
        self.description = store.description
        self._prepared = False
        self._downloaded: list[Path] = []  # cache blobs of old files this step read

    @property
    def layout(self) -> str:
        return self._store.layout

    def rows(self) -> list[IndexRow]:
        """Every row at the head. The first call of a migration prepares the index so that each step
        rewrites one or two small index files: one spread over several shards is compacted (one
        commit), then a big index file is split into index shards of a step's rows in id order."""
        if not self._prepared:
            self._prepared = True
            state = self._sync.refresh()
            if MIGRATE_MARK not in state.entries and len(state.paths_of(SHARD)) > 1:
                try:
                    self._store.compact()
                except StoreError as exc:  # e.g. a predecessor index: it is never rewritten whole
                    log.info("%s: index not compacted first (%s)", self.description, exc)
            while self._commit(self._plan_split)[0]:
                pass
        return self._admin.rows()

    def _plan_split(self, state: HubState) -> tuple[Plan, int] | None:
        """Up to a commit's worth of index shards, each the next ``step_items`` files-layout rows (by
        id) of the index file, moved out of it line for line; None when it holds few enough."""
        path = self._store.index_path
        if path not in state.entries:
            return None
        raw = self._sync.download(path, state.sha)
        lines = [ln if ln.endswith("\n") else ln + "\n" for ln in raw.decode("utf-8").splitlines(keepends=True)
                 if ln.strip()]
        todo = sorted((r.id, ln) for ln in lines if in_files_layout(r := row_from_json(ln)))
        if len(todo) <= SPLIT_OVER:
            return None
        plan = Plan(title=f"migrate: split {path} ({self._client})")
        if holds_predecessor_rows(raw) and not self._existing([PREDECESSOR_COPY], state.sha):
            plan.adds[PREDECESSOR_COPY] = raw  # before any of its lines leaves it
        now, nonce = self._clock(), secrets.token_hex(4)
        moved: set[str] = set()
        for n in range(min(self._max_ops - 4, len(todo) // self.step_items)):
            chunk = todo[n * self.step_items:(n + 1) * self.step_items]
            data = "".join(ln for _, ln in chunk).encode("utf-8")
            shard = layout.shard_path(path, self._client, now, f"{nonce}s{n:04d}")
            plan.adds[shard] = data
            plan.known[shard] = (git_blob_oid(data), summarize_rows(decode_rows(data)))
            moved |= {i for i, _ in chunk}
        kept = drop_lines(raw, moved)
        plan.adds[path] = kept
        plan.known[path] = (git_blob_oid(kept), summarize_rows(decode_rows(kept)))
        self._mark(plan, self._existing(self._pending(state), state.sha), 0)
        return plan, len(moved)

    def local_path(self, repo_path: str) -> Path:
        """A downloaded copy (in the store's cache, at the sha ``rows()`` read), dropped after the step."""
        blob = self._admin.local_path(repo_path)
        self._downloaded.append(blob)
        return blob

    # -- reads at a state ------------------------------------------------------------------------

    def _existing(self, paths: list[str], sha: str) -> list[str]:
        """Which of ``paths`` (files, and folders ending in ``/``) exist at ``sha`` (deleting a
        missing one would fail the commit)."""
        from huggingface_hub.hf_api import RepoFolder

        todo = sorted(set(paths))
        found: set[str] = set()
        api, sync = self._sync.api, self._sync
        for start in range(0, len(todo), _PATHS_CHUNK):
            chunk = [p.rstrip("/") for p in todo[start:start + _PATHS_CHUNK]]
            infos = sync.api_call(lambda c=chunk: api.get_paths_info(sync.repo_id, c, revision=sha,
                                                                     repo_type=sync.repo_type))
            found.update(i.path + "/" if isinstance(i, RepoFolder) else i.path for i in infos)
        return [p for p in todo if p in found]

    def _pending(self, state: HubState) -> list[str]:
        """Old files the last migration commit left to delete (its marker's list)."""
        if MIGRATE_MARK not in state.entries:
            return []
        try:
            body = json.loads(self._sync.download(MIGRATE_MARK, state.sha).decode("utf-8"))
            return [str(p) for p in body.get("delete_next", [])]
        except (ValueError, AttributeError, TypeError) as exc:
            raise StoreError(f"{MIGRATE_MARK} is unreadable: {exc}") from exc

    def _mark(self, plan: Plan, delete_next: list[str], migrated: int) -> None:
        body = {"client": self._client, "action": "migrate", "at": self._clock(), "nonce": secrets.token_hex(6),
                "migrated": migrated, "delete_next": sorted(set(delete_next))}
        plan.add_known(MIGRATE_MARK, (json.dumps(body, sort_keys=True) + "\n").encode("utf-8"), PROGRESS)
        plan.marker = MIGRATE_MARK

    def _commit(self, build: Callable[[HubState], tuple[Plan, Any] | None]) -> tuple[Any, str]:
        """``build`` through the compare-and-swap loop: (the meaning of the plan that landed, head)."""
        meaning, state = self._sync.run_decided(build)
        return meaning, state.sha

    # -- a step ----------------------------------------------------------------------------------

    def _drop_rows(self, plan: Plan, state: HubState, ids: set[str]) -> None:
        """The index files holding ``ids``' rows, rewritten without them (the first one of a
        predecessor index kept whole beside ``.coord/`` first)."""
        for path in state.index_files_of(ids):
            raw = self._sync.download(path, state.sha)
            rows = {r.id: r for r in reversed(decode_rows(raw)) if r.id in ids}
            if any(r.shard_path for r in rows.values()):
                raise StoreError(f"{self.description}: {path} already holds shard rows of this step's items: "
                                 "is another migration running?")
            if holds_predecessor_rows(raw) and not self._existing([PREDECESSOR_COPY], state.sha):
                plan.adds[PREDECESSOR_COPY] = raw
            kept = drop_lines(raw, ids)
            if kept.strip() or state.kind(path) == INDEX:
                plan.adds[path] = kept
                plan.known[path] = (git_blob_oid(kept), summarize_rows(decode_rows(kept)))
            else:
                plan.deletes.append(path)

    def _plan_step(self, state: HubState, packed: PackedBatch,
                   old_rows: list[IndexRow]) -> tuple[Plan, MigrationStep] | None:
        # Ids taken down since the rows were read keep no row (their samples stay unreferenced in the tar).
        ids = {pi.row.id for pi in packed.items} & (state.published - self._admin.excluded(state))
        if not ids:
            return None  # removed meanwhile: nothing to replace
        now, nonce = self._clock(), secrets.token_hex(6)
        plan = Plan(title=f"migrate {len(ids)} items to shards ({self._client})")
        for f in packed.files:
            plan.adds[f.repo_path] = f.local_path
        self._drop_rows(plan, state, ids)
        new_rows = [pi.row for pi in packed.items if pi.row.id in ids]
        shard = layout.shard_path(self._store.index_path, self._client, now, nonce)
        data = encode_rows(new_rows)
        plan.adds[shard] = data
        plan.known[shard] = (git_blob_oid(data), summarize_rows(new_rows))
        # The marker, and the twin each changed JSONL file may change (the files layout's typed index).
        twins = sum(1 for p in [*plan.adds, *plan.deletes] if state.kind(p) in (INDEX, SHARD))
        used = len(plan.adds) + len(plan.deletes) + 1 + twins
        if used > self._max_ops:
            raise StoreError(f"{self.description}: a step of {len(ids)} items would change {used} files, over "
                             f"{self._max_ops} per commit (its rows sit in many index files): run `sharp-dataset "
                             "compact` first, or migrate with a smaller --step-items")
        pending = self._existing(self._pending(state), state.sha)
        room = self._max_ops - used
        plan.deletes += pending[:room]
        later = pending[room:] + [p for r in old_rows if r.id in ids for p in old_entries(r.id, row_files(r))]
        self._mark(plan, later, len(ids))
        return plan, MigrationStep(migrated_ids=sorted(ids), shard_files=packed.paths(),
                                   deleted=len(pending[:room]))

    def land_step(self, packed: PackedBatch, old_rows: list[IndexRow]) -> MigrationStep:
        """One commit: the packed shards in, ``old_rows`` replaced, earlier steps' old files out.
        Then the old files downloaded so far leave the local cache (the tars hold their bytes), so a
        migration needs the disk of a step, not of the dataset."""
        try:
            step, sha = self._commit(lambda st: self._plan_step(st, packed, old_rows))
        finally:
            for blob in self._downloaded:
                blob.unlink(missing_ok=True)
            self._downloaded.clear()
        if step is None:
            return MigrationStep()
        step.commit = sha
        return step

    # -- the end ---------------------------------------------------------------------------------

    def _leftovers(self, state: HubState, migrated: set[str]) -> list[str]:
        """Migrated items' folders still there (``<holder>/<id>/``, or their files where a folder
        may not be deleted whole): one recursive listing."""
        sync = self._sync
        entries = sync.read_at(state.sha, lambda: list(sync.api.list_repo_tree(
            sync.repo_id, recursive=True, revision=state.sha, repo_type=sync.repo_type)))
        sync.count("api", 1 + len(entries) // 1000)
        out = []
        for e in entries:
            parts = e.path.split("/")
            if getattr(e, "blob_id", None) is None or len(parts) < 2 or parts[0] in (layout.COORD_DIR, "data"):
                continue
            if parts[-2] in migrated and layout.holder_of(e.path, parts[-2]) is not None:
                out += old_entries(parts[-2], [e.path])
        return sorted(set(out))

    def _card(self, state: HubState, rows: list[IndexRow]) -> bytes | None:
        """The card of the shards layout: the generated one, or a hand-written one with only its YAML
        ``configs`` retargeted (None: nothing to change)."""
        try:
            text = self._sync.download(layout.README_PATH, state.sha).decode("utf-8")
        except (StoreError, UnicodeDecodeError):
            return None
        ply = any(r.ply_shard_path.startswith(PLY_DIR + "/") for r in rows)
        if card_facts(text) is None:
            try:
                retargeted = retarget_card(text, ply)
            except CardYamlError as exc:
                log.warning("%s: the dataset card is left as it is: %s", self.description, exc)
                return None
            log.info("%s: the dataset card is hand-written: its text is kept, its configs now name the "
                     "index and the shards", self.description)
            return None if retargeted is None else retargeted.encode("utf-8")
        facts = CardFacts.of_rows(rows)
        card = render_card(title=self._card_title, sources=sorted(facts.sources), predictors=sorted(facts.predictors),
                           index_glob=layout.index_glob(self._store.index_path), layout=SHARDS,
                           ply_config=ply, repo=self._sync.repo_id, splat_fields=facts.splat_fields,
                           ply_fields=facts.ply_fields)
        return card.encode("utf-8")

    def _plan_finish(self, state: HubState, rows: list[IndexRow]) -> tuple[Plan, MigrationStep]:
        migrated = {r.id for r in rows if r.shard_path}
        todo = sorted(set(self._existing(self._pending(state), state.sha)) | set(self._leftovers(state, migrated)))
        room = self._max_ops - 3
        plan = Plan(title=f"migrate: delete {min(room, len(todo))} old files ({self._client})")
        plan.deletes += todo[:room]
        last = len(todo) <= room
        if last:
            plan.title = f"migrate: shards layout ({self._client})"
            add_marker(plan, SHARDS)
            card = self._card(state, rows)
            if card is not None:
                plan.adds[layout.README_PATH] = card
        self._mark(plan, todo[room:], 0)
        return plan, MigrationStep(deleted=len(plan.deletes), commit="last" if last else "")

    def finish(self) -> MigrationStep:
        """Bounded commits deleting what is left; the last one records the ``shards`` layout."""
        rows = self.rows()
        total = MigrationStep()
        while True:
            step, sha = self._commit(lambda st: self._plan_finish(st, rows))
            total.deleted += step.deleted
            if step.commit == "last":
                total.commit = sha
                self._store.layout = SHARDS
                return total


def repo_exists(store: HubStore) -> bool:
    """Whether the store's repo exists (``HubStore.open`` would create a missing one)."""
    from huggingface_hub.errors import RepositoryNotFoundError

    sync = store.admin().sync
    try:
        sync.api_call(lambda: sync.api.repo_info(sync.repo_id, repo_type=sync.repo_type), missing_ok=True)
    except RepositoryNotFoundError:
        return False
    return True
