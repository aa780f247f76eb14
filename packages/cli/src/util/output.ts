/** Human lines on stdout, or one JSON document with --json. */
export class Output {
  constructor(readonly json: boolean) {}

  line(text: string): void {
    if (!this.json) process.stdout.write(`${text}\n`);
  }

  result(value: unknown): void {
    if (this.json) process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
  }
}
