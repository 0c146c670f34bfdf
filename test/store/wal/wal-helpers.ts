// What the tests of the write-ahead log share: folders, stores closed on teardown, entries and
// batches written in a line, and damage done to closed segment files.
import { closeSync, mkdtempSync, openSync, readdirSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Test } from 'tap';
import { EntryKind, nodeId, type Entry, type HardState } from '../../../src/raft/index.js';
import { WalStore, type PersistItem } from '../../../src/store/wal/index.js';

export function tempDir(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'mom-wal-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return join(dir, 'wal');
}

/** Opens a store that the test closes on teardown (closing twice is harmless). */
export async function openStore(t: Test, dir: string, segmentBytes?: number): Promise<WalStore> {
  const s = await WalStore.open(dir, segmentBytes === undefined ? {} : { segmentBytes });
  t.teardown(() => s.close());
  return s;
}

export const text = (s: string): Uint8Array => new TextEncoder().encode(s);
export const entry = (index: number, term: number, data = `e${index}t${term}`): Entry => ({ index, term, kind: EntryKind.Normal, data: text(data) });
export const run = (first: number, terms: number[]): Entry[] => terms.map((term, i) => entry(first + i, term));
export const item = (partition: number, entries: Entry[], hardState: HardState | null = null): PersistItem => ({ partition, hardState, entries, snapshot: null });
export const show = (es: Entry[]): string[] => es.map((e) => `${e.index}/${e.term}:${Buffer.from(e.data).toString()}`);
export const hs = (term: number, commit: number, vote: string | null = null): HardState => ({ term, vote: vote === null ? null : nodeId(vote), commit });
export const segments = (dir: string): string[] => readdirSync(dir).filter((f) => f.endsWith('.wal')).sort();

/** Overwrites bytes of a closed segment file, as damage or a torn write would. */
export function patch(file: string, at: number, bytes: Uint8Array): void {
  const fd = openSync(file, 'r+');
  writeSync(fd, bytes, 0, bytes.byteLength, at);
  closeSync(fd);
}

