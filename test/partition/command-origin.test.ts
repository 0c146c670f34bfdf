// The one guard of both forwarding paths: a peer forwards only system commands to a leader, and a
// client's forwarded command is never one (a user must not sweep, raise formats or fake dead letters).
import t from 'tap';
import { CommandRefusedError } from '../../src/partition/errors.js';
import { SYSTEM_COMMANDS, commandOrigin } from '../../src/partition/host.js';
import { IDS, LocalCluster, queue } from './host-helpers.js';

t.test('commandOrigin tells system commands, client commands and junk apart', async (t) => {
  for (const type of SYSTEM_COMMANDS) t.equal(commandOrigin({ type }), 'system', type);
  for (const type of ['queue.send', 'receive', 'user.logout', 'grant.put']) t.equal(commandOrigin({ type }), 'client', type);
  for (const junk of [null, undefined, 7, 'sweep', {}, { type: 7 }]) t.equal(commandOrigin(junk), null, JSON.stringify(junk) ?? 'undefined');
});

t.test('a peer may not forward a client command as a system one', async (t) => {
  const c = new LocalCluster(1, { balanceLeaders: false });
  t.teardown(() => c.close());
  const host = await c.start(IDS[0]!, false);
  await t.rejects(host.proposeForwarded(0, queue('q')), CommandRefusedError);
  await t.rejects(host.proposeForwarded(0, { type: 7 }), CommandRefusedError);
});
