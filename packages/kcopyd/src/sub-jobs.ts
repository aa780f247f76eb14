/**
 * Run `count` sub-jobs concurrently and settle all of them before reporting,
 * so no I/O is still in flight on the caller's devices when the job ends.
 * A sub-job that throws (a bug or bad state, not an I/O error, which is
 * recorded as a result) calls `onBroken` so the others stop claiming work;
 * the first such error is rethrown.
 */
export async function runSubJobs(count: number, subJob: () => Promise<void>, onBroken: () => void): Promise<void> {
  const guarded = async () => {
    try {
      await subJob();
    } catch (e) {
      onBroken();
      throw e;
    }
  };
  const settled = await Promise.allSettled(Array.from({ length: count }, guarded));
  const failure = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failure) throw failure.reason;
}
