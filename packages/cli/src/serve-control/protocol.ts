import { z } from 'zod';

/**
 * The control socket's protocol (docs/serve-ctl.md): one JSON object per
 * line each way, one request answered before the next is read.
 */

/** Longest request line, newline included. */
export const MAX_REQUEST_BYTES = 4096;
/** Requests one connection may make before it is closed. */
export const MAX_REQUESTS_PER_CONNECTION = 256;
/** Control connections served at once; a further one is closed at once. */
export const MAX_CONTROL_CONNECTIONS = 8;
/** A connection that sends nothing for this long is closed. */
export const IDLE_TIMEOUT_MS = 60_000;

export const CONTROL_COMMANDS = ['status', 'table', 'suspend', 'resume', 'message', 'remove'] as const;
export type ControlCommand = (typeof CONTROL_COMMANDS)[number];

const deviceName = z.string().min(1).max(255);

export const requestSchema = z.discriminatedUnion('command', [
  z.object({ command: z.literal('status'), device: deviceName.optional() }).strict(),
  z.object({ command: z.literal('table'), device: deviceName.optional() }).strict(),
  z.object({ command: z.literal('suspend'), device: deviceName }).strict(),
  z.object({ command: z.literal('resume'), device: deviceName }).strict(),
  z.object({ command: z.literal('message'), device: deviceName, args: z.array(z.string().max(255)).min(1).max(16) }).strict(),
  z.object({ command: z.literal('remove'), device: deviceName, force: z.boolean().optional() }).strict(),
]);
export type ControlRequest = z.infer<typeof requestSchema>;

/** How a refused or failed request is classed, as the CLI's exit codes class errors. */
export const replyErrorKinds = ['bad-input', 'device-refused', 'io'] as const;
export type ReplyErrorKind = (typeof replyErrorKinds)[number];

export const replySchema = z.union([
  z.object({ ok: z.literal(true), lines: z.array(z.string()) }).strict(),
  z.object({ ok: z.literal(false), error: z.object({ kind: z.enum(replyErrorKinds), message: z.string() }).strict() }).strict(),
]);
export type ControlReply = z.infer<typeof replySchema>;

/** A request the server refuses or that fails, with the kind that decides the client's exit code. */
export class ControlError extends Error {
  constructor(
    readonly kind: ReplyErrorKind,
    message: string,
  ) {
    super(message);
    this.name = 'ControlError';
  }
}
