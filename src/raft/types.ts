// The vocabulary of the Raft core: ids, entries, hard state, snapshots and messages.
//
// Terms and indexes are plain `number`s (safe integers; 2^53 entries is beyond any log this project
// will hold). They are type aliases rather than brands because the core does arithmetic on them on
// every line; node ids are branded so that a node id and an arbitrary string never mix.

export type NodeId = string & { readonly __brand: 'NodeId' };
export type Term = number;
export type Index = number;

export function nodeId(id: string): NodeId {
  if (id.length === 0) throw new TypeError('a node id must not be empty');
  return id as NodeId;
}

export const EntryKind = {
  /** Carries the caller's opaque command. */
  Normal: 0,
  /** Appended by a new leader on election (§5.4.2, §8): commits everything before it. */
  Noop: 1,
} as const;
export type EntryKind = (typeof EntryKind)[keyof typeof EntryKind];

export interface Entry {
  readonly term: Term;
  readonly index: Index;
  readonly kind: EntryKind;
  /** Opaque to the core. Empty for a no-op. */
  readonly data: Uint8Array;
}

/** What must be durable before any message that depends on it leaves the node (§5, Figure 2). */
export interface HardState {
  readonly term: Term;
  /** The candidate voted for in `term`, or null. */
  readonly vote: NodeId | null;
  /** Known committed index. Durable only lazily: losing it is safe, it is relearned from the leader. */
  readonly commit: Index;
}

export const emptyHardState: HardState = { term: 0, vote: null, commit: 0 };

export interface SnapshotMeta {
  /** The last entry the snapshot covers, and its term. */
  readonly index: Index;
  readonly term: Term;
  /** The voters of the group when the snapshot was taken. */
  readonly voters: readonly NodeId[];
}

export interface Snapshot {
  readonly meta: SnapshotMeta;
  /** Opaque to the core: the state machine's image at `meta.index`. */
  readonly data: Uint8Array;
}

export const Role = {
  Follower: 'follower',
  PreCandidate: 'pre-candidate',
  Candidate: 'candidate',
  Leader: 'leader',
} as const;
export type Role = (typeof Role)[keyof typeof Role];

export const MessageType = {
  Vote: 'vote',
  VoteResp: 'vote-resp',
  PreVote: 'pre-vote',
  PreVoteResp: 'pre-vote-resp',
  App: 'app',
  AppResp: 'app-resp',
  Heartbeat: 'heartbeat',
  HeartbeatResp: 'heartbeat-resp',
  Snap: 'snap',
  TimeoutNow: 'timeout-now',
} as const;
export type MessageType = (typeof MessageType)[keyof typeof MessageType];

interface Envelope {
  readonly from: NodeId;
  readonly to: NodeId;
  /**
   * The sender's term. For a PreVote it is the term the sender would campaign in; for a PreVoteResp
   * that grants, it echoes the request's term (§9.6 of the Raft thesis).
   */
  readonly term: Term;
}

/** RequestVote (§5.2) and its PreVote twin (thesis §9.6). */
export interface VoteRequest extends Envelope {
  readonly type: typeof MessageType.Vote | typeof MessageType.PreVote;
  readonly lastLogIndex: Index;
  readonly lastLogTerm: Term;
  /** Set when the campaign follows a TimeoutNow: voters skip the leader-lease check (thesis §3.10). */
  readonly transfer: boolean;
}

export interface VoteResponse extends Envelope {
  readonly type: typeof MessageType.VoteResp | typeof MessageType.PreVoteResp;
  readonly reject: boolean;
}

/** AppendEntries (§5.3). */
export interface AppendRequest extends Envelope {
  readonly type: typeof MessageType.App;
  /** Index and term of the entry immediately preceding `entries`. */
  readonly prevIndex: Index;
  readonly prevTerm: Term;
  readonly entries: readonly Entry[];
  readonly commit: Index;
}

export interface AppendResponse extends Envelope {
  readonly type: typeof MessageType.AppResp;
  /** On success, the last index now known to match the leader; on reject, the rejected prevIndex. */
  readonly index: Index;
  readonly reject: boolean;
  /**
   * On reject, a hint for fast backtracking (§5.3, the optimisation at the end of the section): the
   * follower's largest index at or below `index` whose term is at most the leader's `prevTerm`,
   * and that entry's term.
   */
  readonly hintIndex: Index;
  readonly hintTerm: Term;
}

export interface Heartbeat extends Envelope {
  readonly type: typeof MessageType.Heartbeat;
  /** min(leader's commit, follower's match): never claims an entry the follower may lack. */
  readonly commit: Index;
  /** The highest ReadIndex round this heartbeat confirms leadership for; 0 for none. */
  readonly readRound: number;
}

export interface HeartbeatResponse extends Envelope {
  readonly type: typeof MessageType.HeartbeatResp;
  readonly readRound: number;
  /**
   * Only from a follower that cannot vouch for entries the leader believes it holds (the heartbeat's
   * commit is past its log, or past what it knows it shares with this leader: its disk was lost or
   * restored from a backup, or it restarted since the leader's last append): how far it can, so that
   * the leader replicates to it again from there instead of waiting for a new entry to find out.
   */
  readonly lastIndex?: Index;
}

/** InstallSnapshot (§7). */
export interface SnapshotRequest extends Envelope {
  readonly type: typeof MessageType.Snap;
  readonly snapshot: Snapshot;
}

/** Leadership transfer (thesis §3.10): the target campaigns at once. */
export interface TimeoutNow extends Envelope {
  readonly type: typeof MessageType.TimeoutNow;
}

export type Message =
  | VoteRequest
  | VoteResponse
  | AppendRequest
  | AppendResponse
  | Heartbeat
  | HeartbeatResponse
  | SnapshotRequest
  | TimeoutNow;

/** A linearizable read released by ReadIndex: serve it once `applied >= index`. */
export interface ReadState {
  readonly index: Index;
  readonly context: unknown;
}

export function isResponse(m: Message): boolean {
  return (
    m.type === MessageType.VoteResp ||
    m.type === MessageType.PreVoteResp ||
    m.type === MessageType.AppResp ||
    m.type === MessageType.HeartbeatResp
  );
}

/** Total payload bytes of entries, used for the per-append and uncommitted-size limits. */
export function entriesSize(entries: readonly Entry[]): number {
  let n = 0;
  for (const e of entries) n += e.data.byteLength;
  return n;
}
