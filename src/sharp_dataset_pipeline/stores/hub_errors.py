"""Which Hub failures mean "not there": a missing folder at a revision, or no such repo.

Pure (no I/O, nothing of the package): the state reader, which must stay free of the network
modules, and the status mapper (``hub_retry``) both ask it. ``huggingface_hub`` gives the specific
exception types only when a 404 carries ``X-Error-Code``, which the protocol documents for the
resolve endpoint but not for tree or repo info, so a 404 without a code is read by where it came from.
"""

from __future__ import annotations


def folder_missing(exc: BaseException) -> bool:
    """True when a tree listing's failure means the folder is not there at that revision.

    The client says so with ``RemoteEntryNotFoundError`` when the 404 carries ``X-Error-Code:
    EntryNotFound``; the protocol documents no error code for the tree endpoint, so a 404 without
    one counts too. A missing repo or revision is not a missing folder."""
    from huggingface_hub.errors import (
        HfHubHTTPError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(exc, RemoteEntryNotFoundError):
        return True
    if isinstance(exc, (RepositoryNotFoundError, RevisionNotFoundError)) or not isinstance(exc, HfHubHTTPError):
        return False
    return exc.response is not None and exc.response.status_code == 404


def repo_missing(exc: BaseException) -> bool:
    """True when a repo-info read's failure means there is no such repo (``RepositoryNotFoundError``,
    or a 404 with no error code: hf-hub.md's own mock leaves the codes out)."""
    from huggingface_hub.errors import RemoteEntryNotFoundError, RepositoryNotFoundError

    if isinstance(exc, RepositoryNotFoundError):
        return True
    return folder_missing(exc) and not isinstance(exc, RemoteEntryNotFoundError)
