import pg from 'pg';
import { startPgBouncer } from './tools/pgbouncer.ts';
const b = await startPgBouncer({ serverHost: '127.0.0.1', serverPort: 5432 });
try {
  const c = new pg.Client({ connectionString: b.urlFor('postgres'), application_name: 'x', keepAlive: true });
  await c.connect();
  console.log((await c.query('select version(), $1::int as one', [1])).rows);
  await c.end();
  const d = new pg.Client({ connectionString: b.urlFor('postgres'), statement_timeout: 1000 });
  await d.connect().then(() => console.log('connected with statement_timeout?!'), (e) => console.log('refused:', e.message));
  await b.repoint('127.0.0.1', 5432);
  console.log('repointed');
} finally { console.log(b.log().slice(0, 600)); await b.stop(); }
