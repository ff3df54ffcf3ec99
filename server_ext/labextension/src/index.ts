// Registers the "Remote" panel in JupyterLab's left sidebar, restored across reloads.
import {
  ILabShell,
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { INotebookTracker } from '@jupyterlab/notebook';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { LabIcon } from '@jupyterlab/ui-components';
import { jobRendererFactory } from './outputs';
import { RemotePanel } from './panel';
import { Reattacher } from './reattach';

const ICON = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" width="16">
  <g class="jp-icon3" fill="#616161"><rect x="3" y="4" width="18" height="6" rx="1"/>
  <rect x="3" y="14" width="18" height="6" rx="1"/><circle cx="7" cy="7" r="1" fill="#fff"/>
  <circle cx="7" cy="17" r="1" fill="#fff"/></g></svg>`;

export const remoteIcon = new LabIcon({ name: 'jupyter-remote:icon', svgstr: ICON });

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-remote-labextension:panel',
  description: 'The Remote sidebar: nodes, sessions, jobs and engine states of jupyter-remote.',
  autoStart: true,
  requires: [ILabShell],
  optional: [ILayoutRestorer],
  activate: (
    app: JupyterFrontEnd,
    labShell: ILabShell,
    restorer: ILayoutRestorer | null
  ) => {
    const panel = new RemotePanel(app.commands);
    panel.title.icon = remoteIcon;
    panel.title.caption = 'Remote';
    labShell.add(panel, 'left', { rank: 900 });
    if (restorer) {
      restorer.add(panel, 'jupyter-remote-panel');
    }
  }
};

// A notebook page that opens or reloads gets back what its remote cells miss (reattach.ts);
// a detached job's view renders from its id alone (outputs.ts).
const reattach: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-remote-labextension:reattach',
  description: 'Remote cells keep their output across page reloads and closed tabs.',
  autoStart: true,
  requires: [INotebookTracker, IRenderMimeRegistry],
  activate: (app: JupyterFrontEnd, tracker: INotebookTracker, rendermime: IRenderMimeRegistry) => {
    rendermime.addFactory(jobRendererFactory, jobRendererFactory.defaultRank);
    new Reattacher(tracker);
  }
};

export default [plugin, reattach];
