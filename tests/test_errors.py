"""error_from_body: the one way every client reads an error answer."""

from __future__ import annotations

from jupyter_remote.protocol.errors import NotFound, RemoteError, error_from_body


def test_the_apis_json_error_keeps_its_class_reason_and_details():
    err = error_from_body(404, b'{"message": "no x", "reason": "x_missing", "id": "e1"}')
    assert isinstance(err, NotFound)
    assert (err.message, err.reason, err.details) == ("no x", "x_missing", {"id": "e1"})


def test_a_proxys_page_is_named_with_where_and_the_start_of_its_text():
    err = error_from_body(502, b"<html>bad gateway:</html>" + b"x" * 2000, "POST http://n1/v1")
    assert type(err) is RemoteError and err.status == 502
    assert err.message.startswith("POST http://n1/v1: HTTP 502: <html>bad gateway:</html>")
    assert len(err.message) < 600


def test_an_empty_answer_still_says_its_status():
    assert error_from_body(500, b"").message == "HTTP 500"
    assert error_from_body(503, b"[1, 2]").message == "HTTP 503: [1, 2]"
