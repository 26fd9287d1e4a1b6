// Just enough ambient types to type-check the examples without @types/node or workers-types.
declare const process: { env: Record<string, string | undefined> };
