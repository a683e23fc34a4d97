"""The hub store's client-side journal of completed followups."""

from __future__ import annotations

from pathlib import Path

from sharp_dataset_pipeline.records import Followup
from sharp_dataset_pipeline.stores.hub_journal import FollowupJournal, journal_path

KIND = "unsplash_download"


def _f(item_id: str) -> Followup:
    return Followup(KIND, item_id, f"https://api.unsplash.com/photos/{item_id}/download")


def test_journal_keeps_each_completion_until_a_commit_carried_it(tmp_path: Path) -> None:
    path = journal_path(tmp_path, "me/splats", "host-a")
    journal = FollowupJournal(path)
    journal.append([_f("a")])
    journal.append([_f("b"), _f("a")])
    # A second handle (a restart) reads what the first wrote, once per followup.
    assert [f.item_id for f in FollowupJournal(path).read()] == ["a", "b"]
    assert FollowupJournal(path).read()[1].payload.endswith("/photos/b/download")
    journal.forget([_f("a")])
    assert [f.item_id for f in journal.read()] == ["b"]
    journal.forget([_f("b")])
    assert journal.read() == [] and path.read_text() == ""


def test_a_line_cut_short_by_a_crash_is_skipped(tmp_path: Path) -> None:
    path = journal_path(tmp_path, "me/splats", "host-a")
    FollowupJournal(path).append([_f("a")])
    with path.open("a") as fh:
        fh.write('{"item_id": "b", "ki')
    assert [f.item_id for f in FollowupJournal(path).read()] == ["a"]


def test_repos_and_clients_get_their_own_journals(tmp_path: Path) -> None:
    paths = {journal_path(tmp_path, repo, client)
             for repo in ("me/splats", "me/splats2", "me_splats") for client in ("a", "b")}
    assert len(paths) == 6
    assert all(p.parent == tmp_path and p.name.startswith("hub-followups-") for p in paths)
