// A collapsible section of the panel (a <details>), whose open or closed state survives a
// reload of the page (localStorage).
import { h, setText } from './dom';

const KEY = 'jupyter-remote:panel:collapsed';

function collapsed(): string[] {
  try {
    const list = JSON.parse(localStorage.getItem(KEY) ?? '[]');
    return Array.isArray(list) ? list : [];
  } catch {
    return []; // storage off or garbled: every section open
  }
}

function remember(name: string, open: boolean): void {
  const list = collapsed().filter(n => n !== name);
  try {
    localStorage.setItem(KEY, JSON.stringify(open ? list : [...list, name]));
  } catch {
    // storage off: the state lasts until the page reloads
  }
}

/** A section: its <details>, its body, and the count in its title ("Jobs · 3"). */
export class Section {
  readonly root: HTMLDetailsElement;
  readonly body: HTMLElement;
  private readonly count: HTMLElement;

  constructor(name: string, label: string) {
    this.count = h('span', { class: 'jr-count' });
    this.body = h('div', { class: 'jr-body' });
    this.root = h(
      'details',
      { class: `jr-section jr-${name}` },
      h('summary', {}, h('span', { class: 'jr-title' }, label), this.count),
      this.body
    ) as HTMLDetailsElement;
    this.root.open = !collapsed().includes(name);
    this.root.addEventListener('toggle', () => remember(name, this.root.open));
  }

  setCount(n: number | null): void {
    setText(this.count, n === null ? '' : ` · ${n}`);
  }
}
