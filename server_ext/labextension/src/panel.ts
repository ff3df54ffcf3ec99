// The "Remote" sidebar: nodes, sessions, jobs (with Stop and a followed log), engine states.
import { showErrorMessage } from '@jupyterlab/apputils';
import { Poll } from '@lumino/polling';
import { Widget } from '@lumino/widgets';
import { RemoteApiError, requestAPI } from './request';
import { SessionsView } from './sessions';
import { ago, agoFrom, duration } from './time';

import type { components } from './api'; // generated from the server's OpenAPI (jlpm build:types)

type INode = components['schemas']['Node'];
type IJob = components['schemas']['Job'];
type IEngineStates = components['schemas']['EngineStates'];


function esc(text: unknown): string {
  const div = document.createElement('div');
  div.textContent = String(text);
  return div.innerHTML;
}

function bar(label: string, percent?: number | null): string {
  const value = percent ?? 0;
  const level = value > 90 ? 'high' : value > 75 ? 'mid' : 'low';
  return `<div class="jr-bar" title="${label} ${value.toFixed(0)}%"><span>${label}</span>
    <div class="jr-bar-track"><div class="jr-bar-fill jr-${level}" style="width:${value}%"></div></div>
    <span>${value.toFixed(0)}%</span></div>`;
}

/** Why a node is busy: it still takes work, so a warning, not an error. */
function warnings(n: INode): string {
  const list = n.warnings ?? [];
  return list.length
    ? `<div class="jr-warnings" title="busy: still takes work; new work prefers other nodes">${list
        .map(w => `<div>⚠ ${esc(w)}</div>`)
        .join('')}</div>`
    : '';
}

/** A node that stopped answering says since when ("last seen 2 min ago"). */
function seen(n: INode): string {
  return ['suspect', 'lost', 'unknown'].includes(n.state)
    ? `<div class="jr-seen">last seen ${agoFrom(n.last_seen_at)}</div>`
    : '';
}

/** The panel: one Poll refreshes everything; it stands by while the panel is hidden. */
export class RemotePanel extends Widget {
  readonly poll: Poll;
  private logJob: string | null = null;
  private logOffset = 0;
  private logText = '';
  private stopped = false;
  private logPending = false;
  private readonly sessions: SessionsView;

  constructor() {
    super();
    this.id = 'jupyter-remote-panel';
    this.addClass('jr-panel');
    this.node.innerHTML = `
      <div class="jr-message" hidden></div>
      <section class="jr-nodes"><h3>Nodes</h3><div class="jr-body"></div>
        <form class="jr-add"><input name="url" placeholder="http://host:9527" />
          <input name="token" placeholder="token" type="password" />
          <button type="submit">Add</button></form></section>
      <section class="jr-sessions"><h3>Sessions</h3><div class="jr-body"></div></section>
      <section class="jr-jobs"><h3>Jobs</h3><div class="jr-body"></div>
        <pre class="jr-log" hidden></pre></section>
      <section class="jr-engines"><h3>Engine states</h3><div class="jr-body"></div></section>`;
    this.node.addEventListener('click', event => void this.onClick(event));
    this.node
      .querySelector('form.jr-add')!
      .addEventListener('submit', event => void this.onAdd(event));
    this.sessions = new SessionsView(this.section('sessions'), () => this.poll.refresh());
    this.poll = new Poll({
      factory: () => this.refresh(),
      frequency: { interval: 2000, backoff: true, max: 30000 },
      standby: () => !this.isVisible || 'when-hidden',
      name: 'jupyter-remote:panel'
    });
  }

  private section(name: string): HTMLElement {
    return this.node.querySelector(`.jr-${name} .jr-body`) as HTMLElement;
  }

  /** One refresh; a missing server extension stops polling with one message. */
  async refresh(): Promise<void> {
    if (this.stopped) {
      return;
    }
    try {
      const [nodes, jobs] = await Promise.all([
        requestAPI<{ nodes: INode[] }>('nodes'),
        requestAPI<{ jobs: IJob[] }>('jobs')
      ]);
      this.showMessage('');
      this.renderNodes(nodes.nodes);
      this.renderJobs(jobs.jobs);
      this.sessions.refreshInBackground();
      await this.refreshEngines();
      this.followLogInBackground(jobs.jobs);
    } catch (error) {
      if (error instanceof RemoteApiError && error.status === 404) {
        this.stopped = true;
        this.showMessage(
          'The jupyter-remote server extension is not enabled in this Jupyter server ' +
            '(jupyter server extension enable jupyter_remote_server), so this panel has ' +
            'nothing to show.'
        );
        void this.poll.stop();
        return;
      }
      this.showMessage(`${(error as Error).message}`);
      throw error; // the Poll backs off
    }
  }

  private showMessage(text: string): void {
    const box = this.node.querySelector('.jr-message') as HTMLElement;
    box.hidden = !text;
    box.textContent = text;
  }

  private renderNodes(nodes: INode[]): void {
    this.section('nodes').innerHTML = nodes.length
      ? nodes
          .map(
            n => `<div class="jr-node" data-node="${esc(n.node_id)}">
        <div><b>${esc(n.node_id)}</b>
          <span class="jr-state jr-${esc(n.state)}"
            title="${esc(n.reason)} · last seen ${agoFrom(n.last_seen_at)}">${esc(n.state)}</span>
          <button class="jr-remove" data-node="${esc(n.node_id)}" title="Remove from the pool">✕</button></div>
        ${warnings(n)}${seen(n)}
        ${bar('CPU', n.cpu?.percent)}${bar('mem', n.memory?.percent)}${bar('disk', n.disk?.percent)}
        <div class="jr-running">${n.running_executions} running</div></div>`
          )
          .join('')
      : '<i>No nodes. Add an agent below.</i>';
  }

  private renderJobs(jobs: IJob[]): void {
    // the server lists the newest page first (GET jobs is paginated)
    this.section('jobs').innerHTML = jobs.length
      ? jobs
          .map(
            j => `<div class="jr-job" data-job="${esc(j.job_id)}">
        <div><b>${esc(j.name)}</b> <span class="jr-status jr-${esc(j.status)}">${esc(j.status)}</span>
          ${j.autostop ? '<span class="jr-flag">autostop</span>' : ''}
          ${j.degraded ? `<span class="jr-flag jr-degraded">${j.tasks_lost} lost</span>` : ''}</div>
        <div>${j.tasks_done}/${j.tasks_total} tasks · ${duration(j.elapsed)} ·
          <code>${esc(j.job_id)}</code></div>
        <button class="jr-stop" data-job="${esc(j.job_id)}" ${j.finished_at ? 'disabled' : ''}>Stop</button>
        <button class="jr-show-log" data-job="${esc(j.job_id)}">Log</button></div>`
          )
          .join('')
      : '<i>No jobs yet.</i>';
  }

  private async refreshEngines(): Promise<void> {
    const body = this.section('engines');
    try {
      const answer = await requestAPI<IEngineStates>('engine-states');
      if (!answer.enabled) {
        const why = answer.message ?? 'the engine-state gateway is off';
        body.innerHTML = `<i class="jr-off">${esc(why)}</i>`;
        return;
      }
      const engines = answer.engines ?? [];
      body.innerHTML = engines.length
        ? `<table><tr><th>engine</th><th>reported</th><th>latency</th><th>pending</th><th>KV</th></tr>${engines
            .map(
              e => `<tr class="${e.stale ? 'jr-stale' : ''}" title="${e.stale ? 'stale' : ''}">
          <td>${esc(e.engine_id)}</td><td>${ago(e.age_ms / 1000)}</td><td>${e.latency_pred_ms.toFixed(0)} ms</td>
          <td>${e.pending_tokens_total}</td>
          <td>${e.kv_cache_utilization === null ? '-' : (e.kv_cache_utilization * 100).toFixed(0) + '%'}</td></tr>`
            )
            .join('')}</table>`
        : '<i>No engine has reported yet.</i>';
    } catch (error) {
      body.innerHTML = `<i>${esc((error as Error).message)}</i>`;
    }
  }

  /** A slow or frozen node must not hold up the rest of the panel. */
  private followLogInBackground(jobs: IJob[]): void {
    if (this.logPending) {
      return;
    }
    this.logPending = true;
    this.followLog(jobs)
      .catch(error => {
        const view = this.node.querySelector('.jr-log') as HTMLElement;
        view.textContent = `${this.logText}\n(${(error as Error).message})`;
      })
      .finally(() => {
        this.logPending = false;
      });
  }

  /** The log view follows a job's first task by offset: only new bytes are fetched. */
  private async followLog(jobs: IJob[]): Promise<void> {
    const view = this.node.querySelector('.jr-log') as HTMLElement;
    const job = jobs.find(j => j.job_id === this.logJob);
    view.hidden = !job;
    if (!job || !job.tasks[0]?.agent_job_id) {
      return;
    }
    const chunk = await requestAPI<string>(
      `jobs/${encodeURIComponent(job.job_id)}/logs?task=0&offset=${this.logOffset}`,
      { signal: AbortSignal.timeout(10000) },
      true
    );
    this.logOffset += new TextEncoder().encode(chunk).length;
    this.logText = (this.logText + chunk).split('\n').slice(-200).join('\n');
    view.textContent = `${job.name} (task 0)\n${this.logText}`;
  }

  /** A failed action shows a JupyterLab error dialog (never an unhandled rejection). */
  private async onClick(event: Event): Promise<void> {
    try {
      await this.act(event.target as HTMLElement);
    } catch (error) {
      await showErrorMessage('Remote panel: the action failed', error as Error);
      await this.poll.refresh();
    }
  }

  private async act(target: HTMLElement): Promise<void> {
    const job = target.dataset.job;
    const node = target.dataset.node;
    if (target.classList.contains('jr-stop') && job) {
      (target as HTMLButtonElement).disabled = true;
      await requestAPI(`jobs/${encodeURIComponent(job)}/stop`, { method: 'POST', body: '{}' });
      await this.poll.refresh();
    } else if (target.classList.contains('jr-show-log') && job) {
      this.logJob = job;
      this.logOffset = 0;
      this.logText = '';
      await this.poll.refresh();
    } else if (target.classList.contains('jr-remove') && node) {
      await requestAPI(`nodes/${encodeURIComponent(node)}`, { method: 'DELETE' });
      await this.poll.refresh();
    }
  }

  private async onAdd(event: Event): Promise<void> {
    event.preventDefault();
    const form = event.target as HTMLFormElement;
    const url = (form.elements.namedItem('url') as HTMLInputElement).value.trim();
    const token = (form.elements.namedItem('token') as HTMLInputElement).value.trim();
    try {
      await requestAPI('nodes', {
        method: 'POST',
        body: JSON.stringify({ url, token: token || null })
      });
      form.reset();
      this.showMessage('');
    } catch (error) {
      this.showMessage((error as Error).message);
    }
    await this.poll.refresh();
  }

  protected onAfterShow(): void {
    void this.poll.refresh();
  }

  dispose(): void {
    this.poll.dispose();
    super.dispose();
  }
}
