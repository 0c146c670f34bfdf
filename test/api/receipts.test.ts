// Receipt handles as the API issues them (src/api/receipts.ts): only a handle this cluster issued
// for a queue or subscription opens there, whole and unaltered.
import t from 'tap';
import { createHmac, hkdfSync } from 'node:crypto';
import fc from 'fast-check';
import { Receipts } from '../../src/api/receipts.js';

const inner = Buffer.from('12.786432.40').toString('base64url');
const orders = { queue: 'orders' };

t.test('a sealed handle opens to the state machine handle on its own channel, on any node with the secret', async (t) => {
  const h = new Receipts('s'.repeat(32)).seal(orders, inner);
  t.not(h, inner);
  t.equal(new Receipts('s'.repeat(32)).open(orders, h), inner);
});

t.test('the same inner handle on two channels gives two handles, and neither opens on the other', async (t) => {
  const r = new Receipts('s'.repeat(32));
  const sub = { topic: 'orders', subscription: 'audit' };
  const handles = [r.seal(orders, inner), r.seal({ queue: 'billing' }, inner), r.seal(sub, inner), r.seal({ topic: 'order', subscription: 'saudit' }, inner)];
  t.equal(new Set(handles).size, handles.length, 'all differ');
  t.equal(r.open({ queue: 'billing' }, handles[0]!), null);
  t.equal(r.open(orders, handles[2]!), null);
  t.equal(r.open(sub, handles[3]!), null, 'names are delimited, not concatenated');
});

t.test('a forged, altered or foreign handle does not open', async (t) => {
  const r = new Receipts('s'.repeat(32));
  const h = r.seal(orders, inner);
  t.equal(r.open(orders, inner), null, 'the bare inner handle (as issued before MACs)');
  t.equal(new Receipts('t'.repeat(32)).open(orders, h), null, "another cluster's key");
  for (let i = 0; i < h.length; i++) {
    for (const c of ['A', 'B', 'g', '_', '-', '.', '0', 'é']) {
      if (h[i] === c) continue;
      const altered = h.slice(0, i) + c + h.slice(i + 1);
      if (r.open(orders, altered) !== null) t.fail(`altered at ${i} to ${c} opened: ${altered}`);
    }
  }
  const forged = Buffer.from('12.786433.40').toString('base64url');
  t.equal(r.open(orders, `${forged}.${h.slice(h.lastIndexOf('.') + 1)}`), null, "another delivery's fields under this MAC");
  for (const bad of ['', '.', `${inner}.`, `.${h.slice(h.lastIndexOf('.') + 1)}`, `${h}x`, h.slice(0, -1), `${inner}.${'é'.repeat(22)}`]) t.equal(r.open(orders, bad), null, JSON.stringify(bad));
});

t.test('a handle is HMAC-SHA256 as RFC 2104 defines it, so handles of earlier builds still open (rolling upgrades)', async (t) => {
  // The MAC is computed from two one-shot hashes over the padded keys, for speed; createHmac is the
  // reference, over any names (any Unicode, up to past the scratch buffer that the fast path uses).
  const secret = 's'.repeat(32);
  const r = new Receipts(secret);
  const key = Buffer.from(hkdfSync('sha256', secret, 'mom', 'receipt handles v1', 32));
  const reference = (where: string, inner: string): string =>
    `${inner}.${createHmac('sha256', key).update(where).update('\u0000').update(inner).digest().subarray(0, 16).toString('base64url')}`;
  const name = fc.oneof(fc.string({ minLength: 1, maxLength: 80 }), fc.string({ unit: 'grapheme', minLength: 1, maxLength: 40 }), fc.string({ minLength: 4000, maxLength: 5000 }));
  // What open() is given comes from clients: any UTF-16, lone surrogates too.
  const innerHandle = fc.oneof(
    fc.tuple(fc.nat(), fc.nat(), fc.nat()).map(([a, b, c]) => `${a}.${b}.${c}`),
    fc.string({ unit: 'binary', minLength: 1, maxLength: 200 }),
  );
  fc.assert(
    fc.property(fc.oneof(name.map((queue) => ({ queue })), fc.tuple(name, name).map(([topic, subscription]) => ({ topic, subscription }))), innerHandle, (channel, inner) => {
      const where = 'queue' in channel ? `queue\u0000${channel.queue}` : `subscription\u0000${channel.topic}\u0000${channel.subscription}`;
      const handle = r.seal(channel, inner);
      return handle === reference(where, inner) && r.open(channel, handle) === inner;
    }),
    // A failure is reported as found: shrinking names of 5,000 characters takes minutes.
    { numRuns: 2000, endOnFailure: true },
  );
  t.pass('2,000 channels and handles: the same handle as createHmac gives, and it opens');
  // At the edge of the scratch buffer (4,096 bytes after the padded key), ending in characters of
  // 2, 3 and 4 UTF-8 bytes and a lone surrogate (written as 3), so that a count of characters
  // instead of bytes would show.
  for (const end of ['é', '€', '😀', '\ud800']) {
    for (let bytes = 4090; bytes <= 4100; bytes++) {
      const queue = 'q'.repeat(Math.max(1, bytes - 'queue\u0000'.length - '\u00001.2.3'.length - Buffer.byteLength(end))) + end;
      const handle = r.seal({ queue }, '1.2.3');
      if (handle !== reference(`queue\u0000${queue}`, '1.2.3')) t.fail(`${Buffer.byteLength(`queue\u0000${queue}\u00001.2.3`)} bytes ending in ${JSON.stringify(end)}`);
    }
  }
});
