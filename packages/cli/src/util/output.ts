import type { JsonCommand, JsonDoc } from '../json/schemas';

type DocOf<C extends string> = C extends JsonCommand ? JsonDoc<C> : Record<string, unknown>;

/**
 * Human lines on stdout, or one JSON document with --json, which starts
 * with the fields every command has (docs/json.md#common-fields) and is
 * typed by the command's schema (json/schemas.ts).
 */
export class Output<C extends string = string> {
  constructor(
    readonly json: boolean,
    readonly command?: C,
  ) {}

  line(text: string): void {
    if (!this.json) process.stdout.write(`${text}\n`);
  }

  /** The document; `ok` is false when the command exits with an error after all. */
  result(value: DocOf<C>, ok = true): void {
    if (this.json) printJson({ command: this.command ?? null, ok, dryRun: false, ...(value as Record<string, unknown>) });
  }
}

export function printJson(doc: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(doc, null, 2)}\n`);
}
