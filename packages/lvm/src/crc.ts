/** The initial value of LVM2's checksums (lib/misc/crc.h, INITIAL_CRC). */
export const LVM_INITIAL_CRC = 0xf597a6cf;

const TABLE = (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[i] = c >>> 0;
  }
  return t;
})();

/**
 * LVM2's `calc_crc`: the reflected CRC-32 polynomial without the final
 * inversion, seeded with `initial`, so a text split by the circular buffer
 * is checked by feeding the second part the first part's result.
 */
export function lvmCrc(bytes: Uint8Array, initial: number = LVM_INITIAL_CRC): number {
  let crc = initial >>> 0;
  for (let i = 0; i < bytes.length; i++) crc = TABLE[(crc ^ bytes[i]) & 0xff] ^ (crc >>> 8);
  return crc >>> 0;
}
