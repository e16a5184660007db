// The worker process exactly as `npm run start:worker` runs it (src/main-worker.ts), under a command
// line of its own (see process-api.ts).
import '../src/main-worker.ts';
