"""%remote_jobs, %remote_job, %remote_stop and %remote_delete: jobs by id, also after a
kernel restart."""

from __future__ import annotations

import sys

from IPython.core.error import UsageError
from IPython.core.magic import line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import display

from jupyter_remote.kernel.magics.args import UsesRemote, one_line_errors


@magics_class
class JobMagics(UsesRemote):
    """List, follow, stop and delete the server's jobs."""

    _job_list = None  # the last %remote_jobs list: showing a new one stops it refreshing

    @line_magic
    def remote_jobs(self, line: str):
        """List the newest 100 jobs the server knows (older pages: the REST `before` cursor):
        status, tasks done/total, elapsed, autostop; it refreshes while shown (the next
        %remote_jobs replaces it).

        Example::

            %remote_jobs
        """
        from jupyter_remote.kernel.widgets import JobListWidget

        with one_line_errors():
            widget = JobListWidget(self.client)
            widget.refresh()
        if self._job_list is not None:
            self._job_list.close()
        self._job_list = widget
        display(widget)
        widget.start()

    @magic_arguments()
    @argument("job_id", help="The job's id (also after a kernel restart).")
    @argument("--logs", action="store_true", help="Print the task's log instead of a widget.")
    @argument("--follow", "-f", action="store_true", help="With --logs: until the task ends.")
    @argument("--task", type=int, default=0, help="Which task's log (default 0).")
    @line_magic
    def remote_job(self, line: str):
        """Reattach to a job by id: its status widget, or its log.

        Examples::

            %remote_job j-3fa2c1
            %remote_job j-3fa2c1 --logs --follow --task 2
        """
        from jupyter_remote.kernel.widgets import JobWidget

        args = parse_argstring(self.remote_job, line)
        with one_line_errors():
            client = self.client
            client.job(args.job_id)
            if args.logs:
                for chunk in client.job_logs(args.job_id, args.task, follow=args.follow):
                    sys.stdout.write(chunk.decode("utf-8", "replace"))
                    sys.stdout.flush()
                return
            widget = JobWidget(client, args.job_id, task=args.task)
            display(widget)
            widget.start()

    @line_magic
    def remote_stop(self, line: str):
        """Stop a job: running tasks are stopped, pending ones dropped.

        Example::

            %remote_stop j-3fa2c1
        """
        job_id = line.strip()
        if not job_id:
            raise UsageError("%remote_stop JOB_ID")
        with one_line_errors():
            job = self.client.stop_job(job_id)
        print(f"job {job_id}: {job['status']}")

    @line_magic
    def remote_delete(self, line: str):
        """Delete a finished job: its record, logs and saved outputs, on its nodes and here.

        The job must be final (stop it first); its id is never accepted again.

        Example::

            %remote_delete j-3fa2c1
        """
        job_id = line.strip()
        if not job_id or " " in job_id:
            raise UsageError("%remote_delete JOB_ID")
        with one_line_errors():
            self.client.delete_job(job_id)
        print(f"job {job_id}: deleted")
