// What in-process nodes report, for a wait that gave up: each partition's Raft view and the node's
// own state (held for peers' terms, voting suspended, the transport's queues).
import type { MomServer } from '../../src/server.js';

export function describeNodes(nodes: readonly MomServer[]): string {
  return nodes
    .flatMap((n) => {
      const host = n.node.host;
      const head = `  ${n.cfg.nodeId}: holding for terms=${host.rejoin.holdingForTerms}; peers ${JSON.stringify(n.node.transport.peerStates())}; ${JSON.stringify(n.node.transport.stats())}`;
      const parts = n.status().map((s) => {
        const suspended = host.replica(s.partition).raw.votingIsSuspended();
        return `    p${s.partition} ${s.role} leader=${s.leader} term=${s.term} commit=${s.commitIndex} applied=${s.appliedIndex} last=${s.lastIndex} match=${JSON.stringify(s.match)}${suspended ? ' voting suspended' : ''}`;
      });
      return [head, ...parts];
    })
    .join('\n');
}
