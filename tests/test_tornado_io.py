"""The tornado internals jupyter_remote.http.tornado_io relies on are still there.

pyproject allows tornado>=6.3: a release that moves one of these names must fail here,
not fall back silently (uploads 2-3x slower) or break a transfer.
"""

from __future__ import annotations

import inspect

import tornado
from tornado import web
from tornado.http1connection import HTTP1Connection

from jupyter_remote.http import tornado_io


def test_the_installed_tornado_is_a_6x_release_pyproject_allows():
    major, minor = tornado.version_info[:2]
    assert major == 6 and minor >= 3, tornado.version


def test_the_connection_internals_used_for_uploads_exist():
    names = dict(inspect.getmembers(HTTP1Connection))
    for name in ("_read_fixed_body", "_deliver_body"):
        assert callable(names.get(name)), name
    params = inspect.signature(HTTP1Connection.__init__).parameters
    assert "params" in params
    source = inspect.getsource(HTTP1Connection)
    assert "self._chunking_output" in source and "self.params" in source
    assert set(tornado_io.PRIVATE_CONNECTION_NAMES) <= {
        "params",
        "_deliver_body",
        "_read_fixed_body",
        "_chunking_output",
    }


def test_the_handler_internals_used_for_downloads_exist():
    source = inspect.getsource(web.RequestHandler)
    for name in tornado_io.PRIVATE_HANDLER_NAMES:
        assert f"self.{name}" in source, name
    assert "self._gzipping" in inspect.getsource(web.GZipContentEncoding)
