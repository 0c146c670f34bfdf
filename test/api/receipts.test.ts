// Receipt handles as the API issues them (src/api/receipts.ts): only a handle this cluster issued
// for a queue or subscription opens there, whole and unaltered.
import t from 'tap';
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
