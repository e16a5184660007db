import { type DestinationStream, type Logger, pino } from 'pino';

export type { Logger };

/**
 * JSON logs on stdout. Tokens and account numbers never reach a log line: the paths below are
 * censored wherever they appear in a logged object.
 */
export function createLogger(options: { level: string; name: string; destination?: DestinationStream }): Logger {
  return pino(
    {
      name: options.name,
      level: options.level,
      redact: {
        paths: [
          'authorization',
          'token',
          '*.authorization',
          '*.token',
          'req.headers.authorization',
          'headers.authorization',
          'accountNumber',
          '*.accountNumber',
          '*.*.accountNumber',
          'recipient.accountNumber',
        ],
        censor: '[redacted]',
      },
    },
    options.destination,
  );
}
