// The leader's ReadIndex bookkeeping (thesis §6.4): a read is confirmed once a quorum acknowledges a
// heartbeat round that started with it; reads are confirmed in order, and aborted on step-down.
import t from 'tap';
import { PendingReads, nodeId } from '../../src/raft/index.js';
import { idsBySize, n1, n2, n3, n5 } from './helpers.js';

t.test('a read is confirmed only once a quorum acknowledged its round', async (t) => {
  const reads = new PendingReads(n1, idsBySize(3));
  t.equal(reads.round, 0, 'no round before the first read');
  reads.addRequest(7, 'a');
  t.equal(reads.round, 1, 'each read starts a round');
  t.same(reads.advance(), [], 'the leader alone is no quorum');
  reads.recvAck(n2, 1);
  t.same(reads.advance(), [{ index: 7, context: 'a' }], 'the leader and one follower are, with the index asked at');
  t.same(reads.advance(), [], 'confirmed once only');
});

t.test('five voters need three acknowledgements, and only voters count', async (t) => {
  const reads = new PendingReads(n1, idsBySize(5));
  reads.addRequest(3, 'a');
  reads.recvAck(n2, 1);
  t.same(reads.advance(), [], 'two of five');
  reads.recvAck(n2, 1);
  t.same(reads.advance(), [], 'the same follower twice is still two');
  reads.recvAck(nodeId('6'), 1);
  t.same(reads.advance(), [], 'a non-voter does not count');
  reads.recvAck(n5, 1);
  t.same(reads.advance(), [{ index: 3, context: 'a' }], 'three of five');
});

t.test('an acknowledgement of an older round does not confirm a newer read', async (t) => {
  const reads = new PendingReads(n1, idsBySize(3));
  reads.addRequest(4, 'a');
  reads.addRequest(5, 'b');
  reads.recvAck(n2, 1);
  t.same(reads.advance(), [{ index: 4, context: 'a' }], 'round 1 confirms only the first read');
  reads.recvAck(n3, 2);
  t.same(reads.advance(), [{ index: 5, context: 'b' }]);
});

t.test('an acknowledgement of a round confirms every earlier one: reads come out in order', async (t) => {
  const reads = new PendingReads(n1, idsBySize(3));
  reads.addRequest(4, 'a');
  reads.addRequest(4, 'b');
  reads.addRequest(6, 'c');
  reads.recvAck(n3, 3);
  t.same(reads.advance(), [
    { index: 4, context: 'a' },
    { index: 4, context: 'b' },
    { index: 6, context: 'c' },
  ]);
});

t.test('reads held for the leader’s first commit come back once, in order', async (t) => {
  const reads = new PendingReads(n1, idsBySize(3));
  t.equal(reads.hasAwaitingCommit(), false);
  reads.awaitCommit('a');
  reads.awaitCommit('b');
  t.equal(reads.hasAwaitingCommit(), true);
  t.equal(reads.round, 0, 'a held read starts no round');
  t.same(reads.takeAwaitingCommit(), ['a', 'b']);
  t.equal(reads.hasAwaitingCommit(), false);
  t.same(reads.takeAwaitingCommit(), []);
});

t.test('on step-down every read not yet confirmed is aborted, and never confirmed later', async (t) => {
  const reads = new PendingReads(n1, idsBySize(3));
  reads.addRequest(4, 'a');
  reads.addRequest(5, 'b');
  reads.recvAck(n2, 1);
  t.same(reads.advance(), [{ index: 4, context: 'a' }]);
  reads.awaitCommit('c');
  t.equal(reads.hasAborted(), false);
  reads.abortAll();
  t.equal(reads.hasAborted(), true);
  t.same(reads.drainAborted(), ['b', 'c'], 'the pending reads, then the held ones');
  t.equal(reads.hasAborted(), false);
  t.same(reads.drainAborted(), [], 'reported once');
  t.equal(reads.hasAwaitingCommit(), false, 'nothing held any more');

  reads.recvAck(n3, 2);
  t.same(reads.advance(), [], 'a late acknowledgement confirms nothing');
  // Rounds keep counting after a step-down: a late answer of an old round cannot confirm a new read.
  t.equal(reads.round, 2);
  reads.addRequest(9, 'd');
  reads.recvAck(n2, 2);
  t.same(reads.advance(), [], 'round 2 does not confirm the read of round 3');
  reads.recvAck(n2, 3);
  t.same(reads.advance(), [{ index: 9, context: 'd' }]);
});
