"""How a failed commit is read (reference §6.3), from real client exception objects."""

from __future__ import annotations

import random

import httpx2
import pytest
from huggingface_hub.errors import HfHubHTTPError

from sharp_dataset_pipeline.errors import StoreError
from sharp_dataset_pipeline.stores import hub_retry


def _error(status: int, headers: dict[str, str] | None = None, message: str = "") -> HfHubHTTPError:
    request = httpx2.Request("POST", "http://hub.invalid/api/datasets/a/b/commit/main")
    response = httpx2.Response(status, headers=headers or {}, request=request, json={"error": message})
    return HfHubHTTPError(f"{status} error", response=response, server_message=message)


@pytest.mark.parametrize(("status", "outcome"), [(412, "conflict"), (409, "busy"), (429, "rate"),
                                                 (500, "unknown"), (502, "unknown"), (504, "unknown"),
                                                 (408, "unknown")])
def test_statuses_map_to_outcomes(status: int, outcome: str) -> None:
    assert hub_retry.classify(_error(status), 0.0, 0)[0] == outcome


def test_transport_failures_are_unknown_outcomes() -> None:
    assert hub_retry.classify(httpx2.RemoteProtocolError("disconnected"), 0.0, 0) == ("unknown", 0.0)
    assert hub_retry.classify(TimeoutError(), 0.0, 0) == ("unknown", 0.0)


@pytest.mark.parametrize("status", [400, 401, 403, 422])
def test_other_refusals_are_fatal(status: int) -> None:
    with pytest.raises(StoreError, match=str(status)):
        hub_retry.classify(_error(status, message="nope"), 0.0, 0)


def test_a_404_on_a_commit_means_a_path_it_deletes_is_gone_so_it_is_replanned() -> None:
    assert hub_retry.classify(_error(404, message="A file with this name doesn't exist"), 0.0, 0) == ("gone", 0.0)


@pytest.mark.parametrize(("status", "named"), [(401, True), (403, True), (400, False), (422, False)])
def test_a_refused_commit_names_the_token_only_when_the_answer_is_about_access(status: int, named: bool) -> None:
    with pytest.raises(StoreError) as info:
        hub_retry.classify(_error(status, message="nope"), 0.0, 0)
    assert str(info.value).startswith(f"the hub refused the commit with {status}: nope")
    assert ("HF_TOKEN" in str(info.value)) is named


def test_bugs_are_not_mistaken_for_network_errors() -> None:
    with pytest.raises(KeyError):
        hub_retry.classify(KeyError("bug"), 0.0, 0)
    with pytest.raises(StoreError):
        hub_retry.classify(ValueError("bad path"), 0.0, 0)


def test_retry_after_sources_in_order() -> None:
    assert hub_retry.classify(_error(429, {"Retry-After": "42"}), 0.0, 0) == ("rate", 42.0)
    assert hub_retry.retry_after_s({"RateLimit": '"api";r=0;t=77'}, "", 0.0, 0) == 77.0
    message = "You have exceeded the rate limit for repository commits (128 per hour). " \
              "You can retry this action in about 1 hour."
    assert hub_retry.retry_after_s({}, message, 0.0, 0) == 3600.0
    assert hub_retry.retry_after_s({}, "", 0.0, 0) == 60.0
    assert hub_retry.retry_after_s({}, "", 0.0, 3) == 480.0
    assert hub_retry.retry_after_s({}, "", 0.0, 30) == 3600.0


def test_a_quota_refusal_wrapped_in_a_500_still_waits() -> None:
    outcome, wait = hub_retry.classify(_error(500, message="rate limit ... retry this action in about 2 minutes"),
                                       0.0, 0)
    assert (outcome, wait) == ("unknown", 120.0)


def test_backoff_doubles_is_capped_and_never_zero() -> None:
    rng = random.Random(0)
    waits = [hub_retry.backoff_s(n, 1.0, rng) for n in range(1, 10)]
    assert all(w > 0 for w in waits)
    assert 0.5 <= waits[0] <= 1.0 and 4.0 <= waits[3] <= 8.0
    assert max(waits) <= 60.0
