// The panel's "Sessions" section: each session container, whose notebook, where, how busy;
// Interrupt the running cell, Remove the session (after a confirmation).
import { Dialog, showDialog, showErrorMessage } from '@jupyterlab/apputils';
import { requestAPI } from './request';
import { bytes, duration } from './time';

import type { components } from './api'; // generated from the server's OpenAPI

type ISessionList = components['schemas']['SessionList'];
type ISession = components['schemas']['SessionView'];

function esc(text: unknown): string {
  const div = document.createElement('div');
  div.textContent = String(text);
  return div.innerHTML;
}

function title(s: ISession): string {
  return s.notebook ? s.notebook.name : `owner ${s.owner}`;
}

function activity(s: ISession): string {
  if (s.state === 'running') {
    const elapsed = s.running?.elapsed;
    return elapsed === null || elapsed === undefined
      ? 'running a cell started elsewhere'
      : `running for ${duration(elapsed)}`;
  }
  if (s.state === 'idle') {
    if (s.idle_for === null) {
      return 'idle';
    }
    return s.idle_for < 5 ? 'idle since just now' : `idle for ${duration(s.idle_for)}`;
  }
  return esc(s.reason ?? s.state);
}

function usage(s: ISession): string {
  const cpu = s.cpu_percent === null ? '–' : `${s.cpu_percent.toFixed(0)}%`;
  const limit = s.memory_limit ? ` / ${bytes(s.memory_limit)}` : '';
  return `CPU ${cpu} · mem ${bytes(s.memory_bytes)}${limit}`;
}

function row(s: ISession): string {
  const hover = s.notebook
    ? s.notebook.path
    : `${s.owner}: not a notebook of this Jupyter server (an API client or another kernel)`;
  const state = s.state.replace(/ /g, '-');
  const canInterrupt = s.state === 'running' && !!s.running?.execution_id;
  return `<div class="jr-session" data-session="${esc(s.session_id)}">
    <div><b class="jr-notebook" title="${esc(hover)}">${esc(title(s))}</b>
      <span class="jr-state jr-${esc(state)}" title="${esc(s.reason ?? '')}">${esc(s.state)}</span></div>
    <div class="jr-where">${esc(s.node_id)} · <code>${esc(s.image)}</code> · ${esc(s.path ?? '?')}</div>
    <div class="jr-usage">${usage(s)}</div>
    <div class="jr-activity">${activity(s)}</div>
    <button class="jr-interrupt" data-execution="${esc(s.running?.execution_id ?? '')}"
      title="Send SIGINT to the running cell" ${canInterrupt ? '' : 'disabled'}>Interrupt</button>
    <button class="jr-remove-session" data-session="${esc(s.session_id)}"
      title="Remove this session container">Remove</button></div>`;
}

/** Renders the sessions into `body` and carries out its buttons' actions. */
export class SessionsView {
  private sessions: ISession[] = [];
  private pending = false;

  constructor(
    private readonly body: HTMLElement,
    private readonly changed: () => Promise<void>
  ) {
    body.addEventListener('click', event => void this.onClick(event));
  }

  /** One refresh; a slow node must not hold up the rest of the panel, so it runs alone. */
  refreshInBackground(): void {
    if (this.pending) {
      return;
    }
    this.pending = true;
    requestAPI<ISessionList>('sessions', { signal: AbortSignal.timeout(20000) })
      .then(answer => this.render(answer.sessions))
      .catch(error => {
        this.body.innerHTML = `<i>${esc((error as Error).message)}</i>`;
      })
      .finally(() => {
        this.pending = false;
      });
  }

  render(sessions: ISession[]): void {
    this.sessions = sessions;
    this.body.innerHTML = sessions.length
      ? sessions.map(row).join('')
      : '<i>No sessions. A notebook\'s first <code>%%remote</code> cell starts one.</i>';
  }

  private async onClick(event: Event): Promise<void> {
    const target = event.target as HTMLElement;
    try {
      if (target.classList.contains('jr-interrupt') && target.dataset.execution) {
        (target as HTMLButtonElement).disabled = true;
        await requestAPI(`executions/${encodeURIComponent(target.dataset.execution)}/cancel`, {
          method: 'POST',
          body: JSON.stringify({ signal: 'SIGINT' })
        });
      } else if (target.classList.contains('jr-remove-session')) {
        const session = this.sessions.find(s => s.session_id === target.dataset.session);
        if (!session || !(await this.confirmRemove(session))) {
          return;
        }
        const owner = encodeURIComponent(session.owner);
        const image = encodeURIComponent(session.image);
        await requestAPI(`sessions/${owner}?image=${image}`, { method: 'DELETE' });
      } else {
        return;
      }
    } catch (error) {
      const what = target.classList.contains('jr-interrupt') ? 'Interrupt' : 'Remove session';
      await showErrorMessage(`${what} failed`, error as Error);
    }
    await this.changed();
  }

  private async confirmRemove(s: ISession): Promise<boolean> {
    const result = await showDialog({
      title: `Remove the session of ${title(s)}?`,
      body:
        `Its ${s.image} container on ${s.node_id} is deleted, with its files and Python ` +
        'variables. A running cell is stopped. The next %%remote cell starts a new session.',
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Remove' })]
    });
    return result.button.accept;
  }
}
