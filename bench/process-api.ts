// The API process exactly as `npm run start:api` runs it (src/main-api.ts), under a command line of
// its own: tests elsewhere on the machine that kill `main-api.ts` processes by name must not hit
// the benchmark's API in the middle of a run.
import '../src/main-api.ts';
