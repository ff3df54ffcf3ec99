// The panel's "Nodes" section: one compact row per node (state, CPU / memory / disk, a bar
// per GPU with who holds it, running work, warnings), ✕ to remove one after a confirmation,
// and the form that adds one.
import { Dialog, showDialog, showErrorMessage } from '@jupyterlab/apputils';
import { find, h, KeyedRows, setAttr, setText, show, showError } from './dom';
import { requestAPI } from './request';
import { Section } from './section';
import { agoFrom } from './time';

import type { components } from './api'; // generated from the server's OpenAPI

type INode = components['schemas']['Node'];

const BARS: [keyof INode, string][] = [
  ['cpu', 'CPU'],
  ['memory', 'mem'],
  ['disk', 'disk']
];

/** One GPU of the agent's /v1/resources `gpus` (docs/gpus.md). */
interface IGpu {
  index: number;
  model?: string | null;
  memory_used?: number | null;
  memory_total?: number | null;
  utilization?: number | null;
  held_by?: string[];
}

interface IGpus {
  count?: number;
  free?: number;
  devices?: IGpu[];
}

/** The node's GPUs, when its answer carries them (agents from before GPUs do not). */
function gpusOf(n: INode): IGpus | null {
  return (n as unknown as { gpus?: IGpus | null }).gpus ?? null;
}

/** What a GPU's bar shows: utilisation, else memory in use, else null (index only). */
function gpuPercent(g: IGpu): number | null {
  if (g.utilization !== null && g.utilization !== undefined) {
    return g.utilization;
  }
  if (g.memory_used !== null && g.memory_used !== undefined && g.memory_total) {
    return (100 * g.memory_used) / g.memory_total;
  }
  return null;
}

function updateGpus(box: HTMLElement, gpus: IGpus | null): void {
  const devices = gpus?.devices ?? [];
  while (box.children.length > devices.length) {
    box.lastElementChild?.remove();
  }
  while (box.children.length < devices.length) {
    box.append(h('div', { class: 'jr-gpu' }, makeBar('gpu'), h('span', { class: 'jr-gpu-holder' })));
  }
  devices.forEach((g, i) => {
    const row = box.children[i] as HTMLElement;
    const bar = find(row, '.jr-bar');
    const label = `gpu${g.index}`;
    const held = g.held_by ?? [];
    const percent = gpuPercent(g);
    updateBar(bar, label, percent ?? (held.length ? 100 : 0));
    setText(find(bar, '.jr-bar-label'), label);
    if (percent === null) {
      setText(find(bar, '.jr-bar-figure'), '');
    }
    setAttr(bar, 'title', `${g.model ?? 'GPU'} ${label}: ${held.length ? held.join(', ') : 'free'}`);
    setText(find(row, '.jr-gpu-holder'), held.length ? held.join(', ') : 'free');
  });
  show(box, devices.length > 0);
}

function makeBar(label: string): HTMLElement {
  return h(
    'div',
    { class: 'jr-bar', 'data-bar': label },
    h('span', { class: 'jr-bar-label' }, label),
    h('div', { class: 'jr-bar-track' }, h('div', { class: 'jr-bar-fill' })),
    h('span', { class: 'jr-bar-figure' })
  );
}

function updateBar(bar: HTMLElement, label: string, percent?: number | null): void {
  const value = percent ?? 0;
  const level = value > 90 ? 'high' : value > 75 ? 'mid' : 'low';
  const fill = find(bar, '.jr-bar-fill');
  setAttr(bar, 'title', `${label} ${value.toFixed(0)}%`);
  setAttr(fill, 'class', `jr-bar-fill jr-${level}`);
  fill.style.width = `${value}%`;
  setText(find(bar, '.jr-bar-figure'), `${value.toFixed(0)}%`);
}

function makeRow(n: INode): HTMLElement {
  return h(
    'div',
    { class: 'jr-node jr-row', 'data-node': n.node_id },
    h(
      'div',
      { class: 'jr-line' },
      h('b', { class: 'jr-name', title: n.node_id }, n.node_id),
      h('span', { class: 'jr-state' }),
      h('span', { class: 'jr-running' }),
      h('button', { class: 'jr-remove', 'data-node': n.node_id, title: 'Remove from the pool' }, '✕')
    ),
    h('div', { class: 'jr-labels', title: 'node labels: %%remote --on LABEL=VALUE places work by them' }),
    h('div', {
      class: 'jr-warnings',
      title: 'busy: still takes work; new work prefers other nodes'
    }),
    h('div', { class: 'jr-seen' }),
    h('div', { class: 'jr-bars' }, ...BARS.map(([, label]) => makeBar(label))),
    h('div', { class: 'jr-gpus' })
  );
}

function updateRow(row: HTMLElement, n: INode): void {
  const state = find(row, '.jr-state');
  setText(state, n.state);
  setAttr(state, 'class', `jr-state jr-${n.state}`);
  setAttr(state, 'title', `${n.reason} · last seen ${agoFrom(n.last_seen_at)}`);
  const gpus = gpusOf(n);
  const free = gpus?.count ? ` · ${gpus.free ?? 0} of ${gpus.count} GPUs free` : '';
  setText(find(row, '.jr-running'), `${n.running_executions} running${free}`);
  updateGpus(find(row, '.jr-gpus'), gpus);
  const labels = Object.entries(n.labels ?? {}).map(([k, v]) => `${k}=${v}`);
  const labelRow = find(row, '.jr-labels');
  show(labelRow, labels.length > 0);
  setText(labelRow, labels.join(' · '));
  // Why a node is busy: it still takes work, so a warning, not an error.
  const warnings = find(row, '.jr-warnings');
  const list = n.warnings ?? [];
  show(warnings, list.length > 0);
  setText(warnings, list.map(w => `⚠ ${w}`).join('\n'));
  // A node that stopped answering says since when ("last seen 2 min ago").
  const seen = find(row, '.jr-seen');
  const silent = ['suspect', 'lost', 'unknown'].includes(n.state);
  show(seen, silent);
  setText(seen, silent ? `last seen ${agoFrom(n.last_seen_at)}` : '');
  BARS.forEach(([key, label]) => {
    const sample = n[key] as { percent?: number | null } | null | undefined;
    updateBar(find(row, `.jr-bar[data-bar="${label}"]`), label, sample?.percent);
  });
}

/** The nodes' rows, their ✕ and the add form; `changed` refreshes the panel after an action. */
export class NodesView {
  readonly section = new Section('nodes', 'Nodes');
  private readonly rows: KeyedRows<INode>;
  private readonly empty = h('i', { class: 'jr-empty' }, 'No nodes. Add an agent below.');
  private readonly errors = h('div', { class: 'jr-add-errors' });

  constructor(private readonly changed: () => Promise<void>) {
    const list = h('div', { class: 'jr-rows' });
    this.rows = new KeyedRows(list, n => n.node_id, makeRow, updateRow);
    const form = h(
      'form',
      { class: 'jr-add' },
      h('input', { name: 'url', placeholder: 'http://host:9527', 'aria-label': 'agent URL' }),
      h('input', { name: 'token', placeholder: 'token', type: 'password', 'aria-label': 'token' }),
      h('button', { type: 'submit' }, 'Add')
    ) as HTMLFormElement;
    this.section.body.append(list, this.empty, form, this.errors);
    list.addEventListener('click', event => void this.onClick(event));
    form.addEventListener('submit', event => void this.onAdd(event, form));
  }

  render(nodes: INode[]): void {
    this.rows.render(nodes);
    show(this.empty, nodes.length === 0);
    this.section.setCount(nodes.length);
  }

  private async onClick(event: Event): Promise<void> {
    const target = event.target as HTMLElement;
    const node = target.dataset.node;
    if (!target.classList.contains('jr-remove') || !node) {
      return;
    }
    const answer = await showDialog({
      title: `Remove node ${node} from the pool?`,
      body:
        'New cells and jobs are no longer placed on it, and it does not join again by ' +
        'itself. Its agent keeps running; the form below adds it back with its URL and token.',
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Remove' })]
    });
    if (!answer.button.accept) {
      return;
    }
    try {
      await requestAPI(`nodes/${encodeURIComponent(node)}`, { method: 'DELETE' });
    } catch (error) {
      await showErrorMessage('Remove node failed', error as Error);
    }
    await this.changed();
  }

  /** A refused agent's reason stays under the form until dismissed (or the next Add). */
  private async onAdd(event: Event, form: HTMLFormElement): Promise<void> {
    event.preventDefault();
    const url = (form.elements.namedItem('url') as HTMLInputElement).value.trim();
    const token = (form.elements.namedItem('token') as HTMLInputElement).value.trim();
    const button = find<HTMLButtonElement>(form, 'button');
    button.disabled = true;
    this.errors.replaceChildren();
    try {
      await requestAPI('nodes', {
        method: 'POST',
        body: JSON.stringify({ url, token: token || null })
      });
      form.reset();
    } catch (error) {
      showError(this.errors, `Add node: ${(error as Error).message}`);
    } finally {
      button.disabled = false;
    }
    await this.changed();
  }
}
