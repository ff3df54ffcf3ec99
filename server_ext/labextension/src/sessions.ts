// The panel's "Sessions" section: each session container, whose notebook, where, how busy;
// a click on its name opens its notebook; Interrupt the running cell, Remove the session
// (after a confirmation).
import type { JupyterFrontEnd } from '@jupyterlab/application';
import { Dialog, showDialog, showErrorMessage } from '@jupyterlab/apputils';
import { find, h, KeyedRows, setAttr, setText, show } from './dom';
import { requestAPI } from './request';
import { Section } from './section';
import { bytes, duration } from './time';

import type { components } from './api'; // generated from the server's OpenAPI

type ISessionList = components['schemas']['SessionList'];
type ISession = components['schemas']['SessionView'];
type CommandRegistry = JupyterFrontEnd['commands'];

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
  return s.reason ?? s.state;
}

function usage(s: ISession): string {
  const cpu = s.cpu_percent === null ? '–' : `${s.cpu_percent.toFixed(0)}%`;
  const limit = s.memory_limit ? ` / ${bytes(s.memory_limit)}` : '';
  return `CPU ${cpu} · mem ${bytes(s.memory_bytes)}${limit}`;
}

function makeRow(s: ISession): HTMLElement {
  return h(
    'div',
    { class: 'jr-session jr-row', 'data-session': s.session_id },
    h(
      'div',
      { class: 'jr-line' },
      h('a', { class: 'jr-notebook' }),
      h('span', { class: 'jr-state' }),
      h(
        'span',
        { class: 'jr-actions' },
        h(
          'button',
          { class: 'jr-interrupt', title: 'Send SIGINT to the running cell' },
          'Interrupt'
        ),
        h(
          'button',
          {
            class: 'jr-remove-session',
            'data-session': s.session_id,
            title: 'Remove this session container'
          },
          'Remove'
        )
      )
    ),
    h('div', { class: 'jr-where' }),
    h(
      'div',
      { class: 'jr-meta' },
      h('span', { class: 'jr-activity' }),
      ' · ',
      h('span', { class: 'jr-usage' })
    )
  );
}

function updateRow(row: HTMLElement, s: ISession): void {
  // a notebook of this server opens on a click (or Enter); another owner is only named
  const name = find(row, '.jr-notebook');
  setText(name, title(s));
  setAttr(
    name,
    'title',
    s.notebook
      ? s.notebook.path
      : `${s.owner}: not a notebook of this Jupyter server (an API client or another kernel)`
  );
  setAttr(name, 'data-path', s.notebook?.path ?? null);
  setAttr(name, 'role', s.notebook ? 'link' : null);
  setAttr(name, 'tabindex', s.notebook ? '0' : null);
  const state = find(row, '.jr-state');
  setText(state, s.state);
  setAttr(state, 'class', `jr-state jr-${s.state.replace(/ /g, '-')}`);
  setAttr(state, 'title', s.reason ?? '');
  setText(find(row, '.jr-where'), `${s.node_id} · ${s.image} · ${s.path ?? '?'}`);
  setText(find(row, '.jr-activity'), activity(s));
  setText(find(row, '.jr-usage'), usage(s));
  const interrupt = find<HTMLButtonElement>(row, '.jr-interrupt');
  setAttr(interrupt, 'data-execution', s.running?.execution_id ?? '');
  interrupt.disabled = !(s.state === 'running' && s.running?.execution_id);
}

/** Renders the sessions into their section and carries out its buttons' actions. */
export class SessionsView {
  readonly section = new Section('sessions', 'Sessions');
  private sessions: ISession[] = [];
  private pending = false;
  private readonly rows: KeyedRows<ISession>;
  private readonly empty = h(
    'i',
    { class: 'jr-empty' },
    "No sessions. A notebook's first ",
    h('code', {}, '%%remote'),
    ' cell starts one.'
  );
  private readonly problem = h('div', { class: 'jr-problem' });

  constructor(
    private readonly commands: CommandRegistry,
    private readonly changed: () => Promise<void>
  ) {
    const list = h('div', { class: 'jr-rows' });
    this.rows = new KeyedRows(list, s => s.session_id, makeRow, updateRow);
    show(this.empty, false);
    show(this.problem, false);
    this.section.body.append(this.problem, list, this.empty);
    list.addEventListener('click', event => void this.onClick(event));
    list.addEventListener('keydown', event => {
      if (event.key === 'Enter') {
        void this.onClick(event);
      }
    });
  }

  /** One refresh; a slow node must not hold up the rest of the panel, so it runs alone. */
  refreshInBackground(): void {
    if (this.pending) {
      return;
    }
    this.pending = true;
    requestAPI<ISessionList>('sessions', { signal: AbortSignal.timeout(20000) })
      .then(answer => {
        this.render(answer.sessions);
        show(this.problem, false);
      })
      .catch(error => {
        setText(this.problem, `${(error as Error).message}`);
        show(this.problem, true);
      })
      .finally(() => {
        this.pending = false;
      });
  }

  render(sessions: ISession[]): void {
    this.sessions = sessions;
    this.rows.render(sessions);
    show(this.empty, sessions.length === 0);
    this.section.setCount(sessions.length);
  }

  private async onClick(event: Event): Promise<void> {
    const target = event.target as HTMLElement;
    if (target.classList.contains('jr-notebook')) {
      const path = target.dataset.path;
      try {
        if (path) {
          await this.commands.execute('docmanager:open', { path });
        }
      } catch (error) {
        await showErrorMessage(`Open ${path} failed`, error as Error);
      }
      return;
    }
    if (event.type !== 'click') {
      return; // Enter on a button clicks it already
    }
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
