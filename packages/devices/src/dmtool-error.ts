/**
 * What went wrong, in the terms a caller acts on:
 * - `bad-input`: a request or on-disk structure was refused before anything was written;
 * - `device-refused`: a device could not be opened as asked (missing, busy, locked, read-only);
 * - `io`: an I/O error during the work; what was done is reported;
 * - `interrupted`: the work was stopped on request after in-flight writes finished.
 */
export type ErrorKind = 'bad-input' | 'device-refused' | 'io' | 'interrupted';

/** Where an error happened, when known. */
export interface ErrorPlace {
  path?: string;
  sector?: number;
  sectors?: number;
}

/**
 * The one error base of dmtool. `kind` says what a caller can do about it,
 * `reason` names the broken rule (a string-literal union per package),
 * `code` is an errno-style name; path and sector range say where.
 */
export class DmtoolError<Reason extends string = string> extends Error {
  readonly kind: ErrorKind;
  readonly reason: Reason;
  readonly code: string;
  readonly path?: string;
  readonly sector?: number;
  readonly sectors?: number;

  constructor(kind: ErrorKind, reason: Reason, code: string, message: string, place: ErrorPlace = {}) {
    super(message);
    this.name = 'DmtoolError';
    this.kind = kind;
    this.reason = reason;
    this.code = code;
    this.path = place.path;
    this.sector = place.sector;
    this.sectors = place.sectors;
  }
}
