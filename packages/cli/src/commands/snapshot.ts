import type { CommandModule } from 'yargs';

export const snapshotCommands: CommandModule<object, any>[] = [];
