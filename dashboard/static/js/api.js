// The admin API, as the dashboard calls it: every request carries the
// admin key kept in this tab's sessionStorage, and every error answer
// ({"error": "…"}, DESIGN.md §5) becomes an ApiError with its message.

const KEY = 'switchboard.adminKey';
const TIMEOUT_MS = 8000;

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function adminKey() {
  return sessionStorage.getItem(KEY) || '';
}

export function setAdminKey(key) {
  sessionStorage.setItem(KEY, key);
}

export function forgetAdminKey() {
  sessionStorage.removeItem(KEY);
}

// request calls the admin API and returns the decoded JSON body, or
// throws an ApiError (status 0 when the node could not be reached).
export async function request(method, path, body) {
  const headers = { Authorization: `Bearer ${adminKey()}`, Accept: 'application/json' };
  const init = { method, headers, cache: 'no-store', signal: AbortSignal.timeout(TIMEOUT_MS) };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (err) {
    const why = err && err.name === 'TimeoutError' ? `no answer within ${TIMEOUT_MS / 1000} s` : 'node unreachable';
    throw new ApiError(0, why);
  }
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!res.ok) {
    const msg = data && typeof data.error === 'string' && data.error ? data.error : (text.trim() || res.statusText);
    throw new ApiError(res.status, msg);
  }
  return data;
}

export const get = (path) => request('GET', path);
export const post = (path, body) => request('POST', path, body);

// describe formats an error for a person: the status and the node's message.
export function describe(err) {
  if (err instanceof ApiError) {
    return err.status ? `${err.status} · ${err.message}` : err.message;
  }
  return String(err && err.message ? err.message : err);
}
