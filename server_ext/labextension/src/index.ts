// Registers the "Remote" panel in JupyterLab's left sidebar, restored across reloads.
import {
  ILabShell,
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { LabIcon } from '@jupyterlab/ui-components';
import { RemotePanel } from './panel';

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

export default plugin;
