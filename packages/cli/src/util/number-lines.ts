/**
 * Lines of decimal numbers written straight into a reused buffer: listing
 * millions of entries makes no string per number, so the garbage (and the
 * heap V8 grows to hold it) stays small.
 */
export class NumberLines {
  private readonly buf: Buffer;
  private length = 0;
  private lines = 0;

  /** `maxLineBytes` bounds one line; a piece holds `linesPerPiece` lines. */
  constructor(
    private readonly linesPerPiece: number,
    maxLineBytes: number,
  ) {
    this.buf = Buffer.alloc(linesPerPiece * maxLineBytes);
  }

  /** Add one line of non-negative safe integers separated by spaces; true once the piece is full. */
  add(...numbers: number[]): boolean {
    for (let i = 0; i < numbers.length; i++) {
      if (i > 0) this.buf[this.length++] = 0x20;
      this.length = writeDecimal(this.buf, this.length, numbers[i]);
    }
    this.buf[this.length++] = 0x0a;
    return ++this.lines === this.linesPerPiece;
  }

  /** The piece so far, as a copy (the buffer is reused), and start a new one. */
  take(): Buffer {
    const piece = Buffer.from(this.buf.subarray(0, this.length));
    this.length = 0;
    this.lines = 0;
    return piece;
  }

  get empty(): boolean {
    return this.lines === 0;
  }
}

/** Write `n` (a non-negative safe integer) in decimal at `at`; returns the offset after it. */
export function writeDecimal(buf: Buffer, at: number, n: number): number {
  let digits = 1;
  for (let p = 10; p <= n; p *= 10) digits++;
  const end = at + digits;
  for (let v = n, i = end - 1; i >= at; i--) {
    const q = Math.floor(v / 10);
    buf[i] = 0x30 + (v - q * 10);
    v = q;
  }
  return end;
}
