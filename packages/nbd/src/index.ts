export * from './constants';
export * from './codec';
