import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';

/**
 * The service's Prometheus metrics, one registry per process (no global registry). Components get
 * the metric objects they update as dependencies; gauges that are read from elsewhere (the
 * database, the circuit breaker, the subscription hub) are registered with `observe*` by the
 * process that owns those things.
 */
export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'payments_' });
  const seconds = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

  const metrics = {
    registry,
    sendPaymentSeconds: new Histogram({
      name: 'payments_send_payment_duration_seconds',
      help: 'sendPayment, from the resolver call to its answer, by outcome (ok or the user error code)',
      labelNames: ['outcome'] as const,
      buckets: seconds,
      registers: [registry],
    }),
    transactionSeconds: new Histogram({
      name: 'payments_send_payment_transaction_seconds',
      help: 'The sendPayment database transaction (BEGIN to COMMIT or ROLLBACK)',
      buckets: seconds,
      registers: [registry],
    }),
    providerCalls: new Histogram({
      name: 'payments_provider_call_duration_seconds',
      help: 'Calls to the payment provider, by operation and classified outcome',
      labelNames: ['operation', 'outcome'] as const,
      buckets: seconds,
      registers: [registry],
    }),
    settlementRetries: new Counter({
      name: 'payments_settlement_retries_total',
      help: 'Settlement attempts that ended in "retry later", by step',
      labelNames: ['step'] as const,
      registers: [registry],
    }),
    webhookDeliveries: new Counter({
      name: 'payments_webhook_deliveries_total',
      help: 'Webhook delivery attempts, by outcome (succeeded, retrying, failed: its retry window is over) and reason (ok, http_status, timeout, network, refused_address)',
      labelNames: ['outcome', 'reason'] as const,
      registers: [registry],
    }),
    webhookLatency: new Histogram({
      name: 'payments_webhook_delivery_latency_seconds',
      help: 'From a payment event to its successful webhook delivery (retries included)',
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 6 * 3600, 24 * 3600, 72 * 3600],
      registers: [registry],
    }),
    settled: new Counter({
      name: 'payments_settled_total',
      help: 'Payments this process moved out of PENDING, by new status',
      labelNames: ['status'] as const,
      registers: [registry],
    }),
    // Payee safety: refusals, holds and operators' decisions on them.
    held: new Counter({
      name: 'payments_held_total',
      help: 'Payments taken as HELD for review, by reason (amount, new-payee)',
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
    holdDecisions: new Counter({
      name: 'payments_hold_decisions_total',
      help: 'Held payments approved or cancelled, by decision (APPROVED, REJECTED_IN_REVIEW, HOLD_EXPIRED, CANCELLED_BY_CUSTOMER)',
      labelNames: ['decision'] as const,
      registers: [registry],
    }),
    refusals: new Counter({
      name: 'payments_safety_refusals_total',
      help: 'Payments refused by payee safety, by code (LIMIT_EXCEEDED, PAYEE_NOT_CONFIRMED)',
      labelNames: ['code'] as const,
      registers: [registry],
    }),
    scheduledExecuted: new Counter({
      name: 'payments_scheduled_executed_total',
      help: 'Scheduled payments whose day came, by what happened (PENDING: debited and sent on; FAILED: funds short)',
      labelNames: ['status'] as const,
      registers: [registry],
    }),
    standingOrderOccurrences: new Counter({
      name: 'payments_standing_order_occurrences_total',
      help: 'Standing-order occurrences this process created as payments',
      registers: [registry],
    }),
    cancellations: new Counter({
      name: 'payments_cancellations_total',
      help: 'cancelPayment answers, by outcome (CANCELLED, or the reason it was not)',
      labelNames: ['outcome'] as const,
      registers: [registry],
    }),
    providerEvents: new Counter({
      name: 'payments_provider_events_total',
      help: "Events applied from the provider's feed, by type and what they did",
      labelNames: ['type', 'outcome'] as const,
      registers: [registry],
    }),
    providerEventsQuarantined: new Counter({
      name: 'payments_provider_events_quarantined_total',
      help: "Events of the provider's feed the parser refused, quarantined for operators (quarantinedProviderEvents) instead of applied, by type",
      labelNames: ['type'] as const,
      registers: [registry],
    }),
    reconciliationBreaks: new Counter({
      name: 'payments_reconciliation_breaks_total',
      help: "Breaks found between the provider's daily settlement report and our books, by kind (each counted once, when first found)",
      labelNames: ['kind'] as const,
      registers: [registry],
    }),
    creditReturns: new Counter({
      name: 'payments_credit_returns_total',
      help: 'Inbound credits for no account of ours sent back to the provider (confirmed)',
      registers: [registry],
    }),
  };
  return metrics;
}

export type Metrics = ReturnType<typeof createMetrics>;

/** Registers a gauge whose value is read at scrape time. */
export function observeGauge(
  registry: Registry,
  options: { name: string; help: string; labelNames?: readonly string[] },
  read: () =>
    | Promise<Array<{ labels?: Record<string, string>; value: number }>>
    | Array<{ labels?: Record<string, string>; value: number }>,
): void {
  new Gauge({
    name: options.name,
    help: options.help,
    labelNames: options.labelNames ?? [],
    registers: [registry],
    async collect() {
      this.reset();
      for (const { labels, value } of await read()) {
        if (labels) this.set(labels, value);
        else this.set(value);
      }
    },
  });
}

/**
 * `read`, shared: calls while one is running wait for it (single flight), and its result is reused
 * for `maxAgeMs` after it arrives. A failure is not kept, so the next call tries again.
 */
export function sharedRead<T>(read: () => Promise<T>, maxAgeMs: number): () => Promise<T> {
  let running: Promise<T> | null = null;
  let last: { at: number; value: T } | null = null;
  return () => {
    if (last && Date.now() - last.at < maxAgeMs) return Promise.resolve(last.value);
    running ??= read()
      .then((value) => {
        last = { at: Date.now(), value };
        return value;
      })
      .finally(() => {
        running = null;
      });
    return running;
  };
}
