// The "Remote" sidebar: nodes, sessions, jobs (with Stop and a followed log), engine states.
// A panel to keep open: every refresh updates its rows in place (see dom.ts).
import type { JupyterFrontEnd } from '@jupyterlab/application';
import { Poll } from '@lumino/polling';
import { Widget } from '@lumino/widgets';
import { h, setText, show } from './dom';
import { EnginesView } from './engines';
import { JobsView } from './jobs';
import { NodesView } from './nodes';
import { RemoteApiError, requestAPI } from './request';
import { SessionsView } from './sessions';

import type { components } from './api'; // generated from the server's OpenAPI (jlpm build:types)

type INode = components['schemas']['Node'];
type IJob = components['schemas']['Job'];

/** The panel: one Poll refreshes everything; it stands by while the panel is hidden. */
export class RemotePanel extends Widget {
  readonly poll: Poll;
  private stopped = false;
  /** Whether the server answers: a state, cleared by the next answer (not an action's error). */
  private readonly message = h('div', { class: 'jr-message', role: 'status' });
  private readonly nodes: NodesView;
  private readonly sessions: SessionsView;
  private readonly jobs: JobsView;
  private readonly engines = new EnginesView();

  constructor(commands: JupyterFrontEnd['commands']) {
    super();
    this.id = 'jupyter-remote-panel';
    this.addClass('jr-panel');
    const changed = () => this.poll.refresh();
    this.nodes = new NodesView(changed);
    this.sessions = new SessionsView(commands, changed);
    this.jobs = new JobsView(changed);
    show(this.message, false);
    this.node.append(
      this.message,
      this.nodes.section.root,
      this.sessions.section.root,
      this.jobs.section.root,
      this.engines.section.root
    );
    this.poll = new Poll({
      factory: () => this.refresh(),
      frequency: { interval: 2000, backoff: true, max: 30000 },
      standby: () => !this.isVisible || 'when-hidden',
      name: 'jupyter-remote:panel'
    });
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
      this.nodes.render(nodes.nodes);
      this.jobs.render(jobs.jobs);
      this.sessions.refreshInBackground();
      await this.engines.refresh();
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
    show(this.message, !!text);
    setText(this.message, text);
  }

  protected onAfterShow(): void {
    void this.poll.refresh();
  }

  dispose(): void {
    this.poll.dispose();
    super.dispose();
  }
}
