import { OutputFile } from './output-file';

/** Text gathered into pieces of about this many bytes before each write. */
const PIECE_BYTES = 256 * 1024;

/**
 * Streamed text output: small strings are gathered and written in pieces,
 * each awaited, so a slow reader slows the producer down instead of the
 * output piling up in memory.
 */
export class PieceWriter {
  private parts: string[] = [];
  private bytes = 0;

  constructor(private readonly out: OutputFile) {}

  async add(text: string): Promise<void> {
    this.parts.push(text);
    this.bytes += text.length;
    if (this.bytes >= PIECE_BYTES) await this.flush();
  }

  async flush(): Promise<void> {
    if (this.parts.length === 0) return;
    const data = Buffer.from(this.parts.join(''));
    this.parts = [];
    this.bytes = 0;
    await this.out.write(data);
  }
}
