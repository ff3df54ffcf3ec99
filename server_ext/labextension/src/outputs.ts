// What a remote cell's output holds besides its streams: the footer (the kernel writes the
// same one: jupyter_remote/kernel/footer.py) and a detached job's live view.
import { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { Widget } from '@lumino/widgets';
import { requestAPI } from './request';

export const FOOTER_KEY = 'jupyter_remote';
export const JOB_MIME = 'application/vnd.jupyter-remote.job+json';
const JOB_FINAL = ['completed', 'failed', 'degraded', 'stopped'];

/** 0.4 s, 12 s, 2 min 3 s, 1 h 5 min: as the kernel's footer says it. */
export function durationText(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined) {
    return '? s';
  }
  if (seconds < 10) {
    return `${seconds.toFixed(1)} s`;
  }
  const whole = Math.round(seconds);
  if (whole < 60) {
    return `${whole} s`;
  }
  if (whole < 3600) {
    const rest = whole % 60;
    return rest ? `${Math.floor(whole / 60)} min ${rest} s` : `${Math.floor(whole / 60)} min`;
  }
  return `${Math.floor(whole / 3600)} h ${Math.floor((whole % 3600) / 60)} min`;
}

export function footerLine(
  node: string | null | undefined,
  image: string | null | undefined,
  duration: number | null | undefined,
  returncode: number,
  status: string | null | undefined
): string {
  const ended =
    !status || status === 'completed' ? `exit ${returncode}` : `exit ${returncode} (${status})`;
  return '[remote] ' + [node ?? '?', image ?? '?', durationText(duration), ended].join(' · ');
}

interface JobModel {
  job_id: string;
  name: string;
  status: string;
  tasks_done: number;
  tasks_total: number;
  elapsed: number;
}

/** A detached job, as the kernel's job widget shows it, after a reload: status, tasks,
 * elapsed time, refreshed every 2 s until it ends, and Stop while it runs. */
export class JobView extends Widget implements IRenderMime.IRenderer {
  private timer = 0;
  private readonly text = document.createElement('span');
  private readonly button = document.createElement('button');

  constructor() {
    super();
    this.addClass('jr-job-view');
    this.button.textContent = 'Stop';
    this.button.className = 'jp-Button jp-mod-styled jp-mod-warn jr-job-stop';
    this.node.append(this.text, this.button);
  }

  async renderModel(model: IRenderMime.IMimeModel): Promise<void> {
    const jobId = String((model.data[JOB_MIME] as any)?.job_id ?? '');
    this.node.dataset.jobId = jobId;
    this.button.onclick = async () => {
      this.button.disabled = true;
      try {
        await requestAPI(`jobs/${encodeURIComponent(jobId)}/stop`, { method: 'POST' });
      } catch (error) {
        this.text.textContent = `[remote] job ${jobId}: stopping failed: ${error}`;
      }
      await this.refresh(jobId);
    };
    await this.refresh(jobId);
  }

  private async refresh(jobId: string): Promise<void> {
    window.clearTimeout(this.timer);
    if (this.isDisposed) {
      return;
    }
    let final = false;
    try {
      const job = await requestAPI<JobModel>(`jobs/${encodeURIComponent(jobId)}`);
      final = JOB_FINAL.includes(job.status);
      this.text.textContent =
        `[remote] job ${job.job_id} (${job.name}): ${job.status} · ` +
        `${job.tasks_done}/${job.tasks_total} tasks · ${durationText(job.elapsed)}`;
      this.button.style.display = final ? 'none' : '';
    } catch (error) {
      this.text.textContent = `[remote] job ${jobId}: ${error}`;
    }
    if (!final) {
      this.timer = window.setTimeout(() => void this.refresh(jobId), 2000);
    }
  }

  dispose(): void {
    window.clearTimeout(this.timer);
    super.dispose();
  }
}

export const jobRendererFactory: IRenderMime.IRendererFactory = {
  safe: true,
  mimeTypes: [JOB_MIME],
  defaultRank: 10,
  createRenderer: () => new JobView()
};
