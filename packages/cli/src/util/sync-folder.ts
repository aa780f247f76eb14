import * as fs from 'fs';
import * as path from 'path';

/** fsync the folder holding `file`: a name created, renamed or removed there is durable only then. */
export function syncFolder(file: string): void {
  const dirFd = fs.openSync(path.dirname(path.resolve(file)), 'r');
  try {
    fs.fsyncSync(dirFd);
  } finally {
    fs.closeSync(dirFd);
  }
}
