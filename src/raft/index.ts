export * from './types.js';
export * from './errors.js';
export { MemoryStorage, type Storage } from './storage.js';
export { majority, committedIndex, tally, hasQuorum, VoteResult } from './quorum.js';
export { Progress, ProgressState, Inflights } from './progress.js';
export { RaftLog } from './log.js';
export { Raft, type Config, type ProposalTicket } from './raft.js';
export { RawNode, sendableBeforePersist, type Ready, type SoftState } from './raw-node.js';
export { ProposalTracker, Outcome } from './proposals.js';
