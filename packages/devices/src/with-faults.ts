import { BlockDevice } from './block-device';
import { FaultInjector } from './fault-plan';
import { FaultyDevice } from './faulty-device';
import { VolatileCacheDevice } from './volatile-cache-device';

/**
 * Wrap a real device in the decorators a fault plan asks for: the volatile
 * cache (if any) next to the device, the fault injector outside it.
 */
export function withFaults(device: BlockDevice, faults: FaultInjector): BlockDevice {
  const order = faults.volatileCacheOrder;
  const cached = order ? new VolatileCacheDevice(device, { order, onApplied: () => faults.cachedWriteApplied() }) : device;
  return new FaultyDevice(cached, faults);
}
