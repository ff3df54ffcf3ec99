"""Kernel side of file transfers: local files packed into a streamed tar, downloads unpacked
as they arrive, with a progress bar (tqdm.auto) when a transfer takes more than a moment."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

from jupyter_remote.http.api import stream_chunks
from jupyter_remote.protocol.errors import BadRequest
from jupyter_remote.protocol.tarstream import Packed, local_size, unpack

BAR_AFTER = 16 << 20  # bytes: smaller uploads show no bar
BAR_DELAY = 1.0  # seconds: a download shows its bar only once it has run this long


def _bar(total: int | None, what: str, show: bool | None):
    from tqdm.auto import tqdm

    disable = show is False or (show is None and total is not None and total < BAR_AFTER)
    return tqdm(
        total=total,
        desc=what,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        disable=disable,
        delay=0 if show else BAR_DELAY,
        leave=False,
    )


def upload_body(local: str, remote: str, progress: bool | None) -> tuple[Iterable[bytes], object]:
    """The tar body for `local` (named after `remote`'s last part, which the agent renames
    or keeps as `docker cp` would), and its progress bar."""
    if not os.path.lexists(local):
        raise BadRequest(f"no such local file or directory: {local}", reason="local_not_found")
    bar = _bar(local_size(local), f"put {os.path.basename(local)}", progress)
    name = os.path.basename(os.path.abspath(local)) or "root"
    return Packed(local, name, bar.update), bar  # sized: sent with a Content-Length


def _counted(chunks: Iterable[bytes], bar) -> Iterator[bytes]:
    for chunk in chunks:
        bar.update(len(chunk))
        yield chunk


def download_into(resp, local: str, what: str, progress: bool | None) -> list[str]:
    """Unpack a tar response at `local` (into it, when it is a directory); names written."""
    bar = _bar(None, what, progress)
    try:
        return unpack(_counted(stream_chunks(resp, what), bar), local)
    finally:
        bar.close()
        resp.close()
