export { ConfigError, checkClusterIdentity, loadConfig, type NodeConfig, type PeerAddress } from './config.js';
export { ClusterNode, type NodeOptions } from './node.js';
export { Router, type Answer, type RequestContext } from './router.js';
export { UnavailableError } from './errors.js';
export { SnapshotFetchError } from './snapshot-fetch.js';
export { HttpTransport, type TransportOptions, type TransportStats } from './transport.js';
export { internalRoutes, type InternalRoutesOptions } from './internal-routes.js';
export { encodeBatch, decodeBatch, WireFormatError, type BatchItem } from './wire.js';
export { secretsEqual } from './secret.js';
