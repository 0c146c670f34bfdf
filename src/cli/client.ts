// The CLI's side of the REST API: one call with the saved token, an Idempotency-Key on every write
// (retried with the same key after a 502, a 503, a 504 or a connection that failed, as docs/guarantees.md asks
// of clients), and problem+json answers turned into CliError with the server's own words.
import { randomUUID } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { request } from 'undici';

/** A call given up because the user interrupted it (Ctrl-C during a long poll). */
export class Interrupted extends Error {
  override name = 'Interrupted';
}

export class CliError extends Error {
  override name = 'CliError';
  constructor(
    message: string,
    /** Process exit status: 1 refused by the server, 2 usage or setup, 3 the cluster could not be reached. */
    readonly exitCode: number,
    /** The server's HTTP status, when it refused. */
    readonly status?: number,
  ) {
    super(message);
  }
}

/** What `mom login` keeps: where, who, and the access token (a file only its owner can read). */
export interface Session {
  url: string;
  username: string;
  token: string;
  /** ms since the epoch */
  expiresAt: number;
}

/** $MOM_CONFIG_DIR, else $XDG_CONFIG_HOME/mom, else ~/.config/mom. */
export function configDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.MOM_CONFIG_DIR !== undefined && env.MOM_CONFIG_DIR !== '') return env.MOM_CONFIG_DIR;
  const base = env.XDG_CONFIG_HOME !== undefined && env.XDG_CONFIG_HOME !== '' ? env.XDG_CONFIG_HOME : join(homedir(), '.config');
  return join(base, 'mom');
}

export function loadSession(env: NodeJS.ProcessEnv = process.env): Session | null {
  const file = join(configDir(env), 'session.json');
  if (!existsSync(file)) return null;
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as Session;
  } catch {
    throw new CliError(`${file} is damaged; run mom login again`, 2);
  }
}

export function saveSession(s: Session | null, env: NodeJS.ProcessEnv = process.env): string {
  const file = join(configDir(env), 'session.json');
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  writeFileSync(file, s === null ? '{}\n' : JSON.stringify(s, null, 2) + '\n', { mode: 0o600 });
  chmodSync(file, 0o600);
  return file;
}

export interface Reply {
  status: number;
  body: unknown;
}

/**
 * Retried with the same key: 503 (not applied, or outcome unknown), 504 (outcome unknown), and 502, a
 * load balancer's answer when the node it passed the request to dropped the connection (unknown too).
 */
const RETRYABLE = new Set([502, 503, 504]);

export class Api {
  constructor(
    readonly url: string,
    private readonly token: string | null,
    private readonly opts: { retryForMs?: number } = {},
  ) {}

  /**
   * One request; a 2xx answers its body, anything else throws CliError. Writes carry one
   * Idempotency-Key over all their attempts.
   */
  async call(method: 'GET' | 'POST' | 'PUT' | 'DELETE', path: string, body?: unknown, opts: { timeoutMs?: number; signal?: AbortSignal; idempotencyKey?: string } = {}): Promise<unknown> {
    // /v1/auth takes no Idempotency-Key (docs/api.md): a write there that went through answers 401,
    // 403 or 409 when repeated, so it is repeated only when it certainly changed nothing (a 503, a
    // refused connection).
    let keyed = method !== 'GET' && !path.startsWith('/v1/auth/');
    const again = (status: number): boolean => (keyed || method === 'GET' ? RETRYABLE.has(status) : status === 503);
    let key = keyed ? (opts.idempotencyKey ?? randomUUID()) : undefined;
    // Given up with the outcome unknown, the user can repeat the write only with the same key.
    const keyNote = (): string => (key === undefined ? '' : `; its Idempotency-Key was ${key}`);
    const deadline = Date.now() + (this.opts.retryForMs ?? 10_000);
    let attempt = 0;
    for (;;) {
      attempt++;
      let res: Reply;
      try {
        res = await this.once(method, path, body, key, opts.timeoutMs ?? 30_000, opts.signal);
      } catch (err) {
        if (opts.signal?.aborted === true) throw new Interrupted();
        const refused = ((err as { cause?: { code?: string } }).cause?.code ?? (err as { code?: string }).code) === 'ECONNREFUSED';
        if (Date.now() < deadline && (keyed || method === 'GET' || refused)) {
          await new Promise((r) => setTimeout(r, Math.min(2_000, 100 * 2 ** attempt)));
          continue;
        }
        throw new CliError(`cannot reach ${this.url}: ${(err as Error).message}${keyNote()}`, 3);
      }
      if (res.status >= 200 && res.status < 300) return res.body;
      // While the cluster is short of disk, a receive with a new key is refused (507), since its
      // record would be kept a day, and one without goes on (docs/api.md): nothing was leased, so it
      // is asked once more without the key, as a receive that cannot be replayed, which is retried
      // only where it certainly leased nothing. Not a key the user gave: that one they chose to keep.
      // Only at the first attempt: after one whose outcome is unknown, a 507 says only that the
      // leader does not hold it (another node may), and its messages may be leased.
      if (res.status === 507 && attempt === 1 && key !== undefined && opts.idempotencyKey === undefined && method === 'POST' && path.endsWith('/receive')) {
        key = undefined;
        keyed = false;
        continue;
      }
      if (again(res.status) && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, Math.min(2_000, 100 * 2 ** attempt)));
        continue;
      }
      throw problemError(res, RETRYABLE.has(res.status) ? keyNote() : '');
    }
  }

  private async once(method: string, path: string, body: unknown, key: string | undefined, timeoutMs: number, signal?: AbortSignal): Promise<Reply> {
    const headers: Record<string, string> = { accept: 'application/json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (this.token !== null) headers.authorization = `Bearer ${this.token}`;
    if (key !== undefined) headers['idempotency-key'] = key;
    const res = await request(new URL(path, this.url), {
      method: method as 'GET',
      headers,
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      signal: signal === undefined ? AbortSignal.timeout(timeoutMs) : AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)]),
    });
    const text = await res.body.text();
    let parsed: unknown = null;
    if (text !== '') {
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = { detail: text.slice(0, 200) };
      }
    }
    return { status: res.statusCode, body: parsed };
  }
}

function problemError(res: Reply, note: string): CliError {
  const p = (res.body ?? {}) as { title?: string; detail?: string; code?: string };
  const what = p.detail ?? p.title ?? `HTTP ${res.status}`;
  return new CliError(`${what} (${res.status}${p.code === undefined ? '' : ` ${p.code}`})${note}`, 1, res.status);
}
