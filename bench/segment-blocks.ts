// `npm run bench:segment-blocks [-- --rounds 3 --appends 2000 --write-bytes 12288 --dir <folder>]`:
// what an fdatasync of the log costs in a segment whose blocks are a hole (ftruncate, what
// src/store/wal/segment.ts makes today) against one whose blocks were written with zeros before use,
// by the size of the writes that made the zeros. Each append is one write at the end of the records
// and one fdatasync, as a loop turn of the log does (12 KiB: a turn of about ten 1 KiB sends). In a
// hole every fdatasync also allocates the blocks it covers, a change of the file's metadata that the
// file system journal commits; in written blocks it is only the data. Zeros written in large writes
// leave large folios in the page cache, and an append that dirties a byte of one writes back all of
// it: the "disk KiB per append" column. A released segment reused keeps such folios from its former
// life unless its pages are dropped (src/native's dropPages) before it is used; read through again
// afterwards, the reads' size makes the new folios. Appends are 12,000 bytes by default, so that a
// write ends inside a page as the log's do (a page not in the cache is then read before the write).
// Preparations alternate, round by round, so the drift shows.
// Prints a table and writes bench/results/segment-blocks.json. The file goes to a fresh folder under
// --dir (default: the OS temp folder); what it measures depends on that file system and kernel.
import { closeSync, fdatasyncSync, ftruncateSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { numberArg } from './args.js';
import { Advice, native } from '../src/native/native.js';
import { writtenBytes } from './proc.js';

const ROUNDS = numberArg('rounds', 3);
const APPENDS = numberArg('appends', 2000);
const WRITE_BYTES = numberArg('write-bytes', 12_000);
const SEGMENT_BYTES = 64 * 1024 * 1024;
const dirArg = process.argv.indexOf('--dir');
const base = dirArg < 0 ? tmpdir() : process.argv[dirArg + 1]!;

/**
 * How a segment's blocks are made before the first record: a hole, or zeros in writes of `chunk`
 * bytes; then, with `drop`, its pages dropped from the page cache, and with `readChunk`, read through
 * again in reads of that size.
 */
interface Preparation {
  name: string;
  chunk: number;
  drop?: boolean;
  /** Advice given to the reads' descriptor before them. */
  readAdvice?: Advice;
  readChunk?: number;
}
const MIB = 1024 * 1024;
const PREPARATIONS: Preparation[] = [
  { name: 'a hole (ftruncate, as today)', chunk: 0 },
  { name: 'zeros, 4 KiB writes', chunk: 4096 },
  { name: 'zeros, 64 KiB writes', chunk: 64 * 1024 },
  { name: 'zeros, 1 MiB writes', chunk: MIB },
  ...(native === null
    ? []
    : [
        { name: 'zeros, 1 MiB writes, pages dropped', chunk: MIB, drop: true },
        { name: 'zeros, 1 MiB writes, dropped, read in 4 KiB reads', chunk: MIB, drop: true, readChunk: 4096 },
        { name: 'zeros, 1 MiB writes, dropped, read in 1 MiB reads', chunk: MIB, drop: true, readChunk: MIB },
        { name: 'zeros, 1 MiB writes, dropped, read in 1 MiB reads without readahead', chunk: MIB, drop: true, readAdvice: Advice.Random, readChunk: MIB },
        { name: 'zeros, 1 MiB writes, dropped, read in 4 KiB reads without readahead', chunk: MIB, drop: true, readAdvice: Advice.Random, readChunk: 4096 },
        { name: 'zeros, 1 MiB writes, dropped, "will need" without readahead', chunk: MIB, drop: true, readAdvice: Advice.Random },
      ]),
];
if (native === null) console.log('(the native addon is not built: `npm rebuild` or `npx node-gyp rebuild`; the rows with dropped pages are left out)');

interface Row {
  preparation: string;
  round: number;
  prepareMs: number;
  prepareCpuMs: number;
  appends: number;
  p50Us: number;
  p99Us: number;
  cpuUsPerAppend: number;
  diskKibPerAppend: number;
}

function advise(fd: number, advice: Advice): void {
  const err = native!.advise(fd, 0, 0, advice);
  if (err !== 0) throw new Error(`posix_fadvise(${advice}): errno ${err}`);
}

const cpuMs = (): number => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

function measure(dir: string, prep: Preparation, round: number): Row {
  const path = join(dir, `segment-${round}-${PREPARATIONS.indexOf(prep)}`);
  const fd = openSync(path, 'w+');
  try {
    let t = performance.now();
    let c = cpuMs();
    if (prep.chunk === 0) ftruncateSync(fd, SEGMENT_BYTES);
    else {
      const zeros = Buffer.alloc(prep.chunk);
      for (let at = 0; at < SEGMENT_BYTES; at += prep.chunk) writeSync(fd, zeros, 0, prep.chunk, at);
    }
    fdatasyncSync(fd);
    if (prep.drop === true) {
      advise(fd, Advice.DontNeed);
    }
    if (prep.readAdvice !== undefined || prep.readChunk !== undefined) {
      // On a descriptor of its own, as a node would read a spare through: advice is per open file.
      const rfd = openSync(path, 'r');
      try {
        if (prep.readAdvice !== undefined) advise(rfd, prep.readAdvice);
        if (prep.readChunk === undefined) advise(rfd, Advice.WillNeed);
        else {
          const buf = Buffer.allocUnsafe(prep.readChunk);
          for (let at = 0; at < SEGMENT_BYTES; at += prep.readChunk) readSync(rfd, buf, 0, prep.readChunk, at);
        }
      } finally {
        closeSync(rfd);
      }
    }
    const prepareMs = performance.now() - t;
    const prepareCpuMs = cpuMs() - c;
    const record = Buffer.alloc(WRITE_BYTES, 7);
    const latencies: number[] = [];
    const bytes0 = writtenBytes();
    c = cpuMs();
    for (let i = 0; i < APPENDS; i++) {
      t = performance.now();
      writeSync(fd, record, 0, record.byteLength, (i * record.byteLength) % (SEGMENT_BYTES - record.byteLength));
      fdatasyncSync(fd);
      latencies.push((performance.now() - t) * 1000);
    }
    const cpu = cpuMs() - c;
    const disk = writtenBytes() - bytes0;
    latencies.sort((a, b) => a - b);
    const pct = (q: number): number => Math.round(latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))]!);
    return {
      preparation: prep.name,
      round,
      prepareMs: Math.round(prepareMs),
      prepareCpuMs: Math.round(prepareCpuMs),
      appends: APPENDS,
      p50Us: pct(0.5),
      p99Us: pct(0.99),
      cpuUsPerAppend: Math.round((cpu * 1000) / APPENDS),
      diskKibPerAppend: Number((disk / APPENDS / 1024).toFixed(1)),
    };
  } finally {
    closeSync(fd);
    rmSync(path, { force: true });
  }
}

const dir = mkdtempSync(join(base, 'mom-segment-blocks-'));
const rows: Row[] = [];
try {
  for (let round = 1; round <= ROUNDS; round++) {
    const order = round % 2 === 1 ? PREPARATIONS : PREPARATIONS.slice().reverse();
    for (const prep of order) rows.push(measure(dir, prep, round));
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}

console.log(`folder: under ${base}; segments of ${SEGMENT_BYTES / 1024 / 1024} MiB; ${APPENDS} appends of ${WRITE_BYTES} bytes, each written and fdatasynced\n`);
console.log('| blocks before the first record | round | made in ms (CPU ms) | append + fdatasync p50 µs | p99 µs | CPU µs per append | disk KiB per append |');
console.log('|---|---:|---|---:|---:|---:|---:|');
for (const r of rows.slice().sort((a, b) => PREPARATIONS.findIndex((p) => p.name === a.preparation) - PREPARATIONS.findIndex((p) => p.name === b.preparation) || a.round - b.round)) {
  console.log(`| ${r.preparation} | ${r.round} | ${r.prepareMs} (${r.prepareCpuMs}) | ${r.p50Us} | ${r.p99Us} | ${r.cpuUsPerAppend} | ${r.diskKibPerAppend} |`);
}
const out = join(dirname(fileURLToPath(import.meta.url)), 'results', 'segment-blocks.json');
mkdirSync(dirname(out), { recursive: true });
writeFileSync(
  out,
  JSON.stringify(
    {
      benchmark: 'segment-blocks',
      node: process.version,
      kernel: readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim(),
      folder: base,
      segmentBytes: SEGMENT_BYTES,
      writeBytes: WRITE_BYTES,
      date: new Date().toISOString(),
      note: 'each append: one write after the last and one fdatasync; p50/p99 are that pair; disk bytes from /proc/self/io',
      rows,
    },
    null,
    2,
  ) + '\n',
);
console.log(`\nwrote ${out}`);
