// The panel's DOM, updated in place: rows made once per key and changed field by field, so a
// text selection, a hover and the scroll position survive each refresh (no innerHTML rebuild).

type Child = Node | string | null | undefined | false;

/** One element: h('div', { class: 'jr-x', title: '…' }, child, 'text', …). */
export function h(
  tag: string,
  attrs: Record<string, string | undefined> = {},
  ...children: Child[]
): HTMLElement {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== undefined) {
      el.setAttribute(name, value);
    }
  }
  for (const child of children) {
    if (child) {
      el.append(child);
    }
  }
  return el;
}

/** Sets a text only when it changed: an unchanged text node keeps a selection inside it. */
export function setText(el: Element, text: string): void {
  if (el.textContent !== text) {
    el.textContent = text;
  }
}

/** Sets (or with null removes) an attribute only when it changed. */
export function setAttr(el: Element, name: string, value: string | null): void {
  if (value === null) {
    if (el.hasAttribute(name)) {
      el.removeAttribute(name);
    }
  } else if (el.getAttribute(name) !== value) {
    el.setAttribute(name, value);
  }
}

/** Shows or hides an element (the `hidden` attribute). */
export function show(el: HTMLElement, visible: boolean): void {
  if (el.hidden === visible) {
    el.hidden = !visible;
  }
}

/** The first element matching `selector` under `root` (the panel builds them all). */
export function find<T extends HTMLElement = HTMLElement>(root: ParentNode, selector: string): T {
  return root.querySelector(selector) as T;
}

/**
 * A list of rows kept by key: a new key makes a row, a gone key removes it, every other row
 * is updated in place, and a row is moved only when it is out of order.
 */
export class KeyedRows<T> {
  private readonly rows = new Map<string, HTMLElement>();

  constructor(
    readonly list: HTMLElement,
    private readonly key: (item: T) => string,
    private readonly make: (item: T) => HTMLElement,
    private readonly update: (row: HTMLElement, item: T) => void
  ) {}

  render(items: T[]): void {
    const keys = new Set(items.map(this.key));
    for (const [key, row] of this.rows) {
      if (!keys.has(key)) {
        row.remove();
        this.rows.delete(key);
      }
    }
    items.forEach((item, index) => {
      const key = this.key(item);
      let row = this.rows.get(key);
      if (!row) {
        row = this.make(item);
        this.rows.set(key, row);
      }
      this.update(row, item);
      if (this.list.children[index] !== row) {
        this.list.insertBefore(row, this.list.children[index] ?? null);
      }
    });
  }

  get size(): number {
    return this.rows.size;
  }
}

/** An error that stays until its ✕ is clicked (or the same place reports again). */
export function showError(box: HTMLElement, text: string): void {
  const dismiss = h('button', { class: 'jr-dismiss', title: 'Dismiss', 'aria-label': 'Dismiss' }, '✕');
  const error = h('div', { class: 'jr-error', role: 'alert' }, h('span', {}, text), dismiss);
  dismiss.addEventListener('click', () => error.remove());
  box.replaceChildren(error);
}
