"""What the maintenance commands did (``remove``, ``gc``): the same records for every store."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..records import Lease


@dataclass
class GcResult:
    expired: list[Lease] = field(default_factory=list)
    on_done_units: list[Lease] = field(default_factory=list)

    def text(self) -> str:
        return (f"removed {len(self.expired)} expired leases and {len(self.on_done_units)} leases on done units"
                + "".join(f"\n  {le.unit} (owner {le.owner})" for le in self.expired + self.on_done_units))


@dataclass
class RemoveResult:
    """``removed``: ids that were published and are now gone; ``blocked``: ids never published,
    now excluded so that no client ever publishes them."""

    removed: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    already_removed: list[str] = field(default_factory=list)
    files_deleted: list[str] = field(default_factory=list)
    index_files_rewritten: list[str] = field(default_factory=list)
    # Shards rewritten without the removed samples (the sharded layout; emptied ones are in files_deleted).
    shards_rewritten: list[str] = field(default_factory=list)
    # A preview (``remove --dry-run``): what the removal would do; nothing was changed.
    dry_run: bool = False

    def text(self) -> str:
        if self.dry_run:
            return self._preview_text()
        lines = [f"removed {len(self.removed)} items ({len(self.files_deleted)} files deleted, "
                 f"{len(self.index_files_rewritten)} index files rewritten"
                 + (f", {len(self.shards_rewritten)} shards rewritten without them" if self.shards_rewritten else "")
                 + ")"]
        if self.removed:
            lines.append("  " + " ".join(self.removed))
        if self.already_removed:
            lines.append(f"{len(self.already_removed)} ids were removed before: " + " ".join(self.already_removed))
        if self.blocked:
            lines.append(f"excluded {len(self.blocked)} ids that were not published (they never will be):")
            lines.append("  " + " ".join(self.blocked))
        return "\n".join(lines)

    def _preview_text(self) -> str:
        lines = [f"dry run: remove would take down {len(self.removed)} items, delete "
                 f"{len(self.files_deleted)} files and rewrite {len(self.index_files_rewritten)} index files; "
                 "nothing was changed"]
        if self.removed:
            lines.append("  items: " + " ".join(self.removed))
        lines += [f"  delete {path}" for path in self.files_deleted]
        lines += [f"  rewrite shard {path} without the removed samples" for path in self.shards_rewritten]
        lines += [f"  rewrite {name}" for name in self.index_files_rewritten]
        if self.already_removed:
            lines.append(f"{len(self.already_removed)} ids were removed before: " + " ".join(self.already_removed))
        if self.blocked:
            lines.append(f"would exclude {len(self.blocked)} ids that were never published (needs --force):")
            lines.append("  " + " ".join(self.blocked))
        return "\n".join(lines)

    def unknown_ids_error(self) -> str:
        """The message when ids that were never published are given without ``--force``."""
        return (f"remove: {len(self.blocked)} of the ids were never published: {' '.join(self.blocked)}. "
                "Nothing was changed. Check them for typos; to exclude them anyway, so that no client ever "
                "publishes them, add --force")
