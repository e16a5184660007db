import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { type ApolloServer, type BaseContext, HeaderMap } from '@apollo/server';
import express from 'express';

/** Serves one HTTP request with plain node objects: no framework is needed to call it. */
export type HttpHandler = (req: IncomingMessage, res: ServerResponse) => void;

/** A request after `express.json` has read its body (undefined when it had none). */
type ParsedRequest = IncomingMessage & { body?: unknown };

const REQUEST_ID = /^[\w.:-]{1,100}$/;

/**
 * Apollo Server over node's own request and response, through its integration API
 * (`executeHTTPGraphQLRequest`, the one @as-integrations/express5 uses), answering without what a
 * GraphQL answer does not need: Express's `res.send` hashes every answer for an ETag (answers to
 * POSTs are never revalidated), node's legacy `url.parse` of every request path only to find its
 * query string, and Express's router, which swaps the prototypes of every request and response
 * and walks its layers. All were visible per request in the profile (bench/README.md).
 *
 * The body is read by the same `express.json` every other JSON route uses (its size limit, its
 * content types, its errors); a body it refuses, or an unexpected failure, goes to `fail`.
 */
export function graphqlHandler<C extends BaseContext>(
  apollo: ApolloServer<C>,
  options: {
    bodyLimit: string;
    /** The operation's context, from the request and the id it is logged under. */
    context: (req: IncomingMessage, requestId: string) => Promise<C>;
    fail: (error: unknown, req: IncomingMessage, res: ServerResponse) => void;
  },
): HttpHandler {
  apollo.assertStarted('graphqlHandler()');
  const readJson = express.json({ limit: options.bodyLimit });

  async function answer(req: ParsedRequest, res: ServerResponse, requestId: string): Promise<void> {
    const headers = new HeaderMap();
    for (const [key, value] of Object.entries(req.headers)) {
      if (value !== undefined) headers.set(key, Array.isArray(value) ? value.join(', ') : value);
    }
    // A request target has no fragment: the query string is everything after the first '?'.
    const url = req.url ?? '';
    const question = url.indexOf('?');
    const response = await apollo.executeHTTPGraphQLRequest({
      httpGraphQLRequest: {
        method: (req.method ?? 'GET').toUpperCase(),
        headers,
        search: question === -1 ? '' : url.slice(question),
        body: req.body,
      },
      context: () => options.context(req, requestId),
    });
    for (const [key, value] of response.headers) res.setHeader(key, value);
    res.statusCode = response.status ?? 200;
    if (response.body.kind === 'complete') {
      res.setHeader('content-length', Buffer.byteLength(response.body.string));
      res.end(response.body.string);
      return;
    }
    for await (const chunk of response.body.asyncIterator) res.write(chunk);
    res.end();
  }

  return (req, res) => {
    // Every request has an id, taken from the caller (a load balancer) or made here, echoed back
    // and written on every log line about it.
    const incoming = req.headers['x-request-id'];
    const requestId = typeof incoming === 'string' && REQUEST_ID.test(incoming) ? incoming : randomUUID();
    res.setHeader('x-request-id', requestId);
    readJson(req, res, (error?: unknown) => {
      if (error !== undefined) return options.fail(error, req, res);
      answer(req, res, requestId).catch((failure: unknown) => options.fail(failure, req, res));
    });
  };
}

/** Whether a request target is exactly `path`, with or without a query string. */
export function isPathOf(path: string, target: string | undefined): boolean {
  if (!target?.startsWith(path)) return false;
  return target.length === path.length || target[path.length] === '?';
}
