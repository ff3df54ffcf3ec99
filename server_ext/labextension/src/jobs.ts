// The panel's "Jobs" section: one compact row per job (status, tasks, elapsed, id), Stop while
// it runs, and Log: the job's first task, opened at its tail and followed.
import { showErrorMessage } from '@jupyterlab/apputils';
import { find, h, KeyedRows, setAttr, setText, show } from './dom';
import { requestAPI, requestBytes } from './request';
import { Section } from './section';
import { duration } from './time';

import type { components } from './api'; // generated from the server's OpenAPI

type IJob = components['schemas']['Job'];

const FINAL = ['completed', 'failed', 'degraded', 'stopped'];
const LOG_LINES = 500;

function finished(j: IJob): boolean {
  return !!j.finished_at || FINAL.includes(j.status);
}

function makeRow(j: IJob): HTMLElement {
  return h(
    'div',
    { class: 'jr-job jr-row', 'data-job': j.job_id },
    h(
      'div',
      { class: 'jr-line' },
      h('b', { class: 'jr-name' }),
      h('span', { class: 'jr-status' }),
      h('span', { class: 'jr-flags' }),
      h(
        'span',
        { class: 'jr-actions' },
        h('button', { class: 'jr-stop', 'data-job': j.job_id, title: 'Stop the job' }, 'Stop'),
        h('button', { class: 'jr-show-log', 'data-job': j.job_id, title: 'Follow its log' }, 'Log')
      )
    ),
    h(
      'div',
      { class: 'jr-meta' },
      h('span', { class: 'jr-tasks' }),
      ' · ',
      h('span', { class: 'jr-elapsed' }),
      ' · ',
      h('code', { class: 'jr-id' }, j.job_id)
    )
  );
}

function updateRow(row: HTMLElement, j: IJob): void {
  setText(find(row, '.jr-name'), j.name);
  setAttr(find(row, '.jr-name'), 'title', j.name);
  const status = find(row, '.jr-status');
  setText(status, j.status);
  setAttr(status, 'class', `jr-status jr-${j.status}`);
  const flags = [j.autostop ? 'autostop' : '', j.degraded ? `${j.tasks_lost} lost` : '']
    .filter(Boolean)
    .join(' · ');
  setText(find(row, '.jr-flags'), flags);
  setText(find(row, '.jr-tasks'), `${j.tasks_done}/${j.tasks_total} tasks`);
  setText(find(row, '.jr-elapsed'), duration(j.elapsed));
  // a finished job has nothing to stop: no Stop at all, not a disabled one
  show(find(row, '.jr-stop'), !finished(j));
}

/** Follows one task's log by byte offset: each refresh fetches only the new bytes. */
class LogView {
  readonly box: HTMLElement;
  private readonly head = h('span', { class: 'jr-log-title' });
  private readonly view = h('pre', { class: 'jr-log', tabindex: '0' });
  private readonly text = document.createTextNode('');
  private job: string | null = null;
  private offset = 0;
  private decoder = new TextDecoder();
  private pending = false;
  private opened = 0; // which open() a fetched chunk belongs to
  private readonly problem = h('div', { class: 'jr-log-problem' });

  constructor() {
    const close = h('button', { class: 'jr-close-log', title: 'Close the log' }, '✕');
    close.addEventListener('click', () => this.open(null));
    this.view.append(this.text);
    this.box = h(
      'div',
      { class: 'jr-log-box', hidden: '' },
      h('div', { class: 'jr-log-head' }, this.head, close),
      this.view,
      this.problem
    );
  }

  open(job: string | null): void {
    this.job = job;
    this.opened += 1;
    this.offset = 0;
    this.decoder = new TextDecoder();
    this.text.data = '';
    setText(this.problem, '');
    show(this.box, job !== null);
  }

  /** A slow or frozen node must not hold up the rest of the panel: this runs on its own. */
  followInBackground(jobs: IJob[]): void {
    const job = jobs.find(j => j.job_id === this.job);
    show(this.box, !!job);
    if (!job || !job.tasks[0]?.agent_job_id || this.pending) {
      return;
    }
    this.pending = true;
    setText(this.head, `${job.name} · task 0 · last ${LOG_LINES} lines`);
    const opened = this.opened;
    const path = `jobs/${encodeURIComponent(job.job_id)}/logs?task=0&offset=${this.offset}`;
    requestBytes(path, { signal: AbortSignal.timeout(10000) })
      .then(chunk => {
        if (this.opened === opened) {
          this.offset += chunk.length;
          this.append(this.decoder.decode(chunk, { stream: true }));
          setText(this.problem, '');
        }
      })
      .catch(error => setText(this.problem, `(${(error as Error).message})`))
      .finally(() => {
        this.pending = false;
      });
  }

  /**
   * New text goes at the end; the oldest lines past LOG_LINES go. Text.appendData and
   * deleteData keep a selection in the log. The view sticks to the tail unless the reader
   * scrolled up: it opens at the tail and follows it.
   */
  private append(chunk: string): void {
    if (!chunk) {
      return;
    }
    const view = this.view;
    const atTail = view.scrollTop + view.clientHeight >= view.scrollHeight - 8;
    this.text.appendData(chunk);
    const lines = this.text.data.split('\n');
    const excess = lines.length - 1 - LOG_LINES;
    if (excess > 0) {
      const cut = lines.slice(0, excess).join('\n').length + 1;
      this.text.deleteData(0, cut);
    }
    if (atTail) {
      view.scrollTop = view.scrollHeight;
    }
  }
}

/** The jobs' rows with Stop and Log; `changed` refreshes the panel after an action. */
export class JobsView {
  readonly section = new Section('jobs', 'Jobs');
  private readonly rows: KeyedRows<IJob>;
  private readonly empty = h('i', { class: 'jr-empty' }, 'No jobs yet.');
  readonly log = new LogView();

  constructor(private readonly changed: () => Promise<void>) {
    const list = h('div', { class: 'jr-rows' });
    this.rows = new KeyedRows(list, j => j.job_id, makeRow, updateRow);
    this.section.body.append(list, this.empty, this.log.box);
    list.addEventListener('click', event => void this.onClick(event));
  }

  /** The server lists the newest page first (GET jobs is paginated). */
  render(jobs: IJob[]): void {
    this.rows.render(jobs);
    show(this.empty, jobs.length === 0);
    this.section.setCount(jobs.length);
    this.log.followInBackground(jobs);
  }

  private async onClick(event: Event): Promise<void> {
    const target = event.target as HTMLButtonElement;
    const job = target.dataset.job;
    if (!job) {
      return;
    }
    if (target.classList.contains('jr-show-log')) {
      this.log.open(job);
    } else if (target.classList.contains('jr-stop')) {
      target.disabled = true;
      try {
        await requestAPI(`jobs/${encodeURIComponent(job)}/stop`, { method: 'POST', body: '{}' });
      } catch (error) {
        await showErrorMessage('Stop job failed', error as Error);
      } finally {
        target.disabled = false;
      }
    } else {
      return;
    }
    await this.changed();
  }
}
