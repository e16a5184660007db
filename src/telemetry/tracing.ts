import type { SpanExporter } from '@opentelemetry/sdk-trace-node';

/**
 * OpenTelemetry tracing of one process: HTTP (server and the provider calls made with fetch),
 * GraphQL, PostgreSQL (pg) and Prisma spans, exported over OTLP/HTTP. Off, with nothing loaded,
 * unless an endpoint (OTEL_EXPORTER_OTLP_ENDPOINT) or an exporter is given.
 *
 * Call it before the rest of the process is imported: instrumentations patch libraries as they
 * load (the entry points import their process composition, src/app/, after it: main-*.ts).
 */
export interface Tracing {
  /** Flushes spans still buffered and stops exporting. */
  shutdown(): Promise<void>;
}

export async function startTracing(options: {
  serviceName: string;
  endpoint?: string | undefined;
  exporter?: SpanExporter;
}): Promise<Tracing | null> {
  if (!options.endpoint && !options.exporter) return null;
  // ES modules are patched through a loader hook (import-in-the-middle); CommonJS ones (pg,
  // graphql) through require hooks that registerInstrumentations installs.
  const { register } = await import('node:module');
  register('@opentelemetry/instrumentation/hook.mjs', import.meta.url);

  const [{ NodeTracerProvider, BatchSpanProcessor }, { registerInstrumentations }, { resourceFromAttributes }, { ATTR_SERVICE_NAME }] =
    await Promise.all([
      import('@opentelemetry/sdk-trace-node'),
      import('@opentelemetry/instrumentation'),
      import('@opentelemetry/resources'),
      import('@opentelemetry/semantic-conventions'),
    ]);
  const exporter =
    options.exporter ??
    new (await import('@opentelemetry/exporter-trace-otlp-http')).OTLPTraceExporter({
      url: `${options.endpoint?.replace(/\/+$/, '')}/v1/traces`,
    });
  const provider = new NodeTracerProvider({
    resource: resourceFromAttributes({ [ATTR_SERVICE_NAME]: options.serviceName }),
    spanProcessors: [new BatchSpanProcessor(exporter, { scheduledDelayMillis: 500 })],
  });
  // The global provider, the AsyncLocalStorage context manager and W3C trace-context propagation.
  provider.register();

  const [{ HttpInstrumentation }, { UndiciInstrumentation }, { GraphQLInstrumentation }, { PgInstrumentation }, { PrismaInstrumentation }] =
    await Promise.all([
      import('@opentelemetry/instrumentation-http'),
      import('@opentelemetry/instrumentation-undici'),
      import('@opentelemetry/instrumentation-graphql'),
      import('@opentelemetry/instrumentation-pg'),
      import('@prisma/instrumentation'),
    ]);
  registerInstrumentations({
    tracerProvider: provider,
    instrumentations: [
      // Health and metrics scrapes are not worth a trace each.
      new HttpInstrumentation({ ignoreIncomingRequestHook: (req) => /^\/(healthz|readyz|metrics)/.test(req.url ?? '') }),
      new UndiciInstrumentation(),
      new GraphQLInstrumentation({ mergeItems: true, ignoreTrivialResolveSpans: true }),
      new PgInstrumentation({ requireParentSpan: true }),
      new PrismaInstrumentation(),
    ],
  });
  return { shutdown: () => provider.shutdown() };
}
