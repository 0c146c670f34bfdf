export { buildApp, API_VERSION } from './app.js';
export type { ApiDeps, Broker, ClusterView } from './deps.js';
export { ApiError } from './errors.js';
export { LIMITS } from './schemas/common.js';
export { Receipts } from './receipts.js';
