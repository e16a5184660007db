import { context, propagation, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';

/**
 * Carrying a trace across the job queue: the transaction that enqueues a job writes the current
 * trace context into the job's data, and the worker continues that trace when it runs the job,
 * so one payment is one trace from `sendPayment` to the provider call. With tracing off (no
 * provider registered) both are no-ops.
 */
export type TraceCarrier = Record<string, string>;

/** The current trace context (W3C `traceparent`, `tracestate`), or undefined when there is none. */
export function currentTraceCarrier(): TraceCarrier | undefined {
  const carrier: TraceCarrier = {};
  propagation.inject(context.active(), carrier);
  return Object.keys(carrier).length > 0 ? carrier : undefined;
}

/** Runs `fn` in a consumer span named `name`, a child of the trace in `carrier` if there is one. */
export function withTraceFrom<T>(
  carrier: TraceCarrier | undefined,
  name: string,
  attributes: Record<string, string>,
  fn: () => Promise<T>,
): Promise<T> {
  const parent = carrier ? propagation.extract(context.active(), carrier) : context.active();
  return trace.getTracer('payments').startActiveSpan(name, { kind: SpanKind.CONSUMER, attributes }, parent, async (span) => {
    try {
      return await fn();
    } catch (error) {
      span.recordException(error instanceof Error ? error : String(error));
      span.setStatus({ code: SpanStatusCode.ERROR });
      throw error;
    } finally {
      span.end();
    }
  });
}
