// Calls to the server extension's /remote/api, with its JSON errors as exceptions.
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** An error answer of /remote/api: its status and its one-line message. */
export class RemoteApiError extends Error {
  constructor(
    readonly status: number,
    message: string
  ) {
    super(message);
  }
}

/** One request to /remote/api/PATH; JSON in and out (or text, for logs). */
export async function requestAPI<T>(
  path: string,
  init: RequestInit = {},
  asText = false
): Promise<T> {
  const text = await (await call(path, init)).text();
  return (asText ? text : text ? JSON.parse(text) : {}) as T;
}

/** One request whose answer is counted in bytes (a log read by offset). */
export async function requestBytes(path: string, init: RequestInit = {}): Promise<Uint8Array> {
  return new Uint8Array(await (await call(path, init)).arrayBuffer());
}

/** One request whose answer is read as it streams (an execution's events, followed). */
export async function requestResponse(path: string, init: RequestInit = {}): Promise<Response> {
  return call(path, init);
}

async function call(path: string, init: RequestInit): Promise<Response> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'remote', 'api', path);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    throw new RemoteApiError(0, `the Jupyter server did not answer: ${error}`);
  }
  if (!response.ok) {
    const text = await response.text();
    let message = text;
    try {
      message = JSON.parse(text).message ?? text;
    } catch {
      // not JSON: keep the text
    }
    throw new RemoteApiError(response.status, message || response.statusText);
  }
  return response;
}
