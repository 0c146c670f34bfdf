// A node's configuration: command-line flags, then environment variables (MOM_*), then a JSON file
// (--config or MOM_CONFIG), in that order of precedence. Anything wrong stops the node with a message
// that names the setting and says what is expected.
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { nodeId, type NodeId } from '../raft/index.js';
import { mkdirDurably, writeFileDurably } from '../store/durable.js';
import { MAX_SEGMENT_BYTES } from '../store/wal/index.js';
import { secretTag } from './secret.js';

export interface PeerAddress {
  readonly id: NodeId;
  /** Base URL other nodes use to reach it (http://host:port or https://host:port). */
  readonly url: string;
}

export interface NodeConfig {
  readonly nodeId: NodeId;
  readonly host: string;
  readonly port: number;
  readonly advertisedUrl: string;
  /** Every voter of the cluster, this node included, in a fixed order. */
  readonly peers: readonly PeerAddress[];
  readonly dataDir: string;
  readonly clusterSecret: string;
  readonly jwtSecret: string;
  /** Fixed when the cluster is first created. */
  readonly partitions: number;
  readonly tls: { readonly cert: string; readonly key: string; readonly ca: string } | null;
  /**
   * Addresses or CIDR ranges of the load balancers in front of the node, whose X-Forwarded-For is
   * believed: the client address of per-address limits. Empty: the connection's address.
   */
  readonly trustProxy: readonly string[];
  /**
   * Bearer token a scraper presents to /metrics. With it, /metrics needs it and shows per-queue
   * depths; without, /metrics is open and shows per-partition totals only (no names leak).
   */
  readonly metricsToken: string | null;
  /** Applied entries between two snapshots of a partition (log compaction); default 10,000. */
  readonly snapshotEvery: number;
  /** Log entries kept behind a snapshot, so a briefly slow follower catches up without one; default 1000. */
  readonly keepBehindSnapshot: number;
  /**
   * The data folder may be older than the cluster (restored from a backup): vote only after catching
   * up from the partitions' leaders, as a node with an empty data folder always does.
   */
  readonly rejoin: boolean;
  /**
   * Free bytes of the data folder's disk under which this node is short of space: the cluster then
   * refuses sends, publishes and creations (src/cluster/disk-space.ts); 0 never refuses.
   */
  readonly diskFreeLimit: number;
  /** Size of the Raft log's segment files (default 64 MiB): how much the log takes and frees at a time. */
  readonly logSegmentBytes: number;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** The settings, each with its flag, environment variable and file key. */
const SETTINGS = {
  nodeId: { flag: 'node-id', env: 'MOM_NODE_ID', what: 'this node’s id, one of the ids in --peers' },
  listen: { flag: 'listen', env: 'MOM_LISTEN', what: 'host:port to listen on, e.g. 0.0.0.0:8080' },
  advertisedUrl: { flag: 'advertised-url', env: 'MOM_ADVERTISED_URL', what: 'the URL peers use to reach this node' },
  peers: { flag: 'peers', env: 'MOM_PEERS', what: 'every node as id=url, comma-separated, e.g. n1=http://10.0.0.1:8080,...' },
  dataDir: { flag: 'data-dir', env: 'MOM_DATA_DIR', what: 'folder for this node’s data' },
  clusterSecret: { flag: 'cluster-secret', env: 'MOM_CLUSTER_SECRET', what: 'shared secret of the nodes, at least 16 characters' },
  jwtSecret: { flag: 'jwt-secret', env: 'MOM_JWT_SECRET', what: 'key that signs access tokens, at least 32 characters, the same on every node' },
  partitions: { flag: 'partitions', env: 'MOM_PARTITIONS', what: 'number of partitions, 1 to 1024 (default 16), fixed at cluster creation' },
  tlsCert: { flag: 'tls-cert', env: 'MOM_TLS_CERT', what: 'PEM certificate file for HTTPS' },
  tlsKey: { flag: 'tls-key', env: 'MOM_TLS_KEY', what: 'PEM private key file for HTTPS' },
  tlsCa: { flag: 'tls-ca', env: 'MOM_TLS_CA', what: 'PEM CA file that signed every node’s certificate' },
  snapshotEvery: { flag: 'snapshot-every', env: 'MOM_SNAPSHOT_EVERY', what: 'applied entries between two snapshots of a partition, 100 to 10000000 (default 10000)' },
  keepBehindSnapshot: { flag: 'keep-behind-snapshot', env: 'MOM_KEEP_BEHIND_SNAPSHOT', what: 'log entries kept behind a snapshot, 0 to 10000000 (default 1000)' },
  metricsToken: { flag: 'metrics-token', env: 'MOM_METRICS_TOKEN', what: 'bearer token for /metrics (at least 16 characters); enables per-queue series' },
  trustProxy: { flag: 'trust-proxy', env: 'MOM_TRUST_PROXY', what: 'load balancer addresses or CIDR ranges whose X-Forwarded-For is believed, comma-separated' },
  rejoin: { flag: 'rejoin', env: 'MOM_REJOIN', what: 'after restoring the data folder from a backup: vote only once caught up from the leaders (a switch; default false)' },
  diskFreeLimit: {
    flag: 'disk-free-limit',
    env: 'MOM_DISK_FREE_LIMIT',
    what: 'free space of the data folder\'s disk under which the cluster refuses sends, publishes and creations, in bytes or with kB, MB, GB, KiB, MiB, GiB (default 512MiB; 0 never refuses)',
  },
  logSegmentBytes: {
    flag: 'log-segment-bytes',
    env: 'MOM_LOG_SEGMENT_BYTES',
    what: 'size of the Raft log\'s segment files, 64KiB to 2GiB, in bytes or with kB, MB, KiB, MiB (default 64MiB)',
  },
} as const;
/** Settings that are switches: `--flag` alone means true. */
const SWITCHES = new Set<string>(['rejoin']);
type Key = keyof typeof SETTINGS;

export function parseArgs(argv: readonly string[]): { values: Partial<Record<Key | 'config', string>> } {
  const byFlag = new Map<string, Key | 'config'>(Object.entries(SETTINGS).map(([k, s]) => [s.flag, k as Key]));
  byFlag.set('config', 'config');
  const values: Partial<Record<Key | 'config', string>> = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith('--')) throw new ConfigError(`unexpected argument '${arg}'`);
    const eq = arg.indexOf('=');
    const flag = eq < 0 ? arg.slice(2) : arg.slice(2, eq);
    const key = byFlag.get(flag);
    if (key === undefined) throw new ConfigError(`unknown option --${flag}; known: ${[...byFlag.keys()].map((f) => `--${f}`).join(' ')}`);
    const next = argv[i + 1];
    const value = eq >= 0 ? arg.slice(eq + 1) : SWITCHES.has(key) && (next === undefined || next.startsWith('--')) ? 'true' : argv[++i];
    if (value === undefined || value === '') throw new ConfigError(`--${flag} needs a value: ${key === 'config' ? 'a JSON file' : SETTINGS[key].what}`);
    values[key] = value;
  }
  return { values };
}

export function loadConfig(argv: readonly string[], env: Readonly<Record<string, string | undefined>>): NodeConfig {
  const { values: flags } = parseArgs(argv);
  const file = flags.config ?? env.MOM_CONFIG;
  let fromFile: Record<string, unknown> = {};
  if (file !== undefined) {
    try {
      fromFile = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
    } catch (err) {
      throw new ConfigError(`cannot read the configuration file ${file}: ${(err as Error).message}`);
    }
    if (typeof fromFile !== 'object' || fromFile === null || Array.isArray(fromFile)) throw new ConfigError(`${file} must hold a JSON object`);
  }
  const get = (k: Key): string | undefined => {
    // An empty variable is an unset one (compose's ${MOM_METRICS_TOKEN:-} when the operator sets none).
    const fromEnv = env[SETTINGS[k].env];
    const v = flags[k] ?? (fromEnv === '' ? undefined : fromEnv) ?? fromFile[k];
    if (v === undefined || v === '') return undefined;
    if (typeof v === 'number') return String(v);
    if (typeof v !== 'string') throw new ConfigError(`${k} in ${file} must be a string`);
    return v;
  };
  const need = (k: Key): string => {
    const v = get(k);
    if (v === undefined || v === '') throw new ConfigError(`missing ${k} (--${SETTINGS[k].flag} or ${SETTINGS[k].env}): ${SETTINGS[k].what}`);
    return v;
  };

  const id = need('nodeId');
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(id)) throw new ConfigError(`nodeId '${id}' must match [A-Za-z0-9_-]{1,64}`);
  const peers = parsePeers(need('peers'));
  if (!peers.some((p) => p.id === id)) throw new ConfigError(`nodeId '${id}' is not among the peers (${peers.map((p) => p.id).join(', ')})`);
  const [host, port] = parseListen(need('listen'));
  const advertisedUrl = get('advertisedUrl') ?? peers.find((p) => p.id === id)!.url;
  checkUrl('advertisedUrl', advertisedUrl);
  const clusterSecret = need('clusterSecret');
  if (clusterSecret.length < 16) throw new ConfigError('clusterSecret must be at least 16 characters');
  const jwtSecret = need('jwtSecret');
  if (jwtSecret.length < 32) throw new ConfigError('jwtSecret must be at least 32 characters');
  const metricsToken = get('metricsToken') ?? null;
  if (metricsToken !== null && metricsToken.length < 16) throw new ConfigError('metricsToken must be at least 16 characters');
  const snapshotText = get('snapshotEvery') ?? '10000';
  const snapshotEvery = Number(snapshotText);
  if (!Number.isInteger(snapshotEvery) || snapshotEvery < 100 || snapshotEvery > 10_000_000) {
    throw new ConfigError(`snapshotEvery must be an integer from 100 to 10000000, got '${snapshotText}'`);
  }
  const keepText = get('keepBehindSnapshot') ?? '1000';
  const keepBehindSnapshot = Number(keepText);
  if (!Number.isInteger(keepBehindSnapshot) || keepBehindSnapshot < 0 || keepBehindSnapshot > 10_000_000) {
    throw new ConfigError(`keepBehindSnapshot must be an integer from 0 to 10000000, got '${keepText}'`);
  }
  const segmentText = get('logSegmentBytes') ?? '64MiB';
  const logSegmentBytes = parseBytes('logSegmentBytes', segmentText);
  if (logSegmentBytes < 64 * 1024 || logSegmentBytes > MAX_SEGMENT_BYTES) throw new ConfigError(`logSegmentBytes must be from 64KiB to 2GiB, got '${segmentText}'`);
  const partitionsText = get('partitions') ?? '16';
  const partitions = Number(partitionsText);
  if (!Number.isInteger(partitions) || partitions < 1 || partitions > 1024) throw new ConfigError(`partitions must be an integer from 1 to 1024, got '${partitionsText}'`);
  const cert = get('tlsCert');
  const key = get('tlsKey');
  const ca = get('tlsCa');
  const tlsParts = [cert, key, ca].filter((x) => x !== undefined).length;
  if (tlsParts !== 0 && tlsParts !== 3) throw new ConfigError('TLS needs all three of tlsCert, tlsKey and tlsCa');
  return {
    nodeId: nodeId(id),
    host,
    port,
    advertisedUrl,
    peers,
    dataDir: need('dataDir'),
    clusterSecret,
    jwtSecret,
    partitions,
    tls: tlsParts === 3 ? { cert: cert!, key: key!, ca: ca! } : null,
    trustProxy: parseTrustProxy(get('trustProxy') ?? ''),
    metricsToken,
    snapshotEvery,
    keepBehindSnapshot,
    rejoin: parseSwitch('rejoin', get('rejoin')),
    diskFreeLimit: parseBytes('diskFreeLimit', get('diskFreeLimit') ?? '512MiB'),
    logSegmentBytes,
  };
}

const BYTE_UNITS: Record<string, number> = { '': 1, b: 1, kb: 1e3, mb: 1e6, gb: 1e9, tb: 1e12, kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30, tib: 2 ** 40 };

/** A size in bytes: a number with an optional unit (kB, MB, GB, TB at 1000; KiB, MiB, GiB, TiB at 1024). */
function parseBytes(name: string, text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  const unit = m === null ? undefined : BYTE_UNITS[m[2]!.toLowerCase()];
  if (m === null || unit === undefined) throw new ConfigError(`${name} must be a size such as 512MiB, 2GB or 1073741824, got '${text}'`);
  const bytes = Math.round(Number(m[1]) * unit);
  if (!Number.isSafeInteger(bytes)) throw new ConfigError(`${name} is too large: '${text}'`);
  return bytes;
}

function parseSwitch(name: string, text: string | undefined): boolean {
  if (text === undefined || text === '' || text === 'false' || text === '0') return false;
  if (text === 'true' || text === '1') return true;
  throw new ConfigError(`${name} must be true or false, got '${text}'`);
}

function parsePeers(text: string): PeerAddress[] {
  const peers: PeerAddress[] = [];
  for (const part of text.split(',').map((s) => s.trim()).filter((s) => s.length > 0)) {
    const eq = part.indexOf('=');
    if (eq <= 0) throw new ConfigError(`peer '${part}' must be id=url`);
    const id = part.slice(0, eq);
    const url = part.slice(eq + 1).replace(/\/+$/, '');
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(id)) throw new ConfigError(`peer id '${id}' must match [A-Za-z0-9_-]{1,64}`);
    checkUrl(`peer ${id}`, url);
    if (peers.some((p) => p.id === id)) throw new ConfigError(`peer id '${id}' appears twice`);
    peers.push({ id: nodeId(id), url });
  }
  if (peers.length !== 3) throw new ConfigError(`a cluster has exactly three nodes; --peers names ${peers.length}`);
  return peers;
}

function parseTrustProxy(text: string): string[] {
  const items = text.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
  for (const item of items) {
    if (!/^[0-9A-Fa-f.:]+(\/\d{1,3})?$/.test(item)) throw new ConfigError(`trustProxy: '${item}' is not an IP address or CIDR range`);
  }
  return items;
}

function parseListen(text: string): [string, number] {
  const m = /^(.+):(\d{1,5})$/.exec(text);
  const port = m === null ? NaN : Number(m[2]);
  if (m === null || port > 65535) throw new ConfigError(`listen '${text}' must be host:port`);
  return [m[1]!.replace(/^\[(.*)\]$/, '$1'), port];
}

function checkUrl(what: string, url: string): void {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new ConfigError(`${what}: '${url}' is not a URL`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new ConfigError(`${what}: '${url}' must be http or https`);
}

/**
 * The partition count and the node ids are fixed when a node's data folder is first used: a later
 * start with other values would route names to the wrong partitions, so it is refused.
 */
interface ClusterIdentity {
  partitions: number;
  nodeId: string;
  peers: string[];
  /**
   * Which cluster made the folder: a keyed digest of its cluster secret (secretDigest), so that a
   * folder of another cluster of the same ids and partition count (a backup of the wrong cluster, a
   * MOM_LOCAL_DATA of another checkout) is refused instead of mixing its log into this one. Absent in
   * folders made before it; recorded at their next start.
   */
  cluster?: string;
  /**
   * Set while this data folder may be older than the cluster (new or emptied, or restored from a
   * backup with --rejoin) and some partition has not yet caught up from its leader: until then the
   * node grants no vote and never campaigns (Raft.suspendVoting). Cleared once all have.
   */
  catchingUp?: true;
  /**
   * Set with catchingUp when this folder is known to have taken part in the cluster before (its log
   * was lost while cluster.json was kept, or it was restored with --rejoin): unlike a new folder, it
   * never takes peers as empty as itself for a new cluster (ClusterNode.learnTerms).
   */
  tookPart?: true;
}

/**
 * Checks that the data folder belongs to this node and cluster, creating its identity file on first
 * use. Answers whether the node must catch up from the partitions' leaders before it may vote: a new
 * folder cannot tell a new cluster from a lost disk, and a restored one may have voted and
 * acknowledged entries since its backup.
 */
export function checkClusterIdentity(cfg: NodeConfig): { catchingUp: boolean; tookPart: boolean; recordCluster: boolean } {
  const path = `${cfg.dataDir}/cluster.json`;
  const mine = identityOf(cfg);
  let existing: ClusterIdentity | null = null;
  try {
    existing = JSON.parse(readFileSync(path, 'utf8')) as ClusterIdentity;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new ConfigError(`cannot read ${path}: ${(err as Error).message}`);
  }
  if (existing === null) {
    const held = heldData(cfg.dataDir);
    if (held.length > 0) {
      throw new ConfigError(
        `${cfg.dataDir} holds ${held.join(', ')} but no cluster.json, so nothing says it is this node's folder of this cluster: an archive made without its cluster.json, another cluster's folder, or a restore cut short. Empty the folder to rebuild this node from its peers (docs/operations.md, "Rebuild a lost node from its peers"), or restore it again`,
      );
    }
    mkdirDurably(cfg.dataDir);
    writeIdentity(cfg, true, false);
    return { catchingUp: true, tookPart: false, recordCluster: false };
  }
  if (existing.partitions !== mine.partitions) {
    throw new ConfigError(`${cfg.dataDir} belongs to a cluster of ${existing.partitions} partitions; partitions=${mine.partitions} would misroute every name`);
  }
  if (existing.nodeId !== mine.nodeId) throw new ConfigError(`${cfg.dataDir} holds the data of node ${existing.nodeId}, not ${mine.nodeId}`);
  if (existing.peers.join(',') !== mine.peers.join(',')) {
    throw new ConfigError(`${cfg.dataDir} belongs to a cluster of ${existing.peers.join(', ')}; changing members is not supported`);
  }
  if (existing.cluster !== undefined && existing.cluster !== secretDigest(cfg.clusterSecret)) {
    throw new ConfigError(
      `${cfg.dataDir} belongs to another cluster: it was made with another cluster secret. Give this node its own cluster's folder or secret (to change a cluster's secret on purpose, remove "cluster" from the cluster.json of each of its nodes)`,
    );
  }
  // --rejoin is recorded by ClusterNode.open once the log's LOCK is taken (recordIdentity): written
  // here, a second process started on the folder of a running node would leave it catching up.
  return { catchingUp: cfg.rejoin || existing.catchingUp === true, tookPart: cfg.rejoin || existing.tookPart === true, recordCluster: existing.cluster === undefined };
}

/**
 * What of a node's data `dataDir` holds (a log, partition states, images, an older build's log): a
 * folder without cluster.json that holds any of it is refused. Taken for a new folder, its log and
 * states, of another cluster or another node, were kept under this cluster's entries wherever their
 * positions matched, and its leader and it exchanged appends and refusals thousands of times a second
 * where they did not (review of stop 62).
 */
function heldData(dataDir: string): string[] {
  // The log's LOCK files are no data: a folder held by a running node is said to be so (wal/LOCK).
  const nonEmpty = (dir: string): boolean => {
    try {
      return readdirSync(join(dataDir, dir)).some((name) => !(dir === 'wal' && (name === 'LOCK' || name === 'LOCK.boot')));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return false;
      throw err;
    }
  };
  const held = ['wal', 'state', 'snapshots'].filter(nonEmpty).map((d) => `${d}/`);
  if (existsSync(join(dataDir, 'raft-log.db'))) held.push('raft-log.db');
  return held;
}

/**
 * Records what checkClusterIdentity found, with the log's LOCK held (ClusterNode.open): that this
 * folder must catch up before it votes (its log is gone while cluster.json said it had caught up, or
 * it was restored: --rejoin), so that a crash before it has does not let a later start vote; and the
 * cluster of a folder made before cluster.json said it.
 */
export function recordIdentity(cfg: NodeConfig, catchingUp: boolean, tookPart: boolean): void {
  writeIdentity(cfg, catchingUp, tookPart);
}

/** What the cluster.json of `dataDir` records, or null where there is none (not a node's folder). */
export function folderIdentity(dataDir: string): Readonly<ClusterIdentity> | null {
  const path = `${dataDir}/cluster.json`;
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as ClusterIdentity;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new ConfigError(`cannot read ${path}: ${(err as Error).message}`);
  }
}

/** Whether a folder's recorded `cluster` (folderIdentity) was made with `clusterSecret`. */
export function madeWithSecret(identity: Readonly<ClusterIdentity>, clusterSecret: string): boolean {
  return identity.cluster === secretDigest(clusterSecret);
}

/** Records that every partition caught up (after that was persisted): later starts vote at once. */
export function markCaughtUp(cfg: NodeConfig): void {
  writeIdentity(cfg, false, false);
}

function identityOf(cfg: NodeConfig): ClusterIdentity {
  return { partitions: cfg.partitions, nodeId: cfg.nodeId, peers: cfg.peers.map((p) => p.id), cluster: secretDigest(cfg.clusterSecret) };
}

/** Which cluster a folder belongs to: a tag of its cluster secret. */
function secretDigest(clusterSecret: string): string {
  return secretTag(clusterSecret, 'mom data folder');
}

/**
 * Writes the folder's cluster.json durably: after a power cut an empty or torn file would keep the
 * node from starting (found by the chaos run's power-loss fault).
 */
function writeIdentity(cfg: NodeConfig, catchingUp: boolean, tookPart: boolean): void {
  const identity: ClusterIdentity = !catchingUp ? identityOf(cfg) : tookPart ? { ...identityOf(cfg), catchingUp: true, tookPart: true } : { ...identityOf(cfg), catchingUp: true };
  writeFileDurably(`${cfg.dataDir}/cluster.json`, JSON.stringify(identity, null, 2) + '\n');
}
