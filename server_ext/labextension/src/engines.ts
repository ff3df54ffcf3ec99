// The panel's "Engine states" section: the latest state per inference engine from the
// server's gateway. The whole section is hidden while the gateway is off.
import { h, KeyedRows, setAttr, setText, show } from './dom';
import { requestAPI } from './request';
import { Section } from './section';
import { ago } from './time';

import type { components } from './api'; // generated from the server's OpenAPI

type IEngine = components['schemas']['Engine'];
type IEngineStates = components['schemas']['EngineStates'];

const COLUMNS = ['engine', 'reported', 'latency', 'pending', 'KV'];

function makeRow(e: IEngine): HTMLElement {
  return h('tr', { 'data-engine': e.engine_id }, ...COLUMNS.map(() => h('td')));
}

function updateRow(row: HTMLElement, e: IEngine): void {
  setAttr(row, 'class', e.stale ? 'jr-stale' : null);
  setAttr(row, 'title', e.stale ? 'stale: older than the stale threshold' : null);
  const kv = e.kv_cache_utilization;
  const cells = [
    e.engine_id,
    ago(e.age_ms / 1000),
    `${e.latency_pred_ms.toFixed(0)} ms`,
    String(e.pending_tokens_total),
    kv === null ? '-' : `${(kv * 100).toFixed(0)}%`
  ];
  Array.from(row.children).forEach((td, i) => setText(td, cells[i]));
}

export class EnginesView {
  readonly section = new Section('engines', 'Engine states');
  private readonly rows: KeyedRows<IEngine>;
  private readonly table: HTMLElement;
  private readonly note = h('i', { class: 'jr-empty' });

  constructor() {
    const tbody = h('tbody');
    this.table = h(
      'table',
      {},
      h('thead', {}, h('tr', {}, ...COLUMNS.map(c => h('th', {}, c)))),
      tbody
    );
    this.rows = new KeyedRows(tbody, e => e.engine_id, makeRow, updateRow);
    this.section.body.append(this.table, this.note);
    show(this.section.root, false); // until the server says its gateway is on
  }

  /** One refresh; an error shows in the section (if it is shown) and clears on success. */
  async refresh(): Promise<void> {
    let answer: IEngineStates;
    try {
      answer = await requestAPI<IEngineStates>('engine-states');
    } catch (error) {
      this.say(`${(error as Error).message}`);
      return;
    }
    // the server answers {"enabled": false} while its gateway is off: nothing to show
    show(this.section.root, answer.enabled);
    if (!answer.enabled) {
      return;
    }
    const engines = answer.engines ?? [];
    this.rows.render(engines);
    this.section.setCount(engines.length);
    show(this.table, engines.length > 0);
    this.say(engines.length ? '' : 'No engine has reported yet.');
  }

  private say(text: string): void {
    setText(this.note, text);
    show(this.note, !!text);
  }
}
