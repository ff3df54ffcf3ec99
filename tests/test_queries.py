"""Listing queries: what a browser adds is ignored, anything else unknown is a 400."""

from __future__ import annotations

import pytest

from jupyter_remote.protocol.errors import BadRequest
from jupyter_remote.protocol.queries import ExecutionPageQuery, PageQuery, page_query


def test_jupyterlab_cache_buster_and_auth_parameters_are_ignored():
    # ServerConnection.makeRequest appends `?<ms timestamp>` to GETs
    query = page_query(PageQuery, {"1795517914015": [b""], "token": [b"t"], "limit": [b"7"]})
    assert query.limit == 7 and query.before is None


@pytest.mark.parametrize(
    "arguments, reason",
    [
        ({"1795517914015": [b"1"]}, "bad_1795517914015"),  # a value: not a cache-buster
        ({"colour": [b"red"]}, "bad_colour"),
        ({"limit": [b"5", b"6"]}, "bad_limit"),
        ({"limit": [b"0"]}, "bad_limit"),
        ({"before": [b"yesterday"]}, "bad_before"),
        ({"kernel_id": [b"a\nb"]}, "bad_kernel_id"),
    ],
)
def test_other_parameters_are_checked(arguments, reason):
    with pytest.raises(BadRequest) as refused:
        page_query(ExecutionPageQuery, arguments)
    assert refused.value.reason == reason
