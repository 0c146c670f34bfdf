// Migrations of a partition's broker database. Frozen in time: a migration never imports app code and
// never changes once released; a new change is a new numbered migration.
import { sql, type Kysely, type Migration, type MigrationProvider } from 'kysely';

const m001: Migration = {
  async up(db: Kysely<unknown>): Promise<void> {
    await db.schema.createTable('meta').addColumn('key', 'text', (c) => c.primaryKey()).addColumn('value', 'integer', (c) => c.notNull()).execute();
    await db.schema
      .createTable('users')
      .addColumn('username', 'text', (c) => c.primaryKey())
      .addColumn('password_hash', 'text', (c) => c.notNull())
      .addColumn('created_at', 'integer', (c) => c.notNull())
      .execute();
    await db.schema
      .createTable('channels')
      .addColumn('id', 'integer', (c) => c.primaryKey())
      .addColumn('kind', 'text', (c) => c.notNull())
      .addColumn('owner', 'text', (c) => c.notNull())
      .addColumn('visibility_timeout_ms', 'integer', (c) => c.notNull())
      .addColumn('max_deliveries', 'integer')
      .addColumn('dead_letter_queue', 'text')
      .addColumn('delay_ms', 'integer', (c) => c.notNull())
      .addColumn('retention_ms', 'integer', (c) => c.notNull())
      .addColumn('next_seq', 'integer', (c) => c.notNull())
      .addColumn('n_ready', 'integer', (c) => c.notNull())
      .addColumn('n_leased', 'integer', (c) => c.notNull())
      .addColumn('n_delayed', 'integer', (c) => c.notNull())
      .addColumn('n_dropped', 'integer', (c) => c.notNull())
      .addColumn('created_at', 'integer', (c) => c.notNull())
      .execute();
    await db.schema
      .createTable('queues')
      .addColumn('name', 'text', (c) => c.primaryKey())
      .addColumn('channel_id', 'integer', (c) => c.notNull())
      .execute();
    await db.schema
      .createTable('topics')
      .addColumn('name', 'text', (c) => c.primaryKey())
      .addColumn('id', 'integer', (c) => c.notNull())
      .addColumn('owner', 'text', (c) => c.notNull())
      .addColumn('subscribe_policy', 'text', (c) => c.notNull())
      .addColumn('next_seq', 'integer', (c) => c.notNull())
      .addColumn('published', 'integer', (c) => c.notNull())
      .addColumn('created_at', 'integer', (c) => c.notNull())
      .execute();
    await db.schema
      .createTable('subscriptions')
      .addColumn('topic', 'text', (c) => c.notNull())
      .addColumn('name', 'text', (c) => c.notNull())
      .addColumn('channel_id', 'integer', (c) => c.notNull())
      .addColumn('filter', 'text')
      .addPrimaryKeyConstraint('subscriptions_pk', ['topic', 'name'])
      .execute();
    await db.schema
      .createTable('grants')
      .addColumn('resource_kind', 'text', (c) => c.notNull())
      .addColumn('resource_name', 'text', (c) => c.notNull())
      .addColumn('username', 'text', (c) => c.notNull())
      .addColumn('actions', 'text', (c) => c.notNull())
      .addPrimaryKeyConstraint('grants_pk', ['resource_kind', 'resource_name', 'username'])
      .execute();
    await db.schema
      .createTable('messages')
      .addColumn('channel_id', 'integer', (c) => c.notNull())
      .addColumn('seq', 'integer', (c) => c.notNull())
      .addColumn('message_id', 'text', (c) => c.notNull())
      .addColumn('body', 'text', (c) => c.notNull())
      .addColumn('attributes', 'text', (c) => c.notNull())
      .addColumn('sent_at', 'integer', (c) => c.notNull())
      .addColumn('state', 'integer', (c) => c.notNull())
      .addColumn('visible_at', 'integer', (c) => c.notNull())
      .addColumn('delivery_count', 'integer', (c) => c.notNull())
      .addColumn('lease_id', 'integer', (c) => c.notNull())
      .addColumn('expires_at', 'integer', (c) => c.notNull())
      .addPrimaryKeyConstraint('messages_pk', ['channel_id', 'seq'])
      .execute();
    // Receive: ready messages oldest first; and the leased or delayed ones whose time has come.
    await db.schema.createIndex('messages_ready').on('messages').columns(['channel_id', 'state', 'seq']).execute();
    await db.schema.createIndex('messages_due').on('messages').columns(['channel_id', 'state', 'visible_at']).execute();
    // Retention: expired messages are a prefix in sequence order, found without a scan.
    await db.schema.createIndex('messages_expiry').on('messages').columns(['channel_id', 'expires_at']).execute();
    await db.schema
      .createTable('dedup')
      .addColumn('channel_id', 'integer', (c) => c.notNull())
      .addColumn('dedup_id', 'text', (c) => c.notNull())
      .addColumn('message_id', 'text', (c) => c.notNull())
      .addColumn('seq', 'integer', (c) => c.notNull())
      .addColumn('expires_at', 'integer', (c) => c.notNull())
      .addPrimaryKeyConstraint('dedup_pk', ['channel_id', 'dedup_id'])
      .execute();
    await db.schema.createIndex('dedup_expiry').on('dedup').columns(['channel_id', 'expires_at']).execute();
    await db.schema
      .createTable('idempotency')
      .addColumn('username', 'text', (c) => c.notNull())
      .addColumn('key', 'text', (c) => c.notNull())
      .addColumn('fingerprint', 'text', (c) => c.notNull())
      .addColumn('result', 'text', (c) => c.notNull())
      .addColumn('expires_at', 'integer', (c) => c.notNull())
      .addPrimaryKeyConstraint('idempotency_pk', ['username', 'key'])
      .execute();
    await db.schema.createIndex('idempotency_expiry').on('idempotency').columns(['expires_at']).execute();
    await db.schema
      .createTable('outbox')
      .addColumn('id', 'integer', (c) => c.primaryKey())
      .addColumn('target_queue', 'text', (c) => c.notNull())
      .addColumn('expected_owner', 'text', (c) => c.notNull())
      .addColumn('message_id', 'text', (c) => c.notNull())
      .addColumn('body', 'text', (c) => c.notNull())
      .addColumn('attributes', 'text', (c) => c.notNull())
      .addColumn('created_at', 'integer', (c) => c.notNull())
      .execute();
    await sql`insert into meta (key, value) values ('applied_index', 0), ('applied_term', 0), ('clock', 0), ('outbox_seq', 0)`.execute(db);
  },
  async down(db: Kysely<unknown>): Promise<void> {
    for (const t of ['outbox', 'idempotency', 'dedup', 'messages', 'grants', 'subscriptions', 'topics', 'queues', 'channels', 'users', 'meta']) {
      await db.schema.dropTable(t).execute();
    }
  },
};

export const brokerMigrations: MigrationProvider = {
  getMigrations: async () => ({ '001_initial': m001 }),
};
