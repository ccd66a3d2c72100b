import { type Logger, pino } from 'pino';

export type { Logger };

/**
 * Logs are pino JSON lines; every line carries an `event` field (auth, session, admin,
 * notify, ...). Nothing secret is ever passed to a log call: passwords and hashes stay inside
 * auth/, and tokens inside admin/. The redact list below is a second line of defence only.
 */
export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: {
        paths: ['password', '*.password', 'token', '*.token', 'hash', '*.hash'],
        censor: '[redacted]',
      },
    },
    // Asynchronous writes so that logging never blocks a login on a slow terminal or pipe.
    destination ?? pino.destination({ dest: 1, sync: false, minLength: 4096 }),
  );
}
