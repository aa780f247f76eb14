import type { CommandModule } from 'yargs';

export const mirrorCommands: CommandModule<object, any>[] = [];
