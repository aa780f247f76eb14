/**
 * A refusal or failure in dm-mirror: carries an errno-style code, and where
 * known the device and the sector range, so the CLI can print one line.
 */
export class MirrorError extends Error {
  readonly code: string;
  readonly path?: string;
  readonly sector?: number;
  readonly sectors?: number;

  constructor(code: string, message: string, where: { path?: string; sector?: number; sectors?: number } = {}) {
    super(message);
    this.name = 'MirrorError';
    this.code = code;
    this.path = where.path;
    this.sector = where.sector;
    this.sectors = where.sectors;
  }
}

/** "sectors 1024..2047" for messages. */
export function sectorRange(sector: number, sectors: number): string {
  return `sectors ${sector}..${sector + sectors - 1}`;
}
