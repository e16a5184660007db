import { PrismaPg } from '@prisma/adapter-pg';
import { PrismaClient, type Prisma } from '../generated/prisma/client.ts';

export { PrismaClient };
export type { Account, Customer, LedgerEntry, Payment, PaymentAttempt } from '../generated/prisma/client.ts';

/** The client handed to `prisma.$transaction(async (tx) => ...)`. */
export type Tx = Prisma.TransactionClient;

/** A Prisma client on a node-postgres pool of `poolSize` connections. */
export function createPrisma(options: { databaseUrl: string; poolSize: number; applicationName?: string }): PrismaClient {
  const adapter = new PrismaPg({
    connectionString: options.databaseUrl,
    max: options.poolSize,
    application_name: options.applicationName ?? 'payments',
  });
  return new PrismaClient({ adapter });
}
