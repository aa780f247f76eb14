import * as fs from 'fs';
import type { TargetSpec } from '@dmtool/targets';
import { z } from 'zod';
import { CliError } from './errors';

/** Largest --config file read (a table of devices, never data). */
const MAX_CONFIG_BYTES = 1 << 20;

const configSchema = z
  .object({
    devices: z
      .array(
        z
          .object({
            name: z.string().min(1),
            table: z.string().min(1),
            readOnly: z.boolean().optional(),
          })
          .strict(),
      )
      .min(1),
  })
  .strict();

/** The devices of a `dmtool serve --config FILE`: `{"devices":[{"name":..,"table":..,"readOnly":bool}]}`. */
export function readServeConfig(file: string): TargetSpec[] {
  let text: string;
  try {
    const st = fs.statSync(file);
    if (!st.isFile()) throw new Error('not a regular file');
    if (st.size > MAX_CONFIG_BYTES) throw new Error(`larger than ${MAX_CONFIG_BYTES} bytes`);
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new CliError('usage', `--config ${file}: cannot read it: ${(e as Error).message}`);
  }
  return parseServeConfig(text, file);
}

export function parseServeConfig(text: string, file: string): TargetSpec[] {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new CliError('usage', `--config ${file}: not JSON: ${(e as Error).message}`);
  }
  const r = configSchema.safeParse(json);
  if (!r.success) {
    const issue = r.error.issues[0];
    const where = issue.path.length > 0 ? issue.path.join('.') : 'the file';
    throw new CliError(
      'usage',
      `--config ${file}: ${where}: ${issue.message} (expected {"devices":[{"name":..,"table":..,"readOnly":bool}]})`,
    );
  }
  return r.data.devices.map((d) => ({ name: d.name, table: d.table, readOnly: d.readOnly === true }));
}
