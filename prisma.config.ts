import { defineConfig } from 'prisma/config';

// Prisma 7 reads no .env by itself. The CLI is only used here for `prisma generate`;
// migrations are applied by src/db/migrate.ts (see docs/decisions/0001-migrations-without-the-prisma-engine.md).
export default defineConfig({
  schema: 'prisma/schema.prisma',
  migrations: { path: 'prisma/migrations' },
  datasource: { url: process.env.DATABASE_URL ?? 'postgresql://localhost:5432/payments' },
});
