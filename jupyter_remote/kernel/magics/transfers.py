"""%remote_put and %remote_get: files and directories in and out of this kernel's session
container, or out of a job task's saved outputs."""

from __future__ import annotations

from IPython.core.error import UsageError
from IPython.core.magic import line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from jupyter_remote.kernel.magics.args import UsesRemote, no_progress, one_line_errors


@magics_class
class TransferMagics(UsesRemote):
    """Copy files like `docker cp`, through the Jupyter server, streamed both ways."""

    def _owner(self) -> str:
        """The owner the %%remote cells of this kernel use: the same session container."""
        body: dict = {}
        self.remote._place(body, False)
        return body.get("kernel_id") or body["owner"]

    def _image(self, given: str | None) -> str | None:
        return given or self.remote.default_image or None

    @magic_arguments()
    @argument("--image", help="The session's image (default: as %%remote cells).")
    @no_progress
    @argument("local", help="Local file or directory.")
    @argument("remote", nargs="?", default=".", help="Where in the container (default: workdir).")
    @line_magic
    def remote_put(self, line: str) -> None:
        """Copy a local file or directory into this kernel's session container.

        A REMOTE that is an existing directory receives LOCAL inside it; otherwise LOCAL is
        written as REMOTE. Relative paths are under the container's working directory.

        Examples::

            %remote_put data.csv
            %remote_put ./inputs /work/inputs
        """
        args = parse_argstring(self.remote_put, line)
        progress = False if args.no_progress else None
        with one_line_errors():
            client = self.client
            owner, image = self._owner(), self._image(args.image)
            if owner == self.remote.owner:  # the magics' own session: made on first use
                client.create_session(owner=owner, **({"image": image} if image else {}))
            done = client.put_files(owner, args.local, args.remote, image, progress)
        print(f"[remote] put {args.local} -> {done['path']} ({_size(done['size'])})")

    @magic_arguments()
    @argument("--image", help="The session's image (default: as %%remote cells).")
    @argument("--job", help="Fetch a saved output of this job's task instead.")
    @argument("--task", type=int, default=0, help="The job's task index (0).")
    @no_progress
    @argument("remote", nargs="?", help="Container path, or the job task's output path/name.")
    @argument("local", nargs="?", default=".", help="Local destination (default: here).")
    @line_magic
    def remote_get(self, line: str) -> None:
        """Copy a file or directory out of this kernel's session (or a job task's outputs).

        Examples::

            %remote_get results.json
            %remote_get /work/out ./out
            %remote_get --job j-1234 --task 0 /out ./out
        """
        args = parse_argstring(self.remote_get, line)
        progress = False if args.no_progress else None
        with one_line_errors():
            client = self.client
            if args.job:
                names = client.get_output(args.job, args.task, args.remote, args.local, progress)
            else:
                if not args.remote:
                    raise UsageError("[remote] %remote_get needs REMOTE (a container path)")
                names = client.get_files(
                    self._owner(), args.remote, args.local, self._image(args.image), progress
                )
        what = args.remote or "output"
        print(f"[remote] got {what} -> {args.local} ({len(names)} entries)")


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
