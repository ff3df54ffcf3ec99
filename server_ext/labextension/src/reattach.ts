// Reattach: a notebook page that opens (or reloads) renders what its remote cells miss.
//
// The kernel sends each %%remote cell's id with its execution; the server files it under the
// notebook's path. On open, this asks the server for the latest execution (or detached job)
// of each cell. A cell whose output lacks that execution's footer (the page reloaded while
// it streamed, or it ended while no page was open) gets the whole output again from the
// node's log, and follows it live to the end: each byte once, in order, into the notebook
// model, so a save writes it to the file.
import * as nbformat from '@jupyterlab/nbformat';
import { ICodeCellModel } from '@jupyterlab/cells';
import { INotebookTracker, NotebookActions, NotebookPanel } from '@jupyterlab/notebook';
import { requestAPI, requestResponse } from './request';
import { footerLine, FOOTER_KEY, JOB_MIME } from './outputs';

interface ExecutionRecord {
  execution_id: string;
  status: string;
  returncode: number | null;
  message: string | null;
  node_id: string | null;
  image: string | null;
  created_at: number;
  source_sha256?: string | null;
}

interface JobRecord {
  job_id: string;
  name: string;
  status: string;
  created_at: number;
}

interface CellEntry {
  cell_id: string;
  execution: ExecutionRecord | null;
  job: JobRecord | null;
}

type RemoteEvent = { event: string; [key: string]: any };

/** Follows the executions of the cells of every notebook page as it opens. */
export class Reattacher {
  private following = new Map<string, AbortController>(); // cell id -> its follow

  constructor(tracker: INotebookTracker) {
    tracker.widgetAdded.connect((_, panel) => void this.attach(panel));
    tracker.forEach(panel => void this.attach(panel));
    // the user runs the cell again: the kernel's own output takes over
    NotebookActions.executionScheduled.connect((_, { cell }) => this.stop(cell.model.id));
  }

  /** Fill in what the page's cells miss; save when the notebook had nothing unsaved. */
  async attach(panel: NotebookPanel): Promise<void> {
    await panel.context.ready;
    let entries: CellEntry[];
    try {
      const path = encodeURIComponent(panel.context.path);
      entries = (await requestAPI<{ cells: CellEntry[] }>(`notebook-cells?path=${path}`)).cells;
    } catch {
      return; // no server extension, or an older one: nothing to reattach
    }
    const cells = codeCells(panel);
    const matched = await match(cells, entries);
    const wasClean = !panel.context.model.dirty;
    panel.disposed.connect(() => matched.forEach(([cell]) => this.stop(cell.id)));
    const done = await Promise.all(matched.map(([cell, entry]) => this.restore(cell, entry)));
    if (wasClean && done.some(Boolean) && !panel.isDisposed && panel.context.model.dirty) {
      await panel.context.save();
    }
  }

  private stop(cellId: string): void {
    this.following.get(cellId)?.abort();
    this.following.delete(cellId);
  }

  /** True when the cell's outputs were rewritten. */
  private async restore(cell: ICodeCellModel, entry: CellEntry): Promise<boolean> {
    const { execution, job } = entry;
    if (job && (!execution || job.created_at > execution.created_at)) {
      if (hasOutput(cell, o => (o.data?.[JOB_MIME] as any)?.job_id === job.job_id)) {
        return false;
      }
      cell.outputs.add({
        output_type: 'display_data',
        data: {
          [JOB_MIME]: { job_id: job.job_id },
          'text/plain': `[remote] job ${job.job_id} (${job.name}): ${job.status}`
        },
        metadata: {}
      });
      return true;
    }
    if (!execution) {
      return false;
    }
    const eid = execution.execution_id;
    if (hasOutput(cell, o => (o.metadata?.[FOOTER_KEY] as any)?.execution_id === eid)) {
      return false; // the page has it all
    }
    return this.follow(cell, execution);
  }

  private async follow(cell: ICodeCellModel, record: ExecutionRecord): Promise<boolean> {
    this.stop(cell.id);
    const abort = new AbortController();
    this.following.set(cell.id, abort);
    const eid = record.execution_id;
    cell.outputs.clear();
    let started: RemoteEvent | null = null;
    let exit: RemoteEvent | null = null;
    const add = (output: nbformat.IOutput) => {
      if (!abort.signal.aborted) {
        cell.outputs.add(output);
      }
    };
    try {
      const response = await requestResponse(`executions/${eid}/events?offset=0&follow=1`, {
        signal: abort.signal
      });
      for await (const event of lines(response)) {
        if (event.event === 'started') {
          started = event;
        } else if (event.event === 'stdout' || event.event === 'stderr') {
          add({ output_type: 'stream', name: event.event, text: event.data });
        } else if (event.event === 'display') {
          add({ output_type: 'display_data', data: event.data ?? {}, metadata: event.metadata ?? {} });
        } else if (event.event === 'exit') {
          exit = event;
          break;
        }
      }
    } catch (error) {
      if (abort.signal.aborted) {
        return true;
      }
      add(stderr(`[remote] the output of ${eid} cannot be read now: ${messageOf(error)}\n`));
    }
    if (abort.signal.aborted) {
      return true;
    }
    this.following.delete(cell.id);
    const ended = exit ?? (record.status === 'running' ? null : record);
    if (ended) {
      const rc = ended.returncode ?? -1;
      const node = ended.node_id ?? started?.node_id ?? record.node_id;
      if (rc !== 0) {
        const where = node ? ` on node ${node}` : '';
        const why = ended.message ? `: ${ended.message}` : '';
        add(stderr(`[remote] exit ${rc} (${ended.status})${where}${why}\n`));
      }
      const line = footerLine(node, started?.image ?? record.image, exit?.duration, rc, ended.status);
      add({
        output_type: 'display_data',
        data: { 'text/plain': line, 'text/html': `<div class="jr-footer">${escape(line)}</div>` },
        metadata: { [FOOTER_KEY]: { execution_id: eid, footer: true } }
      });
    }
    return true;
  }
}

function codeCells(panel: NotebookPanel): ICodeCellModel[] {
  const out: ICodeCellModel[] = [];
  const cells = panel.content.model?.cells;
  for (let i = 0; cells && i < cells.length; i++) {
    const cell = cells.get(i);
    if (cell.type === 'code') {
      out.push(cell as ICodeCellModel);
    }
  }
  return out;
}

/** Each entry's cell: by id, else (a notebook saved without cell ids gets new ones on each
 * load) an unmatched cell whose %%remote body is the execution's source. */
async function match(
  cells: ICodeCellModel[],
  entries: CellEntry[]
): Promise<[ICodeCellModel, CellEntry][]> {
  const byId = new Map(cells.map(c => [c.id, c]));
  const out: [ICodeCellModel, CellEntry][] = [];
  const unmatched: CellEntry[] = [];
  for (const entry of entries) {
    const cell = byId.get(entry.cell_id);
    if (cell) {
      out.push([cell, entry]);
      byId.delete(entry.cell_id);
    } else if (entry.execution?.source_sha256) {
      unmatched.push(entry);
    }
  }
  if (!unmatched.length || !byId.size) {
    return out;
  }
  const free = new Map<string, ICodeCellModel[]>();
  for (const cell of byId.values()) {
    const digest = await bodyDigest(cell.sharedModel.getSource());
    if (digest) {
      free.set(digest, [...(free.get(digest) ?? []), cell]);
    }
  }
  unmatched.sort((a, b) => b.execution!.created_at - a.execution!.created_at);
  for (const entry of unmatched) {
    const cell = free.get(entry.execution!.source_sha256!)?.shift();
    if (cell) {
      out.push([cell, { ...entry, job: null }]);
    }
  }
  return out;
}

/** sha256 of a %%remote cell's body with trailing whitespace cut (the server's source_sha256). */
async function bodyDigest(source: string): Promise<string | null> {
  if (!source.startsWith('%%remote') || !crypto?.subtle) {
    return null;
  }
  const newline = source.indexOf('\n');
  const body = newline < 0 ? '' : source.slice(newline + 1).replace(/\s+$/, '');
  const hash = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(body));
  return Array.from(new Uint8Array(hash), b => b.toString(16).padStart(2, '0')).join('');
}

function hasOutput(cell: ICodeCellModel, test: (o: any) => boolean): boolean {
  for (let i = 0; i < cell.outputs.length; i++) {
    if (test(cell.outputs.get(i).toJSON())) {
      return true;
    }
  }
  return false;
}

/** The NDJSON events of a streamed answer, as they arrive. */
async function* lines(response: Response): AsyncGenerator<RemoteEvent> {
  const reader = response.body!.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    buffer += decoder.decode(value ?? new Uint8Array(), { stream: !done });
    let newline = buffer.indexOf('\n');
    while (newline >= 0) {
      const line = buffer.slice(0, newline).trim();
      buffer = buffer.slice(newline + 1);
      if (line) {
        yield JSON.parse(line);
      }
      newline = buffer.indexOf('\n');
    }
    if (done) {
      if (buffer.trim()) {
        yield JSON.parse(buffer);
      }
      return;
    }
  }
}

function stderr(text: string): nbformat.IStream {
  return { output_type: 'stream', name: 'stderr', text };
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function escape(text: string): string {
  const map: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' };
  return text.replace(/[&<>"]/g, c => map[c]);
}
