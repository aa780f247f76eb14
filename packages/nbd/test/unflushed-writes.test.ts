import { UnflushedWrites } from '../src/unflushed-writes';

const conn = () => ({ alive: true });

describe('UnflushedWrites', () => {
  test('a completed flush retires the writes answered before it was sent, on every live connection', () => {
    const u = new UnflushedWrites();
    const [a, b] = [conn(), conn()];
    u.acknowledged(a);
    u.acknowledged(b);
    u.flushed(u.flushSent());
    a.alive = false;
    b.alive = false;
    u.flushed(u.flushSent());
    expect(u.takeLost()).toBe(0);
  });

  test('a write answered while a flush is in flight is not retired by it', () => {
    const u = new UnflushedWrites();
    const a = conn();
    u.acknowledged(a);
    const epoch = u.flushSent();
    u.acknowledged(a);
    u.acknowledged(a);
    u.flushed(epoch);
    a.alive = false;
    u.flushed(u.flushSent());
    expect(u.takeLost()).toBe(2);
  });

  test("a dropped connection's uncovered writes are reported once, by the flush that completes after the drop", () => {
    const u = new UnflushedWrites();
    const [a, b] = [conn(), conn()];
    u.acknowledged(a);
    u.acknowledged(a);
    u.acknowledged(b);
    a.alive = false;
    expect(u.takeLost()).toBe(0);
    u.flushed(u.flushSent());
    expect(u.takeLost()).toBe(2);
    expect(u.takeLost()).toBe(0);
    b.alive = false;
    u.flushed(u.flushSent());
    expect(u.takeLost()).toBe(0);
  });
});
